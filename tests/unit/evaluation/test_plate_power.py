"""Simulated plates for the power analysis: the dishes' couplings, the design checks, and one real
experiment end to end (output-error fits of six dishes), and the power resampled from fitted dishes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from calcium_gnn.errors import ConfigError
from calcium_gnn.evaluation.plate_power import (
    PlateDesign,
    ceiling_power,
    dish_couplings,
    dish_errors,
    fit_dish,
    resampled_power,
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


def test_the_ceiling_is_the_power_of_a_t_test_on_simulated_plates() -> None:
    """ceiling_power against 4,000 simulated plates tested by scipy's two-sample t-test on log k (true
    k, then with normal fit errors): within 3.5 Monte-Carlo errors; alpha without an effect; the limits
    of no spread; bad designs refused."""
    rng = np.random.default_rng(11)
    sigma = math.sqrt(math.log1p(0.1**2))
    for n, fit_sd in ((5, 0.0), (5, 0.034), (3, 0.05)):
        spread = math.hypot(sigma, fit_sd)
        control = rng.normal(0.0, spread, (4000, n))
        treated = rng.normal(math.log(0.8), spread, (4000, n))
        simulated = float(np.mean(stats.ttest_ind(control, treated, axis=1).pvalue < 0.05))
        expected = ceiling_power(n, 0.2, 0.1, 0.05, fit_sd)
        assert simulated == pytest.approx(expected, abs=3.5 * math.sqrt(expected * (1 - expected) / 4000))
    assert ceiling_power(5, 0.2, 0.1, 0.05) > ceiling_power(5, 0.2, 0.1, 0.05, 0.05)  # fit error costs power
    assert ceiling_power(5, 0.0, 0.1, 0.05) == pytest.approx(0.05)
    assert ceiling_power(4, 0.2, 0.0, 0.05) == 1.0 and ceiling_power(4, 0.0, 0.0, 0.05) == 0.05
    with pytest.raises(ValueError, match="invalid design"):
        ceiling_power(1, 0.2, 0.1, 0.05)


def test_resampled_power_matches_the_t_test_when_fit_errors_are_normal() -> None:
    """Fit errors of sd 3 % with that standard error: the resampled power at 5 and 8 dishes is the
    t-test's (within 3.5 Monte-Carlo errors), and the false-positive rate is near alpha."""
    rng = np.random.default_rng(3)
    errors = [(float(e), 0.03) for e in rng.normal(0.0, 0.03, 2000)]
    for n in (5, 8):
        summary = resampled_power(PlateDesign("border-25", n_dishes=n, dish_cv=0.1), errors, experiments=400)
        expected = ceiling_power(n, 0.2, 0.1, 0.05, 0.03)  # every fit with the same standard error
        mc_error = math.sqrt(expected * (1 - expected) / 400)
        assert summary["power"] == pytest.approx(expected, abs=3.5 * mc_error)
        assert 0.01 <= summary["false_positive_rate"] <= 0.10
        assert summary["experiments"] == 400 and summary["dishes_failed"] == 0
    again = resampled_power(PlateDesign("border-25", n_dishes=5, dish_cv=0.1), errors, experiments=50)
    assert again["power"] == resampled_power(PlateDesign("border-25", n_dishes=5, dish_cv=0.1), errors,
                                             experiments=50)["power"]


def test_imprecise_fits_lower_the_resampled_power_and_failed_fits_stay_failed() -> None:
    """Exact fits find a 20 % drop in every experiment; fits off by +-30 % hide it. Dishes drawn without
    an estimate are counted and left out."""
    design = PlateDesign("border-25", n_dishes=5, dish_cv=0.0, effect=0.2)
    exact = resampled_power(design, [(0.0, 0.01)], experiments=40)
    assert exact["power"] == 1.0 and exact["ratio_effect_median"] == pytest.approx(0.8, rel=1e-9)
    noisy = resampled_power(design, [(-0.3, 0.01), (0.3, 0.01), (None, None)], experiments=40)
    assert noisy["power"] < 0.5 and noisy["dishes_failed"] > 0
    mostly_failed = resampled_power(PlateDesign("border-25", n_dishes=2), [(0.0, 0.01)] + [(None, None)] * 3,
                                    experiments=40)  # often a whole group without an estimate: no test
    assert 0 < mostly_failed["experiments_effect"] < 40 and mostly_failed["experiments"] == 40
    with pytest.raises(ValueError, match="no fitted dish"):
        resampled_power(design, [(None, None)], experiments=5)


def test_dish_errors_are_log_errors_with_their_standard_errors() -> None:
    rows = [{"dishes": [{"group": "control", "k_true": 0.02, "log_k": math.log(0.022), "se_log_k": 0.05},
                        {"group": "treated", "k_true": 0.016, "log_k": None, "se_log_k": None}]}]
    (error, se), missing = dish_errors(rows)
    assert error == pytest.approx(math.log(1.1)) and se == 0.05 and missing == (None, None)
