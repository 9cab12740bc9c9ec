"""Forward simulation of the consensus problem with given (fitted) parameters (paper eqs. 1-3).

The modelled cells ``i in G`` follow

.. math::
    \\frac{dy_i}{dt} = \\frac{k}{|N_i|} \\sum_{j \\in N(i)} w_{ij} \\, (z_j(t) - y_i(t)) + \\gamma_i,
    \\qquad z_j(t) = \\begin{cases} y_j(t) & j \\in G \\\\ x_j(t) & j \\notin G \\end{cases}

where every cell outside G (border cells, and any other cell) follows its observed trace ``x_j``,
taken between frames by linear interpolation:
``x_j(t_n + theta (t_{n+1} - t_n)) = (1 - theta) x_{j,n} + theta x_{j,n+1}``, ``0 <= theta <= 1``.

Each frame interval ``[t_n, t_{n+1}]`` is split into ``substeps`` equal steps of
``h = (t_{n+1} - t_n) / substeps``, integrated with the classical fourth-order Runge-Kutta scheme
(``method="rk4"``, global error O(h^4)) or forward Euler (``method="euler"``, O(h); with
``substeps=1`` this is the paper's discretisation, eq. 5, run as a simulation instead of a one-step
predictor). Modelled cells start from ``y0`` (default: their observed value at the first frame); the
output is sampled at the frame times, and rows of cells outside G are the observed data.

How it is computed (exactly the scheme above, to rounding, but without a Python loop over sub-steps).
The right-hand side is affine in the state of G: with ``y`` the (G,) modelled states,

.. math::
    f(y, t) = k A_1 y + b(t), \\qquad b(t) = f(0, t),

where ``A_1`` (G, G) is the consensus operator at ``k = 1`` and ``b(t)`` holds the border drive and
``gamma``. Both come from :class:`calcium_gnn.nn.consensus.ConsensusConv`, the single definition of
the right-hand side: ``A_1`` from one call on the G unit vectors (``x = 0, k = 1, gamma = 0``) and
``b`` at all T frames from one batched call (``y = 0``). Because ``x`` is linear in time inside a frame
interval and ``b`` is affine in ``x``, ``b(t_n + theta Delta) = b_n + theta (b_{n+1} - b_n)``. One
interval of ``substeps`` RK4 (or Euler) steps is therefore a linear map

.. math::
    y_{n+1} = \\Phi y_n + \\Psi_0 b_n + \\Psi_1 (b_{n+1} - b_n),

whose (G, G) matrices ``Phi, Psi_0, Psi_1`` follow from the matrices of a single step, obtained by
running the very same RK4 / Euler step once on matrix-valued states (the columns of the identity)
-- once per distinct interval length ``Delta`` (:func:`step_matrices`, :func:`interval_propagator`).
The simulation is then one batched product for the forcing of all intervals plus T - 1 (G, G)
mat-vecs. Cost: O(substeps * G^3 + T * G^2) time and O(G^2) memory, fine up to a few thousand
modelled cells. Everything is plain torch: differentiable with respect to ``k``, ``gamma`` and ``y0``
(and ``x_obs``), in the dtype of ``x_obs`` (float32 or float64).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from calcium_gnn.errors import ConfigError, GraphError
from calcium_gnn.nn.consensus import ConsensusConv
from calcium_gnn.physics.modal import ModalBasis, modal_trajectory
from calcium_gnn.physics.steps import METHODS, STEPS


def _check_inputs(
    x_obs: Tensor,
    t: Tensor,
    edge_index: Tensor,
    edge_weight: Tensor,
    modelled: Tensor,
    gamma: Tensor,
    y0: Tensor | None,
    substeps: int,
    method: str,
    dt_rtol: float,
) -> None:
    if x_obs.dim() != 2 or not x_obs.is_floating_point():
        raise GraphError("x", f"observed traces must be a floating (N, T) tensor, got {tuple(x_obs.shape)}")
    n, n_frames = x_obs.shape
    if t.shape != (n_frames,):
        raise GraphError("t", f"frame times must have shape ({n_frames},), got {tuple(t.shape)}")
    if n_frames >= 2 and not bool((t[1:] > t[:-1]).all()):
        raise GraphError("t", "frame times must be strictly increasing")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise GraphError("edge_index", f"must be (2, E), got {tuple(edge_index.shape)}")
    if edge_weight.numel() != edge_index.shape[1]:
        raise GraphError("edge_weight", f"must hold {edge_index.shape[1]} values (one per edge)")
    if modelled.shape != (n,) or modelled.dtype != torch.bool:
        raise ConfigError(
            "modelled", f"must be a ({n},) bool mask, got {tuple(modelled.shape)} {modelled.dtype}"
        )
    if gamma.shape not in ((n,), (n, n_frames)):
        raise ConfigError("gamma", f"must have shape ({n},) or ({n}, {n_frames}), got {tuple(gamma.shape)}")
    if y0 is not None and y0.shape != (n,):
        raise ConfigError("y0", f"must have shape ({n},), got {tuple(y0.shape)}")
    if isinstance(substeps, bool) or int(substeps) != substeps or substeps < 1:
        raise ConfigError("simulate.substeps", f"must be an integer >= 1, got {substeps!r}")
    if method not in METHODS:
        raise ConfigError("simulate.method", f"unknown method '{method}' (use one of {METHODS})")
    if not 0 < dt_rtol < 1:
        raise ConfigError("simulate.dt_rtol", f"must lie in (0, 1), got {dt_rtol!r}")


def step_matrices(
    a: Tensor, h: Tensor, method: str = "rk4"
) -> tuple[Tensor, Tensor, Tensor]:
    """The linear map of one step of ``method`` for ``dy/dtau = a y + F(tau)``, ``F`` linear in ``tau``.

    With ``F(tau_0 + theta h) = F_0 + theta F_1`` over the step, every explicit Runge-Kutta step is
    ``y^+ = R y + Q_0 F_0 + Q_1 F_1``. The three (G, G) matrices are read off by running the step
    once on the matrix state ``Y = [I, 0, 0]`` (G, 3G) with the forcing ``[0, I, theta I]``.

    Args:
        a: (G, G) system matrix.
        h: step size (0-d tensor).
        method: ``"rk4"`` or ``"euler"``.

    Returns:
        ``(R, Q_0, Q_1)``, each (G, G).
    """
    g = a.shape[0]
    eye = torch.eye(g, dtype=a.dtype, device=a.device)
    zero = torch.zeros_like(eye)

    def f(y: Tensor, tau: Tensor) -> Tensor:
        return a @ y + torch.cat([zero, eye, (tau / h) * eye], dim=1)

    y = STEPS[method](f, torch.cat([eye, zero, zero], dim=1), a.new_zeros(()), h)
    return y[:, :g], y[:, g : 2 * g], y[:, 2 * g :]


def interval_propagator(
    a: Tensor, delta: Tensor, substeps: int, method: str = "rk4"
) -> tuple[Tensor, Tensor, Tensor]:
    """The linear map of one frame interval: ``y_{n+1} = Phi y_n + Psi_0 b_n + Psi_1 (b_{n+1} - b_n)``.

    ``substeps`` steps of size ``h = delta / S`` (``S = substeps``) of ``dy/dtau = a y + b(tau)`` with
    ``b(tau) = b_n + (tau / delta) (b_{n+1} - b_n)``. Step ``s`` sees ``F_0 = b_n + (s / S) db`` and
    ``F_1 = db / S`` (:func:`step_matrices`), so with ``P = sum_{j<S} R^j`` and
    ``V = sum_{j<S} (S - 1 - j) R^j``:

    .. math::
        \\Phi = R^S, \\qquad \\Psi_0 = P Q_0, \\qquad \\Psi_1 = (V Q_0 + P Q_1) / S.

    Args:
        a: (G, G) the system matrix ``k A_1``.
        delta: interval length in seconds (0-d tensor).
        substeps: number of steps S.
        method: ``"rk4"`` or ``"euler"``.

    Returns:
        ``(Phi, Psi_0, Psi_1)``, each (G, G).
    """
    r, q0, q1 = step_matrices(a, delta / substeps, method)
    power = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)  # R^j
    p_sum = torch.zeros_like(power)
    v_sum = torch.zeros_like(power)
    for j in range(substeps):
        p_sum = p_sum + power
        v_sum = v_sum + (substeps - 1 - j) * power
        power = r @ power
    return power, p_sum @ q0, (v_sum @ q0 + p_sum @ q1) / substeps


def interval_groups(t: Tensor, dt_rtol: float = 1e-4) -> tuple[Tensor, Tensor]:
    """Frame intervals grouped by length: those within ``dt_rtol`` of the longest share one length.

    Args:
        t: (T,) strictly increasing frame times (s), T >= 2.
        dt_rtol: relative tolerance (see :func:`simulate_consensus`).

    Returns:
        ``(lengths, which)``: (U,) float64 mean length of each group and (T - 1,) the group of each
        interval.
    """
    deltas = (t[1:] - t[:-1]).to(torch.float64)
    key = torch.round(deltas / (dt_rtol * float(deltas.max()))).long()
    unique, which = torch.unique(key, return_inverse=True)
    lengths = torch.stack([deltas[which == u].mean() for u in range(unique.numel())])
    return lengths, which


#: most message values (edges x probe columns) one call of :func:`consensus_operator` holds
PROBE_BUDGET: int = 1 << 24


def consensus_operator(
    conv: ConsensusConv, edge_index: Tensor, edge_weight: Tensor, modelled: Tensor, dtype: torch.dtype
) -> Tensor:
    """``A_1`` (G, G): the consensus right-hand side at ``k = 1``, ``gamma = 0``, ``x = 0`` on G.

    Column ``j`` is ``conv`` applied to the unit state of the ``j``-th modelled cell, in batched calls
    of at most :data:`PROBE_BUDGET` message values (edges x columns) each, so memory stays O(G^2 + E)
    (one call on all G columns would hold E x G messages: 4.5 GB at 10,000 cells).
    """
    n = modelled.shape[0]
    index = modelled.nonzero().reshape(-1)
    g = index.numel()
    one = edge_weight.new_ones((), dtype=dtype)
    zero_gamma = edge_weight.new_zeros((), dtype=dtype)
    block = max(1, PROBE_BUDGET // max(int(edge_index.shape[1]), n, 1))
    columns = []
    for start in range(0, g, block):
        cols = index[start : start + block]
        probes = edge_weight.new_zeros(n, cols.numel(), dtype=dtype)
        probes[cols, torch.arange(cols.numel(), device=cols.device)] = 1.0
        out = conv(probes, torch.zeros_like(probes), edge_index, edge_weight, modelled, k=one,
                   gamma=zero_gamma, leak=zero_gamma)
        columns.append(out[index])
    return torch.cat(columns, dim=1) if columns else edge_weight.new_zeros(0, 0, dtype=dtype)


def _graph_on(device: torch.device, *tensors: Tensor) -> list[Tensor]:
    """The graph inputs on the device of the traces (a no-op where they are already there)."""
    return [t.to(device) for t in tensors]


def integrate(
    conv: ConsensusConv | None,
    x_obs: Tensor,
    t: Tensor,
    edge_index: Tensor,
    edge_weight: Tensor,
    modelled: Tensor,
    k: float | Tensor,
    gamma: Tensor,
    *,
    y0: Tensor | None = None,
    substeps: int = 10,
    method: str = "rk4",
    dt_rtol: float = 1e-4,
    basis: ModalBasis | None = None,
    leak: float | Tensor = 0.0,
    autograd_budget_mb: float | None = None,
) -> Tensor:
    """The one simulator entry point, in the spirit of ``torchdiffeq.odeint(func, y0, t, method)``.

    Integrates ``dy/dt = conv(y, x(t))`` for the modelled cells (module docstring; cells outside G
    follow ``x_obs``, linearly interpolated inside each frame interval) with ``substeps`` steps of
    ``method`` per frame interval. The vector field is ``conv``: a
    :class:`~calcium_gnn.nn.consensus.ConsensusConv` (the paper's linear law; ``None``: a fresh one) or
    any subclass with a learned message (:class:`~calcium_gnn.nn.coupling.CouplingConv`). ``k`` and
    ``gamma`` are passed explicitly (functional use); a learned message keeps its own weights.

    Fast paths for a right-hand side affine in the state (``conv.affine_in_state``, true for the linear
    law), each equal to the step-by-step result to rounding: given the eigenbasis of the consensus
    operator (``basis``, :func:`calcium_gnn.physics.modal.modal_basis`), each mode follows the scheme on
    its own (O(T G^2)); else the exact (G, G) interval propagators (module docstring, O(substeps G^3))
    while that is cheaper than stepping, which wins for thousands of modelled cells
    (:func:`propagators_pay_off`). Any other law runs step by step.

    Every tensor is used on the device and in the dtype of ``x_obs`` (graph inputs are moved there);
    differentiable with respect to ``k``, ``gamma``, ``y0``, ``x_obs`` and the parameters of ``conv``.

    Args:
        conv: the right-hand side (see above).
        x_obs: (N, T) observed traces; they drive the cells outside G and give the default ``y0``.
        t: (T,) frame times in seconds, strictly increasing.
        edge_index: (2, E) adjacency (both directions, no self loops).
        edge_weight: (E,) normalised weights ``w_ij = u_ij l_ij / s``.
        modelled: (N,) bool, the group G.
        k: coupling constant (1/s), a float or a 0-d tensor.
        gamma: (N,) feed terms, or (N, T) feeds at the frame times (a feed switched on at a stimulus,
            :func:`calcium_gnn.physics.laws.feed_series`; linear between frames like the data);
            entries outside G are ignored.
        y0: (N,) initial states at ``t[0]`` (entries outside G ignored); default ``x_obs[:, 0]``.
        substeps: integration steps per frame interval (>= 1, default 10).
        method: ``"rk4"`` (default) or ``"euler"``.
        dt_rtol: frame intervals whose lengths differ by less than ``dt_rtol`` times the longest one
            share one propagator, at their mean length (default 1e-4: absorbs the rounding of float32
            frame times, about 2e-5 of a 10 s interval one hour into a movie).
        basis: the eigenbasis of ``A_1`` for these ``edge_weight`` and ``modelled`` (the caller's
            responsibility), for the modal fast path; default None.
        leak: the leak rate ``delta`` of the leak law (``- delta y_i`` on G; default 0, the paper's law).
        autograd_budget_mb: step by step with gradients on, the most memory (MB) autograd may keep for the
            backward pass; beyond it blocks of frame intervals are recomputed instead of kept
            (:func:`checkpoint_block`; default None: everything kept).

    Returns:
        (N, T) tensor in the dtype of ``x_obs``: simulated states of the modelled cells at the frame
        times (column 0 is ``y0``), the observed data in the other rows.

    Raises:
        GraphError: inconsistent ``x_obs`` / ``t`` / edges.
        ConfigError: bad ``modelled``, ``gamma``, ``y0``, ``substeps``, ``method`` or ``dt_rtol``.
    """
    device = x_obs.device
    t, edge_index, edge_weight, modelled, gamma = _graph_on(
        device, t, edge_index, edge_weight, modelled, gamma
    )
    y0 = None if y0 is None else y0.to(device)
    _check_inputs(x_obs, t, edge_index, edge_weight, modelled, gamma, y0, substeps, method, dt_rtol)
    conv = conv if conv is not None else ConsensusConv(x_obs.shape[0])
    n_modelled = int(modelled.sum())
    affine = getattr(conv, "affine_in_state", False)
    if affine and (basis is not None or propagators_pay_off(n_modelled, edge_index.shape[1], x_obs.shape[1],
                                                            int(substeps))):
        return _integrate_affine(conv, x_obs, t, edge_index, edge_weight, modelled, k, gamma, y0,
                                 int(substeps), method, dt_rtol, basis, leak)
    return _integrate_stepwise(conv, x_obs, t, edge_index, edge_weight, modelled, k, gamma, y0,
                               int(substeps), method, leak, autograd_budget_mb)


def simulate_consensus(
    x_obs: Tensor,
    t: Tensor,
    edge_index: Tensor,
    edge_weight: Tensor,
    modelled: Tensor,
    k: float | Tensor,
    gamma: Tensor,
    *,
    y0: Tensor | None = None,
    substeps: int = 10,
    method: str = "rk4",
    conv: ConsensusConv | None = None,
    dt_rtol: float = 1e-4,
) -> Tensor:
    """The paper's linear law through :func:`integrate` (arguments and result as there).

    ``conv`` defaults to a fresh :class:`ConsensusConv`; only its message passing is used.
    """
    return integrate(conv, x_obs, t, edge_index, edge_weight, modelled, k, gamma, y0=y0,
                     substeps=substeps, method=method, dt_rtol=dt_rtol)


#: flop-equivalents of one message-passing call's overhead (about 200 us at 20 GFLOP/s, measured here:
#: 14,400 calls in 2.8 s at 1,000 cells), for the choice between dense propagators and stepping
#: (:func:`propagators_pay_off`)
CALL_OVERHEAD_FLOPS: float = 4e6


def propagators_pay_off(n_modelled: int, n_edges: int, n_frames: int, substeps: int) -> bool:
    """Whether the dense interval propagators are cheaper than stepping the scheme (both exact).

    Propagators: about ``(14 + substeps) G^3`` flops (one RK4 step on (G, 3G) matrices, ``substeps``
    powers) plus ``2 T G^2`` for the frames; stepping: ``4 substeps (T - 1)`` message-passing calls of
    about ``20 E`` flops each plus their overhead. At 10 sub-steps over 361 frames the propagators win
    up to roughly 1,500 modelled cells.
    """
    g = float(n_modelled)
    dense = (14.0 + substeps) * g**3 + 2.0 * n_frames * g**2
    stepping = 4.0 * substeps * max(n_frames - 1, 1) * (20.0 * n_edges + CALL_OVERHEAD_FLOPS)
    return dense <= stepping


def _integrate_affine(
    conv: ConsensusConv, x_obs: Tensor, t: Tensor, edge_index: Tensor, edge_weight: Tensor,
    modelled: Tensor, k: float | Tensor, gamma: Tensor, y0: Tensor | None, substeps: int, method: str,
    dt_rtol: float, basis: ModalBasis | None = None, leak: float | Tensor = 0.0,
) -> Tensor:
    """Exact interval maps of the scheme for a right-hand side affine in the state (module docstring):
    ``y_{n+1} = Phi y_n + Psi_0 b_n + Psi_1 (b_{n+1} - b_n)``, per mode when ``basis`` is given."""
    n_frames = x_obs.shape[1]
    dtype, device = x_obs.dtype, x_obs.device
    index = modelled.nonzero().reshape(-1)
    if index.numel() == 0 or n_frames == 1:
        if y0 is None or index.numel() == 0:
            return x_obs.clone()
        return torch.where(modelled.reshape(-1, 1), y0.to(dtype).reshape(-1, 1), x_obs)
    w = edge_weight.reshape(-1).to(dtype)
    k_t = torch.as_tensor(k, dtype=dtype, device=device)
    leak_t = torch.as_tensor(leak, dtype=dtype, device=device)
    # b_n = f(0, t_n): border drive + gamma at every frame, one batched call -> (G, T)
    b = conv(torch.zeros_like(x_obs), x_obs, edge_index, w, modelled, k=k_t, gamma=gamma.to(dtype),
             leak=leak_t)[index]
    lengths, which = interval_groups(t, dt_rtol)
    start = x_obs[index, 0] if y0 is None else y0.to(dtype)[index]
    if basis is not None:
        real = basis.v.dtype
        y_sim = modal_trajectory(
            basis, k_t.to(real), lengths, which, substeps, b.to(real), start.to(real), method, leak_t.to(real)
        )
        return x_obs.index_put((index,), y_sim.to(dtype))
    a = k_t * consensus_operator(conv, edge_index, w, modelled, dtype)  # (G, G)
    a = a - leak_t * torch.eye(a.shape[0], dtype=dtype, device=device)
    db = b[:, 1:] - b[:, :-1]

    # One propagator per distinct interval length (lengths equal to within dt_rtol share one, so the
    # rounding of frame times does not multiply the work); the forcing of its intervals in one product.
    phis: list[Tensor] = []
    forcing = x_obs.new_zeros(index.numel(), n_frames - 1)
    for u_idx in range(lengths.numel()):
        cols = (which == u_idx).nonzero().reshape(-1)
        delta = lengths[u_idx].to(dtype)
        phi, psi0, psi1 = interval_propagator(a, delta, substeps, method)
        phis.append(phi)
        forcing[:, cols] = psi0 @ b[:, cols] + psi1 @ db[:, cols]

    y = start
    states = [y]
    for step, group in enumerate(which.tolist()):  # one host copy, not a device sync per frame
        y = phis[group] @ y + forcing[:, step]
        states.append(y)
    y_sim = torch.stack(states, dim=1)  # (G, T)
    out = x_obs.clone()
    return out.index_put((index,), y_sim)


def _integrate_stepwise(
    conv: ConsensusConv, x_obs: Tensor, t: Tensor, edge_index: Tensor, edge_weight: Tensor,
    modelled: Tensor, k: float | Tensor, gamma: Tensor, y0: Tensor | None, substeps: int, method: str,
    leak: float | Tensor = 0.0, autograd_budget_mb: float | None = None,
) -> Tensor:
    """``substeps`` steps of ``method`` per frame interval for any (possibly nonlinear) right-hand side.

    Inside interval ``n`` the cells outside G follow ``x(t_n + tau) = x_n + tau / Delta (x_{n+1} - x_n)``
    (and a feed given at the frames, (N, T), the same interpolation).
    """
    start = x_obs[:, :1] if y0 is None else y0.to(x_obs.dtype).reshape(-1, 1)
    return _integrate_windows(conv, x_obs.unsqueeze(1), t, edge_index, edge_weight, modelled, k, gamma,
                              start, substeps, method, leak, autograd_budget_mb)[:, 0]


def _integrate_windows(
    conv: ConsensusConv, x_obs: Tensor, t: Tensor, edge_index: Tensor, edge_weight: Tensor,
    modelled: Tensor, k: float | Tensor, gamma: Tensor, start: Tensor, substeps: int, method: str,
    leak: float | Tensor = 0.0, autograd_budget_mb: float | None = None,
) -> Tensor:
    """The stepwise integration of B windows at once: ``x_obs`` (N, B, L), ``start`` (N, B), one time
    axis ``t`` (L,) shared by the windows, ``gamma`` (N,) or (N, L) -> (N, B, L).

    ``autograd_budget_mb`` (with gradients on): the first frame interval is run while counting the bytes
    autograd keeps for it; when all ``L - 1`` intervals would keep more than the budget, the others run in
    blocks of as many intervals as fit in it, each block recomputed during the backward pass instead of
    kept (:func:`torch.utils.checkpoint.checkpoint`): peak memory about one block, at the price of one more
    forward pass. Same values and gradients to rounding."""
    dtype = x_obs.dtype
    mask = modelled.reshape(-1, 1)
    zero = x_obs.new_zeros(())
    w = edge_weight.reshape(-1).to(dtype)
    k_t = torch.as_tensor(k, dtype=dtype, device=x_obs.device)
    leak_t = torch.as_tensor(leak, dtype=dtype, device=x_obs.device)
    gamma_frames = torch.where(mask, gamma.to(dtype).reshape(gamma.shape[0], -1), zero)  # (N, 1) or (N, L)
    varying = gamma_frames.shape[1] > 1
    step = STEPS[method]
    deltas = t[1:] - t[:-1]

    def advance(y: Tensor, first: int, count: int) -> Tensor:
        """States after each of the ``count`` intervals from interval ``first`` (N, B, count)."""
        states = []
        with conv.simulation(dtype):  # state-independent terms of a learned law, once per block
            for n in range(first, first + count):
                x_a, x_b = x_obs[:, :, n], x_obs[:, :, n + 1]
                delta = deltas[n].to(dtype)
                h = delta / substeps
                g_a = gamma_frames[:, n : n + 1] if varying else gamma_frames
                g_b = gamma_frames[:, n + 1 : n + 2] if varying else gamma_frames

                def f(
                    state: Tensor, tau: Tensor, x_a: Tensor = x_a, x_b: Tensor = x_b, delta: Tensor = delta,
                    g_a: Tensor = g_a, g_b: Tensor = g_b,
                ) -> Tensor:
                    x_now = x_a + (tau / delta) * (x_b - x_a)
                    g_now = g_a + (tau / delta) * (g_b - g_a)
                    dydt = conv(state, x_now, edge_index, w, modelled, k=k_t, gamma=g_now, leak=leak_t)
                    return torch.where(mask, dydt, zero)

                for s in range(substeps):
                    y = step(f, y, s * h, h)
                states.append(y)
        return torch.stack(states, dim=2)

    y = torch.where(mask, start.to(dtype), x_obs[:, :, 0])
    intervals = x_obs.shape[2] - 1
    blocks = [y.unsqueeze(2)]
    block = intervals
    if autograd_budget_mb is not None and torch.is_grad_enabled() and intervals > 1:
        kept = SavedBytes()
        with torch.autograd.graph.saved_tensors_hooks(kept.pack, lambda saved: saved):
            blocks.append(advance(y, 0, 1))
        block = checkpoint_block(kept.bytes, intervals - 1, autograd_budget_mb)
    recomputed = block < intervals - 1
    first = len(blocks) - 1
    while first < intervals:
        count = min(block, intervals - first)
        y = blocks[-1][:, :, -1]
        if recomputed:
            blocks.append(checkpoint(advance, y, first, count, use_reentrant=False))
        else:
            blocks.append(advance(y, first, count))
        first += count
    return torch.where(mask.unsqueeze(-1), torch.cat(blocks, dim=2), x_obs)


class SavedBytes:
    """A :func:`torch.autograd.graph.saved_tensors_hooks` pack hook that adds up the bytes of the tensors
    autograd keeps for the backward pass (each save counted, so shared storage counts more than once)."""

    def __init__(self) -> None:
        self.bytes = 0

    def pack(self, tensor: Tensor) -> Tensor:
        self.bytes += tensor.numel() * tensor.element_size()
        return tensor


def checked_autograd_budget(budget_mb: float | None) -> float | None:
    """``model.autograd_budget_mb`` as a float (None: no limit).

    Raises:
        ConfigError: a budget that is not > 0 MB.
    """
    if budget_mb is None:
        return None
    if not float(budget_mb) > 0:
        raise ConfigError("model.autograd_budget_mb", f"must be > 0 MB or null, got {budget_mb!r}")
    return float(budget_mb)


def checkpoint_block(interval_bytes: int, intervals: int, budget_mb: float) -> int:
    """Frame intervals per recomputed block: all ``intervals`` when they keep at most ``budget_mb`` MB for
    the backward pass (``interval_bytes`` each), else as many as fit in the budget (at least one)."""
    budget = checked_autograd_budget(budget_mb) * 2**20
    if interval_bytes * intervals <= budget:
        return intervals
    return max(1, int(budget // max(interval_bytes, 1)))


def equal_intervals(t: Tensor, dt_rtol: float = 1e-4) -> bool:
    """Whether every frame interval of ``t`` (T,) differs from their mean by at most ``dt_rtol`` times
    the longest one (the windows of multiple shooting can then share one time axis)."""
    deltas = t[1:] - t[:-1]
    return float((deltas - deltas.mean()).abs().max()) <= dt_rtol * float(deltas.abs().max())


def segment_starts(n_frames: int, segments: int) -> list[int]:
    """First frames of ``segments`` windows of equal length ``L = ceil((T - 1) / segments)`` intervals
    that cover frames ``0 .. T - 1`` (the last one ends at ``T - 1``, overlapping its neighbour when
    ``segments`` does not divide ``T - 1``)."""
    length = -(-(n_frames - 1) // segments)
    return sorted({min(s * length, n_frames - 1 - length) for s in range(segments)})


def integrate_segments(
    conv: ConsensusConv, x_obs: Tensor, t: Tensor, edge_index: Tensor, edge_weight: Tensor,
    modelled: Tensor, k: float | Tensor, gamma: Tensor, starts: list[int], y_starts: Tensor,
    substeps: int = 10, method: str = "rk4", dt_rtol: float = 1e-4, autograd_budget_mb: float | None = None,
) -> Tensor:
    """Multiple shooting: the windows ``[s, s + L]`` (``L = T - 1 - starts[-1]`` intervals) integrated
    together, each from its own state ``y_starts[:, b]`` (N, B), as one batch of B columns.

    The stepwise integrator runs ``L`` frame intervals instead of ``T - 1``, each on B columns: a learned
    law, whose cost is the number of sequential RK4 stages, gets about B times cheaper. The windows
    share one time axis, so the frame intervals must be equal (within ``dt_rtol``); feeds are (N,).
    ``autograd_budget_mb``: as in :func:`integrate`.

    Returns:
        (N, B, L + 1): the simulated windows (cells outside G at their data).

    Raises:
        ConfigError: unequal frame intervals, (N, T) feeds, or ``y_starts`` not (N, len(starts)).
    """
    if not equal_intervals(t, dt_rtol):
        raise ConfigError("model.shooting_segments", "multiple shooting needs equal frame intervals")
    if gamma.dim() != 1:
        raise ConfigError("model.shooting_segments", "multiple shooting takes constant feeds (N,)")
    if tuple(y_starts.shape) != (x_obs.shape[0], len(starts)):
        raise ConfigError("model.shooting_segments",
                          f"y_starts must be (N, {len(starts)}), got {tuple(y_starts.shape)}")
    length = x_obs.shape[1] - 1 - starts[-1]
    index = torch.as_tensor(starts, device=x_obs.device).reshape(-1, 1) + torch.arange(
        length + 1, device=x_obs.device)
    windows = x_obs[:, index]  # (N, B, L + 1)
    device = x_obs.device
    edge_index, edge_weight, modelled = _graph_on(device, edge_index, edge_weight, modelled)
    return _integrate_windows(conv, windows, t[: length + 1].to(device), edge_index, edge_weight, modelled,
                              k, gamma.to(device), y_starts.to(device), int(substeps), method,
                              autograd_budget_mb=autograd_budget_mb)
