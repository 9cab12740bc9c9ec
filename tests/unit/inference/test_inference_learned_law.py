"""The symbolic summary of a learned message: each law's leading term named from its message, a linear
message kept linear, and the comparison with a known true flux."""

from __future__ import annotations

import numpy as np
import pytest

from calcium_gnn.data import zoo_laws
from calcium_gnn.errors import ConfigError
from calcium_gnn.inference.learned_law import LearnedLaw, MessageSamples, node_term_summary, symbolic_summary

RNG = np.random.default_rng(0)
DELTA = RNG.normal(0.0, 0.3, 4000)
SOURCE = RNG.uniform(0.2, 1.5, 4000)
K = 0.02


def _flux(law: str, constants: dict[str, float]) -> np.ndarray:
    """The true flux ``k f`` of a zoo law, plus a little noise (a learned message is never exact)."""
    return K * zoo_laws.message(law, constants, DELTA, SOURCE) + RNG.normal(0.0, 1e-4, DELTA.size)


@pytest.mark.parametrize(("law", "constants"), [
    ("saturating", {"sigma": 0.1}),
    ("threshold", {"theta": 0.8, "epsilon": 0.05, "a": 3.0}),
    ("rectifying", {"r": 0.2}),
    ("linear", {}),
])
def test_the_summary_names_each_laws_leading_term(law: str, constants: dict[str, float]) -> None:
    summary = symbolic_summary(DELTA, SOURCE, _flux(law, constants))
    assert summary.law == law
    assert summary.explained > 0.99
    assert len(summary.terms) <= 2


def test_the_coefficients_are_the_laws() -> None:
    rect = symbolic_summary(DELTA, SOURCE, _flux("rectifying", {"r": 0.2}))
    # k (Delta+ + r Delta-) = k Delta + k (r - 1) min(Delta, 0)
    assert rect.terms["linear"] == pytest.approx(K, rel=0.02)
    assert rect.terms["rectifying"] == pytest.approx(K * (0.2 - 1.0), rel=0.02)
    sat = symbolic_summary(DELTA, SOURCE, _flux("saturating", {"sigma": 0.1}))
    assert sat.constants["sigma"] == pytest.approx(0.1, rel=0.3)
    assert "tanh" in sat.formula()


def test_a_weak_nonlinearity_inside_the_rules_stays_linear() -> None:
    """A saturation far beyond the visited differences explains < 1% more than the linear term."""
    summary = symbolic_summary(DELTA, SOURCE, _flux("saturating", {"sigma": 5.0}))
    assert summary.law == "linear" and list(summary.terms) == ["linear"]


def test_learned_law_results_compare_with_the_truth() -> None:
    true = K * zoo_laws.message("rectifying", {"r": 0.2}, DELTA, SOURCE)
    learned = true + RNG.normal(0.0, 1e-4, DELTA.size)
    samples = MessageSamples(DELTA, SOURCE, learned, true, "rectifying", K)
    block = LearnedLaw.from_samples(samples).as_results()
    assert block["true_law"] == "rectifying" and block["summary"]["law"] == "rectifying"
    assert block["learned_matches_true"] > 0.99
    assert block["linear_matches_true"] < block["learned_matches_true"]


def test_bad_samples_are_refused() -> None:
    with pytest.raises(ConfigError, match="non-zero"):
        symbolic_summary(DELTA, SOURCE, np.zeros_like(DELTA))
    with pytest.raises(ConfigError, match="one length"):
        MessageSamples(DELTA, SOURCE[:10], DELTA)


def test_the_summary_weighs_samples_by_the_edge_weight() -> None:
    """A correction that is small as a message but divided by a tiny weight (a short shared border) must
    not swamp the summary: the fit compares messages w q, not fluxes per unit weight."""
    weight = np.where(RNG.random(DELTA.size) < 0.05, 1e-3, 1.0)
    learned = K * DELTA + 1e-4 * RNG.normal(size=DELTA.size) / weight
    assert symbolic_summary(DELTA, SOURCE, learned).explained < 0.5
    weighted = symbolic_summary(DELTA, SOURCE, learned, weight)
    assert weighted.law == "linear" and weighted.explained > 0.99
    assert weighted.terms["linear"] == pytest.approx(K, rel=0.01)


def test_a_node_term_that_pulls_back_to_the_centre_is_named_a_leak_with_its_rate() -> None:
    rng = np.random.default_rng(0)
    level = rng.uniform(0.0, 2.0, 5000)
    flux = 0.001 - 0.004 * (level - 0.8) + 1e-6 * rng.standard_normal(5000)  # a constant: the feeds' share
    node = node_term_summary(level, flux, center=0.8, effective_k=0.02, true_leak_rate=0.005)
    assert node.law == "leak"
    assert node.leak_rate == pytest.approx(0.004, rel=1e-3)
    assert node.explained > 0.99
    out = node.as_results()
    assert out["true_leak_rate"] == 0.005 and out["formula"].startswith("nu ~ const -0.004")


def test_a_node_term_too_small_to_matter_or_not_a_leak_is_not_named_a_leak() -> None:
    level = np.linspace(0.0, 2.0, 2001)
    # a leak at 1% of the coupling: below LEAK_MIN_SHARE (2%), negligible
    assert node_term_summary(level, -0.0002 * (level - 1.0), 1.0, effective_k=0.02).law == "none"
    assert node_term_summary(level, np.zeros_like(level), 1.0, effective_k=0.02).law == "none"
    # pushing away from the centre (a regenerative term), and an even bump the line does not explain
    assert node_term_summary(level, 0.004 * (level - 1.0), 1.0, effective_k=0.02).law == "nonlinear node term"
    bump = 0.004 * ((level - 1.0) ** 2 - 1.0 / 3.0)
    assert node_term_summary(level, bump, 1.0, effective_k=0.02).law == "nonlinear node term"
