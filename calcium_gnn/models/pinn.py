"""PINNModule: a physics-informed neural network that identifies ``k`` and ``gamma_i`` (paper sec. 2.3).

The trial solution is one network of time for the G modelled cells and (``border_trial="network"``,
as ``configs/model/pinn.yaml`` sets it) their B border cells, ``y_hat(t) = mu + sigma * u_theta((t - c)/h)``
(:class:`calcium_gnn.nn.mlp.TraceNet`, shapes (G + B, T)),
trained on the training window only (:func:`calcium_gnn.physics.interpolation.time_split`, the
same split as CRLSM) with the loss

.. math::
    \\mathcal L = \\lambda_{data} \\mathcal L_{data} + \\lambda_{phys}(s) \\mathcal L_{\\mathcal F},

* :math:`\\mathcal L_{\\mathcal F}` (eq. 21): the mean square of the residual
  ``r_i(t) = dy_hat_i/dt - k/|N_i| sum_j w_ij (z_j - y_hat_i) - gamma_i`` at collocation times ``t``
  in the window, computed by :class:`calcium_gnn.nn.consensus.ConsensusConv`, for the modelled cells
  only; ``z_j = y_hat_j`` for modelled cells, and for border cells their own trial solution
  (``border_trial="network"``) or their data linearly interpolated between frames (``"data"``, the
  paper); ``dy_hat/dt`` comes from one forward-mode AD pass (:meth:`TraceNet.value_and_rate`);
* :math:`\\mathcal L_{data}` (eq. 22): the mean square of ``y_hat_i - x_i`` over the cells with a trial
  solution, at the observed frames (``data_points="frames"``) or at the interpolated collocation
  points (``"collocation"``, the paper).

Why border cells get a trial solution: their observed traces carry the observation noise, and in
``r_i`` that noise multiplies ``k`` (errors in variables), which pulls ``k`` towards 0 as a noisy
regressor does. Their trial solution is the band-limited fit of their data (the physics term does
not act on them), so they still follow their data, without its frame-to-frame noise. And why the
collocation points lie between the frames too (``interpolation_factor: 4`` in ``pinn.yaml``): at the
frames alone a network can fit the data's values and, independently, the derivatives the residual
asks for, at any ``k``; between the frames its values and derivatives are tied together.

Two configurations are meant (``configs/model/pinn.yaml`` and ``pinn_paper.yaml``):

* the paper's: raw time in s as input, raw output, raw ``k`` and ``gamma`` (projected on their box
  after each step), unnormalised sums over cells (eqs. 21-22 as written), a 4 x 32 tanh MLP, Adam
  (lr 1e-3) on minibatches of 20 / 80 of 2610 points for 500 epochs;
* the working one: the window mapped to ``[-1, 1]``, each output ``mu_i + sigma_i * net``, Fourier
  features, ``k`` and ``gamma`` bounded by a sigmoid of an O(1) raw value (ConsensusConv's own
  parametrisation), both loss terms divided by their natural scale (``sigma_i`` for the data, the RMS
  of the observed ``dx/dt`` for the residual) so that they are O(1), full-batch Adam then L-BFGS.

Optimisation is manual (``automatic_optimization = False``): Adam for ``adam_steps`` steps, then
L-BFGS for ``lbfgs_steps`` steps (each up to ``lbfgs.max_iter`` inner iterations); after both the
module asks the trainer to stop. ``steps_per_epoch`` tells the lead's DataModule how many steps (one
graph per step) make an epoch.

**Data parallelism** (``trainer=ddp``, ``data_parallel = True``). With W processes, process ``r``
evaluates the loss terms on its share of the step's points only: every W-th collocation point of the
step (``index[r::W]``, the whole set in full batch, the step's minibatch otherwise) and, for
``data_points="frames"``, every W-th training frame. Each term is its shard's mean times
``W |S_r| / |S|``, so the mean over the processes, which DDP takes of the gradients, is exactly the
gradient of the single-process loss (equal or unequal shards alike); the logged terms are averaged
over the processes (``sync_dist``). Adam is then the single-process Adam. L-BFGS needs the same loss
value in every process (its line search compares values): the closure returns the loss averaged over
the processes, so every process takes the same L-BFGS steps (same gradients, same values), on its
share of the points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch_geometric.data import Data

from calcium_gnn.errors import ConfigError, GraphError
from calcium_gnn.models.base import ConsensusModel
from calcium_gnn.models.options import check_choice
from calcium_gnn.nn.consensus import PAPER_GAMMA_BOUNDS, PAPER_K_BOUNDS, ConsensusConv
from calcium_gnn.nn.mlp import TraceNet
from calcium_gnn.physics.edge_weights import edge_weights
from calcium_gnn.physics.interpolation import DEFAULT_TRAIN_FRACTION, time_split
from calcium_gnn.physics.parameters import FittedParameters
from calcium_gnn.physics.pinn_residual import consensus_residual, interpolate_at, mean_square
from calcium_gnn.physics.setups import Setup

PARAMETRIZATIONS: tuple[str, ...] = ("bounded", "scaled", "raw")
DATA_POINTS: tuple[str, ...] = ("frames", "collocation")
BORDER_TRIALS: tuple[str, ...] = ("network", "data")
INITS: tuple[str | None, ...] = (None, "crlsm")

DEFAULT_NET: dict[str, Any] = {
    "hidden_features": 64,
    "num_layers": 3,
    "activation": "tanh",
    "output_gain": 0.1,
    "fourier": {"n_frequencies": 32, "max_frequency": 24.0, "mode": "geometric", "min_frequency": 0.5},
}
DEFAULT_LBFGS: dict[str, Any] = {
    "lr": 1.0,
    "max_iter": 20,
    "history_size": 50,
    "line_search_fn": "strong_wolfe",
}


def _plain(value: Any) -> Any:
    """A Hydra ``DictConfig`` / ``ListConfig`` as plain Python containers (other values unchanged)."""
    if isinstance(value, DictConfig) or OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _positive_int(key: str, value: Any, minimum: int = 1, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    bad_type = isinstance(value, bool) or not isinstance(value, (int, float))
    if bad_type or value != int(value) or value < minimum:
        raise ConfigError(key, f"expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _shard(index: Tensor, rank: int, world: int) -> tuple[Tensor, float]:
    """Process ``rank``'s share ``index[rank::world]`` of ``index`` (B,) and its weight ``W |S_r| / B``.

    A process left with no point (``B < W``) gets the first point with weight 0, so that its backward
    pass still reaches every parameter (DDP waits for all of them).
    """
    part = index[rank::world]
    if part.numel() == 0:
        return index[:1], 0.0
    return part, part.numel() * world / index.numel()


class PINNModule(ConsensusModel):
    """Fit the consensus problem (eqs. 1-3) to a cell graph with a PINN (eqs. 21-22).

    Data parallel (module docstring): under ``strategy=ddp`` each process fits its share of the
    collocation points and DDP averages the gradients. The module is built on the host from ``data``
    (the boundary) and keeps its tensors as buffers, so ``.to(device)`` moves all of it.

    Args:
        data: the cell graph (schema: :mod:`calcium_gnn.io.graph_schema`).
        setup: the modelled group G, its border cells and the ``gamma_mode``.
        train_fraction: fraction of the frames in the training window (default 2110/3610, the paper's).
        net: keyword arguments of :class:`TraceNet` / :class:`calcium_gnn.nn.mlp.TimeMLP`
            (``hidden_features``, ``num_layers``, ``activation``, ``output_gain``, ``fourier``
            (a dict, or None for the raw ``t`` input)); default :data:`DEFAULT_NET`.
        fourier_periods_per_frame: when set (and ``net.fourier`` is), the Fourier features' highest
            frequency is this many periods per frame interval of the window (``f_max = value *
            (n_train - 1)``), so the cap on resolvable detail does not depend on the window length
            (``pinn.yaml``: 0.114, i.e. ``f_max = 24`` on the paper's 211 training frames).
        scale_time: map the training window to ``tau in [-1, 1]`` (default True; paper: False).
        scale_output: ``y_hat_i = mu_i + sigma_i * net_i`` with the window's mean / std of each
            cell (default True; paper: False).
        parametrization: ``"bounded"`` (default): ``k`` and ``gamma`` are the sigmoid maps of O(1)
            raw values inside ``k_bounds`` / ``gamma_bounds`` (ConsensusConv); ``"scaled"``: ``k`` as
            in ``"bounded"``, ``gamma_i = g * rho_i`` with ``g`` the RMS of the observed ``dx/dt`` of G
            (the feed's natural scale, whatever the box) and ``rho_i`` O(1), projected onto the box after
            each step (a wide box, e.g. for feeds of both signs, then costs nothing); ``"raw"`` (paper):
            plain parameters, projected onto the bounds after each optimiser step.
        k_bounds, gamma_bounds: boxes for ``k`` (1/s) and ``gamma`` (default the paper's
            ``[1e-3, 0.1]`` and ``[-3e-5, 0.1]``).
        k_init, gamma_init: starting values (default 0.01 and 0).
        init_from: None (default) or ``"crlsm"``: start ``k`` and ``gamma`` from the CRLSM fit.
        edge_weight_scale: ``s`` of ``w = u l / s``: ``"mean"`` (default) or a number.
        interpolation_factor: collocation points per frame interval when ``n_collocation`` is None
            (default 1: the frames themselves; ``pinn.yaml``: 4; the paper: 10).
        border_trial: ``"data"`` (default, the paper): border cells drive the residual with their
            observed traces, linearly interpolated between frames; ``"network"`` (``pinn.yaml``):
            border cells get their own outputs of the trial solution, fitted to their data by the
            data term (not by the physics), and drive the residual with them.
        n_collocation: number of evenly spaced collocation times in the window (overrides
            ``interpolation_factor``; paper: 2610).
        data_points: ``"frames"`` (default: the data loss uses the observed frames only) or
            ``"collocation"`` (paper: the linearly interpolated points).
        batch_size: collocation points per step (shuffled each epoch, paper: 20 or 80), or None
            (default): all of them every step (full batch).
        steps_per_epoch: optimisation steps per epoch; default ``ceil(n_points / batch_size)`` for
            minibatches and 100 for full batch.
        loss_weights: ``{"data": lambda_data, "physics": lambda_phys}`` (default 1 and 1).
        normalize_losses: divide the data misfit by ``sigma_i`` and the residual by the RMS of the
            observed ``dx/dt`` (default True; paper: False).
        cell_reduction: ``"mean"`` (default) or ``"sum"`` (paper, eqs. 21-22) over the G cells.
        pretrain_steps: the first Adam steps fit the data term alone (``lambda_phys = 0``), so the
            physics term cannot drag an unfitted network (and k, gamma) away from the data early
            (default 0; ``configs/model/pinn.yaml``: 300).
        adam_lr: Adam learning rate of the network (default 1e-3, the paper's).
        adam_lr_physics: Adam learning rate of ``k`` and ``gamma`` (default: ``adam_lr``).
        adam_steps: Adam steps (pretraining included) before L-BFGS (default None: Adam until the
            trainer stops).
        lbfgs_steps: L-BFGS steps after Adam (default 0); then the trainer is asked to stop.
        lbfgs: options of ``torch.optim.LBFGS`` (default :data:`DEFAULT_LBFGS`).
        seed: seed of the network initialisation and of the minibatch shuffling (default 0).
        num_threads: ``torch.set_num_threads`` during the fit (restored after it), or None (default)
            to leave it. On CPU, 1 is measured ~10x faster here: PyG's scatter of the consensus
            messages (a stride-0 expanded index) is very slow with more than one thread.
        method_name: name in the results (default ``"pinn"``).
    """

    #: each process fits its share of the collocation points (module docstring)
    data_parallel = True

    def __init__(
        self,
        data: Data,
        setup: Setup,
        *,
        train_fraction: float = DEFAULT_TRAIN_FRACTION,
        net: Mapping[str, Any] | None = None,
        fourier_periods_per_frame: float | None = None,
        scale_time: bool = True,
        scale_output: bool = True,
        parametrization: str = "bounded",
        k_bounds: tuple[float, float] = PAPER_K_BOUNDS,
        gamma_bounds: tuple[float, float] = PAPER_GAMMA_BOUNDS,
        k_init: float = 0.01,
        gamma_init: float = 0.0,
        init_from: str | None = None,
        edge_weight_scale: float | str = "mean",
        interpolation_factor: int = 1,
        n_collocation: int | None = None,
        border_trial: str = "data",
        data_points: str = "frames",
        batch_size: int | None = None,
        steps_per_epoch: int | None = None,
        loss_weights: Mapping[str, float] | None = None,
        normalize_losses: bool = True,
        cell_reduction: str = "mean",
        pretrain_steps: int = 0,
        adam_lr: float = 1e-3,
        adam_lr_physics: float | None = None,
        adam_steps: int | None = None,
        lbfgs_steps: int = 0,
        lbfgs: Mapping[str, Any] | None = None,
        seed: int = 0,
        num_threads: int | None = None,
        method_name: str = "pinn",
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.method_name = str(method_name)
        self.train_fraction = float(train_fraction)
        self.parametrization = check_choice("model.parametrization", parametrization, PARAMETRIZATIONS)
        self.data_points = check_choice("model.data_points", data_points, DATA_POINTS)
        self.border_trial = check_choice("model.border_trial", border_trial, BORDER_TRIALS)
        self.init_from = check_choice("model.init_from", init_from, INITS)
        self.cell_reduction = cell_reduction
        self.normalize_losses = bool(normalize_losses)
        weights = {"data": 1.0, "physics": 1.0, **(_plain(loss_weights) or {})}
        unknown = set(weights) - {"data", "physics"}
        if unknown:
            raise ConfigError("model.loss_weights", f"unknown term(s) {sorted(unknown)} (use data, physics)")
        if not all(float(v) >= 0 and math.isfinite(float(v)) for v in weights.values()):
            raise ConfigError("model.loss_weights", f"weights must be finite and >= 0, got {weights}")
        self.loss_weights = {k: float(v) for k, v in weights.items()}
        self.pretrain_steps = _positive_int("model.pretrain_steps", pretrain_steps, 0)
        self.adam_lr = float(adam_lr)
        self.adam_lr_physics = float(adam_lr if adam_lr_physics is None else adam_lr_physics)
        self.adam_steps = _positive_int("model.adam_steps", adam_steps, 0, allow_none=True)
        self.lbfgs_steps = _positive_int("model.lbfgs_steps", lbfgs_steps, 0)
        self.lbfgs_options = {**DEFAULT_LBFGS, **(_plain(lbfgs) or {})}
        if self.lbfgs_steps and self.adam_steps is None:
            raise ConfigError("model.adam_steps", "set adam_steps (possibly 0) when lbfgs_steps > 0")
        self.seed = int(seed)
        self.num_threads = _positive_int("model.num_threads", num_threads, 1, allow_none=True)
        self.save_hyperparameters(ignore=["data", "setup"])

        n_nodes = int(data.num_nodes)
        if tuple(setup.modelled.shape) != (n_nodes,):
            raise GraphError("setup", f"the setup masks {setup.modelled.numel()} cells, the graph {n_nodes}")
        self.register_setup(setup)  # buffers modelled / border, setup_name, gamma_mode
        # the module is built on the host (the boundary); Lightning moves its buffers
        x = data.x.detach().float().cpu()
        t = data.t.detach().double().cpu()
        train, _ = time_split(x.shape[1], self.train_fraction)
        x_train, t_train = x[:, train], t[train]
        w, s = edge_weights(data.edge_attr.detach().float().cpu(), edge_weight_scale)
        self.edge_weight_scale = float(s)
        self.register_buffer("edge_index", data.edge_index.detach().long().cpu())
        self.register_buffer("edge_weight", w)
        self.register_buffer("t_frames", t_train)
        self.register_buffer("x_frames", x_train)
        n_points = self._collocation_count(interpolation_factor, n_collocation, t_train.numel())
        t_col = torch.linspace(
            float(t_train[0]), float(t_train[-1]), n_points, dtype=t_train.dtype, device=t_train.device
        )
        self.register_buffer("t_collocation", t_col)
        self.register_buffer("x_collocation", interpolate_at(t_train, x_train, t_col))
        self.batch_size = _positive_int("model.batch_size", batch_size, 1, allow_none=True)
        if self.batch_size is not None and self.batch_size > n_points:
            self.batch_size = n_points
        default_steps = math.ceil(n_points / self.batch_size) if self.batch_size else 100
        self.steps_per_epoch = _positive_int(
            "model.steps_per_epoch", default_steps if steps_per_epoch is None else steps_per_epoch
        )
        # this epoch's shuffled collocation points (minibatches); rebuilt at each epoch start
        self.register_buffer("_order", self._permutation(0, n_points), persistent=False)

        # the cells with a trial solution (node order): G, and its border with border_trial "network"
        fitted = self.modelled | self.border if self.border_trial == "network" else self.modelled.clone()
        self.register_buffer("fitted", fitted)
        self.register_buffer("fitted_modelled", self.modelled[fitted])  # (G + B,) rows that are in G
        self.register_buffer("fitted_border", self.border[fitted])  # (G + B,) rows that are border
        x_fit = x_train[fitted]
        mean, std = x_fit.mean(dim=1), x_fit.std(dim=1).clamp_min(1e-6 * (x_fit.abs().max() + 1e-12))
        self.register_buffer("data_scale", std if self.normalize_losses else torch.ones_like(std))
        x_g = x_train[self.modelled]
        rate = torch.diff(x_g, dim=1) / torch.diff(t_train).float()
        rate_rms = rate.pow(2).mean().sqrt().clamp_min(1e-12)
        physics_scale = rate_rms if self.normalize_losses else torch.ones_like(rate_rms)
        self.register_buffer("physics_scale", physics_scale)

        net_kwargs = {**DEFAULT_NET, **(_plain(net) or {})}
        if fourier_periods_per_frame is not None and net_kwargs.get("fourier"):
            if not float(fourier_periods_per_frame) > 0:
                raise ConfigError(
                    "model.fourier_periods_per_frame", f"must be > 0, got {fourier_periods_per_frame}"
                )
            fourier = dict(net_kwargs["fourier"])
            f_min = float(fourier.get("min_frequency", 0.5))
            fourier["max_frequency"] = max(f_min, float(fourier_periods_per_frame) * (t_train.numel() - 1))
            net_kwargs["fourier"] = fourier
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self.net = TraceNet(
                int(fitted.sum()),
                (float(t_train[0]), float(t_train[-1])),
                mean=mean,
                std=std,
                scale_time=bool(scale_time),
                scale_output=bool(scale_output),
                **net_kwargs,
            )
        self.conv = ConsensusConv(
            n_nodes,
            gamma_mode=self.gamma_mode,
            k_bounds=tuple(_plain(k_bounds)),
            gamma_bounds=tuple(_plain(gamma_bounds)),
            k_init=k_init,
            gamma_init=gamma_init,
        )
        if self.init_from == "crlsm":
            self._init_from_crlsm(data)
        n_gamma = self.conv.raw_gamma.numel()
        if self.parametrization == "raw":
            self.k_value = nn.Parameter(self.conv.k.detach().clone())
            self.gamma_value = nn.Parameter(self.conv.gamma.detach()[:n_gamma].clone())
            self.conv.requires_grad_(False)
        elif self.parametrization == "scaled":
            self.register_buffer("gamma_scale", rate_rms.detach().clone())
            self.gamma_value = nn.Parameter(self.conv.gamma.detach()[:n_gamma].clone() / self.gamma_scale)
            self.conv.raw_gamma.requires_grad_(False)
        self._truth = self._read_truth(data)

    # ----------------------------------------------------------------------------------------------
    # construction helpers
    @staticmethod
    def _collocation_count(factor: int, n_collocation: int | None, n_frames: int) -> int:
        if n_collocation is not None:
            return int(_positive_int("model.n_collocation", n_collocation, 2))
        f = _positive_int("model.interpolation_factor", factor, 1)
        return (n_frames - 1) * int(f) + 1

    @staticmethod
    def _permutation(epoch_seed: int, n: int) -> Tensor:
        """A permutation of ``range(n)`` (long, (n,)) drawn on the host from ``epoch_seed``, so that it is
        the same on every device and in every process."""
        return torch.randperm(n, generator=torch.Generator().manual_seed(int(epoch_seed)))

    def _init_from_crlsm(self, data: Data) -> None:
        from calcium_gnn.physics.least_squares import fit_least_squares

        fitted = fit_least_squares(
            data, self.consensus_setup, solver="crlsm", train_fraction=self.train_fraction,
            edge_weight_scale=self.edge_weight_scale,
        )
        self.conv.set_parameters(float(fitted.k), fitted.gamma)

    def _read_truth(self, data: Data) -> dict[str, Any] | None:
        """The ground truth as host values: ``{"k": float, "gamma": (G*,) float64 numpy, "gamma_cells":
        (N,) bool numpy}`` (modelled cells with a finite true gamma), or None without ground truth."""
        truth_k = getattr(data, "truth_k", None)
        if truth_k is None:
            return None
        truth_s = getattr(data, "truth_edge_weight_scale", None)
        # k w_fit = k_true w_true  <=>  k_fit = k_true * s_fit / s_true
        k_equiv = float(truth_k) * (self.edge_weight_scale / float(truth_s) if truth_s else 1.0)
        gamma = getattr(data, "truth_gamma", None)
        out: dict[str, Any] = {"k": k_equiv}
        if gamma is not None:
            g = torch.as_tensor(gamma).detach().double().cpu().reshape(-1).numpy()
            keep = self.modelled.detach().cpu().numpy() & np.isfinite(g)
            out["gamma"], out["gamma_cells"] = g[keep], keep
        return out

    # ----------------------------------------------------------------------------------------------
    # the unknowns
    @property
    def k(self) -> Tensor:
        """The coupling constant k (1/s), shape ()."""
        return self.k_value if self.parametrization == "raw" else self.conv.k

    @property
    def gamma(self) -> Tensor:
        """The feed terms gamma_i broadcast to all N nodes, shape (N,) (zeros for gamma_mode "none")."""
        if self.parametrization == "bounded":
            return self.conv.gamma
        if self.gamma_mode == "none":
            return torch.zeros_like(self.conv.gamma)
        value = self.gamma_value if self.parametrization == "raw" else self.gamma_scale * self.gamma_value
        return value.expand(self.conv.num_nodes)

    @torch.no_grad()
    def _project(self) -> None:
        """Projection of the plain parameters onto their boxes (``parametrization="raw"`` / ``"scaled"``)."""
        if self.parametrization == "raw":
            self.k_value.clamp_(*self.conv.k_bounds)
            self.gamma_value.clamp_(*self.conv.gamma_bounds)
        elif self.parametrization == "scaled":
            lo, hi = self.conv.gamma_bounds
            scale = float(self.gamma_scale)
            self.gamma_value.clamp_(lo / scale, hi / scale)

    def fitted_parameters(self) -> FittedParameters:
        """The fitted ``k`` and ``gamma`` (N,) float64 on the CPU (0 for cells not modelled), with the
        edge-weight scale (host values, whatever the module's device)."""
        gamma = torch.where(self.modelled, self.gamma.detach(), torch.zeros_like(self.gamma.detach()))
        return FittedParameters(
            k=float(self.k.detach()),
            gamma=gamma.cpu().double(),
            edge_weight_scale=self.edge_weight_scale,
            gamma_mode=self.gamma_mode,
            k_bounds=tuple(self.conv.k_bounds),
            gamma_bounds=tuple(self.conv.gamma_bounds),
        )

    @torch.no_grad()
    def own_trajectory(self) -> Tensor:
        """The network's trajectory ``y_hat`` (G, T_train) on the training frames, float64 on the CPU."""
        return self.net(self.t_frames)[self.fitted_modelled].detach().double().cpu()

    # ----------------------------------------------------------------------------------------------
    # the loss
    def on_fit_start(self) -> None:
        self.limit_threads()

    def on_fit_end(self) -> None:
        self.restore_threads()

    def on_train_epoch_start(self) -> None:
        if self.batch_size is not None:
            order = self._permutation(self.seed + int(self.current_epoch), self.t_collocation.numel())
            self._order.copy_(order)  # host draw -> the buffer's device

    def _batch_indices(self, batch_idx: int) -> Tensor | None:
        """Minibatch ``batch_idx`` of this epoch's shuffled collocation points (None: full batch)."""
        if self.batch_size is None:
            return None
        n = self.t_collocation.numel()
        start = (batch_idx * self.batch_size) % n
        return self._order[start : min(start + self.batch_size, n)]

    def _world(self) -> tuple[int, int]:
        """``(rank, W)``: this process and the number of data-parallel processes ((0, 1) alone)."""
        trainer = self._trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def losses(self, index: Tensor | None = None, frames: Tensor | None = None) -> dict[str, Tensor]:
        """The data (eq. 22) and physics (eq. 21) terms at the collocation points ``index`` (None: all).

        Args:
            index: (B,) long indices into the collocation points, or None (all of them).
            frames: (F,) long indices into the training frames used by the data term when
                ``data_points="frames"``, or None (all of them).

        Returns:
            ``{"data": L_data, "physics": L_F}``, scalars.
        """
        t_col = self.t_collocation if index is None else self.t_collocation[index]
        x_col = self.x_collocation if index is None else self.x_collocation[:, index]
        z_hat, dz_hat = self.net.value_and_rate(t_col)
        y_hat, dy_hat = z_hat[self.fitted_modelled], dz_hat[self.fitted_modelled]
        drive = x_col
        if self.border_trial == "network":
            drive = x_col.clone()
            drive[self.border] = z_hat[self.fitted_border].to(x_col.dtype)
        residual = consensus_residual(
            self.conv, y_hat, dy_hat, drive, self.edge_index, self.edge_weight, self.modelled,
            k=self.k if self.parametrization == "raw" else None,
            gamma=None if self.parametrization == "bounded" else self.gamma,
        )
        physics = mean_square(residual, self.physics_scale, self.cell_reduction)
        if self.data_points == "collocation":
            misfit = z_hat - x_col[self.fitted]
        elif frames is None:
            misfit = self.net(self.t_frames) - self.x_frames[self.fitted]
        else:
            misfit = self.net(self.t_frames[frames]) - self.x_frames[:, frames][self.fitted]
        data = mean_square(misfit, self.data_scale, self.cell_reduction)
        return {"data": data, "physics": physics}

    def local_losses(self, index: Tensor | None = None) -> dict[str, Tensor]:
        """This process's share of :meth:`losses` at the step's points ``index`` (None: all).

        Alone (W = 1) it is :meth:`losses`. With W data-parallel processes, process r evaluates the
        terms on ``index[r::W]`` (and the data term on the training frames ``r::W`` for
        ``data_points="frames"``) and multiplies each by ``W |S_r| / |S|``: the mean over the
        processes of each term (and of its gradient, which DDP averages) is the term at all points.
        """
        rank, world = self._world()
        if world == 1:
            return self.losses(index)
        if index is None:
            index = torch.arange(self.t_collocation.numel(), device=self.t_collocation.device)
        points, w_points = _shard(index, rank, world)
        all_frames = torch.arange(self.t_frames.numel(), device=self.t_frames.device)
        frames, w_frames = _shard(all_frames, rank, world)
        terms = self.losses(points, frames)
        w_data = w_points if self.data_points == "collocation" else w_frames
        return {"data": w_data * terms["data"], "physics": w_points * terms["physics"]}

    def _physics_weight(self) -> float:
        return 0.0 if self.global_step < self.pretrain_steps else self.loss_weights["physics"]

    def total_loss(self, index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """This process's ``lambda_data L_data + lambda_phys(s) L_F`` (:meth:`local_losses`) and terms."""
        terms = self.local_losses(index)
        total = self.loss_weights["data"] * terms["data"] + self._physics_weight() * terms["physics"]
        return total, terms

    def _process_mean(self, value: Tensor) -> Tensor:
        """``value`` averaged over the data-parallel processes (itself alone)."""
        if self._world()[1] == 1:
            return value
        return self.trainer.strategy.reduce(value, reduce_op="mean")

    # ----------------------------------------------------------------------------------------------
    # Lightning
    def _in_lbfgs_phase(self) -> bool:
        return self.lbfgs_steps > 0 and self.adam_steps is not None and self.global_step >= self.adam_steps

    def training_step(self, batch: Data, batch_idx: int) -> Tensor:
        adam, lbfgs = self.optimizers()
        if self._in_lbfgs_phase():
            cache: dict[str, Any] = {}

            def closure() -> Tensor:
                lbfgs.zero_grad()
                total, terms = self.total_loss(None)
                self.manual_backward(total)  # DDP averages the gradients over the processes
                cache["total"], cache["terms"] = total.detach(), {k: v.detach() for k, v in terms.items()}
                # the same loss value in every process, so that every line search takes the same steps
                return self._process_mean(total.detach())

            lbfgs.step(closure=closure)
            total, terms = cache["total"], cache["terms"]
        else:
            adam.zero_grad()
            total, terms = self.total_loss(self._batch_indices(batch_idx))
            self.manual_backward(total)
            adam.step()
        self._project()
        self.log("train/loss", total, prog_bar=True, batch_size=1, sync_dist=True)
        self.log("train/loss_data", terms["data"], batch_size=1, sync_dist=True)
        self.log("train/loss_physics", terms["physics"], batch_size=1, sync_dist=True)
        self.log("fit/k", self.k.detach(), prog_bar=True, batch_size=1)
        budget = (self.adam_steps or 0) + self.lbfgs_steps
        if self.adam_steps is not None and self.global_step >= budget:
            self.trainer.should_stop = True
        return total.detach()

    def on_train_epoch_end(self) -> None:
        # the parameters are the same in every process: the mean over the processes is the value
        for name, value in self.fit_metrics().items():
            self.log(name, value, batch_size=1, sync_dist=True)

    @torch.no_grad()
    def fit_metrics(self) -> dict[str, float]:
        """``fit/k``, gamma statistics over G and, with ground truth, the parameter errors.

        ``fit/k_rel_err = |k - k*| / k*``; ``fit/gamma_mae = mean_i |gamma_i - gamma_i*|``;
        ``fit/gamma_median_rel_err = median_i |gamma_i - gamma_i*| / |gamma_i*|``;
        ``fit/gamma_medae_over_mean = median_i |gamma_i - gamma_i*| / mean_i gamma_i*`` (over the
        modelled cells with a finite true gamma).
        """
        k = float(self.k)
        gamma = self.gamma.detach().double().cpu()  # host values from here on
        gamma_g = gamma[self.modelled.cpu()]
        out = {"fit/k": k, "fit/gamma_mean": float(gamma_g.mean()), "fit/gamma_std": float(gamma_g.std())
               if gamma_g.numel() > 1 else 0.0}
        if self._truth is not None:
            out["fit/k_rel_err"] = abs(k - self._truth["k"]) / abs(self._truth["k"])
            if "gamma" in self._truth and self._truth["gamma"].size:
                fit = torch.from_numpy(gamma.numpy()[self._truth["gamma_cells"]])
                true = torch.from_numpy(self._truth["gamma"])
                err = (fit - true).abs()
                out["fit/gamma_mae"] = float(err.mean())
                out["fit/gamma_median_rel_err"] = float((err / true.abs().clamp_min(1e-30)).median())
                out["fit/gamma_medae_over_mean"] = float(err.median() / true.abs().mean().clamp_min(1e-30))
        return out

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        physics = {
            "bounded": lambda: list(self.conv.parameters()),
            "scaled": lambda: [self.conv.raw_k, self.gamma_value],
            "raw": lambda: [self.k_value, self.gamma_value],
        }[self.parametrization]()
        physics = [p for p in physics if p.numel()]
        adam = torch.optim.Adam(
            [{"params": list(self.net.parameters()), "lr": self.adam_lr},
             {"params": physics, "lr": self.adam_lr_physics}],
        )
        lbfgs = torch.optim.LBFGS(list(self.net.parameters()) + physics, **self.lbfgs_options)
        return [adam, lbfgs]
