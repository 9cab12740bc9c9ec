"""ConsensusConv: the consensus ODE of the seed paper as a message-passing layer (eqs. 1-3)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from calcium_gnn.errors import ConfigError

GAMMA_MODES: tuple[str, ...] = ("none", "shared", "per_cell")
#: the leak back to a baseline, ``- delta (y_i - b_i)``: none (the paper's law) or one ``delta`` for all
#: cells (a per-cell ``delta_i`` would break the shared eigenbasis of the fast simulator and fit)
LEAK_MODES: tuple[str, ...] = ("none", "shared")
#: default box of the leak rate ``delta`` (1/s): from no leak to a 10 s return to baseline
DEFAULT_LEAK_BOUNDS: tuple[float, float] = (0.0, 0.1)

#: The paper's box of eq. (20) for ``k`` (1/s) and ``gamma``: every default bound of the package.
PAPER_K_BOUNDS: tuple[float, float] = (1e-3, 0.1)
PAPER_GAMMA_BOUNDS: tuple[float, float] = (-3e-5, 0.1)


def bounded(raw: Tensor, lo: float, hi: float) -> Tensor:
    """The bounded map ``lo + (hi - lo) * sigmoid(raw)``: any real ``raw`` lands in ``[lo, hi]``.

    The final clamp only removes floating-point rounding at saturation (it is the identity otherwise).
    """
    return (lo + (hi - lo) * torch.sigmoid(raw)).clamp(lo, hi)


def unbounded(value: Tensor, lo: float, hi: float, eps: float = 1e-12) -> Tensor:
    """Inverse of :func:`bounded`: ``logit((value - lo) / (hi - lo))``.

    ``value`` is clamped into ``[lo, hi]`` first, and the fraction into ``[eps, 1 - eps]`` so the
    logit stays finite at the bounds themselves.
    """
    frac = ((value.double() - lo) / (hi - lo)).clamp(eps, 1.0 - eps)
    return torch.logit(frac)


def check_bounds(key: str, bounds: tuple[float, float]) -> tuple[float, float]:
    """``(lo, hi)`` as floats; ConfigError naming ``key`` unless both are finite and lo < hi."""
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ConfigError(key, f"expected two numbers (lo, hi), got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(key, f"expected finite bounds with lo < hi, got {bounds!r}")
    return lo, hi


class ConsensusConv(MessagePassing):
    r"""The consensus problem of Poggi et al. (2025), eqs. (1)-(3), for all cells at once.

    .. math::
        \frac{dy_i}{dt} = \frac{k}{|N_i|} \sum_{j \in N(i)} w_{ij} \, (z_j - z_i) + \gamma_i,
        \qquad z_j = \begin{cases} y_j & j \text{ modelled} \\ x_j & \text{otherwise (border cell)}
        \end{cases}

    where :math:`w_{ij} = u_{ij} l_{ij} / s` are the normalised edge weights
    (:func:`calcium_gnn.physics.edge_weights.edge_weights`), :math:`N(i)` the neighbours of cell
    :math:`i` (``aggr="mean"`` divides by :math:`|N_i|`, the in-degree: the graph builder guarantees
    symmetric edges without self loops or duplicates), :math:`k` the coupling constant (1/s) and
    :math:`\gamma_i` the feed term. For a modelled cell :math:`z_i = y_i`, which is eq. (3); for a
    border cell the output is the ODE right-hand side evaluated on the data (callers mask it out).

    ``gamma_mode`` selects the feed: ``"none"``: :math:`\gamma = 0` (eq. 1 without feed);
    ``"shared"``: one :math:`\gamma` for every cell (eq. 2); ``"per_cell"``: :math:`\gamma_i`
    (eq. 3).

    Beyond the paper (the model family of :mod:`calcium_gnn.physics.laws`): ``leak_mode="shared"``
    adds a leak back to a baseline, :math:`-\delta (y_i - b_i)`; only :math:`\gamma_i + \delta b_i`
    is identifiable, so the layer adds :math:`-\delta z_i` and the feed absorbs :math:`\delta b_i`.
    A feed switched on at a stimulus is a time-varying ``gamma`` (N, B) passed to :meth:`forward`
    (:func:`calcium_gnn.physics.laws.feed_series`). Both keep the right-hand side affine in ``y``.

    The learnable :math:`k` and :math:`\gamma` stay inside their bounds by construction: they are
    stored as raw reals :math:`\rho` and mapped by :math:`\text{lo} + (\text{hi}-\text{lo})
    \,\sigma(\rho)` (:func:`bounded`).

    Args:
        num_nodes: number of cells N (size of the per-cell gamma).
        gamma_mode: ``"none"``, ``"shared"`` or ``"per_cell"`` (default).
        k_bounds: closed interval for k (paper: ``[1e-3, 0.1]``).
        gamma_bounds: closed interval for gamma (paper: ``[-3e-5, 0.1]``).
        k_init: initial k (inside ``k_bounds``; default 0.01).
        gamma_init: initial gamma (inside ``gamma_bounds``; default 0).

    Shapes:
        - **input:** states ``y`` (N, B) and data ``x`` (N, B) at B time points,
          ``edge_index`` (2, E), ``edge_weight`` (E,), ``modelled`` (N,) bool or None (all).
        - **output:** ``dy/dt`` (N, B).
    """

    #: the right-hand side is affine in the state ``y`` (the simulator's exact fast path applies)
    affine_in_state: bool = True

    def __init__(
        self,
        num_nodes: int,
        gamma_mode: str = "per_cell",
        k_bounds: tuple[float, float] = PAPER_K_BOUNDS,
        gamma_bounds: tuple[float, float] = PAPER_GAMMA_BOUNDS,
        k_init: float = 0.01,
        gamma_init: float = 0.0,
        leak_mode: str = "none",
        leak_bounds: tuple[float, float] = DEFAULT_LEAK_BOUNDS,
        leak_init: float = 0.0,
    ) -> None:
        super().__init__(aggr="mean")
        if gamma_mode not in GAMMA_MODES:
            raise ConfigError("model.gamma_mode", f"unknown gamma_mode '{gamma_mode}' (use {GAMMA_MODES})")
        if int(num_nodes) < 1:
            raise ConfigError("num_nodes", f"expected a positive number of cells, got {num_nodes}")
        self.num_nodes = int(num_nodes)
        self.gamma_mode = gamma_mode
        self.k_bounds = check_bounds("model.k_bounds", k_bounds)
        self.gamma_bounds = check_bounds("model.gamma_bounds", gamma_bounds)
        self.k_init = float(k_init)
        self.gamma_init = float(gamma_init)
        self.raw_k = nn.Parameter(torch.zeros(()))
        n_gamma = {"none": 0, "shared": 1, "per_cell": self.num_nodes}[gamma_mode]
        self.raw_gamma = nn.Parameter(torch.zeros(n_gamma))
        if leak_mode not in LEAK_MODES:
            raise ConfigError("model.leak_mode", f"unknown leak_mode '{leak_mode}' (use one of {LEAK_MODES})")
        self.leak_mode = leak_mode
        self.leak_bounds = check_bounds("model.leak_bounds", leak_bounds)
        if self.leak_bounds[0] < 0:
            raise ConfigError("model.leak_bounds", f"a leak rate is >= 0, got {leak_bounds!r}")
        self.leak_init = float(leak_init)
        # the paper's law has no leak parameter at all (not an empty one: every parameter is differentiated)
        self.raw_leak = nn.Parameter(torch.zeros(1)) if leak_mode == "shared" else None
        self.reset_parameters()

    @contextmanager
    def simulation(self, dtype: torch.dtype) -> Iterator[None]:
        """The scope of one step-by-step simulation (:func:`calcium_gnn.physics.simulate.integrate`):
        a law with terms that do not depend on the state computes them once here instead of at every
        stage of every step. The paper's law has none."""
        yield

    def reset_parameters(self) -> None:
        """Set k, gamma and the leak back to ``k_init``, ``gamma_init`` and ``leak_init``."""
        self.set_parameters(self.k_init, self.gamma_init)
        if self.leak_mode == "shared":
            self.set_leak(self.leak_init)

    @property
    def leak(self) -> Tensor:
        """The bounded leak rate ``delta`` (1/s), shape (); 0 for ``leak_mode="none"``."""
        if self.leak_mode == "none":
            return torch.zeros((), dtype=self.raw_k.dtype, device=self.raw_k.device)
        return bounded(self.raw_leak[0], *self.leak_bounds)

    @torch.no_grad()
    def set_leak(self, leak: float | Tensor) -> None:
        """Set the bounded leak rate (clamped into ``leak_bounds``); ignored for ``leak_mode="none"``."""
        if self.leak_mode == "shared":
            value = torch.as_tensor(leak, dtype=torch.float64).reshape(1)
            self.raw_leak.copy_(unbounded(value, *self.leak_bounds).to(self.raw_leak))

    @property
    def k(self) -> Tensor:
        """The bounded coupling constant, shape ()."""
        return bounded(self.raw_k, *self.k_bounds)

    @property
    def gamma(self) -> Tensor:
        """The bounded feed terms broadcast to the nodes, shape (N,) (zeros for ``"none"``)."""
        if self.gamma_mode == "none":
            return torch.zeros(self.num_nodes, dtype=self.raw_k.dtype, device=self.raw_k.device)
        return bounded(self.raw_gamma, *self.gamma_bounds).expand(self.num_nodes)

    @torch.no_grad()
    def set_parameters(self, k: float | Tensor, gamma: float | Tensor) -> None:
        """Set the bounded k and gamma (the inverse map of :func:`bounded`), clamped into the bounds.

        ``gamma`` is a scalar, or a (N,) tensor for ``"per_cell"``; for ``"shared"`` a (N,) tensor
        must hold one value (its mean is used). Ignored for ``"none"``.
        """
        k_t = torch.as_tensor(k, dtype=torch.float64)
        self.raw_k.copy_(unbounded(k_t, *self.k_bounds).to(self.raw_k))
        if self.gamma_mode == "none":
            return
        g = torch.as_tensor(gamma, dtype=torch.float64).reshape(-1)
        if self.gamma_mode == "shared":
            g = g.mean().reshape(1)
        elif g.numel() == 1:
            g = g.expand(self.num_nodes)
        elif g.numel() != self.num_nodes:
            raise ConfigError("gamma", f"expected a scalar or {self.num_nodes} values, got {g.numel()}")
        self.raw_gamma.copy_(unbounded(g, *self.gamma_bounds).to(self.raw_gamma))

    def forward(
        self,
        y: Tensor,
        x: Tensor,
        edge_index: Tensor,
        edge_weight: Tensor,
        modelled: Tensor | None = None,
        k: Tensor | None = None,
        gamma: Tensor | None = None,
        leak: Tensor | None = None,
    ) -> Tensor:
        """Right-hand side of eqs. (1)-(3), with the leak law's term:
        ``dy_i/dt = k/|N_i| sum_j w_ij (z_j - z_i) + gamma_i - delta z_i``.

        Args:
            y: states, (N, B) (or (N,) for one time point).
            x: observed data at the same B time points, same shape as ``y``.
            edge_index: (2, E), messages flow ``edge_index[0] -> edge_index[1]``.
            edge_weight: (E,) normalised weights ``w_ij``.
            modelled: (N,) bool; ``z_j = y_j`` where True, ``x_j`` elsewhere. None: all modelled.
            k: override of k (scalar tensor), used as is (no bounds applied): functional use, e.g.
                a simulation with fitted values or a differentiable least-squares solve.
            gamma: override of gamma, scalar, (N,) or (N, B) (a feed that changes in time), used as is.
            leak: override of the leak rate ``delta`` (scalar tensor), used as is.

        Returns:
            ``dy/dt``, same shape as ``y``.
        """
        squeeze = y.dim() == 1
        if squeeze:
            y, x = y.unsqueeze(-1), x.unsqueeze(-1)
        z = y if modelled is None else torch.where(modelled.reshape(-1, 1), y, x)
        k = self.k if k is None else k
        gamma = self.gamma if gamma is None else gamma
        gamma = torch.as_tensor(gamma, dtype=z.dtype, device=z.device)
        if gamma.dim() == 1:
            gamma = gamma.reshape(-1, 1)
        drive = self.propagate(edge_index, z=z, edge_weight=edge_weight.reshape(-1), size=None)
        out = k * drive + gamma
        if leak is not None or self.leak_mode != "none":  # the paper's law skips the term
            out = out - (self.leak if leak is None else leak) * z
        own = self.node_term(z)
        if own is not None:
            out = out + own
        return out.squeeze(-1) if squeeze else out

    def node_term(self, z: Tensor) -> Tensor | None:
        """A term of each cell's own level ``z_i`` (N, B) added to the right-hand side, or None: the
        paper's law has none (a learned one: :class:`calcium_gnn.nn.coupling.CouplingConv`)."""
        return None

    def message(self, z_i: Tensor, z_j: Tensor, edge_weight: Tensor) -> Tensor:
        """``w_ij (z_j - z_i)`` for each edge j -> i, shape (E, B)."""
        return edge_weight.unsqueeze(-1) * (z_j - z_i)

    def extra_repr(self) -> str:
        return (
            f"num_nodes={self.num_nodes}, gamma_mode={self.gamma_mode!r}, "
            f"k_bounds={self.k_bounds}, gamma_bounds={self.gamma_bounds}, leak_mode={self.leak_mode!r}"
        )
