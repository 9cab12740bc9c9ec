"""``experiment=setup1_neural_ode`` / ``setup1_gnn_ode`` compose and run end to end (real Hydra,
Lightning and the synthetic culture), and the output-error fit yields intervals and anomaly scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from calcium_gnn.evaluation.results import validate_results
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
def test_gnn_ode_experiment_checks_its_coupling_against_the_output_error_reference(compose_train) -> None:
    small = ["data.synthetic.noise=0.02", "data.synthetic.n_cells=40", "data.synthetic.size=220",
             "data.synthetic.n_frames=121", "logger=none", "callbacks=none"]
    cfg = compose_train("experiment=setup1_gnn_ode", *small)
    results = train(cfg)
    reference = results["diagnostics"]["reference"]
    assert reference["compared"] == "the learned coupling's effective k"
    assert reference["k"] == pytest.approx(results["truth"]["k"], rel=0.1)
    difference = results["learned_law"]["effective_k"] / reference["k"] - 1
    assert reference["relative_difference"] == pytest.approx(difference)
    assert reference["agrees"] is True and results["diagnostics"]["fit_ok"] is True
    # model=gnn_ode alone (and the selection's candidates) do not fit the reference
    off = train(compose_train("model=gnn_ode", "setup=setup1", *small))
    assert off["diagnostics"]["reference"] is None


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
    # fitted on the first 90 % of the 121 frames, scored on the 12 held out after them
    assert on_disk["simulation"]["train_frames"] == [0, 109]
    assert on_disk["simulation"]["test_frames"] == [109, 121]


def test_our_setup1_fits_train_on_90_percent_and_paper_experiments_keep_the_paper_split(
    compose_train,
) -> None:
    for ours in ("setup1_neural_ode", "setup1_pinn", "select_law", "setup1_gnn_ode"):
        assert compose_train(f"experiment={ours}").model.train_fraction == 0.9
    for paper in ("setup1_crlsm", "setup1_pinn_paper", "setup2_pinn", "setup3_pinn", "single_cell_pinn"):
        assert compose_train(f"experiment={paper}").model.train_fraction == pytest.approx(211 / 361)


@pytest.mark.slow
def test_results_json_carries_intervals_and_anomaly_scores(compose_train) -> None:
    cfg = compose_train("experiment=setup1_neural_ode", "data.synthetic.noise=0.02")
    train(cfg)
    out = Path(cfg.paths.output_dir)
    results = json.loads((out / "results.json").read_text())
    assert results["interval_level"] == 0.9
    lo, hi = results["k_interval"]
    assert lo <= results["k"] <= hi
    assert set(results["gamma_interval"]) == {str(c) for c in results["modelled_cells"]}
    assert "threshold" in results["anomaly"]["rule"]
    assert results["gamma_prior"]["applied"]
    assert set(results["gamma_prior"]["gamma_unpooled"]) == set(results["gamma_interval"])
    correction = results["border_noise_correction"]
    assert correction["applied"] and correction["k"] == pytest.approx(results["k"])
    assert {"parameter_intervals.png", "anomaly_map.png"} <= set(results["figures"])
    assert all((out / name).stat().st_size > 1000 for name in results["figures"])
