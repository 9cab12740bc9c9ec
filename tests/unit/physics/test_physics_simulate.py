"""Forward simulation of the consensus problem: exact solutions, convergence order, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from calcium_gnn.errors import ConfigError, GraphError
from calcium_gnn.nn.consensus import ConsensusConv
from calcium_gnn.physics.simulate import integrate, simulate_consensus
from calcium_gnn.physics.steps import euler_step, rk4_step

# Two cells: 0 modelled, 1 a border cell with the linear input x_1(t) = ALPHA + BETA t (exactly what
# linear interpolation between frames reproduces). With |N_0| = 1 and w_01 = W:
#   dy/dt = c (ALPHA + BETA t - y) + GAMMA,  c = K W
#   y(t) = ALPHA + BETA t + (GAMMA - BETA) / c + (y0 - ALPHA - (GAMMA - BETA) / c) exp(-c t)
ALPHA, BETA, GAMMA, K, W, Y0 = 0.4, 0.003, 0.002, 0.02, 2.0, 1.5
EDGES = torch.tensor([[0, 1], [1, 0]])


def _two_cells(n_frames: int = 11, dt: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.arange(n_frames, dtype=torch.float64) * dt
    x = torch.stack([torch.full_like(t, 9.0), ALPHA + BETA * t])  # row 0 is replaced by y0
    return x, t


def _exact(t: torch.Tensor) -> torch.Tensor:
    c = K * W
    offset = (GAMMA - BETA) / c
    return ALPHA + BETA * t + offset + (Y0 - ALPHA - offset) * torch.exp(-c * t)


def _simulate_two(substeps: int, method: str) -> torch.Tensor:
    x, t = _two_cells()
    return simulate_consensus(
        x, t, EDGES, torch.full((2,), W, dtype=torch.float64), torch.tensor([True, False]), K,
        torch.tensor([GAMMA, 0.0], dtype=torch.float64), y0=torch.tensor([Y0, 0.0], dtype=torch.float64),
        substeps=substeps, method=method,
    )


def test_rk4_matches_the_exact_two_cell_solution():
    x, t = _two_cells()
    y = _simulate_two(10, "rk4")
    # RK4 global error ~ (c h)^4 / 120 * |y0 - y_p| * t c ~ 2e-8 here
    assert torch.allclose(y[0], _exact(t), atol=5e-8, rtol=0)
    assert torch.equal(y[1], x[1])  # the border cell is its data
    assert y[0, 0] == Y0


@pytest.mark.parametrize(("method", "order"), [("rk4", 4), ("euler", 1)])
def test_convergence_order(method, order):
    _, t = _two_cells()
    errors = [float((_simulate_two(s, method)[0] - _exact(t)).abs().max()) for s in (1, 2, 4, 8)]
    rates = [math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]
    assert all(abs(r - order) < 0.25 for r in rates), (errors, rates)


def test_euler_one_substep_is_the_paper_recursion_eq6():
    # y_t = (1 - dt c) y_{t-1} + dt c x_{t-1} + dt gamma  (eq. 6 with |N| = 1, K = k w)
    x, t = _two_cells()
    y = _simulate_two(1, "euler")
    dt, c = 10.0, K * W
    expected = [Y0]
    for n in range(1, len(t)):
        expected.append((1 - dt * c) * expected[-1] + dt * c * float(x[1, n - 1]) + dt * GAMMA)
    assert torch.allclose(y[0], torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=0)


def _random_graph(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pairs = [(i, i + 1) for i in range(n - 1)] + [(0, n - 1), (1, n - 2), (0, 3)]
    src, dst = [a for a, _ in pairs], [b for _, b in pairs]
    ei = torch.tensor([src + dst, dst + src])
    w_half = torch.rand(len(pairs), generator=g, dtype=torch.float64) + 0.5
    return ei, torch.cat([w_half, w_half])


def _stepwise_reference(x, t, ei, w, modelled, k, gamma, substeps, method):
    """Naive reference: one ConsensusConv call per stage, x linearly interpolated at each stage time."""
    conv = ConsensusConv(x.shape[0])
    mask = modelled.reshape(-1, 1)
    y = x[:, :1].clone()
    out = [y]
    step = {"rk4": rk4_step, "euler": euler_step}[method]
    for n in range(x.shape[1] - 1):
        delta = t[n + 1] - t[n]

        def f(state, tau, n=n, delta=delta):
            x_now = x[:, n : n + 1] + (tau / delta) * (x[:, n + 1 : n + 2] - x[:, n : n + 1])
            d = conv(state, x_now, ei, w, modelled, k=torch.tensor(k, dtype=x.dtype), gamma=gamma)
            return torch.where(mask, d, torch.zeros_like(d))

        h = delta / substeps
        for s in range(substeps):
            y = step(f, y, s * h, h)
        out.append(y)
    return torch.where(mask, torch.cat(out, dim=1), x)


@pytest.mark.parametrize("method", ["rk4", "euler"])
def test_matches_a_naive_stepwise_integration_on_uneven_frames(method):
    ei, w = _random_graph(7, seed=0)
    g = torch.Generator().manual_seed(1)
    t = torch.cumsum(torch.tensor([0.0, 10, 10, 7, 10, 12, 10, 7], dtype=torch.float64), 0)
    x = torch.rand(7, t.numel(), generator=g, dtype=torch.float64)
    modelled = torch.tensor([True, True, False, True, True, False, True])
    gamma = torch.rand(7, generator=g, dtype=torch.float64) * 0.01
    got = simulate_consensus(x, t, ei, w, modelled, 0.05, gamma, substeps=3, method=method)
    ref = _stepwise_reference(x, t, ei, w, modelled, 0.05, gamma, 3, method)
    assert torch.allclose(got, ref, atol=1e-12, rtol=0)


def test_rounded_frame_times_share_one_propagator(monkeypatch):
    from calcium_gnn.physics import simulate as simulate_module

    calls = []
    original = simulate_module.interval_propagator

    def spy(*args, **kwargs):
        calls.append(float(args[1]))
        return original(*args, **kwargs)

    monkeypatch.setattr(simulate_module, "interval_propagator", spy)
    ei, w = _random_graph(6, seed=6)
    t = torch.arange(30, dtype=torch.float32) * 0.1  # float32 rounding: intervals differ in the last bits
    assert torch.unique(t[1:] - t[:-1]).numel() > 1
    x = torch.rand(6, 30, generator=torch.Generator().manual_seed(7))
    modelled = torch.tensor([True, True, False, True, True, False])
    got = simulate_consensus(x, t, ei, w.float(), modelled, 0.5, torch.zeros(6), substeps=4)
    assert len(calls) == 1 and calls[0] == pytest.approx(0.1, rel=1e-5)
    zero = torch.zeros(6, dtype=torch.float64)
    ref = _stepwise_reference(x.double(), t.double(), ei, w, modelled, 0.5, zero, 4, "rk4")
    assert torch.allclose(got.double(), ref, atol=1e-5, rtol=0)


def test_gradients_wrt_k_gamma_y0():
    ei, w = _random_graph(5, seed=2)
    t = torch.arange(4, dtype=torch.float64) * 10
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    modelled = torch.tensor([True, True, False, True, False])
    k = torch.tensor(0.03, dtype=torch.float64, requires_grad=True)
    gamma = torch.full((5,), 0.01, dtype=torch.float64, requires_grad=True)
    y0 = torch.rand(5, dtype=torch.float64, requires_grad=True)

    def run(k, gamma, y0):
        return simulate_consensus(x, t, ei, w, modelled, k, gamma, y0=y0, substeps=2)

    assert torch.autograd.gradcheck(run, (k, gamma, y0))
    run(k, gamma, y0).sum().backward()
    assert gamma.grad[~modelled].abs().max() == 0  # cells outside G do not use gamma
    assert k.grad.abs() > 0


def test_float32_and_rows_outside_the_group():
    ei, w = _random_graph(6, seed=4)
    x = torch.rand(6, 5) + 1.0
    t = torch.arange(5, dtype=torch.float32) * 10
    modelled = torch.tensor([False, True, True, False, True, False])
    y = simulate_consensus(x, t, ei, w.float(), modelled, 0.02, torch.zeros(6))
    assert y.dtype == torch.float32 and y.shape == (6, 5)
    assert torch.equal(y[~modelled], x[~modelled])
    assert torch.equal(y[modelled, 0], x[modelled, 0])


def test_constant_consensus_stays_put():
    # all cells at the same level and no feed: the consensus is an equilibrium
    ei, w = _random_graph(6, seed=5)
    x = torch.full((6, 8), 0.7, dtype=torch.float64)
    t = torch.arange(8, dtype=torch.float64)
    modelled = torch.tensor([True] * 4 + [False] * 2)
    y = simulate_consensus(x, t, ei, w, modelled, 0.1, torch.zeros(6, dtype=torch.float64))
    assert torch.allclose(y, x, atol=1e-14, rtol=0)


def test_bad_inputs_raise_one_line_errors():
    x, t = _two_cells()
    w = torch.ones(2, dtype=torch.float64)
    m = torch.tensor([True, False])
    g = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(ConfigError, match="simulate.method"):
        simulate_consensus(x, t, EDGES, w, m, K, g, method="midpoint")
    with pytest.raises(ConfigError, match="simulate.substeps"):
        simulate_consensus(x, t, EDGES, w, m, K, g, substeps=0)
    with pytest.raises(GraphError, match="^t:"):
        simulate_consensus(x, t[:-1], EDGES, w, m, K, g)
    with pytest.raises(GraphError, match="increasing"):
        simulate_consensus(x, t.flip(0), EDGES, w, m, K, g)
    with pytest.raises(ConfigError, match="simulate.dt_rtol"):
        simulate_consensus(x, t, EDGES, w, m, K, g, dt_rtol=0.0)
    with pytest.raises(ConfigError, match="^modelled:"):
        simulate_consensus(x, t, EDGES, w, torch.tensor([1, 0]), K, g)


def test_integrate_runs_where_the_traces_are_and_gives_the_exact_solution(device) -> None:
    """The one simulator on every device: graph inputs given on the CPU are moved to the traces'."""
    x, t = _two_cells()
    sim = integrate(
        None, x.to(device), t, EDGES, torch.full((2,), W, dtype=torch.float64), torch.tensor([True, False]),
        K, torch.tensor([GAMMA, 0.0], dtype=torch.float64), y0=torch.tensor([Y0, 0.0], dtype=torch.float64),
        substeps=20,
    )
    assert sim.device.type == device.type
    assert torch.allclose(sim[0].cpu(), _exact(t), atol=1e-7)


def test_stepwise_and_exact_propagator_paths_agree_on_every_device(device) -> None:
    """A right-hand side that is not flagged affine runs step by step: the same scheme, the same numbers."""

    class _Stepwise(ConsensusConv):
        affine_in_state = False

    x, t = _two_cells()
    args = (x.to(device), t, EDGES, torch.full((2,), W, dtype=torch.float64), torch.tensor([True, False]), K,
            torch.tensor([GAMMA, 0.0], dtype=torch.float64))
    fast = integrate(ConsensusConv(2), *args, substeps=3)
    slow = integrate(_Stepwise(2), *args, substeps=3)
    assert torch.allclose(fast, slow, atol=1e-12)


def test_consensus_operator_probed_in_blocks_is_the_same_matrix(monkeypatch) -> None:
    """A_1 probed a few columns at a time (bounded memory at thousands of cells) equals one call."""
    from calcium_gnn.physics import simulate

    g = 6
    src = torch.tensor([0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 0, 6])
    dst = torch.tensor([1, 0, 2, 1, 3, 2, 4, 3, 5, 4, 6, 5, 6, 0])
    w = torch.linspace(0.5, 2.0, src.numel(), dtype=torch.float64)
    modelled = torch.tensor([True] * g + [False])
    edges = torch.stack([src, dst])
    whole = simulate.consensus_operator(ConsensusConv(g + 1), edges, w, modelled, torch.float64)
    monkeypatch.setattr(simulate, "PROBE_BUDGET", 2 * src.numel())  # two columns per call
    blocks = simulate.consensus_operator(ConsensusConv(g + 1), edges, w, modelled, torch.float64)
    assert whole.shape == (g, g) and torch.equal(whole, blocks)


def test_segment_starts_by_hand() -> None:
    from calcium_gnn.physics.simulate import segment_starts

    assert segment_starts(11, 1) == [0]
    assert segment_starts(11, 2) == [0, 5]
    # L = ceil(10 / 3) = 4: windows [0, 4], [4, 8] and the last one ending at frame 10: [6, 10]
    assert segment_starts(11, 3) == [0, 4, 6]


def test_windows_started_on_the_trajectory_are_the_trajectory() -> None:
    """Multiple shooting from the single simulation's own states reproduces it, window by window
    (the stepwise path: a learned coupling whose correction is zero)."""
    from calcium_gnn.nn.coupling import CouplingConv, normalised_edge_features
    from calcium_gnn.physics.simulate import integrate_segments, segment_starts

    x, t = _two_cells(n_frames=21)
    w = torch.full((2,), W, dtype=torch.float64)
    modelled = torch.tensor([True, False])
    gamma = torch.tensor([GAMMA, 0.0], dtype=torch.float64)
    conv = CouplingConv(2, normalised_edge_features(torch.ones(2), torch.ones(2))).double()
    single = integrate(conv, x, t, EDGES, w, modelled, K, gamma, y0=torch.tensor([Y0, 0.0],
                       dtype=torch.float64), substeps=2)
    starts = segment_starts(21, 3)
    windows = integrate_segments(conv, x, t, EDGES, w, modelled, K, gamma, starts, single[:, starts],
                                 substeps=2)
    length = windows.shape[2] - 1
    for b, s in enumerate(starts):
        assert torch.allclose(windows[:, b], single[:, s : s + length + 1], atol=1e-12)


def test_multiple_shooting_refuses_unequal_frame_intervals() -> None:
    from calcium_gnn.physics.simulate import integrate_segments

    x, t = _two_cells()
    t = t.clone()
    t[5:] += 3.0
    w = torch.full((2,), W, dtype=torch.float64)
    with pytest.raises(ConfigError, match="equal frame intervals"):
        integrate_segments(ConsensusConv(2).double(), x, t, EDGES, w, torch.tensor([True, False]), K,
                           torch.zeros(2, dtype=torch.float64), [0, 5], x[:, [0, 5]])


def _learned_ring(n_cells: int = 12, n_frames: int = 31) -> tuple:
    """A ring of ``n_cells`` (every other one modelled) with a learned coupling whose correction is not
    zero, and smooth traces."""
    from calcium_gnn.nn.coupling import CouplingConv, normalised_edge_features

    torch.manual_seed(0)
    left = torch.arange(n_cells)
    right = (left + 1) % n_cells
    edges = torch.cat([torch.stack([left, right]), torch.stack([right, left])], dim=1)
    w = torch.rand(edges.shape[1], dtype=torch.float64) + 0.5
    conv = CouplingConv(n_cells, normalised_edge_features(torch.rand(edges.shape[1]) + 1,
                                                          torch.rand(edges.shape[1]) + 1)).double()
    with torch.no_grad():
        for p in conv.phi.parameters():
            p.normal_(0.0, 0.3)
    t = torch.arange(n_frames, dtype=torch.float64) * 2.0
    x = torch.sin(t / 9.0 + torch.arange(n_cells, dtype=torch.float64).reshape(-1, 1))
    modelled = torch.arange(n_cells) % 2 == 0
    gamma = torch.full((n_cells,), 0.01, dtype=torch.float64, requires_grad=True)
    return conv, x, t, edges, w, modelled, gamma


def test_recomputed_blocks_give_the_same_values_and_gradients_for_less_kept_memory() -> None:
    """``autograd_budget_mb``: blocks of frame intervals recomputed during the backward pass give the
    simulation and gradients of keeping everything, while autograd keeps a fraction of the memory."""
    from calcium_gnn.physics.simulate import SavedBytes, integrate_segments, segment_starts

    conv, x, t, edges, w, modelled, gamma = _learned_ring()
    starts = segment_starts(x.shape[1], 3)
    results = {}
    for budget in (None, 1.0):  # each frame interval keeps about 0.3 MB: blocks of three
        conv.zero_grad()
        gamma.grad = None
        y_starts = x[:, starts].clone().requires_grad_(True)
        kept = SavedBytes()
        with torch.autograd.graph.saved_tensors_hooks(kept.pack, lambda saved: saved):
            sim = integrate_segments(conv, x, t, edges, w, modelled, 0.05, gamma, starts, y_starts,
                                     substeps=2, autograd_budget_mb=budget)
        sim.pow(2).sum().backward()
        grads = [p.grad.clone() for p in conv.parameters() if p.grad is not None]
        results[budget] = (sim.detach(), grads, gamma.grad.clone(), y_starts.grad.clone(), kept.bytes)
    (sim_all, grads_all, g_all, y_all, kept_all), (sim_blk, grads_blk, g_blk, y_blk, kept_blk) = (
        results[None], results[1.0])
    assert torch.allclose(sim_blk, sim_all, atol=1e-12)
    assert len(grads_blk) == len(grads_all) > 0
    for a, b in zip(grads_all, grads_blk, strict=True):
        assert torch.allclose(a, b, atol=1e-10)
    assert torch.allclose(g_blk, g_all, atol=1e-10) and torch.allclose(y_blk, y_all, atol=1e-10)
    assert kept_blk < 0.25 * kept_all


def test_recomputed_blocks_fit_the_budget() -> None:
    from calcium_gnn.physics.simulate import checkpoint_block

    assert checkpoint_block(2**20, 100, 200.0) == 100  # 100 MB kept: under the budget, one block
    assert checkpoint_block(2**20, 100, 10.0) == 10
    assert checkpoint_block(2**30, 100, 10.0) == 1  # one interval over the budget: blocks of one
    with pytest.raises(ConfigError, match="autograd_budget_mb"):
        checkpoint_block(2**20, 100, 0.0)
