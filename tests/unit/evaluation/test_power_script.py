"""scripts/power.py as a user runs it: a tiny study prints its table and writes every experiment; a bad
design is one clear line, not a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "power.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_small_study_prints_power_and_false_positives(tmp_path: Path) -> None:
    out = tmp_path / "power.json"
    done = _run("--experiments", "2", "--dishes", "2", "--effect", "0.5", "--noise", "0.01",
                "--dish-cv", "0", "--jobs", "1", "--out", str(out), "--curve-dishes", "2", "3",
                "--curve-experiments", "20")
    assert done.returncode == 0, done.stderr
    table = done.stdout.splitlines()
    header = next(i for i, line in enumerate(table) if line.strip().startswith("dishes"))
    cells = table[header + 1].split()
    assert cells[:2] == ["2", "0.00"] and cells[2].endswith("%") and cells[4].endswith("%")
    runs = json.loads(out.read_text())
    assert runs[0]["summary"]["experiments"] == 2 and len(runs[0]["experiments"]) == 2
    assert all(len(e["dishes"]) == 6 for e in runs[0]["experiments"])
    assert runs[0]["summary"]["dish_k_rel_err_median"] < 0.1
    # no spread between dishes: the ceiling of a t-test on the true k is 100 %, and the script says it
    ceiling = "ceiling: a t-test on the dishes' true log k 100.0%"
    assert any(line.strip().startswith(ceiling) for line in table)
    # how many dishes: resampled from the 6 fitted dishes, a 50 % drop is found with 2 and 3 dishes
    curve = table[table.index(next(line for line in table if line.startswith("how many dishes"))):]
    rows = {line.split()[0]: line.split() for line in curve[2:4]}
    assert set(rows) == {"2", "3"} and all(float(r[2].rstrip("%")) >= 80 for r in rows.values())
    assert "dish cv 0.00: 2 dishes per condition reach 80% power" in curve
    assert any(line.startswith("check at 2 dishes, dish cv 0.00: simulated power") for line in curve)
    again = _run("--from-json", str(out), "--dish-cv", "0", "--effect", "0.5", "--curve-dishes", "2", "3",
                 "--curve-experiments", "20", "--jobs", "1")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines() == [line for line in curve if line]  # same table, no fitting


def test_a_from_json_that_is_not_an_out_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "design.csv"
    bad.write_text("path,condition\n")
    done = _run("--from-json", str(bad))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith(f"power.py: from-json: {bad}: not the --out file of power.py")


def test_a_test_split_base_is_refused_in_one_line() -> None:
    done = _run("--base", "test-3", "--experiments", "1")
    assert done.returncode == 2
    assert done.stderr.strip() == ("power.py: base: test-3 is in the frozen test split: use a dev or "
                                   "custom member")


def test_an_experiment_without_the_output_error_fit_is_refused_in_one_line() -> None:
    done = _run("--experiment", "setup1_crlsm", "--experiments", "1")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "power.py needs the output-error fit" in done.stderr
