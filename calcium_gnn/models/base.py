"""The model contract: what ``train()`` and the evaluation need of every consensus model.

Every model of ``configs/model/`` is a :class:`ConsensusModel`, a LightningModule built as
``Model(data=..., setup=..., **cfg.model)``. ``train()`` relies on exactly this and probes nothing:

* ``method_name`` (results.json's ``method``), ``train_fraction`` (the training share of the frames,
  the test window is the rest) and ``steps_per_epoch`` (graphs the DataModule serves per epoch);
* ``data_parallel``: whether data-parallel training (``trainer=ddp``) means something for the model
  (each process a share of the collocation points, windows or cultures). Exact solvers (CRLSM,
  Levenberg-Marquardt) are not data parallel: ``train()`` says so and runs them in one process
  instead of running identical copies;
* :meth:`fitted_parameters`: ``k``, ``gamma`` (N,), the edge-weight scale and the gamma mode, on the
  host (CPU);
* :meth:`simulator`: ``None`` for the paper's linear law (the evaluation integrates it with
  :func:`calcium_gnn.physics.simulate.integrate` and a plain
  :class:`~calcium_gnn.nn.consensus.ConsensusConv`), or the right-hand side of a learned law;
* :meth:`own_trajectory`: the model's own trajectory of the modelled cells on the training frames
  when it has one apart from the simulation of its parameters (the PINN's network), else ``None``;
  the diagnostics compare the two (:mod:`calcium_gnn.evaluation.diagnostics`);
* :meth:`extra_results`: method-specific top-level results (intervals, anomaly scores, pooling, ...)
  computed from the fitted module and the run's (host) cell graph. Values are plain Python or host
  result objects (:class:`~calcium_gnn.inference.uncertainty.ParameterIntervals`,
  :class:`~calcium_gnn.inference.anomaly.AnomalyScores`); the evaluation turns them into results.json
  entries and figures, in one place (:func:`calcium_gnn.evaluation.report.evaluate_fit`).

The device contract (docs/architecture.md) holds for every model: its tensors are parameters,
buffers or submodules, nothing else (:func:`calcium_gnn.utils.device_audit.stray_tensors` checks it),
so ``model.to(device)`` moves all of it; results leave the device once, in :meth:`fitted_parameters`
and :meth:`extra_results`.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from calcium_gnn.physics.parameters import FittedParameters
from calcium_gnn.physics.setups import Setup


class ConsensusModel(L.LightningModule):
    """Base class of the consensus models (module docstring).

    Subclasses set ``method_name`` and ``train_fraction``, register the modelled mask as a buffer
    (:meth:`register_setup`) and implement :meth:`fitted_parameters`.
    """

    #: results.json's ``method``
    method_name: str = "consensus"
    #: optimisation steps the DataModule serves per epoch (each batch is the whole graph)
    steps_per_epoch: int = 1
    #: whether ``trainer=ddp`` splits the work between processes (module docstring)
    data_parallel: bool = False
    #: whether the fit uses a torch optimiser (False: a closed-form solve or its own solver, so
    #: Lightning's notice that ``configure_optimizers`` returned None is expected and silenced)
    uses_optimizer: bool = True
    #: whether the fit chooses the parameters whose simulation matches the data (output error): its
    #: ``k`` is then its own reference, and the evaluation fits no output-error reference for it
    simulation_fit: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.train_fraction: float = 0.0
        self.setup_name: str = ""
        self.gamma_mode: str = "per_cell"
        #: torch intra-op threads during ``trainer.fit`` (None: left alone); see :meth:`limit_threads`
        self.num_threads: int | None = None
        self._saved_threads: int | None = None

    def limit_threads(self) -> None:
        """Set torch's intra-op threads to ``num_threads`` for the fit (small graphs run faster on one:
        the thread overhead of the many small message-passing calls dominates)."""
        if self.num_threads is not None:
            self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(self.num_threads)

    def restore_threads(self) -> None:
        """Undo :meth:`limit_threads` (when the fit ends)."""
        if self._saved_threads is not None:
            torch.set_num_threads(self._saved_threads)
            self._saved_threads = None

    def register_setup(self, setup: Setup) -> None:
        """Keep the setup as buffers ``modelled`` / ``border`` (N,) bool and its name and gamma mode.

        The :class:`Setup` dataclass itself is not kept: a module's tensors must be buffers so that
        ``.to(device)`` moves them (the device contract).
        """
        self.setup_name = str(setup.name)
        self.gamma_mode = str(setup.gamma_mode)
        self.register_buffer("modelled", torch.as_tensor(setup.modelled).reshape(-1).bool().clone())
        self.register_buffer("border", torch.as_tensor(setup.border).reshape(-1).bool().clone())

    @property
    def consensus_setup(self) -> Setup:
        """The setup as a host (CPU) :class:`Setup`, rebuilt from the buffers."""
        return Setup(
            name=self.setup_name,
            modelled=self.modelled.detach().cpu().clone(),
            border=self.border.detach().cpu().clone(),
            gamma_mode=self.gamma_mode,
        )

    def fitted_parameters(self) -> FittedParameters:
        """``k``, ``gamma`` (N,) float64 on the CPU (0 outside G), the edge-weight scale, the gamma mode."""
        raise NotImplementedError(f"{type(self).__name__} must implement fitted_parameters()")

    def simulator(self) -> nn.Module | None:
        """The right-hand side of the fitted law for the evaluation; ``None``: the paper's linear law."""
        return None

    def wants_k_reference(self) -> bool:
        """Whether the evaluation compares this fit's coupling with the output-error reference of ``k``
        (:mod:`calcium_gnn.evaluation.reference_fit`): by default the models of the paper's law that do not
        fit its simulation themselves (the PINN, least squares)."""
        return not self.simulation_fit and self.simulator() is None

    def own_trajectory(self) -> Tensor | None:
        """(G, T_train) float64 on the CPU: the model's own fitted trajectory of the modelled cells (in
        cell order) on the training frames, when it is not the simulation of its parameters (the
        PINN's network); ``None`` (default) otherwise."""
        return None

    def extra_results(self, data: Data) -> dict[str, Any]:
        """Method-specific top-level results.json entries (module docstring); ``data`` is the run's
        cell graph on the host. Default: none."""
        return {}
