"""Comparing conditions across dishes (``data=culture_folder data.table=design.csv``): real output-error
fits of simulated dishes whose true coupling halves under the treatment, one broken dish file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from calcium_gnn.batch import fit_cultures
from calcium_gnn.data import zoo
from calcium_gnn.io.graph_files import save_graph
from calcium_gnn.train import CONFIG_DIR, train

BASE = "border-25"  # 70 cells, 207 frames: about a second per fit
K0 = 0.015


@pytest.fixture(scope="module")
def design(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plate")
    base = zoo.member(BASE)
    (root / "dishes").mkdir()
    lines = ["path,condition,plate,DIV"]
    for d in range(6):
        condition = "control" if d < 3 else "CBX"
        k = K0 if d < 3 else K0 / 2
        member = zoo.dish_member(base, k=k, noise=0.01, experiment=0, dish=d)
        save_graph(zoo.member_graph(member, dtype=torch.float64), root / "dishes" / f"dish{d}.pt")
        lines.append(f"dishes/dish{d}.pt,{condition},plate{d % 2},{10 + d}")
    (root / "dishes" / "broken.pt").write_bytes(b"not a graph")
    lines.append("dishes/broken.pt,CBX,plate1,16")
    (root / "design.csv").write_text("\n".join(lines) + "\n")
    return root / "design.csv"


@pytest.mark.slow
def test_a_halved_coupling_is_detected_with_its_ratio(design: Path, tmp_path: Path) -> None:
    before = design.read_bytes()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train.yaml", overrides=[
            "experiment=setup1_neural_ode", "data=culture_folder", f"data.table={design}", "logger=none",
            "callbacks=none", f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}",
            "trainer.enable_progress_bar=false"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    rows = train(cfg)
    run = tmp_path / "run"
    assert [r["condition"] for r in rows] == ["control"] * 3 + ["CBX"] * 4
    assert [r["status"] for r in rows] == ["ok"] * 6 + ["failed"]
    assert "broken.pt" in rows[-1]["error"]
    summary = json.loads((run / "summary.json").read_text())
    comparison = summary["conditions"]
    assert comparison["excluded"] == {"broken": rows[-1]["error"].join(["fit failed: ", ""])}
    k = comparison["k"]
    assert [c["condition"] for c in k["conditions"]] == ["control", "CBX"]
    contrast = k["contrasts"][0]
    assert contrast["condition"] == "CBX" and contrast["reference"] == "control"
    assert contrast["interval"][0] <= 0.5 <= contrast["interval"][1]
    assert contrast["ratio"] == pytest.approx(0.5, rel=0.1) and contrast["p_value"] < 0.01
    assert k["n_plates"] == 2 and k["covariates"] == ["DIV"]
    assert k["conditions"][0]["interval"][0] <= K0 <= k["conditions"][0]["interval"][1]
    assert "gamma_median" in comparison and (run / "conditions.png").stat().st_size > 10_000
    with (run / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["condition"] for r in table] == [r["condition"] for r in rows]
    assert all(float(r["k_low"]) < float(r["k"]) < float(r["k_high"]) for r in table[:6])
    assert design.read_bytes() == before  # the user's table is never written


def test_folder_and_table_together_are_refused(design: Path, tmp_path: Path) -> None:
    from calcium_gnn.errors import ConfigError

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train.yaml", overrides=["data=culture_folder", f"data.table={design}",
                                               f"data.folder={design.parent}"])
    with pytest.raises(ConfigError, match="data.table: set either data.folder or data.table"):
        fit_cultures(cfg, train)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train.yaml", overrides=["data=culture_folder"])
    with pytest.raises(ConfigError, match="data.folder: not set"):
        fit_cultures(cfg, train)
