"""CRLSMModule: the paper's least-squares identification (LSM / RLSM / CRLSM, eqs. 4-20) in Lightning.

There is nothing to optimise by gradient steps: each training step (one per epoch; the batch is the
cell graph) builds the regression of eqs. (4)-(16) on the training window and solves it in closed
form with :func:`calcium_gnn.physics.least_squares.solve_system` — with the ``"fast"`` backend this
solve is differentiable with respect to the data. Optimisation is manual and there is no optimiser.

Logged every step: ``fit/k``, ``fit/gamma_mean`` and ``fit/gamma_median`` (over the modelled cells),
``train/loss`` (the objective ``1/2 ||A theta - b||^2 + lam/2 ||theta||^2`` at the optimum), and, when
the graph carries ground truth (``truth_k``, ``truth_gamma``; see ``calcium_gnn.io.graph_schema``),
``fit/k_rel_err`` (``k`` compared at the same edge-weight scale) and ``fit/gamma_mae`` (over modelled
cells whose true gamma is finite).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch_geometric.data import Data

from calcium_gnn.errors import ConfigError
from calcium_gnn.models.base import ConsensusModel
from calcium_gnn.nn.consensus import check_bounds
from calcium_gnn.physics.interpolation import DEFAULT_INTERPOLATION_FACTOR, DEFAULT_TRAIN_FRACTION, time_split
from calcium_gnn.physics.least_squares import (
    BACKENDS,
    DEFAULT_GAMMA_BOUNDS,
    DEFAULT_K_BOUNDS,
    DEFAULT_LAM,
    solve_system,
    solver_settings,
    to_fitted,
)
from calcium_gnn.physics.ls_solvers import Bounds
from calcium_gnn.physics.ls_system import build_system
from calcium_gnn.physics.parameters import FittedParameters, truth_errors
from calcium_gnn.physics.setups import Setup, resolve_setup


class CRLSMModule(ConsensusModel):
    """LSM / RLSM / CRLSM (paper eqs. 17-20) on a cell graph, as a :class:`ConsensusModel`.

    An exact solver: not data parallel (``data_parallel = False``; ``trainer=ddp`` runs it in one
    process). The fit runs on the device of the batch Lightning hands to ``training_step``; the
    results are kept as float64 buffers ``k_fit`` (), ``gamma_fit`` (N,) and ``scale_fit`` ().

    Args:
        data: the cell graph (used for N and, without ``setup``, for the default setup I).
        setup: the modelled cells and gamma mode (default: ``resolve_setup(data)``, setup I, eq. 3).
        solver: ``"lsm"`` (eq. 17), ``"rlsm"`` (eqs. 18-19) or ``"crlsm"`` (eq. 20, default).
        backend: ``"fast"`` (exact, differentiable; default) or ``"scipy"`` (``lsq_linear`` trf).
        lam: Tikhonov weight lambda (default 1e-3, the paper's).
        k_bounds: box for k (default ``(1e-3, 0.1)``).
        gamma_bounds: box for gamma (default ``(-3e-5, 0.1)``).
        interpolation_factor: linear interpolation of the frames (default 10, the paper's).
        train_fraction: training share of the frames (default 2110/3610).
        edge_weight_scale: ``"mean"`` (default) or a positive number: ``w = u*l / s``.
    """

    def __init__(
        self,
        data: Data | None = None,
        setup: Setup | None = None,
        solver: str = "crlsm",
        backend: str = "fast",
        lam: float = DEFAULT_LAM,
        k_bounds: Bounds = DEFAULT_K_BOUNDS,
        gamma_bounds: Bounds = DEFAULT_GAMMA_BOUNDS,
        interpolation_factor: int = DEFAULT_INTERPOLATION_FACTOR,
        train_fraction: float = DEFAULT_TRAIN_FRACTION,
        edge_weight_scale: float | str = "mean",
    ) -> None:
        super().__init__()
        if setup is None:
            if data is None:
                raise ConfigError("model", "CRLSMModule needs the cell graph (data=...) or a setup")
            setup = resolve_setup(data)
        k_bounds = check_bounds("model.k_bounds", k_bounds)
        gamma_bounds = check_bounds("model.gamma_bounds", gamma_bounds)
        solver_settings(solver, lam, k_bounds, gamma_bounds)  # fail early on a bad config
        if backend not in BACKENDS:
            raise ConfigError("model.backend", f"unknown backend '{backend}' (use one of {BACKENDS})")
        if data is not None:
            time_split(data.x.shape[1], train_fraction)
        self.save_hyperparameters(ignore=["data", "setup"])
        self.automatic_optimization = False
        #: results.json's ``method``: the solver's name (``"crlsm"``, ``"rlsm"`` or ``"lsm"``)
        self.method_name = solver
        self.train_fraction = float(train_fraction)
        self.register_setup(setup)
        self.options = {
            "solver": solver, "backend": backend, "lam": lam,
            "k_bounds": k_bounds, "gamma_bounds": gamma_bounds,
        }
        self.system_options = {
            "interpolation_factor": interpolation_factor, "train_fraction": train_fraction,
            "edge_weight_scale": edge_weight_scale,
        }
        nan = torch.full_like(self.modelled, math.nan, dtype=torch.float64)  # (N,), on the setup's device
        self.register_buffer("k_fit", nan[0].clone())
        self.register_buffer("gamma_fit", nan)
        self.register_buffer("scale_fit", nan[0].clone())

    #: a closed-form solve: no torch optimiser
    uses_optimizer = False

    def configure_optimizers(self) -> None:
        """No optimiser: the fit is a closed-form solve inside ``training_step``."""
        return None

    def solve(self, data: Data) -> tuple[FittedParameters, Tensor]:
        """Build and solve the least squares on ``data`` (any device); returns the host parameters and
        the objective () (on the device of ``data``)."""
        system = build_system(data, self.consensus_setup, **self.system_options)
        solution = solve_system(system, **self.options)
        return to_fitted(system, solution), solution.objective

    def training_step(self, batch: Data, batch_idx: int) -> Tensor:
        fitted, loss = self.solve(batch)
        modelled = self.consensus_setup.modelled  # host, like ``fitted``
        self.k_fit.fill_(fitted.k)
        self.gamma_fit.copy_(fitted.gamma)  # host -> the module's device
        self.scale_fit.fill_(fitted.edge_weight_scale)
        gamma_modelled = fitted.gamma[modelled]
        self.log("train/loss", loss.detach().float(), prog_bar=True, batch_size=1)
        self.log("fit/k", fitted.k, prog_bar=True, batch_size=1)
        self.log("fit/gamma_mean", float(gamma_modelled.mean()), batch_size=1)
        self.log("fit/gamma_median", float(gamma_modelled.median()), batch_size=1)
        for name, value in truth_errors(fitted, batch, modelled).items():
            self.log(name, value, batch_size=1)
        return loss

    def fitted_parameters(self) -> FittedParameters:
        """The parameters of the last fit (``k``, ``gamma`` (N,), scale, gamma mode).

        Raises:
            ConfigError: the module has not been fitted yet (run ``trainer.fit`` first).
        """
        if math.isnan(float(self.k_fit)):
            raise ConfigError("model", "CRLSMModule is not fitted yet: run trainer.fit(model, ...) first")
        return FittedParameters(
            k=float(self.k_fit), gamma=self.gamma_fit.detach().cpu().clone(),
            edge_weight_scale=float(self.scale_fit), gamma_mode=self.gamma_mode,
            **self._box(),
        )

    def _box(self) -> dict[str, tuple[float, float] | None]:
        """The box of the fit: the bounds for the constrained solver (CRLSM), none for LSM / RLSM."""
        boxed = self.options["solver"] == "crlsm"
        return {
            "k_bounds": tuple(self.options["k_bounds"]) if boxed else None,
            "gamma_bounds": tuple(self.options["gamma_bounds"]) if boxed else None,
        }
