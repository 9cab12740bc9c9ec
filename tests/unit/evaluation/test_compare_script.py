"""scripts/compare.py's table: each run's training window is shown, and runs trained on different
windows (setup1_pinn on 90 % of the frames, setup1_crlsm on the paper's 211 of 361) are said to be so,
since their MSE rows then compare different frames."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "compare.py"


def _compare() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(stop: int) -> dict:
    return {"method": "m", "k": 0.02, "mse_test": 1e-6, "truth": {"k_rel_err": 0.01},
            "simulation": {"train_frames": [0, stop], "test_frames": [stop - 1, 361]}}


def test_the_table_shows_each_runs_window_and_warns_when_they_differ() -> None:
    compare = _compare()
    rows = {"CRLSM": compare.summarise(_results(211), 1.0), "PINN": compare.summarise(_results(325), 1.0)}
    table = compare.markdown_table(rows)
    assert "| training frames | [0, 211) | [0, 325) |" in table
    note = compare.window_note(rows)
    assert "different windows" in note and "CRLSM frames [0, 211)" in note and "PINN frames [0, 325)" in note


def test_no_warning_when_both_runs_share_the_window() -> None:
    compare = _compare()
    rows = {"CRLSM": compare.summarise(_results(325), 1.0), "PINN": compare.summarise(_results(325), 1.0)}
    assert compare.window_note(rows) == ""
