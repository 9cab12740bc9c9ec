"""Tests of the PINN (calcium_gnn.models.pinn, calcium_gnn.physics.pinn_residual, TraceNet)."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from calcium_gnn.data.datamodule import CellGraphDataModule
from calcium_gnn.errors import ConfigError
from calcium_gnn.models.base import ConsensusModel
from calcium_gnn.models.pinn import PINNModule
from calcium_gnn.nn.consensus import ConsensusConv
from calcium_gnn.nn.mlp import TraceNet
from calcium_gnn.physics.pinn_residual import consensus_residual, interpolate_at, mean_square
from calcium_gnn.physics.setups import resolve_setup
from calcium_gnn.utils.device_audit import stray_tensors

K_TRUE = 0.05
GAMMA_TRUE = 0.002


def three_cell_graph(n_frames: int = 41, dt: float = 5.0) -> Data:
    """A path 0 - 1 - 2 with unit weights; cell 1 is modelled, cells 0 and 2 are border cells.

    Border traces ``x_0 = 1 + 0.5 sin(2 pi t / 200)``, ``x_2 = 0.5``; cell 1 obeys
    ``dy/dt = k/2 ((x_0 - y) + (x_2 - y)) + gamma`` (eq. 2, shared gamma), integrated with RK4 on a
    fine grid (k = 0.05 /s, gamma = 0.002 /s).
    """
    t = torch.arange(n_frames, dtype=torch.float64) * dt
    fine = 50
    y = torch.empty(n_frames, dtype=torch.float64)

    def border(s: float) -> float:
        return 1.0 + 0.5 * math.sin(2 * math.pi * s / 200.0)

    def f(s: float, v: float) -> float:
        return K_TRUE / 2 * ((border(s) - v) + (0.5 - v)) + GAMMA_TRUE

    v, s = 0.8, 0.0
    y[0] = v
    h = dt / fine
    for n in range(1, n_frames):
        for _ in range(fine):
            k1 = f(s, v)
            k2 = f(s + h / 2, v + h / 2 * k1)
            k3 = f(s + h / 2, v + h / 2 * k2)
            k4 = f(s + h, v + h * k3)
            v, s = v + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), s + h
        y[n] = v
    x = torch.stack([torch.tensor([border(float(s)) for s in t]), y, torch.full_like(t, 0.5)]).float()
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    return Data(
        x=x, t=t.float(), pos=torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]), edge_index=edge_index,
        edge_attr=torch.ones(4, 1), u=torch.ones(4), l=torch.ones(4), area=torch.ones(3),
        touches_edge=torch.tensor([True, False, True]), cell_id=torch.tensor([1, 2, 3]), dt=dt,
        pixel_size=float("nan"), unit="px", truth_k=K_TRUE,
        truth_gamma=torch.tensor([math.nan, GAMMA_TRUE, math.nan]), truth_edge_weight_scale=1.0,
    )


def test_interpolate_at_by_hand() -> None:
    t = torch.tensor([0.0, 10.0, 20.0])
    x = torch.tensor([[0.0, 1.0, 3.0]])
    out = interpolate_at(t, x, torch.tensor([-5.0, 0.0, 2.5, 10.0, 15.0, 25.0]))
    assert torch.allclose(out, torch.tensor([[0.0, 0.0, 0.25, 1.0, 2.0, 3.0]]))


def test_residual_is_zero_for_the_exact_solution() -> None:
    """Constant border x_0 = 1, x_2 = 0, y = 0.5 + gamma/k ... by hand: dy/dt = k/2 (1 - 2y) + gamma."""
    conv = ConsensusConv(3, gamma_mode="shared")
    conv.set_parameters(0.1, 0.01)
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    w = torch.ones(4)
    x = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    modelled = torch.tensor([False, True, False])
    y = torch.tensor([[0.5 + 0.01 / 0.1, 0.3]])  # equilibrium y* = 1/2 + gamma / k, then 0.3
    dy = torch.tensor([[0.0, 0.1 / 2 * (1 - 0.6) + 0.01]])
    r = consensus_residual(conv, y, dy, x, edge_index, w, modelled)
    assert r.shape == (1, 2)
    assert torch.allclose(r, torch.zeros(1, 2), atol=1e-6)
    r_bad = consensus_residual(conv, y, dy + 1.0, x, edge_index, w, modelled)
    assert torch.allclose(r_bad, torch.ones(1, 2), atol=1e-6)


def test_mean_square_reductions_by_hand() -> None:
    r = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    assert float(mean_square(r, cells="sum")) == pytest.approx((1 + 9) / 2 + (4 + 4) / 2)
    assert float(mean_square(r, cells="mean")) == pytest.approx(9 / 2)
    assert float(mean_square(r, torch.tensor([1.0, 2.0]), cells="sum")) == pytest.approx(5 + 1)
    with pytest.raises(ConfigError):
        mean_square(r, cells="max")


def test_trace_net_rate_is_the_chain_rule() -> None:
    torch.manual_seed(0)
    net = TraceNet(2, (100.0, 300.0), mean=torch.tensor([1.0, 2.0]), std=torch.tensor([0.5, 3.0]),
                   hidden_features=8, num_layers=2, fourier={"n_frequencies": 3, "max_frequency": 4.0})
    t = torch.tensor([120.0, 200.0, 290.0])
    y, dy = net.value_and_rate(t)
    assert y.shape == dy.shape == (2, 3)
    h = 1e-2
    fd = (net(t + h) - net(t - h)) / (2 * h)
    assert torch.allclose(dy, fd, rtol=1e-2, atol=1e-5)
    # the window maps to [-1, 1]
    assert torch.allclose(net.to_tau(torch.tensor([100.0, 300.0])), torch.tensor([-1.0, 1.0]))


def test_pinn_rejects_bad_config() -> None:
    data = three_cell_graph(n_frames=11)
    setup = resolve_setup(data, group="interior", gamma_mode="shared")
    for kwargs, key in [
        ({"parametrization": "log"}, "model.parametrization"),
        ({"data_points": "all"}, "model.data_points"),
        ({"loss_weights": {"ic": 1.0}}, "model.loss_weights"),
        ({"batch_size": 0}, "model.batch_size"),
        ({"lbfgs_steps": 3}, "model.adam_steps"),
        ({"init_from": "lsm"}, "model.init_from"),
        ({"border_trial": "smoothed"}, "model.border_trial"),
    ]:
        with pytest.raises(ConfigError) as err:
            PINNModule(data, setup, **kwargs)
        assert err.value.culprit == key


def test_pinn_losses_shapes_and_collocation_count() -> None:
    data = three_cell_graph()
    setup = resolve_setup(data, group="interior", gamma_mode="shared")
    model = PINNModule(data, setup, train_fraction=0.5, interpolation_factor=4)
    n_train = round(0.5 * 41)
    assert model.t_collocation.numel() == (n_train - 1) * 4 + 1
    terms = model.losses()
    assert set(terms) == {"data", "physics"} and all(v.dim() == 0 for v in terms.values())
    model.losses(torch.tensor([0, 5, 7]))  # a minibatch
    fitted = model.fitted_parameters()
    assert fitted.gamma.shape == (3,) and float(fitted.gamma[0]) == 0.0


def test_tiny_pinn_moves_k_toward_the_truth() -> None:
    """A few seconds of training on the 3-cell problem: k moves from 0.01 toward 0.05."""
    data = three_cell_graph()
    setup = resolve_setup(data, group="interior", gamma_mode="shared")
    model = PINNModule(
        data, setup, train_fraction=1.0,
        net={"hidden_features": 16, "num_layers": 2, "fourier": {"n_frequencies": 8, "max_frequency": 6.0}},
        k_init=0.01, pretrain_steps=50, adam_steps=150, lbfgs_steps=5, steps_per_epoch=80,
        adam_lr=1e-2, adam_lr_physics=5e-2, lbfgs={"max_iter": 10}, num_threads=1,
    )
    err0 = model.fit_metrics()["fit/k_rel_err"]
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, datamodule=CellGraphDataModule(data, model.steps_per_epoch))
    metrics = model.fit_metrics()
    assert trainer.global_step == 155  # 150 Adam + 5 L-BFGS steps, then the model stopped
    assert metrics["fit/k_rel_err"] < 0.25 * err0
    assert metrics["fit/k_rel_err"] < 0.1
    assert metrics["fit/gamma_mae"] < 0.5 * GAMMA_TRUE
    for key in ("train/loss", "train/loss_data", "train/loss_physics", "fit/k"):
        assert key in trainer.callback_metrics


def test_border_cells_drive_the_residual_with_their_own_trial_solution() -> None:
    """border_trial "network" (pinn.yaml): the border cells get outputs of the trial solution, fitted
    to their data by the data term; the residual of the modelled cell uses those outputs, not the
    observed border traces. border_trial "data" (the class default, the paper): the observed traces,
    and outputs for G only."""
    data = three_cell_graph(n_frames=21)
    setup = resolve_setup(data, group="interior", gamma_mode="shared")
    net = {"hidden_features": 8, "num_layers": 1}
    model = PINNModule(data, setup, net=net, train_fraction=1.0, border_trial="network")
    assert model.fitted.tolist() == [True, True, True]
    assert model.net(model.t_frames).shape == (3, 21)
    assert model.own_trajectory().shape == (1, 21)  # the modelled cell only
    before = model.losses()
    with torch.no_grad():  # move the observed border traces: the residual must not see it
        model.x_collocation[0] += 0.3
        model.x_frames[0] += 0.3
    after = model.losses()
    assert float(after["physics"].detach()) == pytest.approx(float(before["physics"].detach()), rel=1e-6)
    # ... the border cell's data term does
    assert float(after["data"].detach()) > float(before["data"].detach())

    paper = PINNModule(data, setup, net=net, train_fraction=1.0)
    assert paper.border_trial == "data"
    assert paper.net(paper.t_frames).shape == (1, 21)
    before = paper.losses()
    with torch.no_grad():
        paper.x_collocation[0] += 0.3
    moved = float(paper.losses()["physics"].detach())
    assert moved != pytest.approx(float(before["physics"].detach()), rel=1e-3)


def test_raw_parametrization_is_projected_onto_the_bounds() -> None:
    data = three_cell_graph(n_frames=11)
    setup = resolve_setup(data, group="interior", gamma_mode="shared")
    model = PINNModule(data, setup, parametrization="raw", scale_time=False, scale_output=False,
                       net={"fourier": None, "hidden_features": 4, "num_layers": 1})
    with torch.no_grad():
        model.k_value.fill_(5.0)
        model.gamma_value.fill_(-1.0)
    model._project()
    assert float(model.k.detach()) == pytest.approx(0.1)
    assert float(model.gamma[1].detach()) == pytest.approx(-3e-5)


def test_pinn_follows_the_model_contract() -> None:
    data = three_cell_graph(n_frames=11)
    setup = resolve_setup(data, group="interior", gamma_mode="shared")
    model = PINNModule(data, setup, batch_size=4, net={"hidden_features": 4, "num_layers": 1})
    assert isinstance(model, ConsensusModel) and model.data_parallel is True
    assert model.method_name == "pinn" and model.steps_per_epoch == math.ceil(model.t_collocation.numel() / 4)
    assert stray_tensors(model) == []
    buffers = dict(model.named_buffers())
    assert {"modelled", "border", "_order"} <= set(buffers)
    assert "_order" not in model.state_dict()  # recomputed each epoch, not checkpointed
    assert torch.equal(model.consensus_setup.modelled, setup.modelled)
    assert model.consensus_setup.gamma_mode == "shared"
    # the ground truth is kept as host values
    assert isinstance(model._truth["k"], float)
    assert all(isinstance(model._truth[key], np.ndarray) for key in ("gamma", "gamma_cells"))


@pytest.mark.parametrize("data_points", ["frames", "collocation"])
def test_local_losses_of_the_processes_average_to_the_full_loss(data_points: str) -> None:
    """Data parallelism: W processes, each on its shard of the points (unequal shards included); the
    mean over the processes of each term and of its gradient is the single-process one."""
    data = three_cell_graph()
    setup = resolve_setup(data, group="interior", gamma_mode="shared")
    model = PINNModule(data, setup, train_fraction=0.5, interpolation_factor=2, data_points=data_points,
                       net={"hidden_features": 8, "num_layers": 2})
    params = [p for p in model.parameters() if p.requires_grad]

    def terms_and_grad(index: torch.Tensor | None, rank: int, world: int):
        model._world = lambda: (rank, world)  # what a trainer with W processes would report
        terms = model.local_losses(index)
        grads = torch.autograd.grad(terms["data"] + terms["physics"], params)
        flat = torch.cat([g.reshape(-1) for g in grads])
        return torch.stack([terms["data"], terms["physics"]]).detach(), flat

    for index in (None, torch.tensor([3, 0, 9, 17, 5, 11, 2]), torch.tensor([4])):
        full_terms, full_grad = terms_and_grad(index, 0, 1)
        for world in (2, 3):
            parts = [terms_and_grad(index, rank, world) for rank in range(world)]
            mean_terms = torch.stack([t for t, _ in parts]).mean(dim=0)
            mean_grad = torch.stack([g for _, g in parts]).mean(dim=0)
            torch.testing.assert_close(mean_terms, full_terms, rtol=1e-5, atol=0.0)
            atol = 1e-6 * float(full_grad.abs().max())
            torch.testing.assert_close(mean_grad, full_grad, rtol=1e-4, atol=atol)


def _fit_tiny(data: Data, device: torch.device) -> PINNModule:
    setup = resolve_setup(data, group="interior", gamma_mode="shared")
    model = PINNModule(
        data, setup, train_fraction=1.0, batch_size=16,
        net={"hidden_features": 8, "num_layers": 2, "fourier": {"n_frequencies": 4, "max_frequency": 4.0}},
        adam_steps=10, lbfgs_steps=1, steps_per_epoch=11, adam_lr=1e-2, adam_lr_physics=5e-2,
        lbfgs={"max_iter": 4}, num_threads=1,
    )
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="gpu" if device.type == "cuda" else "cpu",
                        devices=1)
    trainer.fit(model, datamodule=CellGraphDataModule(data, model.steps_per_epoch))
    return model


def test_pinn_trains_on_the_device_like_on_the_cpu(device: torch.device) -> None:
    data = three_cell_graph()
    x_host = data.x
    model = _fit_tiny(data, device)
    assert data.x is x_host and data.x.device.type == "cpu"  # the caller's graph stays on the host
    assert model.t_collocation.device.type == device.type and model._order.device.type == device.type
    assert stray_tensors(model) == []
    fitted = model.fitted_parameters()
    assert fitted.gamma.device.type == "cpu" and fitted.gamma.dtype == torch.float64
    assert math.isfinite(fitted.k) and fitted.k != pytest.approx(0.01, rel=1e-3)  # k moved from k_init
    metrics = model.fit_metrics()
    assert math.isfinite(metrics["fit/k_rel_err"]) and math.isfinite(metrics["fit/gamma_mae"])
    if device.type != "cpu":  # 10 Adam + 1 L-BFGS step in float32: rounding only
        reference = _fit_tiny(three_cell_graph(), torch.device("cpu")).fitted_parameters()
        assert fitted.k == pytest.approx(reference.k, rel=1e-3)
