"""The law check: a score test of a leak back to baseline at the fitted paper's law."""

from __future__ import annotations

from statistics import NormalDist

import pytest
import torch
from omegaconf import OmegaConf

from calcium_gnn.data import zoo
from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.errors import ConfigError
from calcium_gnn.evaluation.diagnostics import DiagnosticRule, check_law
from calcium_gnn.inference.law_check import LeakScore, leak_score_test
from calcium_gnn.models.neural_ode import OutputErrorODE
from calcium_gnn.physics.setups import resolve_setup
from calcium_gnn.train import CONFIG_DIR


@pytest.fixture(scope="module")
def leak_member():
    """A small stimulus member generated with the leak law (custom: not the test split)."""
    member = zoo.custom_member("stimulus", 95)
    assert member.law == "leak"
    return zoo.member_graph(member, dtype=torch.float64)


@pytest.fixture(scope="module")
def linear_culture():
    culture = make_culture(seed=3, n_cells=40, size=220, n_frames=121, render=False)
    return truth_graph(culture, noise=0.02, seed=5, dtype=torch.float64)


def _fit(data, law: str = "linear", **kwargs) -> OutputErrorODE:
    setup = resolve_setup(data, drivers="is_driver") if hasattr(data, "is_driver") else resolve_setup(data)
    model = OutputErrorODE(data, setup, law=law, gamma_bounds=(-0.1, 0.1), **kwargs)
    model.fit_exact(60)
    model.finish_fit()
    return model


def test_the_leak_member_rejects_the_paper_law_and_the_flag_says_so(leak_member) -> None:
    model = _fit(leak_member)
    assert abs(model.fitted_parameters().k / leak_member.truth_k - 1) > 0.2  # k absorbed the leak
    score = model.leak_score
    assert isinstance(score, LeakScore) and score.z > 10 and score.delta_step > 0
    assert score.step_over_coupling > 0.1
    block = model.law_results()["leak_score"]
    assert block["z"] == pytest.approx(score.z) and block["delta_step"] > 0
    diagnostics = {"reasons": [], "fit_ok": True}
    check_law(model.law_results(), DiagnosticRule(), diagnostics)
    assert not diagnostics["fit_ok"] and diagnostics["law_check"]["rejected"] is True
    assert "the data reject the linear law" in diagnostics["reasons"][0]
    assert "experiment=select_law" in diagnostics["reasons"][0]


def test_a_culture_of_the_paper_law_passes(linear_culture) -> None:
    model = _fit(linear_culture)
    score = model.leak_score
    assert isinstance(score, LeakScore) and abs(score.z) < 3
    diagnostics = {"reasons": [], "fit_ok": True}
    check_law(model.law_results(), DiagnosticRule(), diagnostics)
    assert diagnostics["fit_ok"] and diagnostics["law_check"]["rejected"] is False


def test_noise_free_data_of_the_paper_law_pass() -> None:
    """Without noise the residuals are the integrator's error: the test may be significant either way,
    but the leak it finds is negligible next to the coupling, and the law is not rejected."""
    clean = truth_graph(make_culture(seed=3, n_cells=40, size=220, n_frames=121, render=False), noise=0.0,
                        dtype=torch.float64)
    model = _fit(clean)
    assert abs(model.leak_score.step_over_coupling) < 0.02
    diagnostics = {"reasons": [], "fit_ok": True}
    check_law(model.law_results(), DiagnosticRule(), diagnostics)
    assert diagnostics["fit_ok"]


def test_the_test_is_made_at_the_optimum_before_the_border_noise_correction(linear_culture) -> None:
    """The score test reads the fit's own optimum: the same z whether the correction then moves k or not."""
    with_correction = _fit(linear_culture).leak_score
    without = _fit(linear_culture, border_noise_correction=False).leak_score
    assert with_correction.z == pytest.approx(without.z, rel=1e-6)


def test_laws_with_a_leak_or_the_switch_off_are_not_tested(linear_culture) -> None:
    leak = _fit(linear_culture, law="leak")
    assert leak.leak_score is None and "leak_score" not in leak.law_results()
    off = _fit(linear_culture, law_check=False)
    assert off.leak_score is None and off.law_results()["leak_score_unavailable"] == "law_check=false"
    assert leak_score_test(leak.problem, (0.0, 0.1)) == "the law already has a leak"


def test_the_extended_problem_is_the_same_problem_at_zero_leak(linear_culture) -> None:
    model = _fit(linear_culture)
    problem = model.problem
    extended = problem.with_leak((0.0, 0.1))
    theta = problem.theta_unpooled()
    embedded = extended.embed_theta(theta, problem)
    assert extended.n_parameters == problem.n_parameters + 1 and float(embedded[1]) == 0.0
    assert torch.allclose(extended.residuals_theta(embedded), problem.residuals_theta(theta), atol=1e-12)
    with pytest.raises(ConfigError, match="model.law"):
        extended.with_leak((0.0, 0.1))
    no_y0 = OutputErrorODE(linear_culture, resolve_setup(linear_culture), init="constant",
                           fit_initial_state=False).problem
    with pytest.raises(ConfigError, match="differs"):
        no_y0.embed_theta(theta, problem)


def test_check_law_thresholds_and_missing_blocks() -> None:
    def run(law):
        diagnostics = {"reasons": [], "fit_ok": True}
        check_law(law, DiagnosticRule(law_rejection_z=4.0), diagnostics)
        return diagnostics

    def law(z: float, step: float, share: float) -> dict:
        return {"name": "linear", "leak_score": {"z": z, "delta_step": step, "step_over_coupling": share}}

    assert not run(law(4.5, 0.003, 0.1))["fit_ok"]
    # significant but negligible next to the coupling (noise-free data, integrator error): not a rejection
    assert run(law(40.0, 1e-5, 0.001))["fit_ok"]
    assert run(law(3.9, 0.003, 0.1))["fit_ok"]
    assert run(law(-8.0, -0.003, -0.1))["fit_ok"]  # one-sided
    assert run({"name": "leak"}) == {"reasons": [], "fit_ok": True}
    assert run(None) == {"reasons": [], "fit_ok": True}
    with pytest.raises(ConfigError, match="law_rejection_z"):
        DiagnosticRule(law_rejection_z=0.0)


def test_default_law_rejection_is_the_one_sided_0_1_percent_point() -> None:
    """The default flags a leak score past the 0.1 % point of N(0, 1) (dev-52 of the zoo: z = 3.48, its
    coupling rates 41 % off) and passes one below it; the Hydra default is the same rule."""
    rule = DiagnosticRule()
    assert rule.law_rejection_z == pytest.approx(NormalDist().inv_cdf(0.999), abs=0.01)
    leak_score = {"delta_step": 0.004, "step_over_coupling": 0.43}
    flagged = {"reasons": [], "fit_ok": True}
    check_law({"name": "linear", "leak_score": {"z": 3.48, **leak_score}}, rule, flagged)
    assert not flagged["fit_ok"] and "reject the linear law" in flagged["reasons"][0]
    passed = {"reasons": [], "fit_ok": True}
    check_law({"name": "linear", "leak_score": {"z": 3.0, **leak_score}}, rule, passed)
    assert passed["fit_ok"]
    configured = OmegaConf.load(f"{CONFIG_DIR}/train.yaml").evaluation.diagnostics
    assert DiagnosticRule.from_config(configured) == rule
