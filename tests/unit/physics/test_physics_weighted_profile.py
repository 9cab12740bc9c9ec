"""The degree-weighted profile, mode by mode (calcium_gnn.physics.weighted_profile)."""

from __future__ import annotations

import pytest
import torch

from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.models.neural_ode import OutputErrorODE
from calcium_gnn.physics.border_noise import noise_energy_projected
from calcium_gnn.physics.setups import resolve_setup
from calcium_gnn.physics.variable_projection import ProjectionSettings, profile_solve
from calcium_gnn.physics.weighted_profile import ModalWeightedProfile, weighted_profile_unavailable


@pytest.fixture(scope="module")
def data():
    culture = make_culture(seed=3, n_cells=40, size=220, n_frames=121, render=False)
    return truth_graph(culture, noise=0.03, seed=0)


def _problem(data, **kwargs):
    model = OutputErrorODE(data=data, setup=resolve_setup(data), **kwargs)
    model.initialise()
    return model.problem


@pytest.mark.parametrize("law", ["linear", "leak_stimulus"])
def test_the_modal_rss_is_the_weighted_profile_fit(data, law) -> None:
    """Mode by mode, RSS_w(k) equals the weighted profile fit of the linear parameters (conjugate
    gradients on the full normal equations) to rounding, at k far from the optimum too."""
    kwargs = {"stimulus_time": float(data.t[20])} if "stimulus" in law else {}
    problem = _problem(data, law=law, **kwargs)
    profile = ModalWeightedProfile(problem, n_probes=1)
    for k in (0.005, 0.02, 0.06):
        theta = problem.theta().clone()
        theta[0] = k
        reference = profile_solve(problem, theta, ProjectionSettings(), problem.degrees(), box=False)
        rss, _ = profile.evaluate(k)
        assert rss == pytest.approx(reference.loss * problem.n_residuals, rel=1e-9)


def test_the_modal_noise_energy_is_the_expected_projected_noise(data) -> None:
    """The per-mode estimate of E||(I - Pi_w)(F_k z_B - z_G)||_D^2 agrees with Hutchinson on the full
    problem (probes on every cell, projections by conjugate gradients), within their sampling error."""
    problem = _problem(data)
    profile = ModalWeightedProfile(problem, n_probes=400, seed=1)
    theta = problem.theta().clone()
    theta[0] = 0.03
    solution = profile_solve(problem, theta, ProjectionSettings(), problem.degrees(), box=False)
    gen = torch.Generator().manual_seed(2)
    probes = [torch.randn(tuple(problem.drive_train.shape), generator=gen, dtype=torch.float64)
              for _ in range(200)]
    reference = noise_energy_projected(problem, solution, probes, ProjectionSettings())
    _, energy = profile.evaluate(0.03)
    assert energy == pytest.approx(reference, rel=0.01)
    # without probes: the observed traces' share alone, tr(D) (T - n_b), exact and below the total
    interior = float(problem.degrees().sum()) * (problem.x_train.shape[1] - 2)
    assert ModalWeightedProfile(problem, n_probes=0).evaluate(0.03)[1] == pytest.approx(interior, rel=1e-12)
    assert energy > interior


def test_what_does_not_separate_says_why(data) -> None:
    setup = resolve_setup(data, gamma_mode="shared")
    model = OutputErrorODE(data=data, setup=setup)
    assert "shared gamma" in weighted_profile_unavailable(model.problem)
    fixed_start = _problem(data, fit_initial_state=False)
    assert "fit_initial_state" in weighted_profile_unavailable(fixed_start)
    dense = _problem(data, jacobian="dense")
    assert "jacobian=dense" in weighted_profile_unavailable(dense)
    with pytest.raises(ValueError, match="does not separate"):
        ModalWeightedProfile(model.problem)


def test_a_bootstrap_replicate_changes_the_rss_and_reuses_the_noise_energy(data) -> None:
    """The noise energy depends on k alone (it is kept per k for the bootstrap's replicates); the RSS is
    the replicate's own. A profile that sees the replicate first gives the same two numbers."""
    problem = _problem(data)
    profile = ModalWeightedProfile(problem, n_probes=4, seed=3)
    rss, energy = profile.evaluate(0.02)
    target, drive = profile.replicate(profile.fitted(0.02), 0.05, torch.Generator().manual_seed(4))
    rss_replicate, energy_replicate = profile.evaluate(0.02, target, drive)
    assert rss_replicate != pytest.approx(rss, rel=1e-3)
    assert energy_replicate == energy
    first = ModalWeightedProfile(problem, n_probes=4, seed=3)
    assert first.evaluate(0.02, target, drive) == pytest.approx((rss_replicate, energy), rel=1e-12)
    assert first.evaluate(0.03)[1] != pytest.approx(energy, rel=1e-6)  # another k: its own energy
