"""The output-error problem of the consensus ODE as an ``nn.Module``: data, parameters, simulation.

With the modelled cells G, the training frames ``t_0 .. t_{T-1}`` and ``y(t; theta)`` the solution of
eq. (3) (:func:`calcium_gnn.physics.simulate.integrate`, border cells following their interpolated
data), the output-error fit solves

.. math::
    \\hat\\theta = \\arg\\min_{\\theta \\in \\text{box}} \\frac{1}{G T} \\sum_{i \\in G} \\sum_{n}
    \\big(y_i(t_n; \\theta) - x_{i,n}\\big)^2, \\qquad \\theta = (k, \\gamma, y_0),

``theta`` (P,) being the natural parameter vector: first the scalars (``k``; the leak rate ``delta``
of the leak laws; a shared feed; a shared switched feed), then the per-cell blocks (the feeds
``gamma_i``, the switched feeds ``s_i`` of the stimulus laws, and, when fitted, the initial states
``y_0`` of G); :mod:`calcium_gnn.physics.laws` defines the laws. ``k`` and ``delta`` are the
*nonlinear* parameters; the model is affine in all the others. This module holds what the problem is made of
and nothing about how it is solved (:mod:`calcium_gnn.physics.levenberg_marquardt`) or what is
reported after the fit (:mod:`calcium_gnn.inference.output_error`):

* buffers: the graph (``edge_index`` (2, E), ``edge_weight`` (E,)), the group (``modelled`` (N,),
  ``index`` (G,)), the training window (``x_train`` (N, T), ``drive_train`` (N, T): the inputs of
  the cells outside G, optionally smoothed, ``t_train`` (T,)) and the frame-interval groups;
* parameters: the right-hand side ``conv`` (a :class:`~calcium_gnn.nn.consensus.ConsensusConv`
  holding bounded ``k`` and ``gamma``, or a learned law) and ``y0`` (N,);
* the per-cell optimum kept while pooled feeds sit in ``conv`` (``pooled``, ``gamma_unpooled``,
  ``y0_unpooled``);
* derived values (the eigenbasis of the consensus operator, the last normal equations) in a cache
  that ``.to()`` / ``.cuda()`` / ``.double()`` clear, so no derived tensor outlives a device move.

Normal equations ``J^T J`` (P, P) and ``J^T r`` (P,): in the eigenbasis of the consensus operator
(:mod:`calcium_gnn.physics.modal`, O(G^3 + T G^2), no M x P Jacobian; needs symmetric weights, which
the graph builder's are) or from the dense forward-mode Jacobian (``torch.func.jacfwd``) when the
number of parameters P is at most ``max_jacobian_parameters``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from calcium_gnn.errors import ConfigError
from calcium_gnn.nn.consensus import ConsensusConv
from calcium_gnn.physics.laws import STIMULUS_FEED_MODES, feed_series, stimulus_switch
from calcium_gnn.physics.modal import (
    SYMMETRY_RTOL,
    ModalBasis,
    modal_basis,
    modal_responses,
    normal_equations,
    transpose_product,
)
from calcium_gnn.physics.simulate import (
    checked_autograd_budget,
    consensus_operator,
    integrate,
    interval_groups,
)

JACOBIANS: tuple[str, ...] = ("auto", "modal", "dense")

BOUND_TOLERANCE: float = 1e-9
"""A parameter within this fraction of its box width of a bound sits on it (:meth:`held_at_bounds`).

The bounded map of :class:`~calcium_gnn.nn.consensus.ConsensusConv` stores a value at a bound as
``lo + 1e-12 (hi - lo)`` (its logit must stay finite), so an exact comparison would never find it
there, and projected steps would keep pushing such a parameter outward."""


def moving_average(x: Tensor, window: int) -> Tensor:
    """Centred moving average over time of (N, T) traces, ends padded by repeating the end frames.

    ``window`` is an odd number of frames (1 returns ``x``).
    """
    if window == 1 or x.shape[1] < 2:
        return x
    half = window // 2
    padded = torch.cat([x[:, :1].expand(-1, half), x, x[:, -1:].expand(-1, half)], dim=1)
    kernel = torch.full((1, 1, window), 1.0 / window, dtype=x.dtype, device=x.device)
    return torch.nn.functional.conv1d(padded.unsqueeze(1), kernel).squeeze(1)


def border_drive(x: Tensor, modelled: Tensor, border_smoothing: int) -> Tensor:
    """(N, T) inputs of the simulation: ``x`` on G, the moving average of ``x`` on the other cells."""
    return torch.where(modelled.reshape(-1, 1), x, moving_average(x, border_smoothing))


class ThetaParts(NamedTuple):
    """:meth:`OutputErrorProblem.unpack`: ``k`` (), ``gamma`` (N,), ``y0`` (N,), ``leak`` () and the
    switched feeds ``stimulus`` (N,) (zeros without a stimulus law)."""

    k: Tensor
    gamma: Tensor
    y0: Tensor
    leak: Tensor
    stimulus: Tensor


class OutputErrorProblem(nn.Module):
    """The output-error problem of eqs. (1)-(3) on a training window (module docstring).

    Args:
        conv: the right-hand side with learnable ``k`` and ``gamma`` (float64).
        x: (N, T_train) observed traces of the training window.
        t: (T_train,) its frame times (s).
        edge_index: (2, E). edge_weight: (E,) normalised weights ``w_ij = u_ij l_ij / s``.
        modelled: (N,) bool, the group G.
        gamma_mode: ``"none"``, ``"shared"`` or ``"per_cell"``.
        substeps: RK4 (or Euler) steps per frame interval.
        method: ``"rk4"`` or ``"euler"``.
        fit_initial_state: ``y0`` of G is a parameter (else the first frame is used).
        border_smoothing: odd moving-average window on the inputs of the cells outside G.
        jacobian: ``"auto"`` (modal when the weights are symmetric), ``"modal"`` or ``"dense"``.
        max_jacobian_parameters: largest P for which the dense Jacobian is formed.
        max_normal_parameters: largest P for which the (P, P) normal equations are formed at all
            (default 8,000: each P x P matrix is then 0.5 GB, and a Levenberg-Marquardt step with its
            intervals holds about five; at 10,000 cells, P = 19,267, a fit went past 16 GB).
        stimulus_feed: the feed switched on at the stimulus (:mod:`calcium_gnn.physics.laws`):
            ``"none"`` (default), ``"shared"`` or ``"per_cell"``; stimulus_time: its time (s).
        stimulus_bounds: the box of the switched feeds (default: ``conv.gamma_bounds``).
        autograd_budget_mb: a step-by-step simulation differentiated by autograd keeps at most about this
            much memory (MB) for its backward pass, recomputing blocks of frame intervals beyond it
            (:func:`calcium_gnn.physics.simulate.integrate`; default None: everything kept).
    """

    def __init__(
        self,
        conv: ConsensusConv,
        x: Tensor,
        t: Tensor,
        edge_index: Tensor,
        edge_weight: Tensor,
        modelled: Tensor,
        gamma_mode: str,
        *,
        substeps: int = 2,
        method: str = "rk4",
        fit_initial_state: bool = True,
        border_smoothing: int = 1,
        jacobian: str = "auto",
        max_jacobian_parameters: int = 600,
        max_normal_parameters: int = 8000,
        stimulus_feed: str = "none",
        stimulus_time: float | None = None,
        stimulus_bounds: tuple[float, float] | None = None,
        autograd_budget_mb: float | None = None,
    ) -> None:
        super().__init__()
        if stimulus_feed not in STIMULUS_FEED_MODES:
            raise ConfigError("model.stimulus_feed",
                              f"unknown mode '{stimulus_feed}' (use {STIMULUS_FEED_MODES})")
        if stimulus_feed != "none" and stimulus_time is None:
            raise ConfigError("model.stimulus_time", "a feed switched on at the stimulus needs its time (s)")
        if jacobian not in JACOBIANS:
            raise ConfigError("model.jacobian", f"unknown jacobian '{jacobian}' (use one of {JACOBIANS})")
        self.gamma_mode = gamma_mode
        self.substeps = int(substeps)
        self.ode_method = method
        self.fit_initial_state = bool(fit_initial_state)
        self.border_smoothing = int(border_smoothing)
        self.jacobian = jacobian
        self.max_jacobian_parameters = int(max_jacobian_parameters)
        self.max_normal_parameters = int(max_normal_parameters)
        self.autograd_budget_mb = checked_autograd_budget(autograd_budget_mb)
        x = x.detach().double()
        modelled = modelled.detach().reshape(-1).bool()
        self.register_buffer("edge_index", edge_index.detach().long().clone())
        self.register_buffer("edge_weight", edge_weight.detach().double().clone())
        self.register_buffer("modelled", modelled.clone())
        self.register_buffer("index", modelled.nonzero().reshape(-1))
        self.register_buffer("x_train", x.clone())
        self.register_buffer("drive_train", border_drive(x, modelled, self.border_smoothing))
        self.register_buffer("t_train", t.detach().double().clone())
        lengths, group = interval_groups(self.t_train)
        self.register_buffer("interval_lengths", lengths)
        self.register_buffer("interval_group", group)
        self.conv = conv
        self.stimulus_mode = stimulus_feed
        self.stimulus_time = None if stimulus_feed == "none" else float(stimulus_time)
        self.stimulus_bounds = tuple(conv.gamma_bounds if stimulus_bounds is None else stimulus_bounds)
        switch = stimulus_switch(self.t_train, self.stimulus_time)
        self.register_buffer("switch", switch if switch is not None else self.t_train.new_zeros(0))
        self.stimulus = nn.Parameter(x.new_zeros(modelled.shape[0]), requires_grad=stimulus_feed != "none")
        self.y0 = nn.Parameter(x[:, 0].clone(), requires_grad=self.fit_initial_state)
        # the per-cell (unpooled) optimum, kept while the pooled feeds are in ConsensusConv
        n = modelled.shape[0]
        self.register_buffer("pooled", torch.tensor(False))
        self.register_buffer("gamma_unpooled", x.new_zeros(n))
        self.register_buffer("y0_unpooled", x.new_zeros(n))
        self._derived: dict[str, Any] = {}

    @torch.no_grad()
    def with_leak(self, leak_bounds: tuple[float, float]) -> OutputErrorProblem:
        """The same problem with the leak term ``- delta (y_i - b_i)`` of the leak laws added (one shared
        ``delta``, box ``leak_bounds``): the nested alternative of the law check
        (:mod:`calcium_gnn.inference.law_check`). Same data, options and device; the eigenbasis is shared
        (the leak shifts every mode's rate and changes no mode). ``k`` and the feeds start from this
        problem's box and initial values; place a point with :meth:`embed_theta`.

        Raises:
            ConfigError: the problem already has a leak, or its right-hand side is not the consensus law.
        """
        if self.has_leak or not isinstance(self.conv, ConsensusConv):
            raise ConfigError("model.law", "the leak alternative extends the consensus law without a leak")
        conv = self.conv
        extended_conv = ConsensusConv(
            conv.num_nodes, conv.gamma_mode, conv.k_bounds, conv.gamma_bounds, conv.k_init, conv.gamma_init,
            leak_mode="shared", leak_bounds=leak_bounds, leak_init=0.0,
        )
        extended = OutputErrorProblem(
            extended_conv.to(self.x_train), self.x_train, self.t_train, self.edge_index, self.edge_weight,
            self.modelled, self.gamma_mode, substeps=self.substeps, method=self.ode_method,
            fit_initial_state=self.fit_initial_state, border_smoothing=self.border_smoothing,
            jacobian=self.jacobian, max_jacobian_parameters=self.max_jacobian_parameters,
            max_normal_parameters=self.max_normal_parameters, stimulus_feed=self.stimulus_mode,
            stimulus_time=self.stimulus_time, stimulus_bounds=self.stimulus_bounds,
            autograd_budget_mb=self.autograd_budget_mb,
        ).to(self.x_train.device)
        if "basis" in self._derived:
            extended._derived["basis"] = self._derived["basis"]
        return extended

    def embed_theta(self, theta: Tensor, source: OutputErrorProblem) -> Tensor:
        """``theta`` (P_source,) of ``source`` laid out as this problem's (P,): every parameter group
        both have is copied, the others (a leak rate ``source`` lacks) are 0."""
        out = theta.new_zeros(self.n_parameters)
        mine, theirs = self.layout(), source.layout()
        for name, where in theirs.items():
            if where.stop > where.start:
                if mine[name].stop - mine[name].start != where.stop - where.start:
                    raise ConfigError("model.law", f"parameter group '{name}' differs between the problems")
                out[mine[name]] = theta[where]
        return out

    # ------------------------------------------------------------------------------ derived cache
    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> OutputErrorProblem:
        """``.to()``, ``.cuda()``, ``.double()``: derived values are recomputed where next used."""
        self._derived = {}
        return super()._apply(fn, recurse)

    # ----------------------------------------------------------------------------- parameters
    @property
    def n_gamma(self) -> int:
        """Number of free feed values: G (per cell), 1 (shared) or 0 (none)."""
        return {"none": 0, "shared": 1, "per_cell": int(self.index.numel())}[self.gamma_mode]

    @property
    def n_stimulus(self) -> int:
        """Number of free switched feeds: G (per cell), 1 (shared) or 0 (none)."""
        return {"none": 0, "shared": 1, "per_cell": int(self.index.numel())}[self.stimulus_mode]

    @property
    def has_leak(self) -> bool:
        """The law has a leak rate ``delta`` (a second nonlinear parameter, after ``k``)."""
        return getattr(self.conv, "leak_mode", "none") != "none"

    @property
    def n_nonlinear(self) -> int:
        """The nonlinear parameters at the head of :meth:`theta`: ``k`` and, with a leak, ``delta``."""
        return 1 + int(self.has_leak)

    def layout(self) -> dict[str, slice]:
        """Where each parameter group sits in :meth:`theta`: scalars first (``k``, ``leak``, a shared
        ``gamma``, a shared ``stimulus``), then the per-cell blocks (``gamma``, ``stimulus``, ``y0``)."""
        g = int(self.index.numel())
        sizes = [("k", 1), ("leak", int(self.has_leak))]
        sizes += [("gamma", 1)] if self.gamma_mode == "shared" else []
        sizes += [("stimulus", 1)] if self.stimulus_mode == "shared" else []
        sizes += [("gamma", g)] if self.gamma_mode == "per_cell" else []
        sizes += [("stimulus", g)] if self.stimulus_mode == "per_cell" else []
        sizes += [("y0", g if self.fit_initial_state else 0)]
        out, start = {}, 0
        for name, size in sizes:
            out[name] = slice(start, start + size)
            start += size
        out.setdefault("gamma", slice(start, start))
        out.setdefault("stimulus", slice(start, start))
        return out

    @property
    def n_parameters(self) -> int:
        """P = nonlinear + free feeds + switched feeds + fitted initial states."""
        return (self.n_nonlinear + self.n_gamma + self.n_stimulus
                + (int(self.index.numel()) if self.fit_initial_state else 0))

    @property
    def feed_positions(self) -> slice:
        """Where the free feeds ``gamma`` sit in :meth:`theta`."""
        return self.layout()["gamma"]

    @property
    def n_residuals(self) -> int:
        """M = G T_train."""
        return int(self.index.numel()) * int(self.x_train.shape[1])

    @property
    def normal_equations_available(self) -> bool:
        """Whether :meth:`normal_equations` can be formed: P within ``max_normal_parameters``, and modal or
        a dense Jacobian within its limit (the size is checked first: no eigenbasis is computed then)."""
        return self.normal_equations_unavailable() is None

    def normal_equations_unavailable(self) -> str | None:
        """Why :meth:`normal_equations` cannot be formed (``None`` when it can), in one line."""
        p = self.n_parameters
        if p > self.max_normal_parameters:
            return (
                f"{p} parameters exceed max_normal_parameters={self.max_normal_parameters} (each P x P "
                f"matrix of the normal equations would take {p * p * 8 / 1e9:.1f} GB)"
            )
        if p > self.max_jacobian_parameters and self.modal_basis() is None:
            return (
                f"{p} parameters exceed max_jacobian_parameters={self.max_jacobian_parameters} and the "
                "weights are not symmetric (no modal normal equations)"
            )
        return None

    def modal_unavailable(self) -> str | None:
        """Why the eigenbasis of the consensus operator cannot be used (``None`` when it can), checked
        without computing it: a learned (non-affine) right-hand side, ``jacobian="dense"``, or edge
        weights that are not symmetric inside G (``w_ij != w_ji``)."""
        if self.jacobian == "dense":
            return "model.jacobian=dense"
        if not getattr(self.conv, "affine_in_state", False):
            return "the right-hand side is not affine in the state (no eigenbasis)"
        n = self.modelled.shape[0]
        src, dst = self.edge_index
        inside = self.modelled[src] & self.modelled[dst]
        src, dst, w = src[inside], dst[inside], self.edge_weight[inside]
        if src.numel() == 0:
            return None
        key, order = torch.sort(src * n + dst)
        position = torch.searchsorted(key, dst * n + src).clamp(max=key.numel() - 1)
        found = key[position] == dst * n + src
        mirrored = w[order][position]
        scale = float(w.abs().max())
        if not bool(found.all()) or float((mirrored - w).abs().max()) > SYMMETRY_RTOL * max(scale, 1e-300):
            return "the edge weights are not symmetric (w_ij != w_ji): no eigenbasis"
        return None

    def theta_bounds(self) -> tuple[Tensor, Tensor]:
        """Lower and upper bounds (P,) of :meth:`theta` (``y0`` unbounded), on the problem's device."""
        boxes = {"k": self.conv.k_bounds, "gamma": self.conv.gamma_bounds, "stimulus": self.stimulus_bounds,
                 "y0": (-math.inf, math.inf), "leak": getattr(self.conv, "leak_bounds", (0.0, 0.0))}
        lo = self.x_train.new_empty(self.n_parameters)
        hi = self.x_train.new_empty(self.n_parameters)
        for name, where in self.layout().items():
            lo[where], hi[where] = float(boxes[name][0]), float(boxes[name][1])
        return lo, hi

    def held_at_bounds(self, theta: Tensor, grad: Tensor) -> Tensor:
        """(P,) bool: parameters on a bound of the box (within :data:`BOUND_TOLERANCE` of its width) whose
        gradient ``grad`` pushes them outward.

        Projected Gauss-Newton steps leave them where they are (an active set), so a clipped feed does
        not spoil the step of the others.
        """
        lo, hi = self.theta_bounds()
        width = hi - lo
        slack = torch.where(torch.isfinite(width), BOUND_TOLERANCE * width, torch.zeros_like(width))
        return ((theta <= lo + slack) & (grad > 0)) | ((theta >= hi - slack) & (grad < 0))

    def theta(self) -> Tensor:
        """The natural parameter vector (P,) float64, laid out as :meth:`layout`."""
        theta = self.x_train.new_zeros(self.n_parameters)
        where = self.layout()
        theta[where["k"]] = self.conv.k.detach().reshape(1)
        if self.has_leak:
            theta[where["leak"]] = self.conv.leak.detach().reshape(1)
        gamma, stimulus = self.conv.gamma.detach(), self.stimulus.detach()
        groups = (("gamma", gamma, self.gamma_mode), ("stimulus", stimulus, self.stimulus_mode))
        for name, values, mode in groups:
            if mode == "per_cell":
                theta[where[name]] = values[self.index]
            elif mode == "shared":
                theta[where[name]] = values[self.index[:1]]
        if self.fit_initial_state:
            theta[where["y0"]] = self.y0.detach()[self.index]
        return theta

    def theta_unpooled(self) -> Tensor:
        """:meth:`theta` at the per-cell optimum (before pooled feeds were stored, :meth:`store_pooled`)."""
        theta = self.theta()
        if not bool(self.pooled):
            return theta
        where = self.layout()
        theta[where["gamma"]] = self.gamma_unpooled[self.index]
        if self.fit_initial_state:
            theta[where["y0"]] = self.y0_unpooled[self.index]
        return theta

    def unpack(self, theta: Tensor) -> ThetaParts:
        """``theta`` -> :class:`ThetaParts` (``k``, ``gamma`` (N,), ``y0`` (N,), ``leak``, ``stimulus``
        (N,)); differentiable."""
        where = self.layout()
        zeros = theta.new_zeros(self.modelled.shape[0])

        def per_node(name: str, mode: str) -> Tensor:
            free = theta[where[name]]
            if mode == "per_cell":
                return zeros.index_put((self.index,), free)
            if mode == "shared":
                return zeros + free[0]
            return zeros

        y0 = self.x_train[:, 0]
        if self.fit_initial_state:
            y0 = y0.index_put((self.index,), theta[where["y0"]])
        leak = theta[where["leak"]][0] if self.has_leak else theta.new_zeros(())
        return ThetaParts(theta[0], per_node("gamma", self.gamma_mode), y0, leak,
                          per_node("stimulus", self.stimulus_mode))

    def feeds(self, gamma: Tensor, stimulus: Tensor) -> Tensor:
        """The law's feeds on the training frames: ``gamma`` (N,), or (N, T) with a switched feed."""
        if self.stimulus_mode == "none":
            return gamma
        return feed_series(gamma, stimulus, self.switch)

    @torch.no_grad()
    def set_theta(self, theta: Tensor) -> None:
        """Store ``theta`` in ``conv`` (bounded maps), the switched feeds and ``y0``."""
        parts = self.unpack(theta)
        gamma = parts.gamma
        if self.gamma_mode == "per_cell":
            gamma = torch.where(self.modelled, gamma, torch.full_like(gamma, self.conv.gamma_init))
        self.conv.set_parameters(parts.k, gamma)
        if self.has_leak:
            self.conv.set_leak(parts.leak)
        self.stimulus.copy_(parts.stimulus)
        self.y0.copy_(parts.y0)

    @torch.no_grad()
    def store_pooled(self, theta: Tensor) -> None:
        """Put pooled parameters ``theta`` into ``conv`` and keep the per-cell optimum beside them."""
        self.restore_unpooled()
        self.gamma_unpooled.copy_(self.conv.gamma.detach())
        self.y0_unpooled.copy_(self.y0.detach())
        self.set_theta(theta)
        self.pooled.fill_(True)

    @torch.no_grad()
    def restore_unpooled(self) -> None:
        """Put the per-cell optimum back into ``conv`` (undo :meth:`store_pooled`)."""
        if bool(self.pooled):
            theta = self.theta_unpooled()
            self.pooled.fill_(False)
            self.set_theta(theta)

    # ------------------------------------------------------------------------------- simulation
    def simulate_window(
        self, k: Tensor, gamma: Tensor, y0: Tensor, drive: Tensor | None = None, leak: Tensor | None = None
    ) -> Tensor:
        """Simulated (N, T_train) traces over the training window for the given parameters.

        ``gamma`` is (N,) or the (N, T_train) feeds of a stimulus law (:meth:`feeds`); ``leak`` the leak
        rate (default: the one ``conv`` holds, 0 for the paper's law); ``drive`` (N, T_train) replaces
        the traces that drive the cells outside G (default: their data).
        """
        return integrate(
            self.conv,
            self.drive_train if drive is None else drive,
            self.t_train,
            self.edge_index,
            self.edge_weight,
            self.modelled,
            k,
            gamma,
            y0=y0,
            substeps=self.substeps,
            method=self.ode_method,
            basis=self.modal_basis(),
            leak=self.conv.leak.detach() if leak is None else leak,
            autograd_budget_mb=self.autograd_budget_mb,
        )

    def simulate_theta(self, theta: Tensor) -> Tensor:
        """Simulated (N, T_train) traces for the natural parameters ``theta``."""
        parts = self.unpack(theta)
        feeds = self.feeds(parts.gamma, parts.stimulus)
        return self.simulate_window(parts.k, feeds, parts.y0, leak=parts.leak)

    def initial_state(self) -> Tensor:
        """(N,) the state at the first training frame: the fitted ``y0`` on G (with
        ``fit_initial_state``), the observed first frame elsewhere."""
        return torch.where(self.modelled, self.y0, self.x_train[:, 0])

    def fitted_initial_state(self) -> Tensor | None:
        """(N,) :meth:`initial_state` where ``y0`` is a fitted parameter, else None (the first frame)."""
        return self.initial_state() if self.fit_initial_state else None

    def simulate_train(self) -> Tensor:
        """Simulated (N, T_train) traces with the module's own (trainable) parameters."""
        y0 = self.initial_state()
        return self.simulate_window(self.conv.k, self.feeds(self.conv.gamma, self.stimulus), y0,
                                    leak=self.conv.leak)

    def residuals_theta(self, theta: Tensor) -> Tensor:
        """(G, T_train) residuals ``y(theta) - x`` of the modelled cells."""
        return self.simulate_theta(theta)[self.index] - self.x_train[self.index]

    def loss_theta(self, theta: Tensor) -> float:
        """Mean squared residual at ``theta`` (host float)."""
        return float(self.residuals_theta(theta).pow(2).mean())

    def loss_train(self) -> Tensor:
        """Mean squared residual of the modelled cells over the training window (the fit objective)."""
        return (self.simulate_train()[self.index] - self.x_train[self.index]).pow(2).mean()

    # ------------------------------------------------------------------------ normal equations
    def _check_jacobian_size(self) -> None:
        if self.n_parameters > self.max_jacobian_parameters:
            raise ConfigError(
                "model.max_jacobian_parameters",
                f"{self.n_parameters} parameters exceed {self.max_jacobian_parameters}: the Jacobian "
                "(Levenberg-Marquardt, intervals) is too large; use optimizer=lbfgs or raise the limit",
            )

    def in_degrees(self) -> Tensor:
        """(N,) int64 number of incoming edges of every cell, ``|N_i|`` (0 for a cell without neighbours)."""
        return torch.bincount(self.edge_index[1], minlength=self.modelled.shape[0])

    def degrees(self) -> Tensor:
        """(G,) float64 ``|N_i|`` of the modelled cells (at least 1): the ``D`` of ``A_1 = D^{-1} S``."""
        return self.in_degrees()[self.index].double().clamp(min=1.0)

    def modal_basis(self) -> ModalBasis | None:
        """The eigenbasis of the consensus operator on G (:mod:`calcium_gnn.physics.modal`), cached.

        ``None`` with ``jacobian="dense"``, for a right-hand side that is not affine in the state, or when
        the weights are not symmetric (then ``"modal"`` is a ConfigError).
        """
        if "basis" not in self._derived:
            basis = None
            linear = getattr(self.conv, "affine_in_state", False)
            if self.jacobian != "dense" and linear and self.index.numel() > 0:
                a1 = consensus_operator(
                    self.conv, self.edge_index, self.edge_weight, self.modelled, torch.float64
                )
                basis = modal_basis(a1.detach(), self.degrees())
                if basis is None and self.jacobian == "modal":
                    raise ConfigError(
                        "model.jacobian", "'modal' needs symmetric edge weights (w_ij = w_ji); use 'dense'"
                    )
            self._derived["basis"] = basis
        return self._derived["basis"]

    def _modal_design(
        self, theta: Tensor, basis: ModalBasis, with_k: bool = True
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Dense columns (``k`` and ``delta`` by forward-mode passes, or zeros without ``with_k``; shared
        feeds) and modal blocks (per-cell feeds, switched feeds, ``y0``) at ``theta``, in the order of
        :meth:`layout`."""
        nonlinear = []
        for position in range(self.n_nonlinear):
            if with_k:
                tangent = torch.zeros_like(theta)
                tangent[position] = 1.0
                _, column = torch.func.jvp(self.residuals_theta, (theta,), (tangent,))
            else:
                column = torch.zeros_like(self.x_train[self.index])
            nonlinear.append(column)
        leak = float(self.unpack(theta).leak)
        switch = self.switch if self.stimulus_mode != "none" else None
        e, f, s = modal_responses(
            basis, float(theta[0]), self.interval_lengths, self.interval_group, self.substeps,
            self.ode_method, leak=leak, switch=switch,
        )
        ones_modal = basis.v_inv @ theta.new_ones(self.index.numel())
        dense, blocks = list(nonlinear), []
        for mode, response in ((self.gamma_mode, f), (self.stimulus_mode, s)):
            if mode == "shared":
                dense.append(basis.v @ (response.T * ones_modal.reshape(-1, 1)))
        for mode, response in ((self.gamma_mode, f), (self.stimulus_mode, s)):
            if mode == "per_cell":
                blocks.append(response)
        if self.fit_initial_state:
            blocks.append(e)
        return dense, blocks

    def _dense_jacobian(self, theta: Tensor, with_k: bool = True) -> Tensor:
        self._check_jacobian_size()
        jac = torch.func.jacfwd(lambda th: self.residuals_theta(th).reshape(-1))(theta)
        if not with_k:
            jac[:, : self.n_nonlinear] = 0.0
        return jac

    def normal_equations(self, theta: Tensor, with_k: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """``J^T J`` (P, P), ``J^T r`` (P,) and the residuals ``r`` (G, T) at ``theta``.

        Modal (the ``k`` column by one forward-mode pass) when :meth:`modal_basis` exists, else from the
        dense forward-mode Jacobian (P tangents). ``with_k=False``: the ``k`` row and column are 0 (not
        computed, nor the leak rate's: fits at fixed nonlinear parameters). The last result is cached
        (the same ``theta``, on the same device, and ``with_k`` return it again). At fixed nonlinear
        parameters the problem is affine in the others, so ``J^T J`` without their columns depends on
        them alone: the modal one is kept per ``(k, delta)`` and only ``J^T r`` is formed again (profile
        fits move ``gamma`` and ``y0`` at one ``k``).
        """
        if self.n_parameters > self.max_normal_parameters:
            raise ConfigError("model.max_normal_parameters", str(self.normal_equations_unavailable()))
        cached = self._derived.get("normal")
        if cached is not None and cached[1] == with_k and cached[0].shape == theta.shape:
            if cached[0].device == theta.device and torch.equal(cached[0], theta):
                return cached[2]
        basis = self.modal_basis()
        residuals = self.residuals_theta(theta)
        if basis is None:
            jac = self._dense_jacobian(theta, with_k)
            out = (jac.T @ jac, jac.T @ residuals.reshape(-1), residuals)
        else:
            dense, blocks = self._modal_design(theta, basis, with_k)
            at_k = self._derived.get("linear_normal")
            k = tuple(float(v) for v in theta[: self.n_nonlinear])
            if not with_k and at_k is not None and at_k[0] == k:
                jtj, jtr = at_k[1], transpose_product(basis, blocks, dense, residuals)
            else:
                jtj, jtr = normal_equations(basis, blocks, dense, residuals)
            if not with_k:
                self._derived["linear_normal"] = (k, jtj)
            out = (jtj, jtr, residuals)
        self._derived["normal"] = (theta.detach().clone(), with_k, out)
        return out

    def transpose_products(self, theta: Tensor, vectors: list[Tensor], with_k: bool = True) -> list[Tensor]:
        """``J^T v`` (P,) at ``theta`` for each (G, T) tensor ``v`` (ordered like the residuals).

        ``with_k=False``: the ``k`` entry is 0 (not computed).
        """
        basis = self.modal_basis()
        if basis is None:
            jac = self._dense_jacobian(theta, with_k)
            return [jac.T @ v.reshape(-1) for v in vectors]
        dense, blocks = self._modal_design(theta, basis, with_k)
        return [transpose_product(basis, blocks, dense, v) for v in vectors]
