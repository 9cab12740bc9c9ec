"""A learned coupling law: the consensus ODE with an MLP message (GNN ODE), ``model=gnn_ode``.

The right-hand side is :class:`calcium_gnn.nn.coupling.CouplingConv`:

.. math::
    \\frac{dy_i}{dt} = \\frac{k}{|N_i|} \\sum_{j \\in N(i)} \\big[w_{ij} \\Delta_{ij}
    + \\phi_\\theta(\\Delta_{ij}, \\tilde u_{ij}, \\tilde l_{ij}) - \\phi_\\theta(0, \\tilde u_{ij},
    \\tilde l_{ij})\\big] + \\gamma_i,

the linear law of eq. (3) plus a correction that starts at zero. It is fitted by the same output-error
loss as :class:`~calcium_gnn.models.neural_ode.OutputErrorODE` (mean squared difference between the
simulated and observed traces of the modelled cells over the training window), with L-BFGS (or Adam)
through a classical RK4 integration of the (now nonlinear) ODE by the one simulator,
:func:`calcium_gnn.physics.simulate.integrate` (step by step, as the law is not affine in the state),
border cells following their linearly interpolated data.

It is built by composition: an :class:`~calcium_gnn.physics.output_error.OutputErrorProblem` around a
:class:`~calcium_gnn.nn.coupling.CouplingConv`, the linear law's problem and Levenberg-Marquardt solver
for the start, and the shared post-fit anomaly scores.

Initialisation (``init``): ``"output_error"`` (default) first fits the linear law by output error
(Levenberg-Marquardt, the ``neural_ode`` model), so training starts *at* the best linear model and the
test-window comparison (:meth:`GNNODEModule.compare_with_linear`) says whether the learned
correction helps; ``"crlsm"`` / ``"constant"`` as in the linear model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

from calcium_gnn.errors import ConfigError
from calcium_gnn.inference.anomaly import AnomalyRule, AnomalyScores
from calcium_gnn.inference.output_error import fit_anomaly_scores
from calcium_gnn.models.base import ConsensusModel
from calcium_gnn.models.neural_ode import (
    StartingPoint,
    conv_fitted_parameters,
    gradient_optimizer,
    lm_settings,
    training_window_problem,
)
from calcium_gnn.models.options import check_int, check_odd_window, check_positive
from calcium_gnn.nn.consensus import PAPER_GAMMA_BOUNDS, PAPER_K_BOUNDS, ConsensusConv, check_bounds
from calcium_gnn.nn.coupling import CouplingConv, normalised_edge_features
from calcium_gnn.physics.edge_weights import edge_weights
from calcium_gnn.physics.interpolation import DEFAULT_TRAIN_FRACTION, time_split
from calcium_gnn.physics.levenberg_marquardt import LevenbergMarquardt
from calcium_gnn.physics.output_error import OutputErrorProblem, border_drive
from calcium_gnn.physics.parameters import FittedParameters, truth_errors
from calcium_gnn.physics.setups import Setup, resolve_setup
from calcium_gnn.physics.simulate import integrate
from calcium_gnn.physics.steps import METHODS

GNN_INITS: tuple[str, ...] = ("output_error", "crlsm", "constant")
GNN_OPTIMIZERS: tuple[str, ...] = ("lbfgs", "adam")

#: Levenberg-Marquardt iterations of the linear output-error fit the GNN starts from.
LINEAR_START_ITERATIONS: int = 50


class GNNODEModule(ConsensusModel):
    """Output-error fit of the consensus ODE with a learned MLP message (module docstring).

    Args:
        data, setup: the cell graph and the modelled cells (default setup I); the graph is read when
            the module is built, not kept.
        optimizer: ``"lbfgs"`` (default) or ``"adam"`` (the MLP has no closed-form Jacobian step).
        init: ``"output_error"`` (default: the linear law fitted by Levenberg-Marquardt), ``"crlsm"``
            or ``"constant"`` (``k_init``, ``gamma_init``).
        hidden_features, num_layers, activation: the message MLP (defaults 16, 2, ``"tanh"``).
        mlp_weight_decay: L2 penalty ``lambda ||theta_MLP||^2`` added to the loss (default 0).
        gamma_prior: only ``"none"`` (per-cell feeds; pooling needs the linear law's covariance).
        substeps, method, train_fraction, edge_weight_scale, k_bounds, gamma_bounds, k_init, gamma_init,
            fit_initial_state, border_smoothing, steps_per_epoch, lr, lbfgs_max_iter: as
            :class:`~calcium_gnn.models.neural_ode.OutputErrorODE`.
        damping, damping_factor, max_retries, tolerance: the Levenberg-Marquardt fit of the linear
            start (``init="output_error"``).
        anomaly_threshold: robust z-score threshold of the anomaly rule (default 3.5).
        num_threads: torch threads during ``trainer.fit`` (restored after); None leaves them alone.
        stop_tolerance: the fit stops (``trainer.should_stop``) after an optimisation step that lowered
            the best loss by less than this fraction of it (default 1e-4; 0 runs every step). On the
            built-in culture at 5% noise, run to the end, the last 185 of 229 loss evaluations lowered
            the loss by 0.10% in all, inside the noise, while ``k`` wandered by up to 12%
            (``benchmarks/bench_gnn_ode.py``, docs/noise.md).
    """

    #: the fit matches the simulation to the data: no output-error reference is fitted for it
    simulation_fit = True

    method_name = "gnn_ode"

    def __init__(
        self,
        data: Data | None = None,
        setup: Setup | None = None,
        optimizer: str = "lbfgs",
        init: str = "output_error",
        hidden_features: int = 16,
        num_layers: int = 2,
        activation: str = "tanh",
        mlp_weight_decay: float = 0.0,
        gamma_prior: str = "none",
        substeps: int = 2,
        method: str = "rk4",
        train_fraction: float = DEFAULT_TRAIN_FRACTION,
        edge_weight_scale: float | str = "mean",
        k_bounds: tuple[float, float] = PAPER_K_BOUNDS,
        gamma_bounds: tuple[float, float] = PAPER_GAMMA_BOUNDS,
        k_init: float = 0.01,
        gamma_init: float = 0.0,
        fit_initial_state: bool = True,
        border_smoothing: int = 1,
        steps_per_epoch: int = 5,
        lr: float = 1.0,
        lbfgs_max_iter: int = 20,
        damping: float = 1e-3,
        damping_factor: float = 10.0,
        max_retries: int = 8,
        tolerance: float = 1e-9,
        anomaly_threshold: float = 3.5,
        num_threads: int | None = None,
        stop_tolerance: float = 1e-4,
    ) -> None:
        super().__init__()
        if data is None:
            raise ConfigError("model", f"{type(self).__name__} needs the cell graph (data=...)")
        setup = setup if setup is not None else resolve_setup(data)
        self.stop_tolerance = float(stop_tolerance)
        if not 0 <= self.stop_tolerance < 1:
            raise ConfigError("model.stop_tolerance", f"must be in [0, 1), got {stop_tolerance!r}")
        #: per optimisation step: loss evaluations, best loss and k (host floats, for results.json)
        self.fit_log: list[dict[str, float]] = []
        self.stopped_early: str | None = None
        self._step_losses: list[float] = []
        if optimizer not in GNN_OPTIMIZERS:
            raise ConfigError("model.optimizer", f"gnn_ode trains with 'lbfgs' or 'adam', got {optimizer!r}")
        if gamma_prior != "none":
            raise ConfigError(
                "model.gamma_prior",
                f"gnn_ode fits per-cell feeds only ('none'), got {gamma_prior!r}: the random-effects pooling "
                "uses the Gauss-Newton covariance of the linear law (model=neural_ode)",
            )
        if init not in GNN_INITS:
            raise ConfigError("model.init", f"unknown init '{init}' (use one of {GNN_INITS})")
        if method not in METHODS:
            raise ConfigError("model.method", f"unknown method '{method}' (use one of {METHODS})")
        self.mlp_weight_decay = float(mlp_weight_decay)
        if not self.mlp_weight_decay >= 0:
            raise ConfigError("model.mlp_weight_decay", f"must be >= 0, got {mlp_weight_decay!r}")
        border_smoothing = check_odd_window("model.border_smoothing", border_smoothing)
        self.save_hyperparameters(ignore=["data", "setup"])
        self.optimizer_name = optimizer
        self.gnn_init = init
        self.steps_per_epoch = check_int("model.steps_per_epoch", steps_per_epoch, 1)
        self.lr = check_positive("model.lr", lr)
        self.lbfgs_max_iter = check_int("model.lbfgs_max_iter", lbfgs_max_iter, 1)
        self.k_bounds = check_bounds("model.k_bounds", k_bounds)
        self.gamma_bounds = check_bounds("model.gamma_bounds", gamma_bounds)
        self.anomaly_rule = AnomalyRule(threshold=float(anomaly_threshold))
        self.lm_settings = lm_settings(damping_factor, max_retries, tolerance)
        self.damping = check_positive("model.damping", damping)
        self.num_threads = None if num_threads is None else check_int("model.num_threads", num_threads, 1)
        self.train_fraction = float(train_fraction)
        self.register_setup(setup)
        self.register_buffer("cell_id", data.cell_id.detach().reshape(-1).long().cpu().clone())

        self.train_frames, self.test_frames = time_split(data.x.shape[1], train_fraction)
        w, scale = edge_weights(data.edge_attr.detach().double(), edge_weight_scale)
        self.edge_weight_scale = scale
        conv = CouplingConv(
            int(data.num_nodes),
            normalised_edge_features(data.u, data.l),
            setup.gamma_mode,
            self.k_bounds,
            self.gamma_bounds,
            k_init=k_init,
            gamma_init=gamma_init,
            hidden_features=hidden_features,
            num_layers=num_layers,
            activation=activation,
        )
        options = {"substeps": check_int("model.substeps", substeps, 1), "method": method,
                   "fit_initial_state": fit_initial_state, "border_smoothing": border_smoothing}
        self.problem = training_window_problem(conv, data, setup, self.train_frames, w, **options)
        self.start = StartingPoint(
            data, setup, "constant" if init == "output_error" else init, self.k_bounds, self.gamma_bounds,
            self.train_fraction, self.edge_weight_scale,
        )
        self.register_buffer("initialised", torch.tensor(False))
        # the linear output-error fit the correction starts from (init="output_error")
        self.register_buffer("has_linear_fit", torch.tensor(False))
        self.register_buffer("linear_k", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("linear_gamma", torch.zeros(int(data.num_nodes), dtype=torch.float64))
        self.register_buffer("linear_y0", torch.zeros(int(data.num_nodes), dtype=torch.float64))

    @property
    def conv(self) -> CouplingConv:
        """The learned right-hand side (``problem.conv``)."""
        return self.problem.conv

    def linear_problem(self) -> OutputErrorProblem:
        """The paper's linear law on the same training window, graph and options (for the start)."""
        p = self.problem
        linear = ConsensusConv(
            p.modelled.shape[0], self.gamma_mode, self.k_bounds, self.gamma_bounds,
            self.conv.k_init, self.conv.gamma_init,
        ).to(p.x_train.device)
        return OutputErrorProblem(
            linear, p.x_train, p.t_train, p.edge_index, p.edge_weight, p.modelled, self.gamma_mode,
            substeps=p.substeps, method=p.ode_method, fit_initial_state=p.fit_initial_state,
            border_smoothing=p.border_smoothing,
        )

    @torch.no_grad()
    def initialise(self) -> None:
        """Fit the linear law by output error (``init="output_error"``), else CRLSM or the constants."""
        if self.gnn_init != "output_error":
            self.start.write_into(self.problem)
            self.initialised.fill_(True)
            return
        linear = self.linear_problem()
        self.start.write_into(linear)
        LevenbergMarquardt(self.damping, self.lm_settings).to(linear.x_train.device).fit(
            linear, LINEAR_START_ITERATIONS
        )
        self.conv.set_parameters(linear.conv.k.detach(), linear.conv.gamma.detach())
        self.problem.y0.copy_(linear.y0.detach())
        self.linear_k.copy_(linear.conv.k.detach())
        self.linear_gamma.copy_(linear.conv.gamma.detach())
        self.linear_y0.copy_(linear.y0.detach())
        self.has_linear_fit.fill_(True)
        self.initialised.fill_(True)

    def loss_train(self) -> Tensor:
        """Output-error loss of the learned law plus the L2 penalty on the MLP."""
        loss = self.problem.loss_train()
        if self.mlp_weight_decay > 0:
            loss = loss + self.mlp_weight_decay * sum(p.pow(2).sum() for p in self.conv.phi.parameters())
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return gradient_optimizer(params, self.optimizer_name, self.lr, self.lbfgs_max_iter)

    def on_fit_start(self) -> None:
        self.limit_threads()
        if not bool(self.initialised):
            self.initialise()

    def on_fit_end(self) -> None:
        self.restore_threads()

    def training_step(self, batch: Data, batch_idx: int) -> Tensor:
        loss = self.loss_train()
        self._step_losses.append(float(loss.detach()))  # every evaluation of the step (L-BFGS: several)
        self.log("train/loss", loss.detach().float(), prog_bar=True, batch_size=1)
        self.log("fit/k", float(self.conv.k.detach()), prog_bar=True, batch_size=1)
        if isinstance(batch, Data):
            for name, value in truth_errors(self.fitted_parameters(), batch, self.modelled).items():
                self.log(name, value, batch_size=1)
        return loss

    def end_step(self) -> bool:
        """Close one optimisation step: log it in :attr:`fit_log` and say whether the fit has converged
        (the step lowered the best loss by less than ``stop_tolerance`` of it)."""
        best = min(self._step_losses) if self._step_losses else float("nan")
        previous = self.fit_log[-1]["best_loss"] if self.fit_log else None
        evaluations = len(self._step_losses) + (int(self.fit_log[-1]["evaluations"]) if self.fit_log else 0)
        self.fit_log.append({"evaluations": evaluations, "best_loss": best, "k": float(self.conv.k.detach())})
        self._step_losses = []
        if previous is None or not self.stop_tolerance or not previous > 0:
            return False
        gain = (previous - best) / previous
        if gain < self.stop_tolerance:
            self.stopped_early = (f"step {len(self.fit_log)} lowered the loss by {gain:.2e} of it "
                                  f"(< stop_tolerance {self.stop_tolerance:g})")
            return True
        return False

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.end_step():
            self.trainer.should_stop = True

    def optimizer_results(self) -> dict[str, Any]:
        """results.json block ``optimizer``: steps, loss evaluations and why the fit stopped."""
        last = self.fit_log[-1] if self.fit_log else {}
        return {"name": self.optimizer_name, "steps": len(self.fit_log),
                "loss_evaluations": int(last.get("evaluations", 0)),
                "stopped": self.stopped_early or "the trainer's steps ran out (max_epochs x steps_per_epoch)"}

    # ------------------------------------------------------------------------------ after the fit
    def fitted_parameters(self) -> FittedParameters:
        """``k``, ``gamma`` (N,) (0 outside G) on the CPU, the edge-weight scale and the gamma mode."""
        return conv_fitted_parameters(self.conv, self.modelled, self.edge_weight_scale, self.gamma_mode)

    def simulator(self) -> CouplingConv:
        """The learned right-hand side: the evaluation integrates it step by step."""
        return self.conv

    @torch.no_grad()
    def anomaly_scores(self, rule: AnomalyRule | None = None) -> AnomalyScores:
        """Robust z-scores of ``gamma_i`` and of the training residual level."""
        return fit_anomaly_scores(self.problem, rule or self.anomaly_rule)

    @torch.no_grad()
    def simulate_full(
        self, data: Data, conv: ConsensusConv | None = None, k: Tensor | None = None,
        gamma: Tensor | None = None, y0: Tensor | None = None, substeps: int = 10,
    ) -> Tensor:
        """Simulate the whole movie (N, T) of ``data`` (both windows) with the learned (or given) law."""
        p = self.problem
        x = data.x.detach().to(p.x_train)
        return integrate(
            conv if conv is not None else self.conv,
            border_drive(x, p.modelled, p.border_smoothing),
            data.t.detach().to(p.t_train),
            p.edge_index,
            p.edge_weight,
            p.modelled,
            self.conv.k if k is None else k,
            self.conv.gamma if gamma is None else gamma,
            y0=p.y0 if y0 is None else y0,
            substeps=substeps,
            method=p.ode_method,
        )

    @torch.no_grad()
    def compare_with_linear(self, data: Data, substeps: int = 10) -> dict[str, Any]:
        """Test-window MSE of the learned law and of the linear output-error fit it started from.

        MSE over the modelled cells against the observed traces (``mse_test``) and, with ground truth,
        against the clean traces (``mse_test_clean``). Needs ``init="output_error"``.
        """
        if not bool(self.has_linear_fit):
            raise ConfigError("model.init", "the comparison with the linear law needs init='output_error'")
        idx, test = self.problem.index.cpu(), self.test_frames
        gnn = self.simulate_full(data, substeps=substeps).cpu()
        linear_conv = ConsensusConv(self.modelled.shape[0], self.gamma_mode).to(self.linear_k)
        lin = self.simulate_full(
            data, conv=linear_conv, k=self.linear_k, gamma=self.linear_gamma, y0=self.linear_y0,
            substeps=substeps,
        ).cpu()
        x = data.x.detach().cpu().double()
        truth_x = getattr(data, "truth_x", None)
        out: dict[str, Any] = {}
        for name, sim in (("gnn", gnn), ("linear", lin)):
            out[f"mse_test_{name}"] = float((sim[idx][:, test] - x[idx][:, test]).pow(2).mean())
            if truth_x is not None:
                clean = truth_x.detach().cpu().double()
                out[f"mse_test_clean_{name}"] = float((sim[idx][:, test] - clean[idx][:, test]).pow(2).mean())
        out["gnn_beats_linear"] = out["mse_test_gnn"] < out["mse_test_linear"]
        return out

    def extra_results(self, data: Data) -> dict[str, Any]:
        """Anomaly scores and the comparison with the linear law (no intervals: the MLP is not linear)."""
        problem = self.problem
        n_mlp = sum(p.numel() for p in self.conv.parameters() if p.requires_grad) - 1 - problem.n_gamma
        out: dict[str, Any] = {
            "anomaly": self.anomaly_scores(),
            "optimizer": self.optimizer_results(),
            "law": {"name": "gnn_ode", "terms": "eq. 3 with a learned message phi(z_j - y_i, u_ij, l_ij)",
                    "n_parameters": problem.n_parameters + n_mlp,
                    "rss_train": float(self.loss_train().detach()) * problem.n_residuals,
                    "n_residuals": problem.n_residuals},
        }
        if bool(self.has_linear_fit):
            out["gnn_vs_linear"] = self.compare_with_linear(data)
        return out

    def parameter_intervals(self, level: float | None = None, pool: bool = True):  # noqa: ANN201 - no intervals
        """Not available: the Gauss-Newton intervals assume the linear law (use ``model=neural_ode``)."""
        raise ConfigError("model", "parameter intervals are computed for the linear law (model=neural_ode)")
