"""The hierarchical comparison of conditions: exact answers where the model reduces to a textbook test,
calibration of its p-values, plates, covariates and the errors a user can hit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from calcium_gnn.inference.conditions import compare_conditions, log_k_and_se


def test_without_fit_errors_it_is_the_pooled_two_sample_t_test() -> None:
    a = np.array([0.020, 0.024, 0.019, 0.022])
    b = np.array([0.015, 0.017, 0.016, 0.013])
    result = compare_conditions([*a, *b], None, ["ctrl"] * 4 + ["drug"] * 4, level=0.95)
    reference = stats.ttest_ind(np.log(b), np.log(a), equal_var=True)
    contrast = result.contrasts[0]
    assert (contrast.condition, contrast.reference, contrast.df) == ("drug", "ctrl", 6)
    assert contrast.t == pytest.approx(reference.statistic, rel=1e-4)
    assert contrast.p_value == pytest.approx(reference.pvalue, rel=1e-3)
    assert contrast.ratio == pytest.approx(math.exp(np.log(b).mean() - np.log(a).mean()), rel=1e-9)
    # the condition estimates are geometric means; the between-dish variance is the pooled variance
    assert result.conditions[0].estimate == pytest.approx(math.exp(np.log(a).mean()), rel=1e-9)
    pooled = (np.var(np.log(a), ddof=1) + np.var(np.log(b), ddof=1)) / 2
    assert result.tau2 == pytest.approx(pooled, rel=1e-3)
    lo, hi = contrast.interval
    assert lo < contrast.ratio < hi < 1  # a clear drop: the interval excludes 1


def _simulate(rng: np.random.Generator, ratio: float, se: np.ndarray, tau: float, n: int = 5):
    truth = np.log(0.02) + np.r_[np.zeros(n), np.full(n, math.log(ratio))]
    y = truth + tau * rng.standard_normal(2 * n) + se * rng.standard_normal(2 * n)
    return np.exp(y)


def test_false_positive_rate_and_power_are_what_the_level_says() -> None:
    rng = np.random.default_rng(1)
    labels = ["a"] * 5 + ["b"] * 5
    se = np.full(10, 0.04)
    n = 600
    null = [compare_conditions(_simulate(rng, 1.0, se, 0.1), se, labels).contrasts[0] for _ in range(n)]
    rate = sum(c.p_value < 0.05 for c in null) / n  # Monte-Carlo sd 0.9%
    assert 0.025 <= rate <= 0.075
    covered = sum(c.interval[0] <= 1.0 <= c.interval[1] for c in null) / n
    assert 0.92 <= covered <= 0.98
    drop = [compare_conditions(_simulate(rng, 0.7, se, 0.1), se, labels).contrasts[0] for _ in range(200)]
    assert sum(c.p_value < 0.05 for c in drop) / 200 > 0.8
    assert np.median([c.ratio for c in drop]) == pytest.approx(0.7, rel=0.05)


def test_fit_errors_weight_the_dishes() -> None:
    # the same values; the dish with a huge fit error barely moves its condition's estimate
    values = [0.02, 0.02, 0.021, 0.019, 0.03, 0.015, 0.016, 0.014]
    labels = ["a"] * 4 + ["b"] * 4
    plain = compare_conditions(values, None, labels)
    weighted = compare_conditions(values, [0.01, 0.01, 0.01, 0.01, 2.0, 0.01, 0.01, 0.01], labels)
    assert plain.conditions[1].estimate > 0.0175
    assert weighted.conditions[1].estimate == pytest.approx(0.015, rel=0.02)


def test_a_plate_effect_shared_by_both_conditions_is_removed() -> None:
    rng = np.random.default_rng(3)
    plates = [f"p{j % 4}" for j in range(16)]
    labels = ["a"] * 8 + ["b"] * 8
    plate_shift = np.array([0.4, -0.3, 0.2, -0.35])[[j % 4 for j in range(16)]]
    drug = np.r_[np.zeros(8), np.full(8, math.log(0.8))]
    y = np.log(0.02) + drug + plate_shift + 0.03 * rng.standard_normal(16)
    with_plates = compare_conditions(np.exp(y), None, labels, plates=plates)
    without = compare_conditions(np.exp(y), None, labels)
    assert with_plates.n_plates == 4 and with_plates.plate_variance > 0.02
    assert with_plates.contrasts[0].standard_error < 0.5 * without.contrasts[0].standard_error
    assert with_plates.contrasts[0].p_value < 0.01 < without.contrasts[0].p_value
    assert with_plates.contrasts[0].ratio == pytest.approx(0.8, rel=0.05)


def test_a_covariate_is_a_fixed_effect_with_its_slope() -> None:
    rng = np.random.default_rng(4)
    div = rng.uniform(7, 21, 12)
    labels = ["a"] * 6 + ["b"] * 6
    drug = np.r_[np.zeros(6), np.full(6, -0.2)]
    y = np.log(0.02) + 0.05 * (div - 14) + drug + 0.02 * rng.standard_normal(12)
    result = compare_conditions(np.exp(y), None, labels, covariates={"DIV": div, "constant": np.ones(12)})
    assert result.covariates == ["DIV"]  # a constant covariate carries nothing and is dropped
    assert result.coefficients["DIV"] == pytest.approx(0.05, rel=0.1)
    assert result.df == 12 - 3
    assert result.contrasts[0].ratio == pytest.approx(math.exp(-0.2), rel=0.05)


def test_dishes_without_an_estimate_are_left_out_and_listed() -> None:
    result = compare_conditions([0.02, None, 0.021, -1.0, 0.015, 0.016, 0.014],
                                None, ["a"] * 4 + ["b"] * 3, names=list("ABCDEFG"), reference="a")
    assert result.excluded == {"B": "no k estimate", "D": "k = -1 is not positive"}
    assert [c.n_dishes for c in result.conditions] == [2, 3]


def test_errors_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="no degrees of freedom left; add dishes"):
        compare_conditions([0.02, 0.015], None, ["a", "b"])
    with pytest.raises(ValueError, match="reference condition 'c' has no dish"):
        compare_conditions([0.02, 0.021, 0.015], None, ["a", "a", "b"], reference="c")


def test_log_k_and_se_read_the_fit_interval() -> None:
    log_k, se = log_k_and_se({"k": 0.02, "k_interval": [0.018, 0.022], "interval_level": 0.9})
    assert log_k == pytest.approx(math.log(0.02))
    assert se == pytest.approx((math.log(0.022) - math.log(0.018)) / (2 * stats.norm.ppf(0.95)))
    assert log_k_and_se({"k": 0.02, "k_interval": None}) == (pytest.approx(math.log(0.02)), None)
    assert log_k_and_se({"k": None}) == (None, None)


def test_three_conditions_are_each_compared_with_the_chosen_reference() -> None:
    rng = np.random.default_rng(5)
    centres = {"low": 0.5, "ctrl": 1.0, "high": 1.5}
    labels = [c for c in ("low", "ctrl", "high") for _ in range(6)]
    values = [0.02 * centres[c] * math.exp(0.05 * rng.standard_normal()) for c in labels]
    result = compare_conditions(values, [0.02] * 18, labels, reference="ctrl")
    assert [c.condition for c in result.conditions] == ["low", "ctrl", "high"]
    assert [(c.condition, c.reference) for c in result.contrasts] == [("low", "ctrl"), ("high", "ctrl")]
    for contrast in result.contrasts:
        truth = centres[contrast.condition]
        assert contrast.interval[0] <= truth <= contrast.interval[1] and contrast.p_value < 1e-3
    assert result.df == 18 - 3
