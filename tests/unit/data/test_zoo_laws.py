"""Nonlinear-law members of the zoo: the messages by hand, the integrator against the exact linear
solution and against itself at half the step, determinism, and the splits left alone."""

from __future__ import annotations

import numpy as np
import pytest

from calcium_gnn.data import zoo, zoo_laws
from calcium_gnn.data.zoo_culture import make_zoo_culture
from calcium_gnn.errors import ConfigError


def test_messages_by_hand() -> None:
    delta, source = np.array([-1.0, 0.0, 2.0]), np.array([0.0, 0.5, 1.0])
    rect = zoo_laws.message("rectifying", {"r": 0.2}, delta, source)
    np.testing.assert_allclose(rect, [-0.2, 0.0, 2.0])
    sat = zoo_laws.message("saturating", {"sigma": 0.5}, delta, source)
    np.testing.assert_allclose(sat, 0.5 * np.tanh(delta / 0.5))
    assert abs(sat).max() <= 0.5
    gate = zoo_laws.message("threshold", {"theta": 0.5, "epsilon": 0.05, "a": 3.0}, np.ones(3), source)
    # far below theta: 1; at theta: 1 + a / 2; far above: 1 + a
    np.testing.assert_allclose(gate, [1.0, 2.5, 4.0], atol=1e-3)
    np.testing.assert_allclose(zoo_laws.message("paracrine", {}, delta, source), delta)


@pytest.mark.parametrize(("law", "neutral"), [("saturating", {"saturation": 1e6}),
                                             ("paracrine", {"paracrine_ratio": 0.0}),
                                             ("rectifying", {"rectification": 1.0})])
def test_a_law_at_its_linear_limit_matches_the_exact_linear_solution(law: str, neutral: dict) -> None:
    """RK4 from the root-found steady state against the exact modal solution of eq. (3)."""
    member = zoo.law_member(law, 1)
    params = {**member.params, **neutral}
    nonlinear = make_zoo_culture(params, member.key)
    linear = make_zoo_culture({**params, "law": "linear"}, member.key)
    scale = float(linear.traces.max() - linear.traces.min())
    assert np.abs(nonlinear.traces - linear.traces).max() < 1e-6 * scale


def test_the_integration_has_converged_at_the_chosen_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Halving the step moves the traces of a threshold member (the stiffest law) by < 1e-5 of range."""
    member = zoo.law_member("threshold", 0)
    culture = make_zoo_culture(member.params, member.key)
    monkeypatch.setattr(zoo_laws, "STEP_RATE", zoo_laws.STEP_RATE / 2)
    finer = make_zoo_culture(member.params, member.key)
    scale = float(culture.traces.max() - culture.traces.min())
    assert np.abs(finer.traces - culture.traces).max() < 1e-5 * scale


@pytest.mark.parametrize("law", zoo_laws.NONLINEAR_LAWS)
def test_law_members_are_deterministic_and_differ_from_the_linear_law(law: str) -> None:
    member = zoo.member(f"{law}-2")
    assert member.law == law and member.split == "custom" and member.params["size"] == "typical"
    assert set(zoo_laws.LAW_RANGES[law]) <= set(member.params)
    a, b = zoo.member_graph(member), zoo.member_graph(zoo.law_member(law, 2))
    assert a.truth_law == law and a.truth_law_constants == b.truth_law_constants
    np.testing.assert_array_equal(a.x.numpy(), b.x.numpy())
    linear = make_zoo_culture({**member.params, "law": "linear"}, member.key)
    modelled = ~linear.is_driver
    assert np.abs(a.truth_x.double().numpy()[modelled] - linear.traces[modelled]).max() > 1e-3


def test_law_members_leave_dev_and_custom_members_alone() -> None:
    """A law member's key is its own: the family members' draws are untouched by the law members."""
    assert zoo.law_member("saturating", 0).key != zoo.custom_member("border", 0).key
    keys = {zoo.law_member(law, 0).key for law in zoo_laws.NONLINEAR_LAWS}
    assert len(keys) == len(zoo_laws.NONLINEAR_LAWS)
    assert zoo.member("dev-0").law in zoo.LAWS


def test_a_law_member_renders_a_movie() -> None:
    member = zoo.law_member("paracrine", 1)  # 33 cells
    movie = zoo.member_movie(member)
    assert movie.movie.shape[0] == member.n_frames and movie.labels.max() == member.n_cells


def test_unknown_laws_are_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match="saturating"):
        zoo.law_member("sigmoid", 0)
    with pytest.raises(ConfigError, match="<law>-<seed>"):
        zoo.member("sigmoid-0")
    with pytest.raises(ConfigError, match=">= 0"):
        zoo.law_member("threshold", -1)


def test_a_rectifier_whose_kink_stalls_the_root_finders_still_starts_close_to_rest() -> None:
    """rectifying-5: hybr and LM stop short of 1e-9 at the kink; the start is the closest point found."""
    member = zoo.law_member("rectifying", 5)
    culture = make_zoo_culture(member.params, member.key)
    modelled = ~culture.is_driver
    first_step = np.abs(culture.traces[modelled, 1] - culture.traces[modelled, 0]).max()
    assert np.isfinite(culture.traces).all()
    assert first_step < 1e-2 * float(culture.traces.max() - culture.traces.min())
