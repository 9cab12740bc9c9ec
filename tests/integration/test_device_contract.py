"""The device contract on every model of ``configs/model/``, and every experiment on a GPU where one is.

Without a GPU (CI), the audit is what catches a tensor that ``model.to("cuda")`` would leave behind:
each model is built on the built-in culture as ``train()`` builds it, checked, trained for one step
(its post-fit statistics included) and checked again. With a GPU, every experiment of
``configs/experiment/`` runs end to end with ``trainer=gpu`` and must give the CPU's ``k``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from calcium_gnn.data.datamodule import CellGraphDataModule
from calcium_gnn.data.sources import load_cell_graph
from calcium_gnn.physics.setups import resolve_setup
from calcium_gnn.pipeline import options_from_config
from calcium_gnn.train import CONFIG_DIR, instantiate_model, train
from calcium_gnn.utils.device_audit import stray_tensors

from .conftest import EXPERIMENTS

MODELS = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))
#: float64 fits (CRLSM, output error) agree to this between devices, the float32 PINN to K_RTOL_PINN
K_RTOL_FLOAT64 = 1e-6
K_RTOL_PINN = 1e-3


def _graph_and_setup(cfg):
    options = options_from_config(cfg.segmentation, cfg.preprocessing, cfg.graph, cfg.data)
    data = load_cell_graph(cfg.data, options).data
    return data, resolve_setup(data, **OmegaConf.to_container(cfg.setup, resolve=True))


#: the laws beyond the paper's (leak, switched feed) add a parameter, a switch buffer and a leak rate
LAW_OVERRIDES = ["model=neural_ode", "model.law=leak_stimulus", "model.stimulus_time=1000"]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [[f"model={name}"] for name in MODELS] + [LAW_OVERRIDES],
                         ids=[*MODELS, "neural_ode-leak_stimulus"])
def test_every_model_keeps_its_tensors_where_to_device_reaches(compose_train, overrides: list[str]) -> None:
    cfg = compose_train(*overrides)
    data, setup = _graph_and_setup(cfg)
    model = instantiate_model(cfg.model, data, setup)
    assert stray_tensors(model) == []
    trainer = L.Trainer(
        fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=CellGraphDataModule(data.clone(), steps_per_epoch=model.steps_per_epoch))
    assert stray_tensors(model) == []  # nothing kept after fitting and the post-fit statistics either
    model.extra_results(data)
    assert stray_tensors(model) == []
    fitted = model.fitted_parameters()
    assert fitted.gamma.device.type == "cpu"


def test_lightning_never_moves_the_run_graph(compose_train) -> None:
    cfg = compose_train("experiment=setup1_crlsm")
    data, setup = _graph_and_setup(cfg)
    x_before = data.x
    model = instantiate_model(cfg.model, data, setup)
    datamodule = CellGraphDataModule(data.clone(), steps_per_epoch=1)
    batch = next(iter(datamodule.train_dataloader()))
    batch.x.mul_(0.0)  # what an in-place move or edit by Lightning would do to the shared graph
    assert data.x is x_before and bool(data.x.abs().sum() > 0)
    assert model.modelled.data_ptr() != setup.modelled.data_ptr()  # the model keeps its own buffers


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_on_the_gpu_like_on_the_cpu(compose_train, experiment: str) -> None:
    on_gpu = train(compose_train(f"experiment={experiment}", "trainer=gpu", run="gpu"))
    on_cpu = train(compose_train(f"experiment={experiment}", run="cpu"))
    rtol = K_RTOL_PINN if "pinn" in experiment else K_RTOL_FLOAT64
    assert on_gpu["k"] == pytest.approx(on_cpu["k"], rel=rtol), experiment
    assert on_gpu["method"] == on_cpu["method"]
