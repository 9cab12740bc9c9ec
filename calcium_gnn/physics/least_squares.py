"""The paper's least-squares family (LSM, RLSM, CRLSM; eqs. 4-20) as plain functions.

``solver`` picks the problem over ``theta = [k, gamma...]`` (see :mod:`~calcium_gnn.physics.ls_system`):

==========  ====================================================================  ==========
solver      problem                                                                equations
==========  ====================================================================  ==========
``lsm``     ``min 1/2 ||A theta - b||^2`` (pseudo-inverse, minimum norm)           (17)
``rlsm``    ``min 1/2 ||A theta - b||^2 + lam/2 ||theta||^2``                      (18), (19)
``crlsm``   the same inside the box ``k_bounds`` x ``gamma_bounds``                (20)
==========  ====================================================================  ==========

``lam`` is ignored by ``lsm``, the bounds by ``lsm``/``rlsm``. Paper defaults: ``lam = 1e-3``,
``k in [1e-3, 0.1]``, ``gamma in [-3e-5, 0.1]``. ``backend="fast"`` is the exact arrow-matrix solver
(differentiable), ``backend="scipy"`` the reference ``lsq_linear(method="trf")``
(:mod:`~calcium_gnn.physics.ls_solvers`).
"""

from __future__ import annotations

import math

import torch
from torch_geometric.data import Data

from calcium_gnn.errors import ConfigError
from calcium_gnn.nn.consensus import PAPER_GAMMA_BOUNDS, PAPER_K_BOUNDS, check_bounds
from calcium_gnn.physics.interpolation import DEFAULT_INTERPOLATION_FACTOR, DEFAULT_TRAIN_FRACTION
from calcium_gnn.physics.ls_solvers import UNBOUNDED, Bounds, LSSolution, solve_fast, solve_scipy
from calcium_gnn.physics.ls_system import LSSystem, build_system, normal_stats
from calcium_gnn.physics.parameters import FittedParameters
from calcium_gnn.physics.setups import Setup, resolve_setup

SOLVERS: tuple[str, ...] = ("lsm", "rlsm", "crlsm")
BACKENDS: tuple[str, ...] = ("fast", "scipy")
DEFAULT_LAM: float = 1e-3
DEFAULT_K_BOUNDS: Bounds = PAPER_K_BOUNDS
DEFAULT_GAMMA_BOUNDS: Bounds = PAPER_GAMMA_BOUNDS


def solver_settings(
    solver: str, lam: float, k_bounds: Bounds, gamma_bounds: Bounds
) -> tuple[float, Bounds, Bounds]:
    """The ``(lam, k_bounds, gamma_bounds)`` that ``solver`` actually uses (validated).

    Raises:
        ConfigError: unknown solver (``model.solver``), negative lambda (``model.lam``), bad bounds.
    """
    if solver not in SOLVERS:
        raise ConfigError("model.solver", f"unknown solver '{solver}' (use one of {SOLVERS})")
    if solver == "lsm":
        return 0.0, UNBOUNDED, UNBOUNDED
    try:
        lam = float(lam)
    except (TypeError, ValueError):
        raise ConfigError("model.lam", f"expected a number >= 0, got {lam!r}") from None
    if not (lam >= 0 and math.isfinite(lam)):
        raise ConfigError("model.lam", f"expected a finite number >= 0, got {lam!r}")
    if solver == "rlsm":
        return lam, UNBOUNDED, UNBOUNDED
    return lam, check_bounds("model.k_bounds", k_bounds), check_bounds("model.gamma_bounds", gamma_bounds)


def solve_system(
    system: LSSystem,
    *,
    solver: str = "crlsm",
    backend: str = "fast",
    lam: float = DEFAULT_LAM,
    k_bounds: Bounds = DEFAULT_K_BOUNDS,
    gamma_bounds: Bounds = DEFAULT_GAMMA_BOUNDS,
) -> LSSolution:
    """Solve the regression ``system`` with one of the paper's solvers.

    With ``backend="fast"`` the result is differentiable with respect to the tensors of ``system``
    (``drive`` / ``increment``), hence to the data and edge weights they were built from.
    """
    if backend not in BACKENDS:
        raise ConfigError("model.backend", f"unknown backend '{backend}' (use one of {BACKENDS})")
    lam, k_bounds, gamma_bounds = solver_settings(solver, lam, k_bounds, gamma_bounds)
    if backend == "scipy":
        return solve_scipy(system, lam, k_bounds, gamma_bounds)
    return solve_fast(normal_stats(system), lam, k_bounds, gamma_bounds)


def to_fitted(system: LSSystem, solution: LSSolution) -> FittedParameters:
    """Spread the solution's gammas onto the N cells (0 outside the modelled group).

    The boundary between the solve and its results: whatever device the system and the solution sit
    on, the :class:`FittedParameters` are host values (``gamma`` (N,) float64 on the CPU).
    """
    gamma = torch.zeros(system.num_nodes, dtype=torch.float64)
    if system.num_gamma:
        spread = solution.gamma.detach()[system.gamma_group.to(solution.gamma.device)]
        gamma[system.modelled_index.cpu()] = spread.double().cpu()
    return FittedParameters(
        k=float(solution.k.detach()), gamma=gamma, edge_weight_scale=system.edge_weight_scale,
        gamma_mode=system.gamma_mode,
    )


def fit_least_squares(
    data: Data,
    setup: Setup,
    *,
    solver: str = "crlsm",
    backend: str = "fast",
    lam: float = DEFAULT_LAM,
    k_bounds: Bounds = DEFAULT_K_BOUNDS,
    gamma_bounds: Bounds = DEFAULT_GAMMA_BOUNDS,
    interpolation_factor: int = DEFAULT_INTERPOLATION_FACTOR,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    edge_weight_scale: float | str = "mean",
) -> FittedParameters:
    """Fit ``k`` and ``gamma`` of eqs. (1)-(3) on the training window of ``data`` (eqs. 4-20).

    Args:
        data: the cell graph.
        setup: modelled cells and ``gamma_mode`` (:func:`~calcium_gnn.physics.setups.resolve_setup`).
        solver: ``"lsm"``, ``"rlsm"`` or ``"crlsm"`` (default, the paper's final model).
        backend: ``"fast"`` (exact arrow-matrix solver) or ``"scipy"`` (``lsq_linear``, trf).
        lam: Tikhonov weight (eq. 18; default 1e-3).
        k_bounds, gamma_bounds: the box of eq. (20) (defaults ``[1e-3, 0.1]``, ``[-3e-5, 0.1]``).
        interpolation_factor: linear interpolation of the frames (paper: 10).
        train_fraction: training share of the frames (default 2110/3610, the paper's split).
        edge_weight_scale: ``"mean"`` or a positive number (``w = u*l / s``).

    Returns:
        :class:`~calcium_gnn.physics.parameters.FittedParameters`.
    """
    system = build_system(
        data, setup, interpolation_factor=interpolation_factor, train_fraction=train_fraction,
        edge_weight_scale=edge_weight_scale,
    )
    solution = solve_system(
        system, solver=solver, backend=backend, lam=lam, k_bounds=k_bounds, gamma_bounds=gamma_bounds
    )
    return to_fitted(system, solution)


_SETUP_KEYS = ("group", "gamma_mode", "disc_radius", "rect", "cell_ids", "name")


def fit_crlsm(data: Data, **options) -> FittedParameters:
    """The paper's CRLSM in one call: setup I (interior cells, per-cell gamma, eq. 3) by default.

    The setup's keywords (``group``, ``gamma_mode``, ``disc_radius``, ``rect``, ``cell_ids``) go to
    :func:`~calcium_gnn.physics.setups.resolve_setup`, the others to :func:`fit_least_squares`.
    """
    setup_options = {key: options.pop(key) for key in _SETUP_KEYS if key in options}
    return fit_least_squares(data, resolve_setup(data, **setup_options), **options)
