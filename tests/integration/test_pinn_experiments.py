"""Every PINN experiment config composes and runs (``fast_dev_run``) through ``train(cfg)`` with real
Hydra, Lightning and a small synthetic culture; a full ``setup1_pinn`` run writes results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from calcium_gnn.train import train

PINN_EXPERIMENTS = [
    "setup1_pinn", "setup1_pinn_paper", "setup2_pinn", "setup3_pinn", "single_cell_pinn",
    "single_cell_pinn_paper",
]


@pytest.mark.parametrize("name", PINN_EXPERIMENTS)
def test_pinn_experiment_fast_dev_run(compose_train, name: str) -> None:
    cfg = compose_train(f"experiment={name}", "++trainer.fast_dev_run=true", "callbacks=none")
    assert cfg.model._target_ == "calcium_gnn.models.pinn.PINNModule"
    metrics = train(cfg)
    assert {"train/loss", "train/loss_data", "train/loss_physics", "fit/k"} <= set(metrics)
    assert {"fit/k_rel_err", "fit/gamma_mae", "fit/gamma_median_rel_err"} <= set(metrics)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_paper_config_is_the_papers(compose_train) -> None:
    cfg = compose_train("experiment=setup1_pinn_paper")
    m = cfg.model
    assert (m.net.hidden_features, m.net.num_layers, m.net.activation, m.net.fourier) == (32, 4, "tanh", None)
    assert (m.adam_lr, m.batch_size, m.n_collocation, cfg.trainer.max_epochs) == (1e-3, 80, 2610, 500)
    raw = (m.scale_time, m.scale_output, m.parametrization, m.normalize_losses, m.border_trial)
    assert raw == (False, False, "raw", False, "data")
    ours = compose_train("experiment=setup1_pinn").model
    assert (ours.border_trial, ours.interpolation_factor) == ("network", 4)
    single = compose_train("experiment=single_cell_pinn_paper", run="single")
    assert single.model.batch_size == 20


@pytest.mark.slow
def test_setup1_pinn_full_run_writes_results(compose_train) -> None:
    cfg = compose_train("experiment=setup1_pinn", "callbacks=none", "model.adam_steps=400",
                        "model.pretrain_steps=200", "model.lbfgs_steps=8")
    results = train(cfg)
    on_disk = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert on_disk["method"] == "pinn"
    assert on_disk["truth"]["k_rel_err"] < 0.1
    assert results["truth"]["k_rel_err"] == on_disk["truth"]["k_rel_err"]
