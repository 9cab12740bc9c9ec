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

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from calcium_gnn.data.zoo_laws import message as zoo_law_message
from calcium_gnn.errors import ConfigError, FitError, GraphError
from calcium_gnn.inference.anomaly import AnomalyRule, AnomalyScores
from calcium_gnn.inference.held_out import paired_comparison
from calcium_gnn.inference.learned_law import (
    LearnedLaw,
    MessageSamples,
    NodeTermSummary,
    node_term_summary,
    slope,
)
from calcium_gnn.inference.output_error import fit_anomaly_scores
from calcium_gnn.models.base import ConsensusModel
from calcium_gnn.models.neural_ode import (
    DEFAULT_LEAK_INIT,
    StartingPoint,
    conv_fitted_parameters,
    gradient_optimizer,
    lm_settings,
    training_window_problem,
)
from calcium_gnn.models.options import check_int, check_odd_window, check_positive
from calcium_gnn.nn.consensus import (
    DEFAULT_LEAK_BOUNDS,
    PAPER_GAMMA_BOUNDS,
    PAPER_K_BOUNDS,
    ConsensusConv,
    check_bounds,
)
from calcium_gnn.nn.coupling import MESSAGE_FORMS, CouplingConv, normalised_edge_features
from calcium_gnn.nn.named_laws import NAMED_LAW_TERMS, NAMED_LAWS, NamedConductance, visited_starts
from calcium_gnn.physics.edge_weights import edge_weights
from calcium_gnn.physics.interpolation import DEFAULT_TRAIN_FRACTION, time_split
from calcium_gnn.physics.levenberg_marquardt import LevenbergMarquardt
from calcium_gnn.physics.output_error import OutputErrorProblem, border_drive
from calcium_gnn.physics.parameters import FittedParameters, truth_errors
from calcium_gnn.physics.setups import Setup, resolve_setup
from calcium_gnn.physics.simulate import equal_intervals, integrate, integrate_segments, segment_starts
from calcium_gnn.physics.steps import METHODS, stiffness_substeps

log = logging.getLogger(__name__)

GNN_INITS: tuple[str, ...] = ("output_error", "crlsm", "constant")
GNN_OPTIMIZERS: tuple[str, ...] = ("lbfgs", "adam")

#: results.json ``law.terms`` per message form
MESSAGE_TERMS: dict[str, str] = {
    "correction": "eq. 3 with a learned message w (z_j - y_i) + phi(z_j - y_i, [z_j,] u_ij, l_ij) "
                  "- phi(0, ...)",
    "conductance": "eq. 3 with a learned positive conductance: w (z_j - y_i) c(z_j - y_i, [z_j,] u_ij, l_ij)",
    **NAMED_LAW_TERMS,
}
#: appended to ``law.terms`` with ``node_term``
NODE_TERM: str = ", plus a learned node term nu(y_i) of the cell's own level"
#: Levenberg-Marquardt iterations of the linear output-error fit the GNN starts from.
LINEAR_START_ITERATIONS: int = 50
#: ``substeps="auto"``: RK4 steps per frame interval such that ``h rho <= AUTO_STEP_RATE``
#: (:func:`calcium_gnn.physics.steps.stiffness_substeps`) at the linear start's ``k``: inside RK4's
#: stability limit (2.78) with room to spare; at ``h rho = 1`` RK4 gets the fastest mode's decay per
#: step to 2% (``0.375`` for ``e^{-1} = 0.368``), a mode that loses 63% per step and so is never seen
#: in the data...
AUTO_STEP_RATE: float = 2.0
#: ...with room for a learned message this many times steeper than the linear law
LEARNED_SLOPE_MARGIN: float = 2.0


def checked_law_start(conv: CouplingConv, law_start: Any) -> dict[str, float] | None:
    """``model.law_start`` as ``{parameter: value}`` in level units (None: the law's own start), checked
    against the layer's named law (:data:`~calcium_gnn.nn.named_laws.NAMED_LAWS`).

    Raises:
        ConfigError: a start without a named law (``message_form``), a mapping with a missing or unknown
            parameter, or a value outside the law's range.
    """
    if law_start is None:
        return None
    if conv.named is None:
        raise ConfigError("model.law_start", f"a start for a named law's parameters; message_form "
                                             f"{conv.message_form!r} has none (use one of "
                                             f"{tuple(NAMED_LAWS)})")
    if not isinstance(law_start, Mapping):
        raise ConfigError("model.law_start", f"expected a mapping of the law's parameters, got {law_start!r}")
    names = NAMED_LAWS[conv.named.law]
    unknown = sorted(set(law_start) - set(names))
    if unknown:
        raise ConfigError(f"model.law_start.{unknown[0]}",
                          f"not a parameter of the {conv.named.law} law (it has {names})")
    try:
        values = {n: float(law_start[n]) for n in names if n in law_start}
        probe = NamedConductance(conv.named.law, conv.named.gain)
        probe.set_parameters_in_levels(values, float(conv.level_center), float(conv.level_scale))
    except (GraphError, TypeError, ValueError) as err:
        raise ConfigError("model.law_start", str(err)) from err
    return values


def checked_law_starts(conv: CouplingConv, law_starts: Any) -> str | list[dict[str, float]] | None:
    """``model.law_starts``: ``"visited"`` (starts placed where the data are,
    :func:`~calcium_gnn.nn.named_laws.visited_starts`), a list of starts each checked like
    ``model.law_start`` (:func:`checked_law_start`), or None / an empty list: no more starts.

    Raises:
        ConfigError: starts without a named law, another string, or a start that does not fit the law
            (named by its place in the list).
    """
    if law_starts is None or (not isinstance(law_starts, str) and len(law_starts) == 0):
        return None
    if conv.named is None:
        raise ConfigError("model.law_starts", f"starts for a named law's parameters; message_form "
                                              f"{conv.message_form!r} has none")
    if isinstance(law_starts, str):
        if law_starts != "visited":
            raise ConfigError("model.law_starts", f"use 'visited' or a list of starts, got {law_starts!r}")
        return "visited"
    checked = []
    for i, start in enumerate(law_starts):
        try:
            checked.append(checked_law_start(conv, start))
        except ConfigError as err:
            raise ConfigError(f"model.law_starts[{i}]", err.problem) from err
    return checked


def level_statistics(x: Tensor) -> tuple[float, float]:
    """Median and standard deviation of the finite levels of ``x`` (N, T) (the conductance network's
    standardisation, :class:`~calcium_gnn.nn.coupling.CouplingConv`); a constant movie gets scale 1."""
    values = x.detach().double().reshape(-1)
    values = values[torch.isfinite(values)]
    if values.numel() < 2:
        return 0.0, 1.0
    spread = float(values.std())
    return float(values.median()), spread if spread > 0 else 1.0


class GNNODEModule(ConsensusModel):
    """Output-error fit of the consensus ODE with a learned MLP message (module docstring).

    Args:
        data, setup: the cell graph and the modelled cells (default setup I); the graph is read when
            the module is built, not kept.
        optimizer: ``"lbfgs"`` (default) or ``"adam"`` (the MLP has no closed-form Jacobian step).
        init: ``"output_error"`` (default: the linear law fitted by Levenberg-Marquardt), ``"crlsm"``
            or ``"constant"`` (``k_init``, ``gamma_init``).
        hidden_features, num_layers, activation: the message MLP (defaults 16, 2, ``"tanh"``).
        source_level: the MLP also sees the sending cell's level ``z_j`` (default False; needed to learn
            a level-gated law such as calcium-induced release, at twice the MLP work).
        message_form: ``"correction"`` (default: ``w Delta + phi(Delta, ...) - phi(0, ...)``) or
            ``"conductance"`` (``w Delta c(Delta, ...)`` with a learned conductance ``c > 0``: a passive
            junction, whose ODE obeys a maximum principle; :class:`~calcium_gnn.nn.coupling.CouplingConv`).
        conductance_gain: the conductance network's output gain ``G`` (default 1; a preconditioner,
            :class:`~calcium_gnn.nn.coupling.CouplingConv`).
        node_term: add a learned term ``nu(y_i)`` of each cell's own level (default False): a leak back
            to a baseline, or another process inside the cell, that the message of a junction cannot
            carry (:class:`~calcium_gnn.nn.coupling.CouplingConv`); its rate scale is the start's ``k``.
        message_samples: (edge, frame) samples of the learned message summarised after the fit
            (:meth:`learned_law`, default 20,000).
        shooting_segments: ``S`` (default 8): the training window is fitted as ``S`` windows simulated
            together from their own fitted start states (multiple shooting,
            :func:`~calcium_gnn.physics.simulate.integrate_segments`; starts initialised on the linear
            fit's simulation), about ``S`` times fewer sequential RK4 stages per loss evaluation; 1 fits
            it as one simulation (also used, with a log line, when the frame intervals are unequal).
            The evaluation still simulates the whole movie from the first state.
        continuity_weight: ``mu`` (default 1) of the continuity term: the loss is the windows' mean
            squared residual plus ``mu`` times the mean squared gap between each window's state at the
            next window's first frame and that window's fitted start. Measured on the built-in culture
            at 5% noise, the whole training window fitted (before the validation window existed;
            docs/law_discovery.md): without it (``mu = 0``) the windows leave the slow modes free and
            the test-window MSE against the clean traces was 3.6x the linear law's; with ``mu = 1``,
            1.03x.
        validation_fraction: the last fraction of the training window (default 0.2) the loss does not
            see: after every optimisation step the learned law is simulated over the whole training
            window and its MSE on these frames recorded; the fit keeps the parameters of the best step,
            the linear start counting as step 0, so a learned law that does worse than the linear fit
            on frames it did not train on is not kept (0: no validation, the last step is kept).
        validation_patience: stop after this many steps in a row without a better validation MSE.
        validation_min_delta: a step counts as better for the patience only when it lowers the best
            validation MSE by more than this fraction of it (default 0; the best step is still kept
            whatever its margin). On the noise-free built-in culture every step improved the validation
            MSE by about 1e-4 of it, and ``discover_law`` (patience 6) ran all 15 steps (126 s of fitting).
        k_reference: compare the learned coupling's effective ``k``
            (:mod:`calcium_gnn.inference.learned_law`) with the output-error reference fit of the paper's
            law (:mod:`calcium_gnn.evaluation.reference_fit`, corrected for the noise of the border
            inputs) in the diagnostics (default False;
            ``experiment=setup1_gnn_ode`` turns it on). The fit starts from the linear law without that
            correction, and under noise its ``k`` follows it down: on the zoo's test split, 12 of 60 runs
            were more than 25 % off and 3 of them flagged.
        autograd_budget_mb: the memory (MB) the backward pass through one loss evaluation's simulation
            may keep (default 1024; None: no limit). Beyond it, blocks of frame intervals are recomputed
            during the backward pass instead of kept (:func:`~calcium_gnn.physics.simulate.integrate`):
            the same gradients for about one more forward simulation.
        mlp_weight_decay: L2 penalty ``lambda ||theta_MLP||^2`` added to the loss (default 0).
        gamma_prior: only ``"none"`` (per-cell feeds; pooling needs the linear law's covariance).
        substeps: RK4 steps per frame interval, or ``"auto"`` (default): from the stiffness of the linear
            start (:meth:`stiffness_substeps`; one step where the coupling is slow against the frame rate).
        method, train_fraction, edge_weight_scale, k_bounds, gamma_bounds, k_init, gamma_init,
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
        source_level: bool = False,
        message_form: str = "correction",
        conductance_gain: float = 1.0,
        node_term: bool = False,
        mlp_weight_decay: float = 0.0,
        gamma_prior: str = "none",
        substeps: int | str = "auto",
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
        message_samples: int = 20_000,
        shooting_segments: int = 8,
        continuity_weight: float = 1.0,
        validation_fraction: float = 0.2,
        validation_patience: int = 2,
        validation_min_delta: float = 0.0,
        law_start: dict[str, float] | None = None,
        law_starts: str | list[dict[str, float]] | None = None,
        k_reference: bool = False,
        autograd_budget_mb: float | None = 1024.0,
    ) -> None:
        super().__init__()
        self.k_reference = bool(k_reference)
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
        if message_form not in MESSAGE_FORMS:
            raise ConfigError("model.message_form", f"unknown message form {message_form!r} "
                                                    f"(use one of {MESSAGE_FORMS})")
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
        center, spread = level_statistics(data.x.detach()[:, self.train_frames])
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
            source_level=source_level,
            message_form=message_form,
            level_center=center,
            level_scale=spread,
            conductance_gain=check_positive("model.conductance_gain", conductance_gain),
            node_term=bool(node_term),
        )
        #: a named law's start in level units (``model.law_start``), None: the law's own start
        self.law_start = checked_law_start(conv, law_start)
        #: more starts to screen (``model.law_starts``): ``"visited"`` or checked mappings; None: none
        self.law_starts = checked_law_starts(conv, law_starts)
        #: per screened start: its description, loss at the start and after one optimiser step
        self.start_screen: list[dict[str, Any]] = []
        self.n_message_samples = check_int("model.message_samples", message_samples, 10)
        self.shooting_segments = check_int("model.shooting_segments", shooting_segments, 1)
        self.continuity_weight = float(continuity_weight)
        if not self.continuity_weight >= 0:
            raise ConfigError("model.continuity_weight", f"must be >= 0, got {continuity_weight!r}")
        self.auto_substeps = substeps == "auto"
        fixed = 1 if self.auto_substeps else check_int("model.substeps", substeps, 1)
        options = {"substeps": fixed, "method": method, "fit_initial_state": fit_initial_state,
                   "border_smoothing": border_smoothing, "autograd_budget_mb": autograd_budget_mb}
        self.problem = training_window_problem(conv, data, setup, self.train_frames, w, **options)
        n_train = self.problem.x_train.shape[1]
        self.validation_fraction = float(validation_fraction)
        if not 0 <= self.validation_fraction < 0.5:
            raise ConfigError("model.validation_fraction",
                              f"must be in [0, 0.5), got {validation_fraction!r}")
        #: frames of the training window the loss sees; the rest validate each step
        self.n_fit = n_train - int(round(self.validation_fraction * n_train))
        if self.shooting_segments > max(1, (self.n_fit - 1) // 2):
            raise ConfigError("model.shooting_segments",
                              f"at most {(self.n_fit - 1) // 2} windows of two frame intervals fit in the "
                              f"{self.n_fit} fitted frames of the training window, got {shooting_segments}")
        segments = self.shooting_segments
        self.equal_intervals = equal_intervals(self.problem.t_train)
        if segments > 1 and not self.equal_intervals:
            log.info("gnn_ode: the frame intervals are unequal; the training window is fitted as one "
                     "simulation (model.shooting_segments=1)")
            segments = 1
        self.segment_frames = segment_starts(self.n_fit, segments)
        #: (N, S - 1) fitted states at the starts of windows 2..S (the first window starts at ``y0``)
        self.segment_y0 = torch.nn.Parameter(
            self.problem.x_train[:, self.segment_frames[1:]].detach().clone(),
            requires_grad=len(self.segment_frames) > 1,
        )
        self.validation_patience = check_int("model.validation_patience", validation_patience, 1)
        self.validation_min_delta = float(validation_min_delta)
        if not 0 <= self.validation_min_delta < 1:
            raise ConfigError("model.validation_min_delta",
                              f"must be in [0, 1), got {validation_min_delta!r}")
        #: the last step that lowered the best validation MSE by more than ``validation_min_delta`` of it
        self.improved_step = 0
        #: (validation MSE, step) of the best parameters so far; their values in ``best_parameters``
        self.best_validation: tuple[float, int] | None = None
        self.best_validation_start = float("nan")
        self.register_buffer("best_parameters", torch.zeros(0, dtype=torch.float64), persistent=False)
        self.kept_step: int | None = None
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
        #: with a node term: whether the fit started from the leak law's fit (:meth:`choose_leak_start`),
        #: and the validation MSEs of the two starts (host floats)
        self.leak_started = False
        self.start_validation: dict[str, float] = {}

    @property
    def conv(self) -> CouplingConv:
        """The learned right-hand side (``problem.conv``)."""
        return self.problem.conv

    def linear_problem(self) -> OutputErrorProblem:
        """The paper's linear law on the fitted frames of the training window (the validation frames held
        out, as for the learned law), graph and options: the start, and the linear fit compared with."""
        p, fit = self.problem, self.n_fit
        linear = ConsensusConv(
            p.modelled.shape[0], self.gamma_mode, self.k_bounds, self.gamma_bounds,
            self.conv.k_init, self.conv.gamma_init,
        ).to(p.x_train.device)
        return OutputErrorProblem(
            linear, p.x_train[:, :fit], p.t_train[:fit], p.edge_index, p.edge_weight, p.modelled,
            self.gamma_mode,
            substeps=p.substeps, method=p.ode_method, fit_initial_state=p.fit_initial_state,
            border_smoothing=p.border_smoothing, autograd_budget_mb=p.autograd_budget_mb,
        )

    def stiffness_substeps(self, k: float) -> int:
        """RK4 steps per frame interval for coupling ``k`` (``substeps="auto"``; module constants)."""
        p = self.problem
        return stiffness_substeps(k, p.edge_index, p.edge_weight, p.modelled, p.t_train, AUTO_STEP_RATE,
                                  LEARNED_SLOPE_MARGIN)

    @torch.no_grad()
    def initialise(self) -> None:
        """Fit the linear law by output error (``init="output_error"``), else CRLSM or the constants.

        With ``substeps="auto"`` the linear law is first fitted with one RK4 step per frame interval,
        the step count is set from its ``k`` (:meth:`stiffness_substeps`) and, when that is more than
        one, the linear fit is resumed at that step count, so start and learned law share it.
        """
        if self.gnn_init != "output_error":
            self.start.write_into(self.problem)
            if self.auto_substeps:
                self.problem.substeps = self.stiffness_substeps(float(self.conv.k.detach()))
            self.conv.set_node_rate(self.conv.k.detach())
            self.initialised.fill_(True)
            return
        linear = self.linear_problem()
        self.start.write_into(linear)
        solver = LevenbergMarquardt(self.damping, self.lm_settings).to(linear.x_train.device)
        solver.fit(linear, LINEAR_START_ITERATIONS)
        if self.auto_substeps:
            steps = self.stiffness_substeps(float(linear.conv.k.detach()))
            if steps != self.problem.substeps:
                self.problem.substeps = steps
                resumed = self.linear_problem()
                resumed.conv.set_parameters(linear.conv.k.detach(), linear.conv.gamma.detach())
                resumed.y0.copy_(linear.y0.detach())
                solver.fit(resumed, LINEAR_START_ITERATIONS)
                linear = resumed
        self.conv.set_node_rate(linear.conv.k.detach())
        self.write_start(linear)
        if self.law_start is not None:
            self.start_at_law(self.law_start)
        if self.law_starts is not None:
            self.screen_law_starts(linear)
        if self.conv.node is not None:
            self.choose_leak_start(linear)
        self.linear_k.copy_(linear.conv.k.detach())
        self.linear_gamma.copy_(linear.conv.gamma.detach())
        self.linear_y0.copy_(linear.y0.detach())
        self.has_linear_fit.fill_(True)
        self.initialised.fill_(True)

    @torch.no_grad()
    def write_start(self, start: OutputErrorProblem) -> None:
        """Start the learned law at a fitted law's ``k``, feeds, initial state and (with a node term) leak
        rate; the shooting windows start on its trajectory."""
        self.conv.set_parameters(start.conv.k.detach(), start.conv.gamma.detach())
        self.problem.y0.copy_(start.y0.detach())
        if self.conv.node is not None:
            self.conv.node_leak.copy_(start.conv.leak.detach())
        if len(self.segment_frames) > 1:
            self.segment_y0.copy_(start.simulate_train().detach()[:, self.segment_frames[1:]])

    @torch.no_grad()
    def start_at_law(self, values: dict[str, float]) -> None:
        """Put the named law at ``model.law_start`` and divide the linear fit's ``k`` by the law's mean
        conductance over the (difference, sending level) pairs the fitted frames visit on the edges into
        the modelled cells, so the start's typical flux is the linear fit's: a threshold law with
        ``a = 4`` and its gate open conducts 5x more per unit ``k``. Each feed then takes up the change of
        its cell's mean coupling flux at the observed levels, ``gamma_i += mean_t(k_lin D_i^lin - k D_i)``
        with ``D_i = 1/|N_i| sum_j w_ij Delta_ij c(Delta_ij, z_j)`` (``c = 1`` for the linear fit), so every
        cell keeps the linear fit's mean balance (within the feeds' bounds). A rectifier alone moves a
        cell's mean flux by ``(1 - r)`` of its outflow, and the linear feeds then drive the start far
        off: 150x the linear start's loss on a zoo rectifying member. Initial states stay the linear
        fit's; the fit then moves every parameter."""
        center, scale = float(self.conv.level_center), float(self.conv.level_scale)
        self.conv.named.set_parameters_in_levels(values, center, scale)
        x = self.problem.x_train[:, : self.n_fit]
        src, dst = self.problem.edge_index
        into = self.problem.modelled[dst]
        delta = x[src] - x[dst]  # (E, T) observed differences on every edge
        conductance = self.conv.conductance(delta, x[src])
        k_linear = self.conv.k.detach()
        k = k_linear / conductance[into].mean()
        weighted = self.problem.edge_weight.reshape(-1, 1) * delta
        degree = torch.bincount(dst, minlength=x.shape[0]).clamp(min=1).to(x.dtype)
        change = (k_linear * weighted - k * weighted * conductance).mean(dim=1)  # (E,) mean over frames
        shift = x.new_zeros(x.shape[0]).index_add_(0, dst, change) / degree
        gamma = self.conv.gamma.detach() + shift.to(self.conv.gamma.dtype)
        if self.gamma_mode == "shared":  # one feed: the modelled cells' mean shift
            gamma = gamma[self.problem.modelled].mean()
        self.conv.set_parameters(k, gamma)

    def visited_levels(self) -> tuple[Tensor, Tensor]:
        """The level differences ``z_j - y_i`` and sending levels ``z_j`` (E_in, T_fit) of the fitted frames'
        observed traces on the edges into the modelled cells (sender ``edge_index[0]``)."""
        x = self.problem.x_train[:, : self.n_fit]
        src, dst = self.problem.edge_index
        into = self.problem.modelled[dst]
        return x[src[into]] - x[dst[into]], x[src[into]]

    @torch.no_grad()
    def screen_law_starts(self, linear: OutputErrorProblem) -> None:
        """A multi-start for a named law (``model.law_starts``): from the linear fit ``linear``, the
        law's start (its own, or ``model.law_start``) and each further start (:meth:`start_at_law`; with
        ``"visited"``, :func:`~calcium_gnn.nn.named_laws.visited_starts`) take one optimiser step
        (``lbfgs_max_iter`` iterations), and the start whose loss is lowest after it is where the fit
        goes on from. A closed-form law can sit in a valley its start does not see: on the zoo's
        threshold-2 the default start stopped at ``a`` 0.26 and the true parameters as start at 1.40
        (true 3.58). A start whose loss is not finite is passed over; :attr:`start_screen` keeps every
        start's loss before and after its step (results.json ``optimizer.start_screen``)."""
        candidates: list[dict[str, float] | None] = [self.law_start]
        if self.law_starts == "visited":
            candidates += visited_starts(self.conv.named.law, *self.visited_levels(),
                                         float(self.conv.level_scale))
        else:
            candidates += list(self.law_starts)
        params = list(self.parameters())
        best: tuple[float, dict[str, float] | None, Tensor] | None = None
        self.start_screen = []
        for values in candidates:
            self.write_start(linear)
            self.conv.named.reset_parameters()
            if values is not None:
                self.start_at_law(values)
            before = float(self.loss_train())
            after = self.one_step()
            self.start_screen.append({"start": "the law's own start" if values is None else dict(values),
                                      "loss_start": before, "loss_after_step": after})
            if math.isfinite(after) and (best is None or after < best[0]):
                best = (after, values, self.parameter_vector().clone())
        if best is None:
            raise FitError("model.law_starts", f"no start of the {self.conv.named.law} law has a finite loss "
                                               "after one step")
        torch.nn.utils.vector_to_parameters(best[2], params)
        self.law_start = best[1]

    def one_step(self) -> float:
        """One optimiser step (``lbfgs_max_iter`` L-BFGS iterations) on :meth:`loss_train` from the current
        parameters, with a fresh optimiser (the fit's own, :meth:`configure_optimizers`); the loss after it
        (nan when it is not finite)."""
        optimiser = self.configure_optimizers()

        def closure() -> Tensor:
            optimiser.zero_grad()
            loss = self.loss_train()
            loss.backward()
            return loss

        with torch.enable_grad():
            optimiser.step(closure)
        with torch.no_grad():
            loss = float(self.loss_train())
        return loss if math.isfinite(loss) else float("nan")

    @torch.no_grad()
    def choose_leak_start(self, linear: OutputErrorProblem) -> None:
        """With a node term: fit the leak law (eq. 3 with ``- delta (y_i - b_i)``) by Levenberg-Marquardt
        from the linear fit ``linear`` and start from it when it predicts the validation frames better
        than the linear fit does (both fitted on the same frames), by the paired per-cell rule of
        :mod:`calcium_gnn.inference.held_out` (``z > 2.33`` and an MSE more than 2 % lower). The extra
        leak rate trades against ``k`` and can fit noise, so it has to earn its place on frames neither
        fit saw: on the zoo's ``dev-5`` (a linear member) the leak law's fit had a validation MSE 1.6 %
        below the linear fit's, a leak of 0.074/s, and a test-window MSE 12 % above it. Without
        validation frames the linear fit is the start and the leak law is not fitted. :attr:`leak_started`
        says which start was kept."""
        linear_mse = self.validation_mse_per_cell()
        if linear_mse is None:
            return
        leaky = linear.with_leak(DEFAULT_LEAK_BOUNDS)
        leaky.conv.set_parameters(linear.conv.k.detach(), linear.conv.gamma.detach())
        leaky.conv.set_leak(DEFAULT_LEAK_INIT)
        leaky.y0.copy_(linear.y0.detach())
        LevenbergMarquardt(self.damping, self.lm_settings).to(leaky.x_train.device).fit(
            leaky, LINEAR_START_ITERATIONS)
        self.write_start(leaky)
        leak_mse = self.validation_mse_per_cell()
        compared = paired_comparison(linear_mse.cpu().tolist(), leak_mse.cpu().tolist())
        self.start_validation = {"linear": float(linear_mse.mean()), "leak": float(leak_mse.mean()),
                                 **({} if compared is None else {"z": compared.z, "gain": compared.gain})}
        self.leak_started = bool(compared is not None and compared.better)
        if not self.leak_started:
            self.write_start(linear)
            self.conv.node_leak.zero_()

    def loss_segments(self) -> Tensor:
        """Mean squared residual of the modelled cells over the ``S`` shooting windows of the fitted frames
        (plus the continuity term)."""
        p, fit = self.problem, self.n_fit
        first = torch.where(p.modelled, p.y0, p.x_train[:, 0]).reshape(-1, 1)
        starts = torch.cat([first, self.segment_y0], dim=1)
        sim = integrate_segments(p.conv, p.drive_train[:, :fit], p.t_train[:fit], p.edge_index, p.edge_weight,
                                 p.modelled, p.conv.k, p.conv.gamma, self.segment_frames, starts,
                                 substeps=p.substeps, method=p.ode_method,
                                 autograd_budget_mb=p.autograd_budget_mb)
        length = sim.shape[2] - 1
        index = torch.as_tensor(self.segment_frames, device=sim.device).reshape(-1, 1) + torch.arange(
            length + 1, device=sim.device)
        data = (sim[p.index] - p.x_train[:, index][p.index]).pow(2).mean()
        if len(self.segment_frames) == 1:
            return data
        # continuity: each window's state at the next window's first frame against that window's start
        ends = torch.as_tensor(self.segment_frames[1:], device=sim.device) - index[:-1, 0]
        reached = sim[:, torch.arange(len(self.segment_frames) - 1, device=sim.device), ends]  # (N, S - 1)
        gap = (reached - self.segment_y0)[p.index].pow(2).mean()
        return data + self.continuity_weight * gap

    def loss_train(self) -> Tensor:
        """Output-error loss of the learned law (one simulation, or the shooting windows) plus the L2
        penalty on the MLP."""
        if self.equal_intervals:
            loss = self.loss_segments()
        else:
            p = self.problem
            loss = (p.simulate_train() - p.x_train)[p.index][:, : self.n_fit].pow(2).mean()
        if self.mlp_weight_decay > 0:
            networks = [net for net in (self.conv.phi, self.conv.node) if net is not None]
            penalty = sum(p.pow(2).sum() for net in networks for p in net.parameters())
            loss = loss + self.mlp_weight_decay * penalty
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return gradient_optimizer(params, self.optimizer_name, self.lr, self.lbfgs_max_iter)

    def on_fit_start(self) -> None:
        self.limit_threads()
        if not bool(self.initialised):
            self.initialise()
        self.best_validation = None
        self.improved_step = 0
        # the start (the linear fit with init="output_error") is step 0
        self.best_validation_start = self.validate(0)

    @staticmethod
    def step_name(step: int) -> str:
        return "the start (step 0)" if step == 0 else f"step {step}"

    def on_fit_end(self) -> None:
        self.restore_threads()
        self.keep_best()

    def parameter_vector(self) -> Tensor:
        """Every parameter of the module, flattened (the snapshot of :meth:`validate`)."""
        return torch.nn.utils.parameters_to_vector(list(self.parameters())).detach()

    @torch.no_grad()
    def validation_mse_per_cell(self) -> Tensor | None:
        """(G,) MSE of each modelled cell's one simulation over the training window on its validation
        frames, on the module's device, or None without validation frames."""
        p = self.problem
        if self.n_fit >= p.x_train.shape[1]:
            return None
        return (p.simulate_train() - p.x_train)[p.index][:, self.n_fit:].pow(2).mean(dim=1)

    @torch.no_grad()
    def validation_mse(self) -> float:
        """MSE of the one simulation over the training window on its validation frames (NaN without)."""
        per_cell = self.validation_mse_per_cell()
        return float("nan") if per_cell is None else float(per_cell.mean())

    @torch.no_grad()
    def validate(self, step: int) -> float:
        """Record the validation MSE of the current parameters as ``step``'s; snapshot them if best."""
        mse = self.validation_mse()
        if mse != mse:  # no validation frames
            return mse
        best = self.best_validation
        if best is not None and mse < best[0] * (1.0 - self.validation_min_delta):
            self.improved_step = step
        if best is None or mse < best[0]:
            self.best_validation = (mse, step)
            self.best_parameters = self.parameter_vector().clone()  # a buffer: it moves with the module
        return mse

    @torch.no_grad()
    def keep_best(self) -> None:
        """Put back the parameters of the step with the best validation MSE (:attr:`kept_step`)."""
        if self.best_validation is None:
            return
        torch.nn.utils.vector_to_parameters(self.best_parameters, list(self.parameters()))
        self.kept_step = self.best_validation[1]

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
        step = len(self.fit_log) + 1
        validation = self.validate(step)
        self.fit_log.append({"evaluations": evaluations, "best_loss": best, "k": float(self.conv.k.detach()),
                             "validation_mse": validation})
        self._step_losses = []
        if self.best_validation is not None and step - self.improved_step >= self.validation_patience:
            delta = self.validation_min_delta
            margin = f" (by more than {delta:g} of it)" if delta else ""
            self.stopped_early = (f"{self.validation_patience} step(s) without a better validation MSE"
                                  f"{margin} (best: {self.step_name(self.best_validation[1])})")
            return True
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
        screen = {"start_screen": self.start_screen} if self.start_screen else {}
        return {"name": self.optimizer_name, "steps": len(self.fit_log), "start": self.start_name(), **screen,
                "substeps": int(self.problem.substeps), "shooting_windows": len(self.segment_frames),
                "loss_evaluations": int(last.get("evaluations", 0)),
                "stopped": self.stopped_early or "the trainer's steps ran out (max_epochs x steps_per_epoch)",
                "validation": self.validation_results()}

    def validation_results(self) -> dict[str, Any]:
        """results.json ``optimizer.validation``: the held-out frames, the MSE per step, the step kept."""
        if self.best_validation is None:
            return {"fraction": self.validation_fraction, "kept": "the last step (no validation frames)"}
        by_step = [self.best_validation_start] + [e["validation_mse"] for e in self.fit_log]
        kept = self.kept_step if self.kept_step is not None else self.best_validation[1]
        frames = int(self.problem.x_train.shape[1] - self.n_fit)
        return {"fraction": self.validation_fraction, "frames": frames, "mse_by_step": by_step,
                "kept_step": kept, "kept": self.step_name(kept), "start": self.start_name(),
                **({"start_mse": dict(self.start_validation)} if self.start_validation else {})}

    def start_name(self) -> str:
        """What step 0 is: the linear fit, the leak law's fit (with a node term) or another start."""
        if not bool(self.has_linear_fit):
            return f"the {self.gnn_init} start"
        if self.law_start is not None:
            values = ", ".join(f"{n} = {v:.4g}" for n, v in self.law_start.items())
            return (f"the law at model.law_start ({values}) from the linear fit: k / the mean conductance, "
                    "feeds keeping each cell's mean flux")
        return "the leak law's fit" if self.leak_started else "the linear fit"

    # ------------------------------------------------------------------------------ after the fit
    def fitted_parameters(self) -> FittedParameters:
        """``k``, ``gamma`` (N,) (0 outside G) on the CPU, the edge-weight scale, the gamma mode and the
        fitted initial state."""
        return conv_fitted_parameters(self.conv, self.modelled, self.edge_weight_scale, self.gamma_mode,
                                      y0=self.problem.fitted_initial_state())

    def wants_k_reference(self) -> bool:
        """``model.k_reference``: whether the diagnostics compare the effective ``k`` with the output-error
        reference."""
        return self.k_reference

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
    def compare_with_linear(self, data: Data, substeps: int = 10, simulated: Tensor | None = None
                            ) -> dict[str, Any]:
        """Test-window MSE of the learned law and of the linear output-error fit it started from.

        MSE over the modelled cells against the observed traces (``mse_test``) and, with ground truth,
        against the clean traces (``mse_test_clean``). Needs ``init="output_error"``. ``simulated``: the
        learned law's :meth:`simulate_full` of ``data`` at ``substeps``, when already made.
        """
        if not bool(self.has_linear_fit):
            raise ConfigError("model.init", "the comparison with the linear law needs init='output_error'")
        idx, test = self.problem.index.cpu(), self.test_frames
        gnn = (self.simulate_full(data, substeps=substeps) if simulated is None else simulated).cpu()
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

    @torch.no_grad()
    def learned_law(self, data: Data, seed: int = 0, simulated: Tensor | None = None) -> LearnedLaw:
        """The learned flux per unit weight at visited states and its symbolic summary.

        Samples ``message_samples`` (edge, frame) pairs, uniformly, among the edges into modelled cells
        and all frames of the fitted simulation (border cells at their data): ``Delta = z_j - y_i``,
        ``z_j`` and ``q = k (Delta + (phi(Delta, ...) - phi(0, ...)) / w)``
        (:mod:`calcium_gnn.inference.learned_law`). With a zoo member's truth the true flux
        ``k f(Delta, z_j)`` (in this fit's weight units) comes along. ``simulated``: the learned law's
        :meth:`simulate_full` of ``data``, when already made.
        """
        p = self.problem
        sim = self.simulate_full(data) if simulated is None else simulated
        z = torch.where(p.modelled.reshape(-1, 1), sim, data.x.detach().to(sim))
        into_modelled = torch.nonzero(p.modelled[p.edge_index[1]]).reshape(-1)
        n = min(self.n_message_samples, into_modelled.numel() * z.shape[1])
        rng = np.random.default_rng(seed)
        pick = torch.as_tensor(rng.choice(into_modelled.numel() * z.shape[1], size=n, replace=False),
                               device=z.device)
        edges, frames = into_modelled[pick // z.shape[1]], pick % z.shape[1]
        source = z[p.edge_index[0, edges], frames]
        delta = source - z[p.edge_index[1, edges], frames]
        weight = p.edge_weight.to(delta)[edges]
        learned = self.conv.flux_per_weight(delta, source, edges, weight)
        host = {name: v.detach().cpu().double().numpy() for name, v in
                (("delta", delta), ("source", source), ("learned", learned), ("weight", weight))}
        true, has_truth = None, getattr(data, "truth_k", None) is not None
        law = getattr(data, "truth_law", "linear") if has_truth else None  # make_culture: eq. 3
        if law is not None:
            truth_scale = float(getattr(data, "truth_edge_weight_scale", self.edge_weight_scale))
            units = self.edge_weight_scale / truth_scale
            true = float(data.truth_k) * units * zoo_law_message(
                law, dict(getattr(data, "truth_law_constants", {}) or {}), host["delta"], host["source"])
        linear_k = float(self.linear_k) if bool(self.has_linear_fit) else float("nan")
        samples = MessageSamples(host["delta"], host["source"], host["learned"], true, law, linear_k,
                                 host["weight"])
        node = None
        if self.conv.node is not None:
            node = self.summarise_node_term(sim, slope(host["delta"], host["learned"], host["weight"]), data,
                                          rng)
        return LearnedLaw.from_samples(samples, node)

    @torch.no_grad()
    def summarise_node_term(self, sim: Tensor, effective_k: float, data: Data, rng: np.random.Generator
                          ) -> NodeTermSummary:
        """The node term ``nu`` at up to ``message_samples`` (cell, frame) levels of the modelled cells in
        the fitted simulation ``sim`` (N, T), summarised (:func:`node_term_summary`)."""
        p = self.problem
        cells = torch.nonzero(p.modelled).reshape(-1)
        n = min(self.n_message_samples, cells.numel() * sim.shape[1])
        pick = torch.as_tensor(rng.choice(cells.numel() * sim.shape[1], size=n, replace=False),
                               device=sim.device)
        level = sim[cells[pick // sim.shape[1]], pick % sim.shape[1]]
        flux = self.conv.node_flux(level)
        truth = None
        if getattr(data, "truth_k", None) is not None:
            truth = float(getattr(data, "truth_leak", 0.0) or 0.0)
        return node_term_summary(level.cpu().double().numpy(), flux.cpu().double().numpy(),
                                 float(self.conv.level_center), effective_k, truth)

    def extra_results(self, data: Data) -> dict[str, Any]:
        """Anomaly scores and the comparison with the linear law (no intervals: the MLP is not linear)."""
        problem = self.problem
        # beyond k and the feeds the problem counts (the feeds of border cells are never fitted): the
        # networks, a named law's parameters, the node term's leak rate
        n_mlp = sum(p.numel() for name, p in self.conv.named_parameters()
                    if p.requires_grad and name not in ("raw_k", "raw_gamma"))
        out: dict[str, Any] = {
            "anomaly": self.anomaly_scores(),
            "optimizer": self.optimizer_results(),
            "law": {"name": self.law_name, "terms": MESSAGE_TERMS[self.conv.message_form]
                    + (NODE_TERM if self.conv.node is not None else ""),
                    "n_parameters": problem.n_parameters + n_mlp,
                    "rss_train": float(problem.loss_train().detach()) * problem.n_residuals,
                    "n_residuals": problem.n_residuals},
        }
        if self.conv.named is not None:
            out["law"].update(self.named_law_results(data))
        simulated = self.simulate_full(data)  # once, for the comparison and the message samples
        if bool(self.has_linear_fit):
            out["gnn_vs_linear"] = self.compare_with_linear(data, simulated=simulated)
        out["learned_law"] = self.learned_law(data, simulated=simulated)
        return out

    @property
    def law_name(self) -> str:
        """``gnn_ode`` for a learned message, else the named law (:mod:`calcium_gnn.nn.named_laws`)."""
        return "gnn_ode" if self.conv.named is None else self.conv.message_form

    @torch.no_grad()
    def named_law_results(self, data: Data) -> dict[str, Any]:
        """results.json ``law`` entries of a named law: its fitted ``parameters`` in level units, the
        ``formula`` with ``k``, ``not_identified`` (why the parameters say less than their values,
        :meth:`~calcium_gnn.nn.named_laws.NamedConductance.unidentified`; empty when nothing is found), and
        with a zoo member of the same law its ``true_parameters``."""
        center, scale = float(self.conv.level_center), float(self.conv.level_scale)
        named = self.conv.named
        out: dict[str, Any] = {"parameters": named.parameters_in_levels(center, scale),
                               "formula": named.formula(float(self.conv.k), center, scale)}
        out["not_identified"] = named.unidentified(*self.visited_levels(), center, scale)
        if getattr(data, "truth_law", None) == named.law:
            constants = dict(getattr(data, "truth_law_constants", {}) or {})
            out["true_parameters"] = {n: float(constants[n]) for n in out["parameters"] if n in constants}
        return out

    def parameter_intervals(self, level: float | None = None, pool: bool = True):  # noqa: ANN201 - no intervals
        """Not available: the Gauss-Newton intervals assume the linear law (use ``model=neural_ode``)."""
        raise ConfigError("model", "parameter intervals are computed for the linear law (model=neural_ode)")
