"""``experiment=setup1_neural_ode`` / ``setup1_gnn_ode`` compose and run end to end (real Hydra,
Lightning and the synthetic culture), and the output-error fit yields intervals and anomaly scores."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from calcium_gnn.data.datamodule import CellGraphDataModule
from calcium_gnn.data.sources import load_cell_graph
from calcium_gnn.evaluation.results import validate_results
from calcium_gnn.physics.setups import resolve_setup
from calcium_gnn.train import train


def test_neural_ode_experiment_fast_dev_run(compose_train) -> None:
    cfg = compose_train(
        "experiment=setup1_neural_ode", "++trainer.fast_dev_run=true", "logger=none", "callbacks=none"
    )
    metrics = train(cfg)
    assert {"train/loss", "fit/k"} <= set(metrics)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


@pytest.mark.slow
def test_gnn_ode_experiment_fast_dev_run(compose_train) -> None:
    cfg = compose_train(
        "experiment=setup1_gnn_ode",
        "++trainer.fast_dev_run=true",
        "logger=none",
        "callbacks=none",
        "model.lbfgs_max_iter=3",
    )
    metrics = train(cfg)
    assert {"train/loss", "fit/k"} <= set(metrics)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


@pytest.mark.slow
def test_neural_ode_full_run_writes_results_and_recovers_k(compose_train) -> None:
    cfg = compose_train(
        "experiment=setup1_neural_ode",
        "data.synthetic.noise=0.02",
        "data.synthetic.n_cells=40",
        "data.synthetic.size=220",
        "data.synthetic.n_frames=121",
    )
    results = train(cfg)
    on_disk = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    validate_results(on_disk)
    assert on_disk["method"] == "neural_ode"
    assert results["truth"]["k_rel_err"] < 0.05


@pytest.mark.slow
def test_composed_model_gives_intervals_and_anomaly_scores(compose_train, tmp_path: Path) -> None:
    cfg = compose_train("experiment=setup1_neural_ode", "data.synthetic.noise=0.02")
    source = load_cell_graph(cfg.data)
    setup = resolve_setup(source.data, **OmegaConf.to_container(cfg.setup, resolve=True))
    model = hydra.utils.instantiate(cfg.model, _partial_=True, _recursive_=False)(
        data=source.data, setup=setup
    )
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=CellGraphDataModule(source.data, steps_per_epoch=model.steps_per_epoch))
    extra = model.extra_results(out_dir=tmp_path, labels=source.labels)
    assert extra["interval_level"] == 0.9
    lo, hi = extra["k_interval"]
    assert lo <= model.fitted_parameters().k <= hi
    assert set(extra["gamma_interval"]) == {str(int(c)) for c in source.data.cell_id[setup.modelled]}
    assert "threshold" in extra["anomaly"]["rule"]
    assert (tmp_path / "figures" / "anomaly_map.png").exists()
