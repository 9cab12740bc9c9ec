"""Output-error (simulation) fitting of the consensus ODE: ``model=neural_ode``.

The paper's least squares (eqs. 4-20) regress every step on the *noisy previous value*: an
errors-in-variables problem that biases ``k`` towards 0 as observation noise grows. Here the
parameters are fitted on what the model predicts over the whole training window instead. With the
modelled cells G, the training frames ``t_0 .. t_{T-1}`` and ``y(t; theta)`` the solution of eq. (3)
(:func:`calcium_gnn.physics.simulate.integrate`, RK4 through
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
* ``"variable_projection"``: the same optimum without forming ``J^T J`` (P, P): the linear
  parameters solved matrix-free by preconditioned conjugate gradients at each ``k``, ``k`` (and a leak
  rate) by Gauss-Newton steps on the profiled loss (:mod:`calcium_gnn.physics.variable_projection`;
  needs the eigenbasis). Memory O(G^2), time O(G^3) once for the eigenbasis plus O(T G^2) per
  solve: what makes 10,000 cells possible. Intervals: ``k`` (and the leak rate) only.
* ``"auto"``: ``"gauss_newton"`` when the normal equations can be formed: in the eigenbasis of the
  consensus operator (``jacobian="modal"``, :mod:`calcium_gnn.physics.modal`: O(G^3 + T G^2), no
  M x P Jacobian; needs symmetric weights, which the graph builder's are) or from the dense Jacobian
  when the number of parameters P is at most ``max_jacobian_parameters``; above
  ``max_normal_parameters`` ``"variable_projection"`` where the eigenbasis exists; else ``"lbfgs"``.
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
feed by its best linear unbiased predictor (:mod:`calcium_gnn.inference.random_effects`), with ``k``
left as fitted. It is applied when a fit ends (:meth:`OutputErrorODE.apply_gamma_prior`); the per-cell
estimates stay available (``problem.theta_unpooled()``) and drive the anomaly scores. ``"none"`` keeps
the per-cell output-error estimates.

Border noise (``border_noise_correction``, default on): the border cells drive the simulation with
their *noisy* data, an errors-in-variables problem that biases ``k`` low as the noise grows (11.6% at
1,000 cells and 5% noise). When the fit ends, ``k`` is re-chosen to minimise the training loss
normalised by its expected noise level, which accounts for the border noise that reaches G
(:mod:`calcium_gnn.physics.border_noise`).

Structure (one job per module): the problem is an ``nn.Module``
(:class:`~calcium_gnn.physics.output_error.OutputErrorProblem`: buffers, parameter vector, simulation,
normal equations), the solver another (:class:`~calcium_gnn.physics.levenberg_marquardt.LevenbergMarquardt`,
its state as buffers), the post-fit statistics are functions (:mod:`calcium_gnn.inference.output_error`,
:mod:`calcium_gnn.physics.border_noise`), and this LightningModule only ties them to a Trainer.

After fitting (:meth:`OutputErrorODE.finish_fit` runs the correction and the pooling above;
``on_fit_end`` calls it): :meth:`~OutputErrorODE.fitted_parameters` (``k``, ``gamma``),
:meth:`~OutputErrorODE.parameter_intervals`, :meth:`~OutputErrorODE.anomaly_scores` and
:meth:`~OutputErrorODE.extra_results` (both, with the pooling and correction blocks, for results.json).
"""

from __future__ import annotations

import logging
import math
import statistics
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from calcium_gnn.errors import ConfigError
from calcium_gnn.inference.anomaly import AnomalyRule, AnomalyScores
from calcium_gnn.inference.law_check import LeakScore, leak_score_test
from calcium_gnn.inference.output_error import (
    fit_anomaly_scores,
    laplace,
    nonlinear_laplace,
    parameter_intervals,
    pooled_feeds,
)
from calcium_gnn.inference.random_effects import MIN_POOLED_CELLS, PooledFeeds
from calcium_gnn.inference.uncertainty import (
    DEFAULT_LEVEL,
    ParameterIntervals,
    check_level,
    lag1_autocorrelation,
    normal_interval,
)
from calcium_gnn.models.base import ConsensusModel
from calcium_gnn.models.options import check_int, check_odd_window, check_positive
from calcium_gnn.nn.consensus import (
    DEFAULT_LEAK_BOUNDS,
    PAPER_GAMMA_BOUNDS,
    PAPER_K_BOUNDS,
    ConsensusConv,
    check_bounds,
)
from calcium_gnn.physics.border_noise import (
    SEARCH_FACTOR,
    BorderNoiseCorrection,
    correct_border_noise,
    correct_border_noise_weighted,
    input_noise_products,
)
from calcium_gnn.physics.edge_weights import edge_weights
from calcium_gnn.physics.interpolation import DEFAULT_TRAIN_FRACTION, time_split
from calcium_gnn.physics.laws import law_description, law_terms
from calcium_gnn.physics.least_squares import fit_least_squares
from calcium_gnn.physics.levenberg_marquardt import LevenbergMarquardt, LMSettings
from calcium_gnn.physics.output_error import JACOBIANS, OutputErrorProblem
from calcium_gnn.physics.parameters import FittedParameters, truth_errors
from calcium_gnn.physics.setups import Setup, resolve_setup
from calcium_gnn.physics.steps import METHODS
from calcium_gnn.physics.variable_projection import ProjectionSettings, VariableProjection

log = logging.getLogger(__name__)

OPTIMIZERS: tuple[str, ...] = ("auto", "gauss_newton", "variable_projection", "lbfgs", "adam")
#: the optimisers that solve the least-squares problem exactly (no torch optimiser, no learning rate)
EXACT_SOLVERS: tuple[str, ...] = ("gauss_newton", "variable_projection")
INITS: tuple[str, ...] = ("crlsm", "constant")
GAMMA_PRIORS: tuple[str, ...] = ("random_effects", "none")
#: where the leak rate starts (1/s): the paper's law, at the box's lower bound 0. The active set of
#: Levenberg-Marquardt holds it there only while the gradient pushes it below 0, that is while a leak
#: does not lower the loss (on the zoo's dev-47 it moves from 0 to 0.098/s; starting it at 0.005 or
#: 0.02/s ends within 2 % of that)
DEFAULT_LEAK_INIT: float = 0.0


def conv_fitted_parameters(
    conv: ConsensusConv, modelled: Tensor, edge_weight_scale: float, gamma_mode: str,
    law: str = "linear", stimulus: Tensor | None = None, stimulus_time: float | None = None,
    y0: Tensor | None = None,
) -> FittedParameters:
    """The ``k``, ``gamma`` (N,) and leak held by ``conv`` as host values (``gamma`` 0 outside G, float64
    on the CPU), for any output-error model (a law of :mod:`calcium_gnn.physics.laws` or a learned
    coupling); ``stimulus`` (N,) the switched feeds of a stimulus law, at ``stimulus_time`` (s); ``y0``
    (N,) the fitted state at the first training frame (None: the fit used the observed frame)."""
    gamma = conv.gamma.detach()
    gamma = torch.where(modelled, gamma, torch.zeros_like(gamma))
    leak_mode = getattr(conv, "leak_mode", "none")
    if stimulus is not None:
        stimulus = torch.where(modelled, stimulus.detach(), torch.zeros_like(stimulus)).cpu().double()
    return FittedParameters(
        k=float(conv.k.detach()),
        gamma=gamma.cpu().double(),
        edge_weight_scale=edge_weight_scale,
        gamma_mode=gamma_mode,
        k_bounds=tuple(conv.k_bounds),
        gamma_bounds=tuple(conv.gamma_bounds),
        law=law,
        leak=float(conv.leak.detach()) if leak_mode != "none" else 0.0,
        leak_bounds=tuple(conv.leak_bounds) if leak_mode != "none" else None,
        stimulus_feed=stimulus,
        stimulus_time=stimulus_time,
        y0=None if y0 is None else y0.detach().cpu().double().reshape(-1),
    )


def lm_settings(damping_factor: Any, max_retries: Any, tolerance: Any) -> LMSettings:
    """Checked Levenberg-Marquardt settings (``model.damping_factor`` > 1, ...)."""
    factor = check_positive("model.damping_factor", damping_factor)
    if factor <= 1:
        raise ConfigError("model.damping_factor", f"must be > 1, got {damping_factor!r}")
    retries = check_int("model.max_retries", max_retries, 0)
    return LMSettings(factor, retries, check_positive("model.tolerance", tolerance))


def gradient_optimizer(
    params: list[torch.nn.Parameter], name: str, lr: float, lbfgs_max_iter: int
) -> torch.optim.Optimizer:
    """``torch.optim.LBFGS`` (strong-Wolfe line search) or Adam over ``params``."""
    if name == "lbfgs":
        return torch.optim.LBFGS(
            params,
            lr=lr,
            max_iter=lbfgs_max_iter,
            history_size=50,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-12,
            tolerance_change=1e-15,
        )
    return torch.optim.Adam(params, lr=lr)


def training_window_problem(
    conv: ConsensusConv, data: Data, setup: Setup, train: slice, edge_weight: Tensor, **options: Any
) -> OutputErrorProblem:
    """The output-error problem of ``conv`` (made float64) on the training frames ``train`` of ``data``.

    ``edge_weight`` (E,) are the normalised weights; ``options`` those of :class:`OutputErrorProblem`.
    """
    return OutputErrorProblem(
        conv.double(),
        data.x.detach()[:, train],
        data.t.detach()[train],
        data.edge_index,
        edge_weight,
        setup.modelled,
        setup.gamma_mode,
        **options,
    )


class StartingPoint(torch.nn.Module):
    """Where an output-error fit starts: the paper's CRLSM fit (``init="crlsm"``) or the constants.

    The CRLSM fit is solved when the module is built (the graph is at hand then, and is not kept) and
    held as buffers ``k`` (0-d) and ``gamma`` (N,); :meth:`write_into` writes it into a problem.
    """

    def __init__(
        self, data: Data, setup: Setup, init: str, k_bounds: tuple[float, float],
        gamma_bounds: tuple[float, float], train_fraction: float, edge_weight_scale: float,
    ) -> None:
        super().__init__()
        self.init = init
        self.register_buffer("k", torch.tensor(math.nan, dtype=torch.float64))
        self.register_buffer("gamma", torch.zeros(int(data.num_nodes), dtype=torch.float64))
        if init == "crlsm":
            fitted = fit_least_squares(
                data, setup, solver="crlsm", k_bounds=k_bounds, gamma_bounds=gamma_bounds,
                train_fraction=train_fraction, edge_weight_scale=edge_weight_scale,
            )
            self.k.fill_(float(fitted.k))
            self.gamma.copy_(fitted.gamma.detach().cpu().double())

    @torch.no_grad()
    def write_into(self, problem: OutputErrorProblem) -> None:
        """CRLSM's ``k`` and ``gamma`` into ``problem.conv`` (``init="crlsm"``); ``y0`` from frame 0."""
        if self.init == "crlsm":
            fill = torch.full_like(self.gamma, problem.conv.gamma_init)
            problem.conv.set_parameters(self.k, torch.where(problem.modelled, self.gamma, fill))
        problem.y0.copy_(problem.x_train[:, 0])


class OutputErrorODE(ConsensusModel):
    """Output-error fit of eqs. (1)-(3) through a differentiable RK4 simulation (module docstring).

    Args:
        data: the cell graph (schema: :mod:`calcium_gnn.io.graph_schema`); read when the module is built
            (the training window, the graph, the CRLSM start), not kept.
        setup: modelled cells and gamma mode (default: setup I, ``resolve_setup(data)``).
        optimizer: ``"auto"`` (default), ``"gauss_newton"`` (Levenberg-Marquardt),
            ``"variable_projection"`` (matrix-free, for thousands of cells), ``"lbfgs"`` or ``"adam"``.
        max_jacobian_parameters: largest P for which the dense Jacobian (LM steps, intervals) is
            formed (default 600; ``optimizer="auto"`` switches to L-BFGS above it when the modal
            normal equations are not available).
        max_normal_parameters: largest P for which the (P, P) normal equations are formed at all
            (default 8,000, about 4,000 modelled cells; above it ``optimizer="auto"`` is variable
            projection, or L-BFGS without an eigenbasis, and results.json says that the feeds'
            intervals and pooling are not available, and why; the border-noise correction runs in the
            degree-weighted metric, and with L-BFGS not at all).
        border_noise_correction: correct ``k`` for the noise of the border inputs when the fit ends
            (default True; :mod:`calcium_gnn.physics.border_noise`).
        border_noise_probes, border_noise_seed: Hutchinson probes of that correction (8, seed 0).
        border_noise_replicates: parametric-bootstrap replicates of the corrected ``k`` with variable
            projection (default 10; they give ``k``'s interval there, 0: none and no interval).
        interval_probes: Hutchinson probes of the border inputs' noise in the covariance of the
            estimates (default 32, seed ``border_noise_seed``; 0: the Gauss-Newton covariance alone):
            the sandwich of :mod:`calcium_gnn.inference.uncertainty`, where the normal equations are
            formed and there are border cells.
        jacobian: how ``J^T J`` and ``J^T r`` are formed: ``"auto"`` (default: ``"modal"`` when the
            weights are symmetric, else ``"dense"``), ``"modal"`` (eigenbasis, any size) or
            ``"dense"`` (forward-mode Jacobian, P <= ``max_jacobian_parameters``).
        substeps: RK4 steps per frame interval during the fit (default 2; h = dt/2).
        method: ``"rk4"`` (default) or ``"euler"``.
        train_fraction: training share of the frames (default 2110/3610, the paper's).
        edge_weight_scale: ``"mean"`` (default) or a positive number: ``w = u*l / s``.
        k_bounds, gamma_bounds: the paper's box (defaults ``(1e-3, 0.1)``, ``(-3e-5, 0.1)``).
        law: the member of the model family (:mod:`calcium_gnn.physics.laws`): ``"linear"`` (default,
            the paper's eq. 3), ``"leak"``, ``"stimulus"`` or ``"leak_stimulus"``.
        leak_bounds, leak_init: box and starting value of the leak rate ``delta`` (1/s) of the leak laws.
        stimulus_time: the stimulus time (s, on the graph's time axis) of the stimulus laws.
        stimulus_feed: ``"per_cell"`` (default) or ``"shared"`` switched feeds.
        law_check: test the fitted law against a leak back to baseline when the fit ends (default True;
            a score test, one set of normal equations: :mod:`calcium_gnn.inference.law_check`; laws
            without a leak, Levenberg-Marquardt fits).
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

    #: the fit matches the simulation to the data: no output-error reference is fitted for it
    simulation_fit = True

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
        k_bounds: tuple[float, float] = PAPER_K_BOUNDS,
        gamma_bounds: tuple[float, float] = PAPER_GAMMA_BOUNDS,
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
        max_normal_parameters: int = 8000,
        gamma_prior: str = "random_effects",
        jacobian: str = "auto",
        border_noise_correction: bool = True,
        border_noise_probes: int = 8,
        border_noise_seed: int = 0,
        border_noise_replicates: int = 10,
        interval_probes: int = 32,
        law: str = "linear",
        leak_bounds: tuple[float, float] = DEFAULT_LEAK_BOUNDS,
        leak_init: float = DEFAULT_LEAK_INIT,
        stimulus_time: float | None = None,
        stimulus_feed: str = "per_cell",
        law_check: bool = True,
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
        if jacobian not in JACOBIANS:
            raise ConfigError("model.jacobian", f"unknown jacobian '{jacobian}' (use one of {JACOBIANS})")
        self.gamma_prior = gamma_prior
        self.border_noise_correction = bool(border_noise_correction)
        self.border_noise_probes = check_int("model.border_noise_probes", border_noise_probes, 1)
        self.border_noise_seed = check_int("model.border_noise_seed", border_noise_seed, 0)
        self.border_noise_replicates = check_int("model.border_noise_replicates", border_noise_replicates, 0)
        self.border_correction: BorderNoiseCorrection | None = None
        self.interval_probes = check_int("model.interval_probes", interval_probes, 0)
        #: ``J^T F_k z_p`` (P, interval_probes) at the fit's optimum, on the host (:meth:`finish_fit`)
        self.input_noise: np.ndarray | None = None
        self.law_check = bool(law_check)
        #: the leak score test at the fit's optimum (:meth:`check_law`), or why there is none
        self.leak_score: LeakScore | str | None = None
        substeps = check_int("model.substeps", substeps, 1)
        self.steps_per_epoch = check_int("model.steps_per_epoch", steps_per_epoch, 1)
        border_smoothing = check_odd_window("model.border_smoothing", border_smoothing)
        self.lbfgs_max_iter = check_int("model.lbfgs_max_iter", lbfgs_max_iter, 1)
        self.lr = check_positive("model.lr", lr)
        settings = lm_settings(damping_factor, max_retries, tolerance)
        self.interval_level = check_level(interval_level)
        self.anomaly_rule = AnomalyRule(threshold=float(anomaly_threshold))
        self.k_bounds = check_bounds("model.k_bounds", k_bounds)
        self.gamma_bounds = check_bounds("model.gamma_bounds", gamma_bounds)
        self.save_hyperparameters(ignore=["data", "setup"])
        max_jacobian_parameters = check_int("model.max_jacobian_parameters", max_jacobian_parameters, 1)
        max_normal_parameters = check_int("model.max_normal_parameters", max_normal_parameters, 1)
        self.autocorrelation_correction = bool(autocorrelation_correction)
        self.train_fraction = float(train_fraction)
        self.register_setup(setup)
        self.register_buffer("cell_id", data.cell_id.detach().reshape(-1).long().cpu().clone())

        n_frames = data.x.shape[1]
        self.train_frames, self.test_frames = time_split(n_frames, train_fraction)
        w, scale = edge_weights(data.edge_attr.detach().double(), edge_weight_scale)
        self.edge_weight_scale = scale
        leak_mode, stimulus_mode = law_terms(law, stimulus_time, stimulus_feed)
        self.law = law
        self.stimulus_time = None if stimulus_mode == "none" else float(stimulus_time)
        conv = ConsensusConv(
            int(data.num_nodes), setup.gamma_mode, self.k_bounds, self.gamma_bounds, k_init, gamma_init,
            leak_mode=leak_mode, leak_bounds=leak_bounds, leak_init=leak_init,
        )
        self.problem = training_window_problem(
            conv, data, setup, self.train_frames, w, substeps=substeps, method=method,
            fit_initial_state=fit_initial_state, border_smoothing=border_smoothing, jacobian=jacobian,
            max_jacobian_parameters=max_jacobian_parameters, max_normal_parameters=max_normal_parameters,
            stimulus_feed=stimulus_mode, stimulus_time=self.stimulus_time,
        )
        damping = check_positive("model.damping", damping)
        self.register_buffer("initialised", torch.tensor(False))
        self.start = StartingPoint(
            data, setup, init, self.k_bounds, self.gamma_bounds, self.train_fraction, self.edge_weight_scale
        )
        #: why ``optimizer="auto"`` did not choose Gauss-Newton (None when it did, or was not asked)
        self.fallback_reason: str | None = None
        if optimizer == "auto":
            self.fallback_reason = self.problem.normal_equations_unavailable()
            projection_unavailable = self.problem.modal_unavailable()
            if self.fallback_reason is None:
                optimizer = "gauss_newton"
            elif projection_unavailable is None:
                optimizer = "variable_projection"
                log.info("neural_ode: variable projection (%s)", self.fallback_reason)
            else:
                optimizer = "lbfgs"
                log.warning(
                    "neural_ode falls back to L-BFGS (%s; %s); it converges slowly on this problem (at "
                    "10,000 cells 20 steps left k 45%% off) and gives no intervals, pooling or "
                    "border-noise correction", self.fallback_reason, projection_unavailable,
                )
        if optimizer == "variable_projection" and self.problem.modal_unavailable() is not None:
            raise ConfigError("model.optimizer", f"variable_projection: {self.problem.modal_unavailable()}")
        self.optimizer_name = optimizer
        projection = ProjectionSettings(
            damping_factor=settings.damping_factor,
            max_retries=settings.max_retries,
            tolerance=settings.tolerance,
        )
        self.solver = (
            VariableProjection(self.problem.n_nonlinear, damping, projection)
            if optimizer == "variable_projection" else LevenbergMarquardt(damping, settings)
        )
        if optimizer == "variable_projection":
            # the border-noise correction searches k in the weighted metric: the unweighted stage of
            # the fit would be discarded (it runs after all when the correction finds no minimum)
            self.solver.weighted_only = self.border_noise_status() is None
        self.uses_optimizer = optimizer not in EXACT_SOLVERS
        self.automatic_optimization = optimizer not in EXACT_SOLVERS
        self.num_threads = None if num_threads is None else check_int("model.num_threads", num_threads, 1)

    @property
    def conv(self) -> ConsensusConv:
        """The right-hand side with the learnable ``k`` and ``gamma`` (``problem.conv``)."""
        return self.problem.conv

    # ---------------------------------------------------------------------------------- training
    @torch.no_grad()
    def initialise(self) -> None:
        """Start from CRLSM (``init="crlsm"``) or the constants; ``y0`` from the first frame."""
        self.start.write_into(self.problem)
        self.initialised.fill_(True)

    def configure_optimizers(self) -> torch.optim.Optimizer | None:
        if self.optimizer_name in EXACT_SOLVERS:
            return None
        params = [p for p in self.parameters() if p.requires_grad]
        return gradient_optimizer(params, self.optimizer_name, self.lr, self.lbfgs_max_iter)

    def on_fit_start(self) -> None:
        self.limit_threads()
        if not bool(self.initialised):
            self.initialise()
        # training (or resumed training) continues from the per-cell optimum, not the pooled feeds
        self.problem.restore_unpooled()

    def on_fit_end(self) -> None:
        self.finish_fit()
        self.restore_threads()

    def loss_train(self) -> Tensor:
        """The fit objective: mean squared residual of the modelled cells over the training window."""
        return self.problem.loss_train()

    def training_step(self, batch: Data, batch_idx: int) -> Tensor | None:
        if self.optimizer_name in EXACT_SOLVERS:
            loss = self.problem.x_train.new_tensor(self.solver.step(self.problem))
        else:
            loss = self.loss_train()
        self._log_fit(loss, batch)
        return None if self.optimizer_name in EXACT_SOLVERS else loss

    def _log_fit(self, loss: Tensor, batch: Data) -> None:
        self.log("train/loss", loss.detach().float(), prog_bar=True, batch_size=1)
        self.log("fit/k", float(self.conv.k.detach()), prog_bar=True, batch_size=1)
        gamma = self.conv.gamma.detach()[self.problem.index]
        self.log("fit/gamma_mean", float(gamma.mean()), batch_size=1)
        if isinstance(batch, Data):
            for name, value in truth_errors(self.fitted_parameters(), batch, self.modelled).items():
                self.log(name, value, batch_size=1)

    @torch.no_grad()
    def fit_exact(self, max_iterations: int = 100) -> int:
        """Fit without a Trainer: :meth:`initialise` if needed, then steps of the exact solver (Levenberg-
        Marquardt, or variable projection with ``optimizer="variable_projection"``) until converged (at
        most ``max_iterations``). Returns the number of steps. :meth:`finish_fit` is not called."""
        if not bool(self.initialised):
            self.initialise()
        return self.solver.fit(self.problem, max_iterations)

    # ------------------------------------------------------------------------------ after the fit
    def gamma_prior_status(self) -> str | None:
        """Why the feeds are not pooled (``None`` when :attr:`gamma_prior` pooling applies)."""
        problem = self.problem
        if self.gamma_prior == "none":
            return "gamma_prior=none"
        if self.gamma_mode != "per_cell":
            return f"gamma_mode={self.gamma_mode} (pooling needs per-cell feeds)"
        if problem.n_gamma < MIN_POOLED_CELLS:
            return f"{problem.n_gamma} modelled cell(s) (pooling needs at least {MIN_POOLED_CELLS})"
        unavailable = problem.normal_equations_unavailable()
        if unavailable is not None:
            return f"{unavailable}: pooling needs the Gauss-Newton covariance"
        return None

    def border_noise_status(self) -> str | None:
        """Why ``k`` is not corrected for border noise (``None`` when the correction applies)."""
        if not self.border_noise_correction:
            return "border_noise_correction=false"
        if bool(self.modelled.all()):
            return "no border cells"
        if self.optimizer_name not in EXACT_SOLVERS:
            return f"optimizer={self.optimizer_name} (the correction profiles with Gauss-Newton)"
        if self.optimizer_name == "variable_projection":
            return None  # matrix-free, in the weighted metric (correct_border_noise_weighted)
        unavailable = self.problem.normal_equations_unavailable()
        if unavailable is not None:
            return f"{unavailable}: the correction's noise gain needs the normal equations"
        return None

    @torch.no_grad()
    def pooled_feeds(self) -> PooledFeeds | None:
        """The random-effects posterior of the per-cell optimum; ``None`` when pooling does not apply."""
        if self.gamma_prior_status() is not None:
            return None
        return pooled_feeds(self.problem, self.autocorrelation_correction, self.input_noise_products())

    def input_noise_status(self) -> str | None:
        """Why the covariance has no border-input noise term (``None`` when it has one)."""
        if self.interval_probes == 0:
            return "interval_probes=0"
        if bool(self.modelled.all()):
            return "no border cells"
        if self.projection_schur() is not None or not self.problem.normal_equations_available:
            return "the normal equations are not formed"
        return None

    @torch.no_grad()
    def measure_input_noise(self) -> np.ndarray | None:
        """``J^T F_k z_p`` (P, interval_probes) at the per-cell optimum
        (:func:`~calcium_gnn.physics.border_noise.input_noise_products`), kept on the host as
        :attr:`input_noise` and returned; ``None`` where the term does not apply
        (:meth:`input_noise_status`)."""
        self.input_noise = None
        if self.input_noise_status() is None:
            products = input_noise_products(self.problem, self.problem.theta_unpooled(),
                                            self.interval_probes, self.border_noise_seed)
            self.input_noise = products.detach().cpu().numpy()
        return self.input_noise

    def input_noise_products(self) -> Tensor | None:
        """``J^T F_k z_p`` (P, n_p) at the fit's optimum (:meth:`finish_fit` computes them), on the problem's
        device; ``None`` when the covariance has no border-input noise term (:meth:`input_noise_status`)."""
        if self.input_noise is None or self.input_noise_status() is not None:
            return None
        return torch.from_numpy(self.input_noise).to(self.problem.drive_train.device)

    @torch.no_grad()
    def apply_gamma_prior(self) -> PooledFeeds | None:
        """Replace the per-cell feeds (and ``y0``) by their random-effects BLUP; keep the per-cell ones.

        Idempotent: pooling always starts from the per-cell optimum. Returns the posterior, or
        ``None`` when pooling does not apply (:meth:`gamma_prior_status`; nothing changes then).
        """
        pooled = self.pooled_feeds()
        if pooled is None:
            return None
        lo, hi = self.problem.theta_bounds()
        self.problem.store_pooled(torch.minimum(torch.maximum(pooled.theta, lo), hi))
        return pooled

    @torch.no_grad()
    def finish_fit(self) -> None:
        """What a fit does when its optimisation ends (``on_fit_end``; call it after a manual loop).

        1. ``k`` corrected for the noise of the border inputs (:mod:`calcium_gnn.physics.border_noise`),
           the linear parameters refitted at the corrected ``k``;
        2. the border inputs' noise as the covariance sees it (:meth:`measure_input_noise`);
        3. the feeds pooled as random effects (:meth:`apply_gamma_prior`).
        Each is skipped where it does not apply (:meth:`border_noise_status`,
        :meth:`input_noise_status`, :meth:`gamma_prior_status`).
        """
        self.problem.restore_unpooled()
        self.check_law()
        self.correct_border_noise()
        self.measure_input_noise()
        if self.gamma_prior_status() is None:
            self.apply_gamma_prior()

    def law_check_status(self) -> str | None:
        """Why the law is not tested against a leak (``None`` when :meth:`check_law` applies)."""
        if not self.law_check:
            return "law_check=false"
        if self.problem.has_leak:
            return f"the law ({self.law}) has a leak"
        if self.optimizer_name != "gauss_newton":
            return f"optimizer={self.optimizer_name} (the score test needs the Gauss-Newton optimum)"
        return None

    @torch.no_grad()
    def check_law(self) -> LeakScore | str | None:
        """The score test of a leak back to baseline at the per-cell optimum (before the border-noise
        correction moves ``k``): :func:`~calcium_gnn.inference.law_check.leak_score_test`. Stored in
        :attr:`leak_score` (a :class:`LeakScore`, or why the test could not be made) and returned;
        ``None`` where it does not apply (:meth:`law_check_status`)."""
        self.leak_score = None
        if self.law_check_status() is None:
            self.leak_score = leak_score_test(self.problem, self.conv.leak_bounds,
                                              self.autocorrelation_correction)
        return self.leak_score

    @torch.no_grad()
    def correct_border_noise(self) -> BorderNoiseCorrection | None:
        """Correct ``k`` for the noise of the border inputs (:mod:`calcium_gnn.physics.border_noise`) and
        refit the linear parameters there; ``None`` where it does not apply (:meth:`border_noise_status`).

        Levenberg-Marquardt: :func:`~calcium_gnn.physics.border_noise.correct_border_noise`. Variable
        projection: :func:`~calcium_gnn.physics.border_noise.correct_border_noise_weighted` from the
        weighted stage's ``k``, then the Schur complement at the corrected ``k`` (the interval's); when it
        finds no interior minimum the fit's unweighted stage runs after all.
        """
        if self.border_noise_status() is not None:
            return None
        problem = self.problem
        if self.optimizer_name == "variable_projection":
            correction = correct_border_noise_weighted(
                problem, self.border_noise_probes, self.border_noise_seed, self.solver.settings,
                n_replicates=self.border_noise_replicates,
            )
            if correction.interior:
                problem.set_theta(correction.theta)
                self.solver.refresh_schur(problem, correction.solution)
            else:  # the weighted stage's k stays uncorrected: the fit's own optimum after all
                self.solver.resume(problem)
            correction.solution = None  # its operator holds O(G^2) memory (N_HH too); used only here
        else:
            correction = correct_border_noise(problem, self.border_noise_probes, self.border_noise_seed)
            if correction.interior:
                problem.set_theta(correction.theta)
        self.border_correction = correction.on_host()
        return correction

    def border_noise_results(self) -> dict[str, Any]:
        """results.json block ``border_noise_correction``: rule, ``k`` before and after, noise gain."""
        status = self.border_noise_status()
        if status is not None or self.border_correction is None:
            return {"applied": False, "reason": status or "the fit has not finished (finish_fit)"}
        c = self.border_correction
        weighted = self.optimizer_name == "variable_projection"
        if not c.interior:
            where = (
                "within the box of k" if weighted
                else f"within a factor {SEARCH_FACTOR} of {c.k_uncorrected:.4g}"
            )
            return {
                "applied": False,
                "reason": f"no interior minimum of the noise-normalised loss for k {where} (k barely "
                "identified)",
                "k_uncorrected": c.k_uncorrected,
                "k_at_search_end": c.k,
            }
        probes = f"Hutchinson, {self.border_noise_probes} probes, seed {self.border_noise_seed}"
        rule = (
            "k minimises the degree-weighted min_{gamma,y0} RSS_D / E||(I - Pi_D)(F_k z_B - z_G)||_D^2 "
            f"(unit noise on every cell; {probes}); k_uncorrected is the degree-weighted fit's"
            if weighted
            else "k minimises min_{gamma,y0} RSS / (M - P_linear + q(k)), q = border noise energy "
            f"reaching G ({probes})"
        )
        out = {
            "applied": True,
            "rule": rule,
            "k_uncorrected": c.k_uncorrected,
            "k": c.k,
            "noise_gain": c.noise_gain,
            "profile_fits": c.evaluations,
        }
        spread = self.k_bootstrap()
        if spread is not None:
            out["bootstrap"] = {"replicates": len(c.replicates or []), "k_bias": spread[0], "k_sd": spread[1]}
        return out

    def k_bootstrap(self) -> tuple[float, float] | None:
        """``(bias, sd)`` of the corrected ``k`` from its parametric-bootstrap replicates (variable
        projection with the correction applied and at least 2 replicates), else ``None``."""
        c = self.border_correction
        if c is None or not c.interior or c.replicates is None or len(c.replicates) < 2:
            return None
        if self.optimizer_name != "variable_projection" or self.border_noise_status() is not None:
            return None
        return statistics.mean(c.replicates) - c.k, statistics.stdev(c.replicates)

    def fitted_parameters(self) -> FittedParameters:
        """``k``, ``gamma`` (N,) (0 outside G) on the CPU, the edge-weight scale and the gamma mode, the
        law's leak and switched feeds, and the fitted initial state."""
        stimulus = self.problem.stimulus if self.problem.stimulus_mode != "none" else None
        return conv_fitted_parameters(self.conv, self.modelled, self.edge_weight_scale, self.gamma_mode,
                                      self.law, stimulus, self.stimulus_time,
                                      y0=self.problem.fitted_initial_state())

    @torch.no_grad()
    def law_results(self) -> dict[str, Any]:
        """results.json block ``law``: the law, its leak rate and switched feeds, with intervals of the
        nonlinear parameters from the Gauss-Newton covariance where it can be formed."""
        problem = self.problem
        out: dict[str, Any] = {"name": self.law, "terms": law_description(self.law)}
        if problem.has_leak:
            out["leak"] = float(self.conv.leak.detach())
            out["leak_bounds"] = list(self.conv.leak_bounds)
        if problem.stimulus_mode != "none":
            ids = self.cell_id.tolist()
            values = problem.stimulus.detach().cpu().tolist()
            out["stimulus_time"] = self.stimulus_time
            out["stimulus_feed_mode"] = problem.stimulus_mode
            out["stimulus_feed"] = {str(ids[i]): values[i] for i in problem.index.tolist()}
        out["n_parameters"] = problem.n_parameters
        # the fit's own objective at its optimum (fitted initial states, per-cell feeds): what the
        # information criterion of the model selection scores (calcium_gnn.evaluation.model_selection)
        residuals = problem.residuals_theta(problem.theta_unpooled())
        out["rss_train"] = float(residuals.pow(2).sum())
        out["n_residuals"] = problem.n_residuals
        out["rho_train"] = lag1_autocorrelation(residuals)
        if not problem.has_leak:  # the law check (check_law): its test, or why there is none
            if isinstance(self.leak_score, LeakScore):
                out["leak_score"] = self.leak_score.as_dict()
            else:
                out["leak_score_unavailable"] = self.leak_score or self.law_check_status() or "not run"
        schur = self.projection_schur()
        if problem.has_leak and (problem.normal_equations_available or schur is not None):
            theta, cov = (laplace(problem, self.autocorrelation_correction, self.input_noise_products())
                          if schur is None
                          else nonlinear_laplace(problem, schur, self.autocorrelation_correction))
            se = cov.se[1:2].cpu()
            lo, hi = normal_interval(theta[1:2].cpu(), se, self.interval_level, self.conv.leak_bounds)
            out.update(leak_se=float(se[0]), leak_interval=[float(lo[0]), float(hi[0])],
                       interval_level=self.interval_level)
        return out

    @torch.no_grad()
    def parameter_intervals(self, level: float | None = None, pool: bool = True) -> ParameterIntervals:
        """Intervals of ``k`` and ``gamma_i`` (:mod:`calcium_gnn.inference.output_error`), the feeds
        pooled when ``pool`` and pooling applies (:meth:`gamma_prior_status`)."""
        level = self.interval_level if level is None else check_level(level)
        return parameter_intervals(
            self.problem,
            level,
            self.k_bounds,
            self.gamma_bounds,
            autocorrelation=self.autocorrelation_correction,
            pool=pool and self.gamma_prior_status() is None,
            schur=self.projection_schur(),
            k_spread=self.k_bootstrap(),
            input_noise=self.input_noise_products(),
        )

    def projection_schur(self) -> Tensor | None:
        """The Schur complement of ``k`` (and the leak rate) from a converged variable-projection fit,
        where the normal equations cannot be formed (the only covariance there is); else ``None``."""
        if self.optimizer_name != "variable_projection" or self.problem.normal_equations_available:
            return None
        schur = self.solver.schur
        if not bool(self.solver.converged) or not bool((schur.diagonal() > 0).all()):
            return None
        return schur

    @torch.no_grad()
    def anomaly_scores(self, rule: AnomalyRule | None = None) -> AnomalyScores:
        """Robust z-scores of ``gamma_i`` and of the training residual level, at the per-cell optimum."""
        return fit_anomaly_scores(self.problem, rule or self.anomaly_rule)

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
        gamma = self.problem.unpack(self.problem.theta_unpooled()).gamma
        ids, gamma = self.cell_id.tolist(), gamma.cpu().tolist()
        return {
            "method": "random_effects: gamma_i ~ N(mu, tau^2), REML mu and tau^2, BLUP given k",
            "applied": bool(self.problem.pooled),
            "mu": pooled.mu,
            "tau": math.sqrt(pooled.tau2),
            "tau_at_lower_bound": pooled.at_lower_bound,
            "mean_shrinkage": float(pooled.shrinkage.mean()),
            "gamma_unpooled": {str(ids[i]): gamma[i] for i in self.problem.index.tolist()},
        }

    def optimizer_results(self) -> dict[str, Any]:
        """results.json block ``optimizer``: the solver, why ``auto`` did not choose Gauss-Newton, and for
        variable projection its conjugate-gradient work and whether every solve converged."""
        out: dict[str, Any] = {
            "name": self.optimizer_name,
            "fallback_from_gauss_newton": self.fallback_reason,
        }
        if self.optimizer_name == "variable_projection":
            out.update(converged=bool(self.solver.converged),
                       weighted_stage="line search on k" if self.solver.line_searched else "Gauss-Newton",
                       stopped_after_weighted_stage=self.solver.weighted_only,
                       conjugate_gradient_iterations=int(self.solver.cg_iterations),
                       conjugate_gradients_converged=bool(self.solver.cg_converged))
        return out

    def extra_results(self, data: Data) -> dict[str, Any]:
        """Intervals (a :class:`ParameterIntervals`; where the normal equations cannot be formed,
        ``intervals_unavailable`` says why), the pooling and border-noise blocks and the anomaly scores
        (an :class:`AnomalyScores`), for the evaluation to write (models/base.py)."""
        unavailable = self.problem.normal_equations_unavailable()
        out: dict[str, Any] = {}
        if unavailable is None or self.projection_schur() is not None:
            out["intervals"] = self.parameter_intervals()
        if unavailable is not None:
            source = (
                "the bootstrap of the border-noise correction" if self.k_bootstrap() is not None
                else "the variable projection"
            )
            from_where = f" (k's from {source})" if "intervals" in out else ""
            out["intervals_unavailable"] = f"{unavailable}: the feeds' intervals{from_where}"
        out.update(
            law=self.law_results(),
            optimizer=self.optimizer_results(),
            gamma_prior=self.gamma_prior_results(),
            border_noise_correction=self.border_noise_results(),
            anomaly=self.anomaly_scores(),
        )
        return out
