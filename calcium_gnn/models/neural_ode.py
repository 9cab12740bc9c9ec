"""Output-error (simulation) fitting of the consensus ODE: ``model=neural_ode``.

The paper's least squares (eqs. 4-20) regress every step on the *noisy previous value*: an
errors-in-variables problem that biases ``k`` towards 0 as observation noise grows. Here the
parameters are fitted on what the model predicts over the whole training window instead. With the
modelled cells G, the training frames ``t_0 .. t_{T-1}`` and ``y(t; theta)`` the solution of eq. (3)
(:func:`calcium_gnn.physics.simulate.simulate_consensus`, RK4 through
:class:`~calcium_gnn.nn.consensus.ConsensusConv`, border cells following their interpolated data)

.. math::
    \\hat\\theta = \\arg\\min_{\\theta \\in \\text{box}} \\frac{1}{G T} \\sum_{i \\in G} \\sum_{n}
    \\big(y_i(t_n; \\theta) - x_{i,n}\\big)^2, \\qquad \\theta = (k, \\gamma, y_0),

where ``y_0`` (G,) are the initial states (fitted, as the first frame is as noisy as the others;
``fit_initial_state=False`` uses ``x_{:,0}``). The noise now only enters through the residual (and,
low-pass filtered by the ODE, through the border inputs), so the estimate is consistent. ``k`` and
``gamma`` stay in the paper's box (``k_bounds``, ``gamma_bounds``).

Optimisers (``optimizer``):

* ``"gauss_newton"`` (default): Levenberg-Marquardt in the natural parameters. One training step is
  one iteration: ``J = dr/dtheta`` (M, P) by forward-mode autodiff (``torch.func.jacfwd``) through
  the simulation (or ``J^T J`` and ``J^T r`` directly, ``jacobian``), ``(J^T J + mu diag(J^T J)) delta
  = -J^T r`` over the parameters not held at a bound (active set), the step projected on the box, accepted
  when the loss decreases (then ``mu /= damping_factor``, else ``mu *= damping_factor`` and retried).
  The model is affine in ``(gamma, y0)``, so a few iterations converge.
* ``"auto"``: ``"gauss_newton"`` when the normal equations can be formed: in the eigenbasis of the
  consensus operator (``jacobian="modal"``, :mod:`calcium_gnn.physics.modal`: O(G^3 + T G^2), no
  M x P Jacobian; needs symmetric weights, which the graph builder's are) or from the dense Jacobian
  when the number of parameters P is at most ``max_jacobian_parameters``; else ``"lbfgs"``.
* ``"lbfgs"``: ``torch.optim.LBFGS`` with a strong-Wolfe line search on the raw (bounded-map)
  parameters of ConsensusConv and ``y0``; ``"adam"``: Adam on the same.

Initialisation: the paper's CRLSM (:func:`calcium_gnn.physics.least_squares.fit_least_squares`,
``init="crlsm"``) or ``k_init`` / ``gamma_init`` (``init="constant"``).

Border inputs: border cells drive the ODE with their noisy data. The ODE low-pass filters that
noise; ``border_smoothing`` (odd number of frames, default 1 = none) applies a centred moving average
to the traces of the cells outside G before they drive the simulation (docs/noise.md measures it).

Feeds as random effects (``gamma_prior``, per-cell feeds only): at realistic noise each ``gamma_i``
is set by a level offset measured from T noisy frames, and no unbiased per-cell estimate is much
better than its Cramér-Rao bound. ``"random_effects"`` (default) treats the feeds of one culture as
draws from one population ``N(mu, tau^2)``, estimates ``mu`` and ``tau^2`` by REML and replaces each
feed by its best linear unbiased predictor (:mod:`calcium_gnn.evaluation.random_effects`), with ``k``
left as fitted. It is applied when a fit ends (:meth:`apply_gamma_prior`); the per-cell estimates
stay available (:meth:`theta_unpooled`) and drive the anomaly scores. ``"none"`` keeps the per-cell
output-error estimates.

Border noise (``border_noise_correction``, default on): the border cells drive the simulation with
their *noisy* data, an errors-in-variables problem that biases ``k`` low as the noise grows (11.6% at
1,000 cells and 5% noise). When the fit ends, ``k`` is re-chosen to minimise the training loss
normalised by its expected noise level, which accounts for the border noise that reaches G
(:mod:`calcium_gnn.models.border_noise`).

After fitting (:meth:`finish_fit` runs both steps above; ``on_fit_end`` calls it):
:meth:`fitted_parameters` (``k``, ``gamma``), :meth:`parameter_intervals` (Laplace / Gauss-Newton
intervals, :mod:`calcium_gnn.evaluation.uncertainty`, pooled as above), :meth:`anomaly_scores`
(:mod:`calcium_gnn.evaluation.anomaly`) and :meth:`extra_results` (both, for results.json, with
their figures).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from calcium_gnn.errors import ConfigError
from calcium_gnn.evaluation.anomaly import AnomalyRule, AnomalyScores, anomaly_scores, plot_anomaly_map
from calcium_gnn.evaluation.random_effects import MIN_POOLED_CELLS, PooledFeeds, pool_feeds
from calcium_gnn.evaluation.uncertainty import (
    DEFAULT_LEVEL,
    GaussNewtonCovariance,
    ParameterIntervals,
    check_level,
    normal_interval,
    normal_matrix_covariance,
    plot_intervals,
)
from calcium_gnn.models.border_noise import SEARCH_FACTOR, BorderNoiseCorrection, correct_border_noise
from calcium_gnn.models.crlsm import truth_errors
from calcium_gnn.nn.consensus import ConsensusConv, check_bounds
from calcium_gnn.physics.edge_weights import edge_weights
from calcium_gnn.physics.interpolation import DEFAULT_TRAIN_FRACTION, time_split
from calcium_gnn.physics.least_squares import DEFAULT_GAMMA_BOUNDS, DEFAULT_K_BOUNDS, fit_least_squares
from calcium_gnn.physics.modal import (
    ModalBasis,
    modal_basis,
    modal_responses,
    normal_equations,
    transpose_product,
)
from calcium_gnn.physics.parameters import FittedParameters
from calcium_gnn.physics.setups import Setup, resolve_setup
from calcium_gnn.physics.simulate import METHODS, consensus_operator, interval_groups, simulate_consensus

OPTIMIZERS: tuple[str, ...] = ("auto", "gauss_newton", "lbfgs", "adam")
INITS: tuple[str, ...] = ("crlsm", "constant")
GAMMA_PRIORS: tuple[str, ...] = ("random_effects", "none")
JACOBIANS: tuple[str, ...] = ("auto", "modal", "dense")


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


def _check_int(key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < low:
        raise ConfigError(key, f"must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_positive(key: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be a positive number, got {value!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise ConfigError(key, f"must be a positive number, got {value!r}")
    return v


class OutputErrorODE(L.LightningModule):
    """Output-error fit of eqs. (1)-(3) through a differentiable RK4 simulation (module docstring).

    Args:
        data: the cell graph (schema: :mod:`calcium_gnn.graphs.schema`).
        setup: modelled cells and gamma mode (default: setup I, ``resolve_setup(data)``).
        optimizer: ``"auto"`` (default), ``"gauss_newton"`` (Levenberg-Marquardt), ``"lbfgs"`` or ``"adam"``.
        max_jacobian_parameters: largest P for which the dense Jacobian (LM steps, intervals) is
            formed (default 600; ``optimizer="auto"`` switches to L-BFGS above it when the modal
            normal equations are not available).
        border_noise_correction: correct ``k`` for the noise of the border inputs when the fit ends
            (default True; :mod:`calcium_gnn.models.border_noise`).
        border_noise_probes, border_noise_seed: Hutchinson probes of that correction (8, seed 0).
        jacobian: how ``J^T J`` and ``J^T r`` are formed: ``"auto"`` (default: ``"modal"`` when the
            weights are symmetric, else ``"dense"``), ``"modal"`` (eigenbasis, any size) or
            ``"dense"`` (forward-mode Jacobian, P <= ``max_jacobian_parameters``).
        substeps: RK4 steps per frame interval during the fit (default 2; h = dt/2).
        method: ``"rk4"`` (default) or ``"euler"``.
        train_fraction: training share of the frames (default 2110/3610, the paper's).
        edge_weight_scale: ``"mean"`` (default) or a positive number: ``w = u*l / s``.
        k_bounds, gamma_bounds: the paper's box (defaults ``(1e-3, 0.1)``, ``(-3e-5, 0.1)``).
        init: ``"crlsm"`` (default) or ``"constant"`` (``k_init``, ``gamma_init``).
        k_init, gamma_init: starting values for ``init="constant"`` (defaults 0.01, 0).
        fit_initial_state: fit ``y0`` of the modelled cells (default True).
        border_smoothing: odd moving-average window (frames) on the border inputs (default 1: none).
        steps_per_epoch: optimisation steps per epoch (default 10; one LM iteration or one L-BFGS
            ``step`` each).
        lr: learning rate of L-BFGS (default 1.0) / Adam.
        lbfgs_max_iter: L-BFGS iterations per step (default 20).
        damping: initial Levenberg-Marquardt ``mu`` (default 1e-3).
        damping_factor: ``mu`` update factor (default 10).
        max_retries: rejected LM trials per step before giving up the step (default 8).
        tolerance: stop when an accepted LM step lowers the loss by less than this fraction (1e-9).
        interval_level: level of the confidence intervals (default 0.9).
        autocorrelation_correction: inflate the covariance for lag-1 residual autocorrelation (True).
        anomaly_threshold: robust z-score threshold of the anomaly rule (default 3.5).
        gamma_prior: ``"random_effects"`` (default: REML + BLUP pooling of per-cell feeds when a fit
            ends) or ``"none"`` (module docstring).
        num_threads: torch intra-op threads during ``trainer.fit`` (restored after); None (default)
            leaves them alone. Small graphs run faster on 1 thread (thread overhead dominates).
    """

    method_name = "neural_ode"

    def __init__(
        self,
        data: Data | None = None,
        setup: Setup | None = None,
        optimizer: str = "auto",
        substeps: int = 2,
        method: str = "rk4",
        train_fraction: float = DEFAULT_TRAIN_FRACTION,
        edge_weight_scale: float | str = "mean",
        k_bounds: tuple[float, float] = DEFAULT_K_BOUNDS,
        gamma_bounds: tuple[float, float] = DEFAULT_GAMMA_BOUNDS,
        init: str = "crlsm",
        k_init: float = 0.01,
        gamma_init: float = 0.0,
        fit_initial_state: bool = True,
        border_smoothing: int = 1,
        steps_per_epoch: int = 10,
        lr: float = 1.0,
        lbfgs_max_iter: int = 20,
        damping: float = 1e-3,
        damping_factor: float = 10.0,
        max_retries: int = 8,
        tolerance: float = 1e-9,
        interval_level: float = DEFAULT_LEVEL,
        autocorrelation_correction: bool = True,
        anomaly_threshold: float = 3.5,
        num_threads: int | None = None,
        max_jacobian_parameters: int = 600,
        gamma_prior: str = "random_effects",
        jacobian: str = "auto",
        border_noise_correction: bool = True,
        border_noise_probes: int = 8,
        border_noise_seed: int = 0,
    ) -> None:
        super().__init__()
        if data is None:
            raise ConfigError("model", f"{type(self).__name__} needs the cell graph (data=...)")
        setup = setup if setup is not None else resolve_setup(data)
        if optimizer not in OPTIMIZERS:
            raise ConfigError("model.optimizer", f"unknown optimizer '{optimizer}' (use one of {OPTIMIZERS})")
        if init not in INITS:
            raise ConfigError("model.init", f"unknown init '{init}' (use one of {INITS})")
        if method not in METHODS:
            raise ConfigError("model.method", f"unknown method '{method}' (use one of {METHODS})")
        if gamma_prior not in GAMMA_PRIORS:
            raise ConfigError(
                "model.gamma_prior", f"unknown gamma_prior '{gamma_prior}' (use one of {GAMMA_PRIORS})"
            )
        self.gamma_prior = gamma_prior
        if jacobian not in JACOBIANS:
            raise ConfigError("model.jacobian", f"unknown jacobian '{jacobian}' (use one of {JACOBIANS})")
        self.jacobian = jacobian
        self.border_noise_correction = bool(border_noise_correction)
        self.border_noise_probes = _check_int("model.border_noise_probes", border_noise_probes, 1)
        self.border_noise_seed = _check_int("model.border_noise_seed", border_noise_seed, 0)
        self.border_correction: BorderNoiseCorrection | None = None
        self._normal_cache: tuple[Tensor, bool, tuple[Tensor, Tensor, Tensor]] | None = None
        self._basis: tuple[torch.device, ModalBasis | None] | None = None
        self.substeps = _check_int("model.substeps", substeps, 1)
        self.steps_per_epoch = _check_int("model.steps_per_epoch", steps_per_epoch, 1)
        self.border_smoothing = _check_int("model.border_smoothing", border_smoothing, 1)
        if self.border_smoothing % 2 == 0:
            raise ConfigError(
                "model.border_smoothing", f"must be odd (a centred window), got {border_smoothing}"
            )
        self.lbfgs_max_iter = _check_int("model.lbfgs_max_iter", lbfgs_max_iter, 1)
        self.max_retries = _check_int("model.max_retries", max_retries, 0)
        self.lr = _check_positive("model.lr", lr)
        self.damping_factor = _check_positive("model.damping_factor", damping_factor)
        if self.damping_factor <= 1:
            raise ConfigError("model.damping_factor", f"must be > 1, got {damping_factor!r}")
        self.tolerance = _check_positive("model.tolerance", tolerance)
        self.interval_level = check_level(interval_level)
        self.anomaly_rule = AnomalyRule(threshold=float(anomaly_threshold))
        self.k_bounds = check_bounds("model.k_bounds", k_bounds)
        self.gamma_bounds = check_bounds("model.gamma_bounds", gamma_bounds)
        self.save_hyperparameters(ignore=["data", "setup"])
        self.max_jacobian_parameters = _check_int("model.max_jacobian_parameters", max_jacobian_parameters, 1)
        self.ode_method = method
        self.init = init
        self.fit_initial_state = bool(fit_initial_state)
        self.autocorrelation_correction = bool(autocorrelation_correction)
        self.train_fraction = float(train_fraction)
        self.consensus_setup = setup
        self.data = data

        n, n_frames = data.x.shape
        self.train_frames, self.test_frames = time_split(n_frames, train_fraction)
        w, scale = edge_weights(data.edge_attr.double(), edge_weight_scale)
        self.edge_weight_scale = scale
        self.register_buffer("edge_weight", w)
        self.register_buffer("edge_index", data.edge_index.long())
        self.register_buffer("modelled", setup.modelled.reshape(-1).bool())
        self.register_buffer("index", self.modelled.nonzero().reshape(-1))
        x = data.x.double()
        drive = torch.where(self.modelled.reshape(-1, 1), x, moving_average(x, self.border_smoothing))
        self.register_buffer("x_train", x[:, self.train_frames])
        self.register_buffer("drive_train", drive[:, self.train_frames])
        self.register_buffer("t_train", data.t.double()[self.train_frames])
        self.conv = ConsensusConv(
            n, setup.gamma_mode, self.k_bounds, self.gamma_bounds, k_init=k_init, gamma_init=gamma_init
        ).double()
        self.y0 = nn.Parameter(x[:, 0].clone(), requires_grad=self.fit_initial_state)
        self.register_buffer("initialised", torch.tensor(False))
        self.register_buffer("converged", torch.tensor(False))
        # the per-cell (unpooled) optimum, kept while the pooled feeds are in ConsensusConv
        self.register_buffer("pooled", torch.tensor(False))
        self.register_buffer("gamma_unpooled", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("y0_unpooled", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("mu", torch.tensor(float(_check_positive("model.damping", damping))))
        self.interval_lengths, self.interval_group = interval_groups(self.t_train)
        if optimizer == "auto":
            optimizer = "gauss_newton" if self.normal_equations_available else "lbfgs"
        self.optimizer_name = optimizer
        self.automatic_optimization = optimizer != "gauss_newton"
        self.num_threads = None if num_threads is None else _check_int("model.num_threads", num_threads, 1)
        self._saved_threads: int | None = None

    # ----------------------------------------------------------------------------- parameters
    @property
    def n_gamma(self) -> int:
        """Number of free feed values: G (per cell), 1 (shared) or 0 (none)."""
        return {"none": 0, "shared": 1, "per_cell": int(self.index.numel())}[self.consensus_setup.gamma_mode]

    @property
    def n_parameters(self) -> int:
        """P = 1 + free feeds + fitted initial states."""
        return 1 + self.n_gamma + (int(self.index.numel()) if self.fit_initial_state else 0)

    @property
    def feed_positions(self) -> slice:
        """Where the free feeds sit in :meth:`theta` (after ``k``)."""
        return slice(1, 1 + self.n_gamma)

    @property
    def normal_equations_available(self) -> bool:
        """Whether :meth:`normal_equations` can be formed: modal, or a dense Jacobian within the limit."""
        return self.modal_basis() is not None or self.n_parameters <= self.max_jacobian_parameters

    def held_at_bounds(self, theta: Tensor, grad: Tensor) -> Tensor:
        """(P,) bool: parameters on a bound of the box whose gradient ``grad`` pushes them outward.

        Projected Gauss-Newton steps leave them where they are (an active set), so a clipped feed does
        not spoil the step of the others.
        """
        lo, hi = self.theta_bounds()
        return ((theta <= lo) & (grad > 0)) | ((theta >= hi) & (grad < 0))

    def _check_jacobian_size(self) -> None:
        if self.n_parameters > self.max_jacobian_parameters:
            raise ConfigError(
                "model.max_jacobian_parameters",
                f"{self.n_parameters} parameters exceed {self.max_jacobian_parameters}: the Jacobian "
                "(Levenberg-Marquardt, intervals) is too large; use optimizer=lbfgs or raise the limit",
            )

    def modal_basis(self) -> ModalBasis | None:
        """The eigenbasis of the consensus operator on G (:mod:`calcium_gnn.physics.modal`), cached.

        ``None`` with ``jacobian="dense"`` or when the weights are not symmetric (then ``"modal"`` is a
        ConfigError).
        """
        device = self.edge_weight.device
        if self._basis is None or self._basis[0] != device:
            basis = None
            if self.jacobian != "dense" and self.index.numel() > 0:
                a1 = consensus_operator(
                    self.conv, self.edge_index, self.edge_weight, self.modelled, torch.float64
                )
                degree = torch.bincount(self.edge_index[1], minlength=self.modelled.shape[0])[self.index]
                basis = modal_basis(a1.detach(), degree)
                if basis is None and self.jacobian == "modal":
                    raise ConfigError(
                        "model.jacobian", "'modal' needs symmetric edge weights (w_ij = w_ji); use 'dense'"
                    )
            self._basis = (device, basis)
        return self._basis[1]

    def _modal_design(
        self, theta: Tensor, basis: ModalBasis, with_k: bool = True
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Dense columns (``k`` by one forward-mode pass, or zeros without ``with_k``; a shared feed)
        and modal blocks at ``theta``."""
        if with_k:
            tangent = torch.zeros_like(theta)
            tangent[0] = 1.0
            _, k_column = torch.func.jvp(self.residuals_theta, (theta,), (tangent,))
        else:
            k_column = torch.zeros_like(self.x_train[self.index])
        e, f = modal_responses(
            basis, float(theta[0]), self.interval_lengths, self.interval_group, self.substeps, self.ode_method
        )
        dense, blocks = [k_column], []
        mode = self.consensus_setup.gamma_mode
        if mode == "shared":
            ones = torch.ones(self.index.numel(), dtype=torch.float64, device=theta.device)
            dense.append(basis.v @ (f.T * (basis.v_inv @ ones).reshape(-1, 1)))
        elif mode == "per_cell":
            blocks.append(f)
        if self.fit_initial_state:
            blocks.append(e)
        return dense, blocks

    def _dense_jacobian(self, theta: Tensor, with_k: bool = True) -> Tensor:
        self._check_jacobian_size()
        jac = torch.func.jacfwd(lambda th: self.residuals_theta(th).reshape(-1))(theta)
        if not with_k:
            jac[:, 0] = 0.0
        return jac

    def normal_equations(self, theta: Tensor, with_k: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """``J^T J`` (P, P), ``J^T r`` (P,) and the residuals ``r`` (G, T) at ``theta``.

        Modal (:mod:`calcium_gnn.physics.modal`; the ``k`` column by one forward-mode pass) when
        :meth:`modal_basis` exists, else from the dense forward-mode Jacobian (P tangents).
        ``with_k=False``: the ``k`` row and column are 0 (not computed; for fits at a fixed ``k``).
        The last result is cached (the same ``theta`` and ``with_k`` return it again).
        """
        cached = self._normal_cache
        if cached is not None and cached[1] == with_k and cached[0].shape == theta.shape:
            if torch.equal(cached[0], theta):
                return cached[2]
        basis = self.modal_basis()
        residuals = self.residuals_theta(theta)
        if basis is None:
            jac = self._dense_jacobian(theta, with_k)
            out = (jac.T @ jac, jac.T @ residuals.reshape(-1), residuals)
        else:
            dense, blocks = self._modal_design(theta, basis, with_k)
            jtj, jtr = normal_equations(basis, blocks, dense, residuals)
            out = (jtj, jtr, residuals)
        self._normal_cache = (theta.detach().clone(), with_k, out)
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

    def theta(self) -> Tensor:
        """The natural parameter vector ``(k, gamma (free), y0 (G, when fitted))``, (P,) float64."""
        parts = [self.conv.k.detach().reshape(1)]
        gamma = self.conv.gamma.detach()
        if self.consensus_setup.gamma_mode == "per_cell":
            parts.append(gamma[self.index])
        elif self.consensus_setup.gamma_mode == "shared":
            parts.append(gamma[:1])
        if self.fit_initial_state:
            parts.append(self.y0.detach()[self.index])
        return torch.cat(parts)

    def theta_unpooled(self) -> Tensor:
        """:meth:`theta` at the per-cell output-error optimum (before :meth:`apply_gamma_prior`)."""
        if not bool(self.pooled):
            return self.theta()
        theta = self.theta()
        theta[self.feed_positions] = self.gamma_unpooled[self.index]
        if self.fit_initial_state:
            theta[1 + self.n_gamma :] = self.y0_unpooled[self.index]
        return theta

    def gamma_prior_status(self) -> str | None:
        """Why the feeds are not pooled (``None`` when :attr:`gamma_prior` pooling applies)."""
        if self.gamma_prior == "none":
            return "gamma_prior=none"
        if self.consensus_setup.gamma_mode != "per_cell":
            return f"gamma_mode={self.consensus_setup.gamma_mode} (pooling needs per-cell feeds)"
        if self.n_gamma < MIN_POOLED_CELLS:
            return f"{self.n_gamma} modelled cell(s) (pooling needs at least {MIN_POOLED_CELLS})"
        if not self.normal_equations_available:
            return (
                f"{self.n_parameters} parameters exceed max_jacobian_parameters="
                f"{self.max_jacobian_parameters} (pooling needs the Gauss-Newton covariance)"
            )
        return None

    def theta_bounds(self) -> tuple[Tensor, Tensor]:
        """Lower and upper bounds (P,) of :meth:`theta` (``y0`` unbounded)."""
        n_y0 = int(self.index.numel()) if self.fit_initial_state else 0
        inf = torch.full((n_y0,), math.inf, dtype=torch.float64)
        lo = torch.cat(
            [torch.tensor([self.k_bounds[0]]), torch.full((self.n_gamma,), self.gamma_bounds[0]), -inf]
        )
        hi = torch.cat(
            [torch.tensor([self.k_bounds[1]]), torch.full((self.n_gamma,), self.gamma_bounds[1]), inf]
        )
        return lo.double().to(self.index.device), hi.double().to(self.index.device)

    def unpack(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``theta`` -> ``(k (), gamma (N,), y0 (N,))`` (differentiable)."""
        n = self.modelled.shape[0]
        k = theta[0]
        g_free = theta[1 : 1 + self.n_gamma]
        zeros = torch.zeros(n, dtype=theta.dtype, device=theta.device)
        mode = self.consensus_setup.gamma_mode
        if mode == "per_cell":
            gamma = zeros.index_put((self.index,), g_free)
        elif mode == "shared":
            gamma = zeros + g_free[0]
        else:
            gamma = zeros
        if self.fit_initial_state:
            y0 = self.x_train[:, 0].index_put((self.index,), theta[1 + self.n_gamma :])
        else:
            y0 = self.x_train[:, 0]
        return k, gamma, y0

    @torch.no_grad()
    def set_theta(self, theta: Tensor) -> None:
        """Store ``theta`` in ConsensusConv (bounded maps) and ``y0``."""
        k, gamma, y0 = self.unpack(theta)
        if self.consensus_setup.gamma_mode == "per_cell":
            gamma = torch.where(self.modelled, gamma, torch.full_like(gamma, self.conv.gamma_init))
        self.conv.set_parameters(k, gamma)
        self.y0.copy_(y0)

    @torch.no_grad()
    def initialise(self) -> None:
        """Start from CRLSM (``init="crlsm"``) or the constants; ``y0`` from the first frame."""
        if self.init == "crlsm":
            fitted = fit_least_squares(
                self.data,
                self.consensus_setup,
                solver="crlsm",
                k_bounds=self.k_bounds,
                gamma_bounds=self.gamma_bounds,
                train_fraction=self.train_fraction,
                edge_weight_scale=self.edge_weight_scale,
            )
            self.crlsm_k = float(fitted.k)
            gamma = torch.as_tensor(fitted.gamma, dtype=torch.float64)
            gamma = torch.where(self.modelled, gamma, torch.full_like(gamma, self.conv.gamma_init))
            self.conv.set_parameters(fitted.k, gamma)
        self.y0.copy_(self.x_train[:, 0])
        self.initialised.fill_(True)

    # ------------------------------------------------------------------------------- simulation
    def simulate_window(self, k: Tensor, gamma: Tensor, y0: Tensor, drive: Tensor | None = None) -> Tensor:
        """Simulated (N, T_train) traces over the training window for the given parameters.

        ``drive`` (N, T_train) replaces the traces that drive the cells outside G (default: their data).
        """
        return simulate_consensus(
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
            conv=self.conv,
        )

    def simulate_theta(self, theta: Tensor) -> Tensor:
        """Simulated (N, T_train) traces for the natural parameters ``theta``."""
        return self.simulate_window(*self.unpack(theta))

    def simulate_train(self) -> Tensor:
        """Simulated (N, T_train) traces with the module's own (trainable) parameters."""
        y0 = torch.where(self.modelled, self.y0, self.x_train[:, 0])
        return self.simulate_window(self.conv.k, self.conv.gamma, y0)

    def residuals_theta(self, theta: Tensor) -> Tensor:
        """(G, T_train) residuals ``y(theta) - x`` of the modelled cells."""
        return self.simulate_theta(theta)[self.index] - self.x_train[self.index]

    def loss_train(self) -> Tensor:
        """Mean squared residual of the modelled cells over the training window (the fit objective)."""
        return (self.simulate_train()[self.index] - self.x_train[self.index]).pow(2).mean()

    # ---------------------------------------------------------------------------------- training
    def configure_optimizers(self) -> torch.optim.Optimizer | None:
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_name == "lbfgs":
            return torch.optim.LBFGS(
                params,
                lr=self.lr,
                max_iter=self.lbfgs_max_iter,
                history_size=50,
                line_search_fn="strong_wolfe",
                tolerance_grad=1e-12,
                tolerance_change=1e-15,
            )
        if self.optimizer_name == "adam":
            return torch.optim.Adam(params, lr=self.lr)
        return None

    def on_fit_start(self) -> None:
        if self.num_threads is not None:
            self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(self.num_threads)
        if not bool(self.initialised):
            self.initialise()
        # training (or resumed training) continues from the per-cell optimum, not the pooled feeds
        self.restore_unpooled()

    def on_fit_end(self) -> None:
        self.finish_fit()
        if self._saved_threads is not None:
            torch.set_num_threads(self._saved_threads)
            self._saved_threads = None

    def border_noise_status(self) -> str | None:
        """Why ``k`` is not corrected for border noise (``None`` when the correction applies)."""
        if not self.border_noise_correction:
            return "border_noise_correction=false"
        if bool(self.modelled.all()):
            return "no border cells"
        if self.optimizer_name != "gauss_newton":
            return f"optimizer={self.optimizer_name} (the correction profiles with Gauss-Newton)"
        return None

    @torch.no_grad()
    def finish_fit(self) -> None:
        """What a fit does when its optimisation ends (``on_fit_end``; call it after a manual loop).

        1. ``k`` corrected for the noise of the border inputs (:mod:`calcium_gnn.models.border_noise`),
           the linear parameters refitted at the corrected ``k``;
        2. the feeds pooled as random effects (:meth:`apply_gamma_prior`).
        Both are skipped where they do not apply (:meth:`border_noise_status`,
        :meth:`gamma_prior_status`).
        """
        self.restore_unpooled()
        if self.border_noise_status() is None:
            self.border_correction = correct_border_noise(
                self, n_probes=self.border_noise_probes, seed=self.border_noise_seed
            )
            if self.border_correction.interior:
                self.set_theta(self.border_correction.theta)
        if self.gamma_prior_status() is None:
            self.apply_gamma_prior()

    def border_noise_results(self) -> dict[str, Any]:
        """results.json block ``border_noise_correction``: rule, ``k`` before and after, noise gain."""
        status = self.border_noise_status()
        if status is not None or self.border_correction is None:
            return {"applied": False, "reason": status or "the fit has not finished (finish_fit)"}
        c = self.border_correction
        if not c.interior:
            return {
                "applied": False,
                "reason": "no interior minimum of the noise-normalised loss for k within a factor "
                f"{SEARCH_FACTOR} of {c.k_uncorrected:.4g} (k barely identified)",
                "k_uncorrected": c.k_uncorrected,
                "k_at_search_end": c.k,
            }
        return {
            "applied": True,
            "rule": "k minimises min_{gamma,y0} RSS / (M - P_linear + q(k)), q = border noise energy "
            f"reaching G (Hutchinson, {self.border_noise_probes} probes, seed {self.border_noise_seed})",
            "k_uncorrected": c.k_uncorrected,
            "k": c.k,
            "noise_gain": c.noise_gain,
            "profile_fits": c.evaluations,
        }

    def lm_iteration(
        self, theta: Tensor, mu: float, fixed: Tensor | None = None
    ) -> tuple[Tensor, float, float, bool]:
        """One projected Levenberg-Marquardt trial sequence from ``theta`` (module docstring).

        Args:
            theta: (P,) start.
            mu: damping.
            fixed: optional (P,) bool, parameters kept where they are (e.g. ``k`` in a profile fit).

        Returns:
            ``(theta, loss, mu, moved)``: the new point (``theta`` itself when no trial lowered the
            loss within ``max_retries``), its mean squared residual, the updated damping, and whether
            a step was accepted that lowered the loss by at least ``tolerance`` (relative).
        """
        lo, hi = self.theta_bounds()
        jtj, grad, r = self.normal_equations(theta)
        loss = float(r.pow(2).mean())
        diag = jtj.diagonal().clamp(min=1e-30)
        hold = self.held_at_bounds(theta, grad)
        if fixed is not None:
            hold = hold | fixed
        free = (~hold).nonzero().reshape(-1)
        jtj_free, grad_free, diag_free = jtj[free][:, free], grad[free], diag[free]
        for _ in range(self.max_retries + 1):
            step = torch.zeros_like(theta)
            step[free] = torch.linalg.solve(jtj_free + mu * torch.diag(diag_free), -grad_free)
            trial = torch.minimum(torch.maximum(theta + step, lo), hi)
            new_loss = float(self.residuals_theta(trial).pow(2).mean())
            if new_loss < loss:
                return (
                    trial,
                    new_loss,
                    max(mu / self.damping_factor, 1e-12),
                    (loss - new_loss) >= self.tolerance * loss,
                )
            mu = mu * self.damping_factor
        return theta, loss, mu, False

    @torch.no_grad()
    def levenberg_marquardt_step(self) -> float:
        """One projected Levenberg-Marquardt iteration (module docstring); returns the loss after it."""
        self.restore_unpooled()
        theta = self.theta()
        if bool(self.converged):
            return float(self.residuals_theta(theta).pow(2).mean())
        new_theta, loss, mu, moved = self.lm_iteration(theta, float(self.mu))
        self.mu.fill_(mu)
        if new_theta is not theta:
            self.set_theta(new_theta)
        if not moved:
            self.converged.fill_(True)
        return loss

    @torch.no_grad()
    def fit_levenberg_marquardt(self, max_iterations: int = 100) -> int:
        """Fit without a Trainer: :meth:`initialise` if needed, then Levenberg-Marquardt iterations until
        converged (at most ``max_iterations``). Returns the number of iterations. :meth:`finish_fit`
        is not called."""
        if not bool(self.initialised):
            self.initialise()
        iterations = 0
        while iterations < max_iterations and not bool(self.converged):
            self.levenberg_marquardt_step()
            iterations += 1
        return iterations

    def training_step(self, batch: Data, batch_idx: int) -> Tensor | None:
        if self.optimizer_name == "gauss_newton":
            with torch.no_grad():
                loss = torch.tensor(self.levenberg_marquardt_step())
        else:
            loss = self.loss_train()
        self._log_fit(loss, batch)
        return None if self.optimizer_name == "gauss_newton" else loss

    def _log_fit(self, loss: Tensor, batch: Data) -> None:
        self.log("train/loss", loss.detach().float(), prog_bar=True, batch_size=1)
        self.log("fit/k", float(self.conv.k.detach()), prog_bar=True, batch_size=1)
        gamma = self.conv.gamma.detach()[self.index]
        self.log("fit/gamma_mean", float(gamma.mean()), batch_size=1)
        if isinstance(batch, Data):
            for name, value in truth_errors(self.fitted_parameters(), batch, self.modelled).items():
                self.log(name, value, batch_size=1)

    # ----------------------------------------------------------------------------------- results
    def fitted_parameters(self) -> FittedParameters:
        """``k``, ``gamma`` (N,) (0 outside G), the edge-weight scale and the gamma mode."""
        gamma = torch.where(
            self.modelled, self.conv.gamma.detach(), torch.zeros_like(self.conv.gamma.detach())
        )
        return FittedParameters(
            k=float(self.conv.k.detach()),
            gamma=gamma.cpu(),
            edge_weight_scale=self.edge_weight_scale,
            gamma_mode=self.consensus_setup.gamma_mode,
        )

    @torch.no_grad()
    def laplace(self) -> tuple[Tensor, GaussNewtonCovariance]:
        """The per-cell optimum :meth:`theta_unpooled` (P,) and its Gauss-Newton covariance.

        Cost: one set of normal equations (:meth:`normal_equations`).
        """
        theta = self.theta_unpooled()
        jtj, _, residuals = self.normal_equations(theta)
        cov = normal_matrix_covariance(jtj, residuals, autocorrelation=self.autocorrelation_correction)
        return theta, cov

    @torch.no_grad()
    def pooled_feeds(self) -> PooledFeeds | None:
        """The random-effects posterior (:func:`~calcium_gnn.evaluation.random_effects.pool_feeds`) of the
        per-cell optimum; ``None`` when pooling does not apply (:meth:`gamma_prior_status`)."""
        if self.gamma_prior_status() is not None:
            return None
        theta, cov = self.laplace()
        return pool_feeds(theta, cov.cov, self.feed_positions)

    @torch.no_grad()
    def restore_unpooled(self) -> None:
        """Put the per-cell optimum back into ConsensusConv (undo :meth:`apply_gamma_prior`)."""
        if bool(self.pooled):
            theta = self.theta_unpooled()
            self.pooled.fill_(False)
            self.set_theta(theta)

    @torch.no_grad()
    def apply_gamma_prior(self) -> PooledFeeds | None:
        """Replace the per-cell feeds (and ``y0``) by their random-effects BLUP; keep the per-cell ones.

        Idempotent: pooling always starts from the per-cell optimum. Returns the posterior, or
        ``None`` when pooling does not apply (:meth:`gamma_prior_status`; nothing changes then).
        """
        pooled = self.pooled_feeds()
        if pooled is None:
            return None
        self.restore_unpooled()
        self.gamma_unpooled.copy_(self.conv.gamma.detach())
        self.y0_unpooled.copy_(self.y0.detach())
        lo, hi = self.theta_bounds()
        self.set_theta(torch.minimum(torch.maximum(pooled.theta, lo), hi))
        self.pooled.fill_(True)
        return pooled

    @torch.no_grad()
    def parameter_intervals(self, level: float | None = None, pool: bool = True) -> ParameterIntervals:
        """Intervals of ``k`` and ``gamma_i``: Laplace / Gauss-Newton at the per-cell optimum, pooled.

        See :mod:`calcium_gnn.evaluation.uncertainty`; with ``gamma_prior="random_effects"`` the feed
        intervals are the BLUP's prediction intervals (:mod:`calcium_gnn.evaluation.random_effects`).
        ``pool=False`` gives the per-cell intervals even then. Cost: one :meth:`normal_equations`.
        """
        level = self.interval_level if level is None else check_level(level)
        theta, cov = self.laplace()
        se = cov.se
        pooled = None
        if pool and self.gamma_prior_status() is None:
            pooled = pool_feeds(theta, cov.cov, self.feed_positions)
            theta, se = pooled.theta, pooled.cov.diagonal().clamp(min=0).sqrt()
        k_lo, k_hi = normal_interval(theta[:1], se[:1], level, self.k_bounds)
        n = self.modelled.shape[0]
        nan = torch.full((n,), math.nan, dtype=torch.float64)
        gamma, gamma_se = self.unpack(theta)[1].detach().clone(), nan.clone()
        sl = self.feed_positions
        if self.consensus_setup.gamma_mode == "per_cell":
            gamma_se[self.index] = se[sl]
        elif self.consensus_setup.gamma_mode == "shared":
            gamma_se[self.index] = se[sl].expand(self.index.numel())
        gamma = torch.where(torch.isfinite(gamma_se), gamma, nan)
        g_lo, g_hi = normal_interval(gamma, gamma_se, level, self.gamma_bounds)
        correction = "no autocorrelation correction"
        if self.autocorrelation_correction:
            correction = "AR(1) inflation (1+rho)/(1-rho)"
        method = (
            f"Gauss-Newton (Laplace) covariance sigma^2 (J^T J)^-1 at the output-error optimum, "
            f"sigma^2 = RSS/(M-P), {correction}; "
        )
        if pooled is not None:
            method += "feeds pooled as random effects (REML mu, tau^2; BLUP prediction variance); "
        method += f"normal {level:.0%} intervals clipped to the bounds"
        return ParameterIntervals(
            level=level,
            k=float(theta[0]),
            k_se=float(se[0]),
            k_interval=(float(k_lo[0]), float(k_hi[0])),
            gamma=gamma,
            gamma_se=gamma_se,
            gamma_lower=g_lo,
            gamma_upper=g_hi,
            sigma2=cov.sigma2,
            rho=cov.rho,
            inflation=cov.inflation,
            method=method,
        )

    @torch.no_grad()
    def anomaly_scores(self, rule: AnomalyRule | None = None) -> AnomalyScores:
        """Robust z-scores of ``gamma_i`` and of the training residual level per modelled cell.

        Both come from the per-cell optimum (:meth:`theta_unpooled`): pooling pulls every feed toward
        the culture mean and would hide the cells this is meant to find.
        """
        residuals = torch.zeros_like(self.x_train)
        if bool(self.pooled):
            theta = self.theta_unpooled()
            _, gamma, _ = self.unpack(theta)
            residuals[self.index] = self.residuals_theta(theta)
        else:
            gamma = self.conv.gamma.detach()
            residuals[self.index] = self.simulate_train()[self.index] - self.x_train[self.index]
        return anomaly_scores(gamma, residuals, self.modelled, rule or self.anomaly_rule)

    @torch.no_grad()
    def gamma_prior_results(self) -> dict[str, Any]:
        """results.json block ``gamma_prior``: the rule, ``mu``, ``tau`` and the per-cell feeds.

        ``{"method", "applied", "reason" (when not applied), "mu", "tau", "mean_shrinkage",
        "gamma_unpooled": {cell id: float}}`` (the last four only when applied).
        """
        status = self.gamma_prior_status()
        if status is not None:
            return {"method": self.gamma_prior, "applied": False, "reason": status}
        pooled = self.pooled_feeds()
        _, gamma, _ = self.unpack(self.theta_unpooled())
        ids = self.data.cell_id.reshape(-1).tolist()
        return {
            "method": "random_effects: gamma_i ~ N(mu, tau^2), REML mu and tau^2, BLUP given k",
            "applied": bool(self.pooled),
            "mu": pooled.mu,
            "tau": math.sqrt(pooled.tau2),
            "tau_at_lower_bound": pooled.at_lower_bound,
            "mean_shrinkage": float(pooled.shrinkage.mean()),
            "gamma_unpooled": {str(ids[i]): float(gamma[i]) for i in self.index.tolist()},
        }

    def extra_results(
        self, out_dir: str | Path | None = None, labels: np.ndarray | None = None
    ) -> dict[str, Any]:
        """Intervals and anomaly scores for results.json (top-level keys); figures in ``out_dir``.

        Returns:
            ``{"interval_level", "k_interval", "gamma_interval", ..., "anomaly": {...}, "figures": [...]}``.
        """
        intervals = self.parameter_intervals()
        cell_id = self.data.cell_id
        out = intervals.as_results(cell_id, self.modelled)
        out["gamma_prior"] = self.gamma_prior_results()
        out["border_noise_correction"] = self.border_noise_results()
        scores = self.anomaly_scores()
        out["anomaly"] = scores.as_results(cell_id, self.modelled)
        if out_dir is not None:
            figures = Path(out_dir)
            truth_gamma = getattr(self.data, "truth_gamma", None)
            truth_k = getattr(self.data, "truth_k", None)
            if truth_k is not None:
                s_true = float(getattr(self.data, "truth_edge_weight_scale", self.edge_weight_scale))
                truth_k = float(truth_k) * self.edge_weight_scale / s_true
            paths = [
                plot_intervals(
                    intervals,
                    cell_id,
                    self.modelled,
                    figures / "parameter_intervals.png",
                    truth_gamma=truth_gamma,
                    truth_k=truth_k,
                ),
                plot_anomaly_map(scores, cell_id, self.data.pos, figures / "anomaly_map.png", labels=labels),
            ]
            out["figures"] = [p.name for p in paths]
        return out
