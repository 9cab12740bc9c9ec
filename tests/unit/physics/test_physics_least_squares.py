"""The least-squares family (eqs. 4-20): known answers, active bounds, fast == scipy, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from calcium_gnn.errors import ConfigError
from calcium_gnn.io.graph_schema import validate_graph
from calcium_gnn.physics.edge_weights import edge_weights
from calcium_gnn.physics.least_squares import fit_crlsm, fit_least_squares, solve_system, to_fitted
from calcium_gnn.physics.ls_solvers import objective, projected_gradient, solve_active_set, solve_fast
from calcium_gnn.physics.ls_system import (
    LSSystem,
    assemble_sparse,
    build_system,
    consensus_drive,
    normal_stats,
)
from calcium_gnn.physics.setups import resolve_setup

ROWS, COLS = 4, 5  # interior (setup I) = the 6 cells of the 2 x 3 centre


def euler_graph(k: float, gamma: torch.Tensor, frames: int = 40, dt: float = 1.0, seed: int = 0) -> Data:
    """A 4 x 5 grid culture whose interior cells follow forward Euler of eq. (3) exactly (step dt).

    Edge cells carry smooth random signals (data); interior cells start at random levels and step
    ``x[n+1] = x[n] + dt (k a[n] + gamma)`` with the consensus drive ``a`` of the data (w = ul/mean).
    """
    g = torch.Generator().manual_seed(seed)
    n = ROWS * COLS
    edges, ul = [], []
    for r in range(ROWS):
        for c in range(COLS):
            i = r * COLS + c
            for j in ([i + 1] if c + 1 < COLS else []) + ([i + COLS] if r + 1 < ROWS else []):
                weight = 50.0 + 100.0 * float(torch.rand((), generator=g))
                edges += [(i, j), (j, i)]
                ul += [weight, weight]
    edge_index = torch.tensor(edges).t()
    edge_attr = torch.tensor(ul, dtype=torch.float64)[:, None]
    touches = torch.tensor(
        [r in (0, ROWS - 1) or c in (0, COLS - 1) for r in range(ROWS) for c in range(COLS)]
    )
    t = torch.arange(frames, dtype=torch.float64) * dt
    phase = 6.28 * torch.rand(n, 1, generator=g, dtype=torch.float64)
    x = (
        0.5
        + 0.3 * torch.sin(0.2 * t + phase)
        + 0.05 * torch.rand(n, frames, generator=g, dtype=torch.float64)
    )
    w, _ = edge_weights(edge_attr)
    interior = (~touches).nonzero().reshape(-1)
    for m in range(frames - 1):
        drive = consensus_drive(x[:, m : m + 1], edge_index, w, interior)[:, 0]
        x[interior, m + 1] = x[interior, m] + dt * (k * drive + gamma[interior])
    pos = torch.tensor([[10.0 + 20 * c, 10.0 + 20 * r] for r in range(ROWS) for c in range(COLS)])
    data = Data(
        x=x,
        t=t,
        pos=pos,
        edge_index=edge_index,
        edge_attr=edge_attr,
        u=edge_attr[:, 0].sqrt(),
        l=edge_attr[:, 0].sqrt(),
        area=torch.full((n,), 400.0),
        touches_edge=touches,
        cell_id=torch.arange(1, n + 1),
        dt=dt,
        pixel_size=float("nan"),
        unit="px",
    )
    return validate_graph(data)


K_TRUE = 0.05
GAMMA_TRUE = torch.linspace(1e-3, 6e-3, ROWS * COLS, dtype=torch.float64)
EXACT = {"interpolation_factor": 1, "train_fraction": 1.0}


def _theta(fitted, setup):
    return np.concatenate([[fitted.k], fitted.gamma[setup.modelled].numpy()])


def test_lsm_recovers_exact_euler_parameters():
    data = euler_graph(K_TRUE, GAMMA_TRUE)
    setup = resolve_setup(data)
    assert setup.num_modelled == 6
    fitted = fit_least_squares(data, setup, solver="lsm", **EXACT)
    assert fitted.k == pytest.approx(K_TRUE, rel=1e-9)
    torch.testing.assert_close(
        fitted.gamma[setup.modelled], GAMMA_TRUE[setup.modelled], rtol=1e-8, atol=1e-12
    )
    assert bool((fitted.gamma[~setup.modelled] == 0).all())
    assert fitted.gamma_mode == "per_cell" and fitted.edge_weight_scale > 0


def test_shared_and_none_gamma_modes_recover_their_truth():
    data = euler_graph(K_TRUE, torch.full((ROWS * COLS,), 2e-3, dtype=torch.float64))
    shared = resolve_setup(data, gamma_mode="shared")
    fitted = fit_least_squares(data, shared, solver="lsm", **EXACT)
    assert fitted.k == pytest.approx(K_TRUE, rel=1e-9)
    torch.testing.assert_close(fitted.gamma[shared.modelled], torch.full((6,), 2e-3, dtype=torch.float64))
    data0 = euler_graph(K_TRUE, torch.zeros(ROWS * COLS, dtype=torch.float64))
    none = resolve_setup(data0, gamma_mode="none")
    fitted0 = fit_least_squares(data0, none, solver="lsm", **EXACT)
    assert fitted0.k == pytest.approx(K_TRUE, rel=1e-9) and bool((fitted0.gamma == 0).all())


def test_rlsm_matches_dense_tikhonov_normal_equations():
    data = euler_graph(K_TRUE, GAMMA_TRUE)
    setup = resolve_setup(data)
    system = build_system(data, setup, interpolation_factor=3, train_fraction=0.8)
    matrix, rhs = assemble_sparse(system)
    A = matrix.toarray()
    lam = 0.5
    expected = np.linalg.solve(A.T @ A + lam * np.eye(A.shape[1]), A.T @ rhs)  # eq. (18)
    sol = solve_system(system, solver="rlsm", lam=lam)
    got = np.concatenate([[float(sol.k)], sol.gamma.numpy()])
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    # objective 1/2 ||A theta - b||^2 + lam/2 ||theta||^2
    want = 0.5 * np.sum((A @ expected - rhs) ** 2) + 0.5 * lam * expected @ expected
    assert float(sol.objective) == pytest.approx(want, rel=1e-9)
    assert lam > 0 and not np.allclose(got[0], K_TRUE, rtol=1e-6)  # the penalty really shrinks theta


def test_lsm_rank_deficient_gives_minimum_norm_like_pinv():
    # drive constant in time for each cell: the k and gamma columns are collinear (eq. 17's pseudo-inverse)
    a = torch.tensor([[2.0, 2.0, 2.0], [-1.0, -1.0, -1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 1.2, 0.8], [0.3, 0.1, 0.2]], dtype=torch.float64)
    system = LSSystem(a, b, 0.5, torch.arange(2), 2, "per_cell", torch.arange(2), 2, 1.0)
    sol = solve_fast(normal_stats(system), 0.0)
    A = assemble_sparse(system)[0].toarray()
    expected = np.linalg.pinv(A) @ b.reshape(-1).numpy()
    np.testing.assert_allclose(np.concatenate([[float(sol.k)], sol.gamma.numpy()]), expected, rtol=1e-9)


def test_crlsm_active_bounds_exact_and_kkt():
    gamma = GAMMA_TRUE.clone()
    gamma[6] = -2e-3  # below the lower gamma bound -3e-5 (node 6 is interior)
    data = euler_graph(K_TRUE, gamma)
    setup = resolve_setup(data)
    system = build_system(data, setup, **EXACT)
    stats = normal_stats(system)
    sol = solve_system(system, solver="crlsm", k_bounds=(1e-3, 0.03), gamma_bounds=(-3e-5, 0.1))
    assert float(sol.k) == 0.03 and sol.k_active == 1  # the truth 0.05 is outside: k sits on its bound
    where = int((setup.modelled_index == 6).nonzero())
    assert float(sol.gamma[where]) == -3e-5 and int(sol.gamma_active[where]) == -1
    assert bool((sol.gamma >= -3e-5).all() and (sol.gamma <= 0.1).all())
    kkt = projected_gradient(stats, sol.k, sol.gamma, 1e-3, (1e-3, 0.03), (-3e-5, 0.1))
    assert float(kkt.abs().max()) < 1e-12 * float(stats.C.abs() + stats.D.abs().sum())
    ref = solve_system(system, solver="crlsm", backend="scipy", k_bounds=(1e-3, 0.03))
    np.testing.assert_allclose(
        sol.gamma.numpy(), ref.gamma.numpy(), rtol=1e-8, atol=1e-8 * float(sol.gamma.abs().max())
    )


@pytest.mark.parametrize("solver", ["lsm", "rlsm", "crlsm"])
@pytest.mark.parametrize("gamma_mode", ["none", "shared", "per_cell"])
def test_fast_equals_scipy_reference(solver, gamma_mode):
    data = euler_graph(0.02, GAMMA_TRUE, frames=30, seed=3)
    data.x = data.x + 0.01 * torch.randn(
        data.x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    setup = resolve_setup(data, gamma_mode=gamma_mode)
    fast = fit_least_squares(data, setup, solver=solver, backend="fast", interpolation_factor=4)
    ref = fit_least_squares(data, setup, solver=solver, backend="scipy", interpolation_factor=4)
    theta_f, theta_s = _theta(fast, setup), _theta(ref, setup)
    assert np.linalg.norm(theta_f - theta_s) <= 1e-8 * np.linalg.norm(theta_s)


def test_fast_solver_against_brute_force_random_boxes():
    """Random arrow problems with tight boxes: the fast optimum beats every feasible perturbation."""
    rng = np.random.default_rng(7)
    for trial in range(5):
        g, steps = 12, 9
        a = torch.from_numpy(rng.normal(0, 1, (g, steps)))
        b = torch.from_numpy(rng.normal(0, 1, (g, steps)))
        system = LSSystem(a, b, 0.3, torch.arange(g), g, "per_cell", torch.arange(g), g, 1.0)
        stats = normal_stats(system)
        kb, gb = (-0.2 + 0.1 * trial, 0.4), (-0.5, 0.3)
        sol = solve_fast(stats, 1e-2, kb, gb)
        kkt = projected_gradient(stats, sol.k, sol.gamma, 1e-2, kb, gb)
        assert float(kkt.abs().max()) < 1e-12
        for _ in range(20):
            k = (sol.k + rng.normal(0, 0.05)).clamp(*kb)
            gam = (sol.gamma + torch.from_numpy(rng.normal(0, 0.05, g))).clamp(*gb)
            assert float(objective(stats, k, gam, 1e-2)) >= float(sol.objective) - 1e-12


def test_differentiable_crlsm_gradient_matches_finite_differences():
    data = euler_graph(K_TRUE, GAMMA_TRUE, frames=12)
    setup = resolve_setup(data)
    x0 = data.x.clone()

    def fit(x):
        system = build_system(data, setup, x=x, interpolation_factor=2, train_fraction=1.0)
        sol = solve_system(system, solver="crlsm", k_bounds=(1e-3, 0.1), gamma_bounds=(-3e-5, 4e-3))
        return torch.cat([sol.k.reshape(1), sol.gamma])

    x = x0.clone().requires_grad_(True)
    out = fit(x)
    assert out.requires_grad
    assert torch.autograd.gradcheck(fit, (x,), eps=1e-7, atol=1e-6, rtol=1e-4)


def test_fit_crlsm_defaults_to_setup_one_and_bad_options():
    data = euler_graph(K_TRUE, GAMMA_TRUE)
    fitted = fit_crlsm(data, **EXACT)
    assert 1e-3 <= fitted.k <= 0.1 and fitted.gamma_mode == "per_cell"
    assert int((fitted.gamma != 0).sum()) == 6
    for key, kwargs in [
        ("model.solver", {"solver": "ridge"}),
        ("model.backend", {"backend": "gpu"}),
        ("model.lam", {"solver": "rlsm", "lam": -1.0}),
        ("model.k_bounds", {"k_bounds": (0.1, 0.01)}),
        ("model.edge_weight_scale", {"edge_weight_scale": -2.0}),
        ("model.interpolation_factor", {"interpolation_factor": 0}),
    ]:
        with pytest.raises(ConfigError) as info:
            fit_crlsm(data, **kwargs)
        assert info.value.culprit == key


@pytest.mark.parametrize(
    ("solver", "options"),
    [
        ("lsm", {}),
        ("rlsm", {"lam": 0.5}),
        ("crlsm", {}),
        ("crlsm", {"k_bounds": (1e-3, 0.03), "gamma_bounds": (-3e-5, 0.1)}),  # k and a gamma on bounds
    ],
)
@pytest.mark.parametrize("backend", ["fast", "scipy"])
def test_solve_on_the_device_gives_the_cpu_answer(device, solver, options, backend):
    """The system is built and solved where the graph lives; the answer is the CPU one to 1e-10."""
    gamma = GAMMA_TRUE.clone()
    gamma[6] = -2e-3  # below the lower gamma bound (node 6 is interior)
    data = euler_graph(K_TRUE, gamma, frames=30, seed=3)
    setup = resolve_setup(data)
    kwargs = {"solver": solver, "backend": backend, **options}
    on_cpu = solve_system(build_system(data, setup, interpolation_factor=4), **kwargs)
    system = build_system(data.clone().to(device), setup, interpolation_factor=4)  # a host setup
    for tensor in (system.drive, system.increment, system.gamma_group, system.modelled_index):
        assert tensor.device.type == device.type
    solution = solve_system(system, **kwargs)
    if "k_bounds" in options:  # the case meant to put k and gamma_6 on their bounds does
        assert solution.k_active == 1 and int(solution.gamma_active.min()) == -1
    for tensor in (solution.k, solution.gamma, solution.gamma_active, solution.objective):
        assert tensor.device.type == device.type
    assert float(solution.k) == pytest.approx(float(on_cpu.k), rel=1e-10)
    atol = 1e-10 * float(on_cpu.gamma.abs().max())
    torch.testing.assert_close(solution.gamma.cpu(), on_cpu.gamma, rtol=1e-10, atol=atol)
    assert solution.k_active == on_cpu.k_active
    assert torch.equal(solution.gamma_active.cpu(), on_cpu.gamma_active)
    fitted = to_fitted(system, solution)  # the boundary: host values
    assert fitted.gamma.device.type == "cpu"
    torch.testing.assert_close(fitted.gamma, to_fitted(system, on_cpu).gamma, rtol=1e-10, atol=1e-14)


def test_active_set_solve_and_kkt_on_the_device(device):
    gamma = GAMMA_TRUE.clone()
    gamma[6] = -2e-3
    data = euler_graph(K_TRUE, gamma).to(device)
    stats = normal_stats(build_system(data, resolve_setup(data), **EXACT))
    bounds = ((1e-3, 0.03), (-3e-5, 0.1))
    sol = solve_fast(stats, 1e-3, *bounds)
    # an active set handed over from the host (e.g. from scipy) works with statistics on the device
    k, gam = solve_active_set(stats, 1e-3, *bounds, sol.k_active, sol.gamma_active.cpu())
    assert k.device.type == gam.device.type == device.type
    assert float(k) == float(sol.k) and torch.equal(gam, sol.gamma)
    kkt = projected_gradient(stats, k, gam, 1e-3, *bounds)
    assert kkt.device.type == device.type
    assert float(kkt.abs().max()) < 1e-12 * float(stats.C.abs() + stats.D.abs().sum())
