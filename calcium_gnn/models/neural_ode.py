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
  the simulation, ``(J^T J + mu diag(J^T J)) delta = -J^T r``, the step projected on the box, accepted
  when the loss decreases (then ``mu /= damping_factor``, else ``mu *= damping_factor`` and retried).
  The model is affine in ``(gamma, y0)``, so a few iterations converge.
* ``"auto"``: ``"gauss_newton"`` when the number of parameters P is at most
  ``max_jacobian_parameters`` (the Jacobian is M x P), else ``"lbfgs"``.
* ``"lbfgs"``: ``torch.optim.LBFGS`` with a strong-Wolfe line search on the raw (bounded-map)
  parameters of ConsensusConv and ``y0``; ``"adam"``: Adam on the same.

Initialisation: the paper's CRLSM (:func:`calcium_gnn.physics.least_squares.fit_least_squares`,
``init="crlsm"``) or ``k_init`` / ``gamma_init`` (``init="constant"``).

Border inputs: border cells drive the ODE with their noisy data. The ODE low-pass filters that
noise; ``border_smoothing`` (odd number of frames, default 1 = none) applies a centred moving average
to the traces of the cells outside G before they drive the simulation (docs/noise.md measures it).

After fitting: :meth:`fitted_parameters` (``k``, ``gamma``), :meth:`parameter_intervals` (Laplace /
Gauss-Newton intervals, :mod:`calcium_gnn.evaluation.uncertainty`), :meth:`anomaly_scores`
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
from calcium_gnn.evaluation.uncertainty import (
    DEFAULT_LEVEL,
    ParameterIntervals,
    check_level,
    gauss_newton_covariance,
    normal_interval,
    plot_intervals,
)
from calcium_gnn.models.crlsm import truth_errors
from calcium_gnn.nn.consensus import ConsensusConv, check_bounds
from calcium_gnn.physics.edge_weights import edge_weights
from calcium_gnn.physics.interpolation import DEFAULT_TRAIN_FRACTION, time_split
from calcium_gnn.physics.least_squares import DEFAULT_GAMMA_BOUNDS, DEFAULT_K_BOUNDS, fit_least_squares
from calcium_gnn.physics.parameters import FittedParameters
from calcium_gnn.physics.setups import Setup, resolve_setup
from calcium_gnn.physics.simulate import METHODS, simulate_consensus

OPTIMIZERS: tuple[str, ...] = ("auto", "gauss_newton", "lbfgs", "adam")
INITS: tuple[str, ...] = ("crlsm", "constant")


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
        max_jacobian_parameters: largest P for which the Jacobian (LM steps, intervals) is formed
            (default 600; ``"auto"`` switches to L-BFGS above it).
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
        self.register_buffer("mu", torch.tensor(float(_check_positive("model.damping", damping))))
        if optimizer == "auto":
            optimizer = "gauss_newton" if self.n_parameters <= self.max_jacobian_parameters else "lbfgs"
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

    def _check_jacobian_size(self) -> None:
        if self.n_parameters > self.max_jacobian_parameters:
            raise ConfigError(
                "model.max_jacobian_parameters",
                f"{self.n_parameters} parameters exceed {self.max_jacobian_parameters}: the Jacobian "
                "(Levenberg-Marquardt, intervals) is too large; use optimizer=lbfgs or raise the limit",
            )

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
    def _simulate(self, k: Tensor, gamma: Tensor, y0: Tensor) -> Tensor:
        """Simulated (N, T_train) traces over the training window for the given parameters."""
        return simulate_consensus(
            self.drive_train,
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
        return self._simulate(*self.unpack(theta))

    def simulate_train(self) -> Tensor:
        """Simulated (N, T_train) traces with the module's own (trainable) parameters."""
        y0 = torch.where(self.modelled, self.y0, self.x_train[:, 0])
        return self._simulate(self.conv.k, self.conv.gamma, y0)

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

    def on_fit_end(self) -> None:
        if self._saved_threads is not None:
            torch.set_num_threads(self._saved_threads)
            self._saved_threads = None

    def levenberg_marquardt_step(self) -> float:
        """One projected Levenberg-Marquardt iteration (module docstring); returns the loss after it."""
        self._check_jacobian_size()
        theta = self.theta()
        lo, hi = self.theta_bounds()
        r = self.residuals_theta(theta).reshape(-1)
        loss = float(r.pow(2).mean())
        if bool(self.converged):
            return loss
        jac = torch.func.jacfwd(lambda th: self.residuals_theta(th).reshape(-1))(theta)
        jtj = jac.T @ jac
        grad = jac.T @ r
        diag = jtj.diagonal().clamp(min=1e-30)
        for _ in range(self.max_retries + 1):
            mu = float(self.mu)
            step = torch.linalg.solve(jtj + mu * torch.diag(diag), -grad)
            trial = torch.minimum(torch.maximum(theta + step, lo), hi)
            with torch.no_grad():
                new_loss = float(self.residuals_theta(trial).pow(2).mean())
            if new_loss < loss:
                self.set_theta(trial)
                self.mu.fill_(max(mu / self.damping_factor, 1e-12))
                if (loss - new_loss) < self.tolerance * loss:
                    self.converged.fill_(True)
                return new_loss
            self.mu.fill_(mu * self.damping_factor)
        self.converged.fill_(True)
        return loss

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
        self.log("fit/k", float(self.conv.k), prog_bar=True, batch_size=1)
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
    def parameter_intervals(self, level: float | None = None) -> ParameterIntervals:
        """Laplace / Gauss-Newton intervals of ``k`` and ``gamma_i`` at the current parameters.

        See :mod:`calcium_gnn.evaluation.uncertainty`. Cost: one forward-mode Jacobian (P tangents).
        """
        level = self.interval_level if level is None else check_level(level)
        self._check_jacobian_size()
        theta = self.theta()
        residuals = self.residuals_theta(theta)
        jac = torch.func.jacfwd(lambda th: self.residuals_theta(th).reshape(-1))(theta)
        cov = gauss_newton_covariance(jac, residuals, autocorrelation=self.autocorrelation_correction)
        se = cov.se
        k_lo, k_hi = normal_interval(theta[:1], se[:1], level, self.k_bounds)
        n = self.modelled.shape[0]
        nan = torch.full((n,), math.nan, dtype=torch.float64)
        gamma, gamma_se = self.conv.gamma.detach().clone(), nan.clone()
        sl = slice(1, 1 + self.n_gamma)
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
            f"normal {level:.0%} intervals clipped to the bounds"
        )
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
        """Robust z-scores of ``gamma_i`` and of the training residual level per modelled cell."""
        residuals = torch.zeros_like(self.x_train)
        residuals[self.index] = self.simulate_train()[self.index] - self.x_train[self.index]
        return anomaly_scores(self.conv.gamma.detach(), residuals, self.modelled, rule or self.anomaly_rule)

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
