"""Simulated plates for the power analysis: the dishes' couplings, the design checks, and one real
experiment end to end (output-error fits of six dishes)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calcium_gnn.errors import ConfigError
from calcium_gnn.evaluation.plate_power import (
    PlateDesign,
    dish_couplings,
    fit_dish,
    simulate_experiment,
    summarise,
)


def test_dish_couplings_have_the_design_spread_and_effect() -> None:
    design = PlateDesign("border-25", n_dishes=4000, effect=0.2, dish_cv=0.15)
    ks = dish_couplings(design, 0.02, experiment=7)
    sigma = math.sqrt(math.log1p(0.15**2))
    for group, centre in (("control", 0.02), ("control'", 0.02), ("treated", 0.016)):
        logs = np.log(ks[group])
        assert logs.mean() == pytest.approx(math.log(centre), abs=4 * sigma / math.sqrt(4000))
        assert logs.std() == pytest.approx(sigma, rel=0.05)
    again = dish_couplings(design, 0.02, experiment=7)
    assert all(np.array_equal(ks[g], again[g]) for g in ks)
    assert not np.array_equal(ks["control"], dish_couplings(design, 0.02, experiment=8)["control"])


@pytest.mark.parametrize(("design", "message"), [
    (PlateDesign("test-3"), "frozen test split"),
    (PlateDesign("stimulus-4"), "use a 'border' member"),
    (PlateDesign("border-25", n_dishes=1), "n_dishes: invalid value 1"),
    (PlateDesign("border-25", effect=1.0), "effect: invalid value 1.0"),
])
def test_bad_designs_are_refused(design: PlateDesign, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        design.check()


def test_one_experiment_with_real_fits_compares_both_ways() -> None:
    import torch

    from calcium_gnn.models.neural_ode import OutputErrorODE
    from calcium_gnn.physics.setups import resolve_setup

    def fit(data):  # the output-error fit with its defaults, as scripts/power.py runs it
        return fit_dish(OutputErrorODE(data=data, setup=resolve_setup(data)), max_iterations=20)

    torch.set_num_threads(1)
    design = PlateDesign("border-25", n_dishes=2, effect=0.5, noise=0.01, dish_cv=0.0)
    row = simulate_experiment(design, 0, fit)
    assert len(row["dishes"]) == 6 and row["failed"] == 0
    assert max(row["k_rel_err"]) < 0.1
    assert row["ratio_effect"] == pytest.approx(0.5, rel=0.1) and row["covered_effect"]
    assert row["ratio_null"] == pytest.approx(1.0, rel=0.1)
    summary = summarise(design, [row])
    assert summary["experiments"] == 1 and summary["dishes_failed"] == 0
    assert summary["power"] in (0.0, 1.0) and summary["power_mc_se"] == 0.0
