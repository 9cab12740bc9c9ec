"""Random-effects pooling of the feeds: REML hyperparameters, the BLUP and its prediction intervals."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch

from calcium_gnn.inference.random_effects import pool_feeds, reml_feed_variance

Z90 = NormalDist().inv_cdf(0.95)


def _population(n: int, mu: float, tau: float, se: torch.Tensor, seed: int):
    gen = torch.Generator().manual_seed(seed)
    truth = mu + tau * torch.randn(n, generator=gen, dtype=torch.float64)
    estimate = truth + se * torch.randn(n, generator=gen, dtype=torch.float64)
    return truth, estimate


def _with_k(estimate: torch.Tensor, cov_g: torch.Tensor, k: float = 0.02, k_var: float = 1e-8):
    """theta = (k, g) with k uncorrelated to the feeds."""
    n = estimate.numel()
    theta = torch.cat([torch.tensor([k], dtype=torch.float64), estimate])
    cov = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    cov[0, 0] = k_var
    cov[1:, 1:] = cov_g
    return theta, cov


def test_reml_recovers_the_population_mean_and_spread() -> None:
    n, mu, tau = 800, 6e-4, 2e-4
    se = torch.full((n,), 1.5e-4, dtype=torch.float64)
    _, estimate = _population(n, mu, tau, se, seed=0)
    mu_hat, tau2_hat, at_lower = reml_feed_variance(estimate, torch.diag(se**2))
    # sampling sd: about 1.5% for mu, 4% for tau at this size
    assert mu_hat == pytest.approx(mu, rel=0.05)
    assert math.sqrt(tau2_hat) == pytest.approx(tau, rel=0.12)
    assert not at_lower


def test_blup_is_the_textbook_shrinkage_when_the_errors_are_independent() -> None:
    n = 50
    se = torch.linspace(5e-5, 3e-4, n, dtype=torch.float64)
    _, estimate = _population(n, 6e-4, 2e-4, se, seed=1)
    pooled = pool_feeds(*_with_k(estimate, torch.diag(se**2)), feeds=slice(1, 1 + n))
    weight = pooled.tau2 / (pooled.tau2 + se**2)
    expected = pooled.mu + weight * (estimate - pooled.mu)
    assert torch.allclose(pooled.theta[1:], expected, rtol=1e-10, atol=1e-14)
    assert torch.allclose(pooled.shrinkage, 1 - weight, atol=1e-12)
    # the noisiest estimate is pulled hardest toward the mean
    assert float(pooled.shrinkage[-1]) > float(pooled.shrinkage[0])


def test_pooling_lowers_the_error_and_intervals_cover_at_the_nominal_rate() -> None:
    n = 1500
    se = torch.full((n,), 2.5e-4, dtype=torch.float64)
    truth, estimate = _population(n, 6e-4, 2.2e-4, se, seed=2)
    pooled = pool_feeds(*_with_k(estimate, torch.diag(se**2)), feeds=slice(1, 1 + n))
    g = pooled.theta[1:]
    raw_error = float((estimate - truth).abs().median())
    pooled_error = float((g - truth).abs().median())
    assert pooled_error < 0.8 * raw_error
    half_width = Z90 * pooled.cov.diagonal()[1:].sqrt()
    coverage = float(((g - truth).abs() <= half_width).double().mean())
    assert 0.87 < coverage < 0.93


def test_k_is_a_fixed_effect_and_feeds_correlated_with_k_keep_that_uncertainty() -> None:
    n = 30
    se = torch.full((n,), 2e-4, dtype=torch.float64)
    _, estimate = _population(n, 6e-4, 2e-4, se, seed=3)
    theta, cov = _with_k(estimate, torch.diag(se**2), k_var=4e-8)
    cov[0, 1:] = cov[1:, 0] = 0.15 * math.sqrt(4e-8) * se  # correlation 0.15 of k with every feed
    independent = pool_feeds(*_with_k(estimate, torch.diag(se**2), k_var=4e-8), feeds=slice(1, 1 + n))
    pooled = pool_feeds(theta, cov, feeds=slice(1, 1 + n))
    assert float(pooled.theta[0]) == float(theta[0])
    assert float(pooled.cov[0, 0]) == float(cov[0, 0])
    assert torch.allclose(pooled.cov[0, 1:], cov[0, 1:])
    assert torch.linalg.eigvalsh(pooled.cov).min() > -1e-20
    # the shared k-direction cannot be pooled away: it stays in every feed's variance
    assert float(pooled.cov[1, 1]) > float(independent.cov[1, 1])


def test_no_spread_pools_every_feed_to_the_mean() -> None:
    n = 40
    se = torch.full((n,), 2e-4, dtype=torch.float64)
    _, estimate = _population(n, 6e-4, 0.0, se, seed=4)
    pooled = pool_feeds(*_with_k(estimate, torch.diag(se**2)), feeds=slice(1, 1 + n))
    assert pooled.tau2 < 0.05 * 4e-8
    assert float(pooled.theta[1:].std()) < 0.05 * float(estimate.std())
    assert float(pooled.shrinkage.min()) > 0.9


def test_correlated_errors_use_the_full_covariance() -> None:
    """Errors with a Laplacian-like covariance (neighbours anti-correlated): the full-covariance BLUP
    beats pooling with the diagonal alone."""
    n = 300
    gen = torch.Generator().manual_seed(5)
    lap = (
        2 * torch.eye(n, dtype=torch.float64)
        - torch.diag(torch.ones(n - 1), 1)
        - torch.diag(torch.ones(n - 1), -1)
    )
    cov_g = (1.2e-4) ** 2 * lap @ lap.T / 4 + (2e-5) ** 2 * torch.eye(n, dtype=torch.float64)
    truth = 6e-4 + 2e-4 * torch.randn(n, generator=gen, dtype=torch.float64)
    noise = torch.linalg.cholesky(cov_g) @ torch.randn(n, generator=gen, dtype=torch.float64)
    estimate = truth + noise
    full = pool_feeds(*_with_k(estimate, cov_g), feeds=slice(1, 1 + n)).theta[1:]
    diagonal = pool_feeds(*_with_k(estimate, torch.diag(cov_g.diagonal())), feeds=slice(1, 1 + n)).theta[1:]
    assert float((full - truth).pow(2).mean()) < 0.8 * float((diagonal - truth).pow(2).mean())


def test_too_few_feeds_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        reml_feed_variance(torch.tensor([1.0, 2.0], dtype=torch.float64), torch.eye(2, dtype=torch.float64))
