"""scripts/compare.py's table: each run's training window is shown, and runs trained on different
windows (setup1_pinn on 90 % of the frames, setup1_crlsm on the paper's 211 of 361) are said to be so,
since their MSE rows then compare different frames."""

from __future__ import annotations

from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def compare(load_script) -> ModuleType:
    return load_script("compare")


def _results(stop: int) -> dict:
    return {"method": "m", "k": 0.02, "mse_test": 1e-6, "truth": {"k_rel_err": 0.01},
            "simulation": {"train_frames": [0, stop], "test_frames": [stop - 1, 361]}}


def test_the_table_shows_each_runs_window_and_warns_when_they_differ(compare: ModuleType) -> None:
    rows = {"CRLSM": compare.summarise(_results(211), 1.0), "PINN": compare.summarise(_results(325), 1.0)}
    table = compare.markdown_table(rows)
    assert "| training frames | [0, 211) | [0, 325) |" in table
    note = compare.window_note(rows)
    assert "different windows" in note and "CRLSM frames [0, 211)" in note and "PINN frames [0, 325)" in note


def test_no_warning_when_both_runs_share_the_window(compare: ModuleType) -> None:
    rows = {"CRLSM": compare.summarise(_results(325), 1.0), "PINN": compare.summarise(_results(325), 1.0)}
    assert compare.window_note(rows) == ""
