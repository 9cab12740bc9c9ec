"""Gauss-Newton covariance and intervals against ordinary least squares worked out by hand."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch

from calcium_gnn.errors import ConfigError
from calcium_gnn.evaluation.model_figures import plot_intervals
from calcium_gnn.inference.uncertainty import (
    ParameterIntervals,
    check_level,
    gauss_newton_covariance,
    lag1_autocorrelation,
    normal_interval,
    normal_matrix_covariance,
)


def test_covariance_of_a_straight_line_fit_matches_ols_formula() -> None:
    # r = a + b t - x at the optimum; J = [1, t]. For t = 0..4: J^T J = [[5, 10], [10, 30]].
    t = torch.arange(5, dtype=torch.float64)
    jac = torch.stack([torch.ones(5, dtype=torch.float64), t], dim=1)
    residuals = torch.tensor([[0.1, -0.1, 0.1, -0.1, 0.0]], dtype=torch.float64)
    cov = gauss_newton_covariance(jac, residuals, autocorrelation=False, ridge=0.0)
    sigma2 = 0.04 / 3  # RSS / (M - P)
    inverse = torch.tensor([[30.0, -10.0], [-10.0, 5.0]], dtype=torch.float64) / 50.0
    assert cov.sigma2 == pytest.approx(sigma2)
    assert torch.allclose(cov.cov, sigma2 * inverse)
    assert cov.inflation == 1.0 and cov.dof == 3


def test_lag1_autocorrelation_by_hand() -> None:
    r = torch.tensor([[1.0, 1.0, -1.0, -1.0]])  # centred already: (1 - 1 + 1) / 4
    assert lag1_autocorrelation(r) == pytest.approx(0.25)
    assert lag1_autocorrelation(torch.ones(2, 1)) == 0.0


def test_positive_autocorrelation_inflates_the_covariance() -> None:
    r = torch.tensor([[1.0, 1.0, -1.0, -1.0]], dtype=torch.float64)
    jac = torch.ones(4, 1, dtype=torch.float64)
    plain = gauss_newton_covariance(jac, r, autocorrelation=False, ridge=0.0)
    corrected = gauss_newton_covariance(jac, r, autocorrelation=True, ridge=0.0)
    assert corrected.inflation == pytest.approx(1.25 / 0.75)
    assert float(corrected.cov[0, 0]) == pytest.approx(float(plain.cov[0, 0]) * 1.25 / 0.75)


def test_normal_interval_quantile_and_clipping() -> None:
    z = NormalDist().inv_cdf(0.95)
    lo, hi = normal_interval(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 1.0]), 0.9, bounds=(-1.0, 10.0))
    assert float(lo[0]) == pytest.approx(1.0 - 0.5 * z)
    assert float(hi[0]) == pytest.approx(1.0 + 0.5 * z)
    assert float(lo[1]) == -1.0  # clipped to the box


@pytest.mark.parametrize("level", [0.0, 1.0, "high", -0.5])
def test_bad_level_is_a_config_error(level) -> None:
    with pytest.raises(ConfigError, match="model.interval_level"):
        check_level(level)


def test_ols_intervals_cover_at_nominal_rate() -> None:
    # Monte Carlo on a linear model: y = J theta + noise; 90% intervals must cover ~90% of the time.
    gen = torch.Generator().manual_seed(3)
    t = torch.linspace(0, 1, 40, dtype=torch.float64)
    jac = torch.stack([torch.ones_like(t), t], dim=1)
    theta = torch.tensor([0.3, -1.2], dtype=torch.float64)
    hits, trials = 0, 400
    for _ in range(trials):
        y = jac @ theta + 0.2 * torch.randn(40, generator=gen, dtype=torch.float64)
        est = torch.linalg.lstsq(jac, y.unsqueeze(1)).solution.reshape(-1)
        r = (jac @ est - y).reshape(1, -1)
        cov = gauss_newton_covariance(jac, r, autocorrelation=False)
        lo, hi = normal_interval(est, cov.se, 0.9)
        hits += int(lo[1] <= theta[1] <= hi[1])
    assert 0.85 <= hits / trials <= 0.95


def _low_pass(n: int, a: float) -> torch.Tensor:
    """(n, n) response of a first-order ODE to its input, ``F_ij = a (1 - a)^(i - j)`` for ``j <= i``."""
    i = torch.arange(n, dtype=torch.float64)
    lag = i.reshape(-1, 1) - i.reshape(1, -1)
    return torch.where(lag >= 0, a * (1 - a) ** lag.clamp(min=0), torch.zeros(()).double())


def test_input_noise_term_is_the_sandwich_with_exact_probes() -> None:
    """With probes ``sqrt(B) e_b`` (one per input value) ``U U^T / n_p`` is exactly
    ``(J^T J)^-1 J^T F F^T J (J^T J)^-1``."""
    t = torch.linspace(0, 1, 30, dtype=torch.float64)
    jac = torch.stack([torch.ones_like(t), t], dim=1)
    f = _low_pass(30, 0.2)
    residuals = torch.linspace(-1, 1, 30, dtype=torch.float64).reshape(1, -1)
    products = jac.T @ f @ (math.sqrt(30) * torch.eye(30, dtype=torch.float64))
    cov = normal_matrix_covariance(jac.T @ jac, residuals, autocorrelation=False, ridge=0.0,
                                   input_noise=products)
    inverse = torch.linalg.inv(jac.T @ jac)
    expected = cov.sigma2 * (inverse + inverse @ jac.T @ f @ f.T @ jac @ inverse)
    assert torch.allclose(cov.cov, expected)
    with pytest.raises(ValueError, match="input_noise"):
        normal_matrix_covariance(jac.T @ jac, residuals, input_noise=products[:1])


def test_intervals_with_noisy_inputs_cover_at_nominal_rate_only_with_the_input_noise_term() -> None:
    """Monte Carlo on errors in variables: ``y = J theta + F x_B + eps`` fitted with the observed input
    ``x_B + e`` (``e`` and ``eps`` of one variance). The Gauss-Newton covariance counts ``F e`` as
    information and its 90% intervals cover too rarely; the sandwich with 64 probes covers ~90%."""
    gen = torch.Generator().manual_seed(5)
    n = 60
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    jac = torch.stack([torch.ones_like(t), t], dim=1)
    f = 2.0 * _low_pass(n, 0.1)  # two noisy inputs of one low-pass response
    theta = torch.tensor([0.3, -1.2], dtype=torch.float64)
    drive = torch.sin(6 * t)
    products = jac.T @ f @ torch.randn(n, 64, generator=gen, dtype=torch.float64)
    hits = {"gauss_newton": 0, "sandwich": 0}
    trials = 400
    for _ in range(trials):
        y = jac @ theta + f @ drive + 0.2 * torch.randn(n, generator=gen, dtype=torch.float64)
        observed = drive + 0.2 * torch.randn(n, generator=gen, dtype=torch.float64)
        target = (y - f @ observed).unsqueeze(1)
        est = torch.linalg.lstsq(jac, target).solution.reshape(-1)
        r = (jac @ est - target.reshape(-1)).reshape(1, -1)
        for name, extra in (("gauss_newton", None), ("sandwich", products)):
            cov = normal_matrix_covariance(jac.T @ jac, r, autocorrelation=False, input_noise=extra)
            lo, hi = normal_interval(est, cov.se, 0.9)
            hits[name] += int(lo[1] <= theta[1] <= hi[1])
    assert hits["gauss_newton"] / trials < 0.75
    assert 0.85 <= hits["sandwich"] / trials <= 0.95


def _intervals() -> ParameterIntervals:
    gamma = torch.tensor([1e-3, 2e-3, math.nan], dtype=torch.float64)
    return ParameterIntervals(
        level=0.9,
        k=0.02,
        k_se=1e-3,
        k_interval=(0.018, 0.022),
        gamma=gamma,
        gamma_se=torch.tensor([1e-4, 1e-4, math.nan], dtype=torch.float64),
        gamma_lower=gamma - 2e-4,
        gamma_upper=gamma + 2e-4,
        sigma2=0.01,
        rho=0.1,
        inflation=1.2,
        method="test",
    )


def test_as_results_and_covers() -> None:
    iv = _intervals()
    out = iv.as_results(torch.tensor([5, 6, 7]), torch.tensor([True, True, False]))
    assert out["interval_level"] == 0.9
    assert out["k_interval"] == [0.018, 0.022]
    assert set(out["gamma_interval"]) == {"5", "6"}
    k_ok, g_ok = iv.covers(0.0215, torch.tensor([1.1e-3, 2.5e-3, 0.0]))
    assert k_ok and g_ok.tolist() == [True, False, False]


def test_plot_intervals_writes_png(tmp_path) -> None:
    path = plot_intervals(
        _intervals(),
        torch.tensor([5, 6, 7]),
        torch.tensor([True, True, False]),
        tmp_path / "iv.png",
        truth_gamma=torch.tensor([1e-3, 2e-3, 0.0]),
        truth_k=0.02,
    )
    assert path.exists() and path.stat().st_size > 1000


def test_plot_intervals_stays_readable_for_a_whole_well(tmp_path) -> None:
    """Thousands of cells: a band of fixed width, not one error bar each on a figure metres wide."""
    from PIL import Image

    n = 3000
    gamma = torch.linspace(1e-4, 1e-3, n, dtype=torch.float64)
    iv = ParameterIntervals(
        level=0.9, k=0.02, k_se=1e-3, k_interval=(0.018, 0.022), gamma=gamma,
        gamma_se=torch.full((n,), 5e-5, dtype=torch.float64), gamma_lower=gamma - 1e-4,
        gamma_upper=gamma + 1e-4, sigma2=1.0, rho=0.0, inflation=1.0, method="test",
    )
    path = plot_intervals(iv, torch.arange(n), torch.ones(n, dtype=torch.bool), tmp_path / "iv.png",
                          truth_gamma=gamma)
    width, _ = Image.open(path).size
    assert width <= 14 * 150  # 14 inches at the figure's dpi, whatever the number of cells
