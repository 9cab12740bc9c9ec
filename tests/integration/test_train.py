"""``train(cfg)`` end to end: every experiment composes and runs, results.json is complete, the data
routes (built-in culture, saved graph, movie) work, loggers (CSV, W&B offline) and multirun work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.data.synthetic_files import save_culture
from calcium_gnn.evaluation.results import validate_results
from calcium_gnn.io.graph_files import save_graph
from calcium_gnn.train import train

from .conftest import EXPERIMENTS, SMALL_DATA

REPO = Path(__file__).resolve().parents[2]


def test_every_paper_experiment_exists() -> None:
    assert {"setup1_crlsm", "setup2_crlsm", "setup3_crlsm", "single_cell_crlsm"} <= set(EXPERIMENTS)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_with_fast_dev_run(compose_train, experiment: str) -> None:
    cfg = compose_train(f"experiment={experiment}", "debug=fdr")
    metrics = train(cfg)
    assert metrics, f"{experiment} logged no metrics"
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_setup1_crlsm_writes_results_and_figures(compose_train) -> None:
    cfg = compose_train("experiment=setup1_crlsm")
    results = train(cfg)
    out = Path(cfg.paths.output_dir)
    on_disk = json.loads((out / "results.json").read_text())
    validate_results(on_disk)
    assert on_disk["method"] == results["method"]
    assert on_disk["setup"] == "setup1"
    assert 1e-3 <= on_disk["k"] <= 0.1
    # the noise-free culture's k is recovered by the paper's CRLSM (forward-Euler error only)
    assert on_disk["truth"]["k_rel_err"] < 0.05
    assert set(on_disk["gamma"]) == {str(c) for c in on_disk["modelled_cells"]}
    assert (out / "csv" / "metrics.csv").read_text().count("fit/k") >= 1
    for fig in results["figure_paths"]:
        assert Path(fig).stat().st_size > 1000


def test_a_fit_held_by_its_box_says_so_in_results_console_and_log(compose_train, capsys, caplog) -> None:
    # the culture's true k is 0.02; a box starting at 0.05 holds CRLSM on its lower bound
    cfg = compose_train("experiment=setup1_crlsm", "model.k_bounds=[0.05,0.1]")
    results = train(cfg)
    diagnostics = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())["diagnostics"]
    assert results["k"] == pytest.approx(0.05)
    assert diagnostics["fit_ok"] is False and diagnostics["bounds"]["k_on_bound"] == "lower"
    assert any("k is on its lower bound 0.05" in r for r in diagnostics["reasons"])
    # the output-error reference of the same data finds the true k, and says the fit disagrees
    assert diagnostics["reference"]["k"] == pytest.approx(0.02, rel=0.05)
    assert diagnostics["reference"]["agrees"] is False
    printed = capsys.readouterr().out
    assert "fit_ok: NO" in printed and "k is on its lower bound" in printed
    assert "results: " in printed and "quality groups:" in printed and "test MSE" in printed
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("k is on its lower bound" in w for w in warnings)


def test_saved_graph_route_gives_the_same_fit(compose_train, tmp_path: Path) -> None:
    culture = make_culture(n_cells=20, size=160, n_frames=60, render=False)
    graph_path = tmp_path / "graph.pt"
    save_graph(truth_graph(culture), graph_path)
    via_graph = train(compose_train("experiment=setup1_crlsm", f"data.graph={graph_path}"))
    built_in = train(compose_train("experiment=setup1_crlsm", run="built_in"))
    assert via_graph["k"] == pytest.approx(built_in["k"], rel=1e-6)


@pytest.mark.slow
def test_movie_route_builds_the_graph_and_fits(compose_train, tmp_path: Path) -> None:
    culture = make_culture(n_cells=20, size=160, n_frames=60, seed=4)
    save_culture(culture, tmp_path / "culture")
    movie = tmp_path / "culture" / "movie.tif"
    before = movie.read_bytes()
    results = train(compose_train("experiment=setup1_crlsm", f"data.movie={movie}",
                                  "graph.min_area=100", "segmentation.options.diameter=30"))
    assert movie.read_bytes() == before, "the user's movie was modified"
    assert results["modelled_cells"], "no cell was modelled"
    assert results["mse_train"] < 0.05


@pytest.mark.slow
def test_wandb_logs_offline_by_default(compose_train, monkeypatch) -> None:
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent")
    cfg = compose_train("experiment=setup1_crlsm", "logger=wandb")
    train(cfg)
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
    assert os.environ["WANDB_MODE"] == "offline"


@pytest.mark.slow
def test_multirun_sweeps_lambda(tmp_path: Path) -> None:
    cmd = [sys.executable, str(REPO / "train.py"), "-m", "experiment=setup1_crlsm",
           "model.lam=1e-4,1e-3,1e-2", "logger=csv", f"paths.root_dir={tmp_path}",
           f"paths.cache_dir={tmp_path / 'cache'}", *SMALL_DATA]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = sorted(tmp_path.glob("outputs/*/multiruns/*/*/results.json"))
    assert len(results) == 3
    lams = {json.loads(r.read_text())["extra"]["config"]["model"]["lam"] for r in results}
    assert lams == {1e-4, 1e-3, 1e-2}


def test_command_line_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    cmd = [sys.executable, str(REPO / "train.py"), f"data.graph={tmp_path / 'missing.pt'}", "logger=csv",
           f"paths.root_dir={tmp_path}"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "missing.pt" in last
    assert "Traceback" not in done.stderr
