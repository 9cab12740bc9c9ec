"""scripts/make_plate.py: the dishes of a simulated experiment as graph files and a design table that
``data.table`` reads, with their true couplings; an existing folder is refused."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from calcium_gnn.evaluation.plate_power import PlateDesign, plate_members
from calcium_gnn.io.conditions_table import read_conditions_table
from calcium_gnn.io.graph_files import load_graph

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "make_plate.py"


def test_the_plate_is_the_power_study_experiment(tmp_path: Path) -> None:
    out = tmp_path / "plate"
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--dishes", "2", "--plates", "2",
                           "--experiment", "5"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    dishes = read_conditions_table(out / "design.csv")
    assert [d.condition for d in dishes] == ["control", "control", "treated", "treated"]
    assert [d.plate for d in dishes] == ["plate1", "plate2", "plate1", "plate2"]
    members = plate_members(PlateDesign("border-25", n_dishes=2), experiment=5)
    expected = [m.k for m in members["control"] + members["treated"]]
    with (out / "truth.csv").open() as f:
        truth = [float(r["k_true"]) for r in csv.DictReader(f)]
    assert truth == expected
    assert [load_graph(d.path).truth_k for d in dishes] == pytest.approx(expected)

    again = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True)
    assert again.returncode == 2 and "exists: give a new folder" in again.stderr
