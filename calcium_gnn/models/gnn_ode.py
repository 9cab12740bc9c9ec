"""A learned coupling law: the consensus ODE with an MLP message (GNN ODE), ``model=gnn_ode``.

The right-hand side is :class:`calcium_gnn.nn.coupling.CouplingConv`:

.. math::
    \\frac{dy_i}{dt} = \\frac{k}{|N_i|} \\sum_{j \\in N(i)} \\big[w_{ij} \\Delta_{ij}
    + \\phi_\\theta(\\Delta_{ij}, \\tilde u_{ij}, \\tilde l_{ij}) - \\phi_\\theta(0, \\tilde u_{ij},
    \\tilde l_{ij})\\big] + \\gamma_i,

the linear law of eq. (3) plus a correction that starts at zero. It is fitted by the same output-error
loss as :class:`~calcium_gnn.models.neural_ode.OutputErrorODE` (mean squared difference between the
simulated and observed traces of the modelled cells over the training window), with L-BFGS (or Adam)
through a classical RK4 integration of the (now nonlinear) ODE: each frame interval is split into
``substeps`` steps of :func:`calcium_gnn.physics.simulate.rk4_step`, border cells following their
linearly interpolated data, exactly as in :func:`~calcium_gnn.physics.simulate.simulate_consensus`.

Initialisation (``init``): ``"output_error"`` (default) first fits the linear law by output error
(Levenberg-Marquardt, the ``neural_ode`` model), so training starts *at* the best linear model and the
test-window comparison (:meth:`GNNODEModule.compare_with_linear`) says whether the learned
correction helps; ``"crlsm"`` / ``"constant"`` as in the linear model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from calcium_gnn.errors import ConfigError
from calcium_gnn.evaluation.anomaly import plot_anomaly_map
from calcium_gnn.models.neural_ode import OutputErrorODE, moving_average
from calcium_gnn.nn.consensus import ConsensusConv
from calcium_gnn.nn.coupling import CouplingConv, normalised_edge_features
from calcium_gnn.physics.setups import Setup
from calcium_gnn.physics.simulate import euler_step, rk4_step

GNN_INITS: tuple[str, ...] = ("output_error", "crlsm", "constant")


def simulate_field(
    conv: ConsensusConv,
    x_obs: Tensor,
    t: Tensor,
    edge_index: Tensor,
    edge_weight: Tensor,
    modelled: Tensor,
    k: Tensor,
    gamma: Tensor,
    y0: Tensor,
    substeps: int = 2,
    method: str = "rk4",
) -> Tensor:
    """Integrate ``dy/dt = conv(y, x(t))`` (any, possibly nonlinear, message) over the frames ``t``.

    Cells outside ``modelled`` follow ``x_obs`` linearly interpolated inside each frame interval
    (``x(t_n + tau) = x_n + tau/Delta (x_{n+1} - x_n)``); each interval takes ``substeps`` steps of RK4
    (or Euler). Differentiable with respect to every parameter of ``conv``, ``k``, ``gamma``, ``y0``.

    Args:
        conv: the right-hand side (a :class:`ConsensusConv` or :class:`CouplingConv`).
        x_obs: (N, T) observed traces. t: (T,) frame times (s).
        edge_index: (2, E). edge_weight: (E,) normalised weights. modelled: (N,) bool.
        k: coupling constant (0-d). gamma: (N,) feeds. y0: (N,) initial states (used on G).
        substeps: steps per frame interval. method: ``"rk4"`` or ``"euler"``.

    Returns:
        (N, T): simulated states on G, the data elsewhere.
    """
    mask = modelled.reshape(-1, 1)
    zero = torch.zeros((), dtype=x_obs.dtype, device=x_obs.device)
    gamma_col = torch.where(mask, gamma.reshape(-1, 1), zero)
    y = torch.where(mask, y0.reshape(-1, 1), x_obs[:, :1])
    frames = [y]
    step = rk4_step if method == "rk4" else euler_step
    for n in range(x_obs.shape[1] - 1):
        x_a, x_b = x_obs[:, n : n + 1], x_obs[:, n + 1 : n + 2]
        delta = t[n + 1] - t[n]
        h = delta / substeps

        def f(
            state: Tensor, tau: Tensor, x_a: Tensor = x_a, x_b: Tensor = x_b, delta: Tensor = delta
        ) -> Tensor:
            x_now = x_a + (tau / delta) * (x_b - x_a)
            dydt = conv(state, x_now, edge_index, edge_weight, modelled, k=k, gamma=gamma_col)
            return torch.where(mask, dydt, zero)

        for s in range(substeps):
            y = step(f, y, s * h, h)
        frames.append(y)
    return torch.where(mask, torch.cat(frames, dim=1), x_obs)


class GNNODEModule(OutputErrorODE):
    """Output-error fit of the consensus ODE with a learned MLP message (module docstring).

    Args:
        data, setup: as :class:`OutputErrorODE`.
        optimizer: ``"lbfgs"`` (default) or ``"adam"`` (the MLP has no closed-form Jacobian step).
        init: ``"output_error"`` (default), ``"crlsm"`` or ``"constant"``.
        hidden_features, num_layers, activation: the message MLP (defaults 16, 2, ``"tanh"``).
        mlp_weight_decay: L2 penalty ``lambda ||theta_MLP||^2`` added to the loss (default 0).
        gamma_prior: only ``"none"`` (per-cell feeds; pooling needs the linear law's covariance).
        **kwargs: every other option of :class:`OutputErrorODE` (substeps, bounds, lr, ...).
    """

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
        **kwargs: Any,
    ) -> None:
        if optimizer not in ("lbfgs", "adam"):
            raise ConfigError("model.optimizer", f"gnn_ode trains with 'lbfgs' or 'adam', got {optimizer!r}")
        if gamma_prior != "none":
            raise ConfigError(
                "model.gamma_prior",
                f"gnn_ode fits per-cell feeds only ('none'), got {gamma_prior!r}: the random-effects pooling "
                "uses the Gauss-Newton covariance of the linear law (model=neural_ode)",
            )
        if init not in GNN_INITS:
            raise ConfigError("model.init", f"unknown init '{init}' (use one of {GNN_INITS})")
        super().__init__(
            data=data,
            setup=setup,
            optimizer=optimizer,
            init="constant" if init == "output_error" else init,
            gamma_prior=gamma_prior,
            **kwargs,
        )
        self.gnn_init = init
        self.mlp_weight_decay = float(mlp_weight_decay)
        if not self.mlp_weight_decay >= 0:
            raise ConfigError("model.mlp_weight_decay", f"must be >= 0, got {mlp_weight_decay!r}")
        linear = self.conv
        features = normalised_edge_features(self.data.u, self.data.l)
        self.conv = CouplingConv(
            linear.num_nodes,
            features,
            linear.gamma_mode,
            linear.k_bounds,
            linear.gamma_bounds,
            k_init=linear.k_init,
            gamma_init=linear.gamma_init,
            hidden_features=hidden_features,
            num_layers=num_layers,
            activation=activation,
        ).double()
        self.linear_fit: dict[str, Any] | None = None

    @torch.no_grad()
    def initialise(self) -> None:
        """Fit the linear law by output error (``init="output_error"``), else as the linear model."""
        if self.gnn_init != "output_error":
            super().initialise()
            return
        options = {
            key: self.hparams[key]
            for key in (
                "substeps",
                "method",
                "train_fraction",
                "edge_weight_scale",
                "k_bounds",
                "gamma_bounds",
                "k_init",
                "gamma_init",
                "fit_initial_state",
                "border_smoothing",
                "damping",
                "damping_factor",
                "max_retries",
                "tolerance",
            )
        }
        linear = OutputErrorODE(
            data=self.data, setup=self.consensus_setup, optimizer="gauss_newton", **options
        )
        linear.fit_levenberg_marquardt(max_iterations=50)
        self.conv.set_parameters(linear.conv.k.detach(), linear.conv.gamma.detach())
        self.y0.copy_(linear.y0.detach())
        self.linear_fit = {
            "k": float(linear.conv.k),
            "gamma": linear.conv.gamma.detach().clone(),
            "y0": linear.y0.detach().clone(),
        }
        self.initialised.fill_(True)

    def simulate_train(self) -> Tensor:
        """Simulated (N, T_train) traces through the learned coupling."""
        return simulate_field(
            self.conv,
            self.drive_train,
            self.t_train,
            self.edge_index,
            self.edge_weight,
            self.modelled,
            self.conv.k,
            self.conv.gamma,
            self.y0,
            self.substeps,
            self.ode_method,
        )

    def loss_train(self) -> Tensor:
        loss = super().loss_train()
        if self.mlp_weight_decay > 0:
            loss = loss + self.mlp_weight_decay * sum(p.pow(2).sum() for p in self.conv.phi.parameters())
        return loss

    def simulate_full(
        self,
        conv: ConsensusConv | None = None,
        k: Tensor | None = None,
        gamma: Tensor | None = None,
        y0: Tensor | None = None,
        substeps: int = 10,
    ) -> Tensor:
        """Simulate the whole movie (N, T) (train and test windows) with the learned (or given) law."""
        x = self.data.x.double()
        drive = torch.where(self.modelled.reshape(-1, 1), x, moving_average(x, self.border_smoothing))
        return simulate_field(
            conv if conv is not None else self.conv,
            drive,
            self.data.t.double(),
            self.edge_index,
            self.edge_weight,
            self.modelled,
            self.conv.k if k is None else k,
            self.conv.gamma if gamma is None else gamma,
            self.y0 if y0 is None else y0,
            substeps,
            self.ode_method,
        )

    def consensus_simulator(self) -> Callable[..., Tensor]:
        """A simulator with :func:`~calcium_gnn.physics.simulate.simulate_consensus`'s signature that
        integrates the learned law (for :func:`calcium_gnn.evaluation.report.evaluate_fit`); each
        window starts from the observed values at its first frame."""
        conv = self.conv

        def simulate(x_obs: Tensor, t: Tensor, edge_index: Tensor, edge_weight: Tensor, modelled: Tensor,
                     k: float | Tensor, gamma: Tensor, *, substeps: int = 10, method: str = "rk4") -> Tensor:
            x_obs = x_obs.to(torch.float64)
            k = torch.as_tensor(k, dtype=torch.float64)
            return simulate_field(conv, x_obs, t.to(torch.float64), edge_index, edge_weight, modelled, k,
                                  gamma.to(torch.float64), x_obs[:, 0], substeps, method)

        return simulate

    @torch.no_grad()
    def compare_with_linear(self, substeps: int = 10) -> dict[str, Any]:
        """Test-window MSE of the learned law and of the linear output-error fit it started from.

        MSE over the modelled cells against the observed traces (``mse_test``) and, with ground truth,
        against the clean traces (``mse_test_clean``). Needs ``init="output_error"``.
        """
        if self.linear_fit is None:
            raise ConfigError("model.init", "the comparison with the linear law needs init='output_error'")
        idx, test = self.index, self.test_frames
        gnn = self.simulate_full(substeps=substeps)
        linear_conv = ConsensusConv(self.modelled.shape[0], self.consensus_setup.gamma_mode).double()
        lin = self.simulate_full(
            conv=linear_conv,
            k=torch.tensor(self.linear_fit["k"], dtype=torch.float64),
            gamma=self.linear_fit["gamma"],
            y0=self.linear_fit["y0"],
            substeps=substeps,
        )
        x = self.data.x.double()
        out: dict[str, Any] = {}
        for name, sim in (("gnn", gnn), ("linear", lin)):
            out[f"mse_test_{name}"] = float((sim[idx][:, test] - x[idx][:, test]).pow(2).mean())
            truth_x = getattr(self.data, "truth_x", None)
            if truth_x is not None:
                clean = truth_x.double()
                out[f"mse_test_clean_{name}"] = float((sim[idx][:, test] - clean[idx][:, test]).pow(2).mean())
        out["gnn_beats_linear"] = out["mse_test_gnn"] < out["mse_test_linear"]
        return out

    def extra_results(
        self, out_dir: str | Path | None = None, labels: np.ndarray | None = None
    ) -> dict[str, Any]:
        """Anomaly scores and the comparison with the linear law (no intervals: the MLP is not linear)."""
        scores = self.anomaly_scores()
        out: dict[str, Any] = {"anomaly": scores.as_results(self.data.cell_id, self.modelled)}
        if self.linear_fit is not None:
            out["gnn_vs_linear"] = self.compare_with_linear()
        if out_dir is not None:
            path = plot_anomaly_map(
                scores,
                self.data.cell_id,
                self.data.pos,
                Path(out_dir) / "anomaly_map.png",
                labels=labels,
            )
            out["figures"] = [path.name]
        return out

    def parameter_intervals(self, level: float | None = None, pool: bool = True):  # noqa: ANN201 - override
        """Not available: the Gauss-Newton intervals assume the linear law (use ``model=neural_ode``)."""
        raise ConfigError("model", "parameter intervals are computed for the linear law (model=neural_ode)")
