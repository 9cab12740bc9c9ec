"""The symbolic summary of a learned message: each law's leading term named from its message, a linear
message kept linear, and the comparison with a known true flux."""

from __future__ import annotations

import numpy as np
import pytest

from calcium_gnn.data import zoo_laws
from calcium_gnn.errors import ConfigError
from calcium_gnn.inference.learned_law import LearnedLaw, MessageSamples, symbolic_summary

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
