"""The conditions block of a multi-dish run: flagged fits counted or left out, failures listed, the figure
written, and no comparison where there is nothing to compare."""

from __future__ import annotations

from pathlib import Path

from calcium_gnn.evaluation.condition_report import CONDITIONS_FIGURE, condition_lines, condition_report


def _row(name: str, condition: str, k: float | None, fit_ok: bool = True, status: str = "ok") -> dict:
    return {"culture": name, "condition": condition, "plate": None, "status": status, "k": k,
            "k_low": None if k is None else 0.95 * k, "k_high": None if k is None else 1.05 * k,
            "se_log_k": None if k is None else 0.03, "gamma_median": 5e-4, "fit_ok": fit_ok,
            "fit_problems": None if fit_ok else "k at its lower bound", "error": None if k else "bad movie"}


ROWS = [_row("a1", "ctrl", 0.020), _row("a2", "ctrl", 0.021), _row("a3", "ctrl", 0.019),
        _row("b1", "drug", 0.012), _row("b2", "drug", 0.001, fit_ok=False), _row("b3", "drug", 0.013),
        _row("b4", "drug", None, status="failed")]


def test_flagged_fits_are_counted_and_said_or_left_out(tmp_path: Path) -> None:
    report = condition_report(ROWS, tmp_path)
    assert report["flagged"] == {"ctrl": 0, "drug": 1} and report["dishes"] == {"ctrl": 3, "drug": 3}
    assert report["excluded"] == {"b4": "fit failed: bad movie"}
    assert (tmp_path / CONDITIONS_FIGURE).stat().st_size > 5_000
    lines = "\n".join(condition_lines(report))
    assert "1 dish fit(s) are flagged (fit_ok false) and included" in lines
    assert "drug / ctrl: k ratio" in lines and "left out: b4 (fit failed: bad movie)" in lines
    with_flag = report["k"]["contrasts"][0]["ratio"]

    strict = condition_report(ROWS, tmp_path, exclude_flagged=True)
    assert strict["excluded"]["b2"] == "fit flagged: k at its lower bound"
    assert strict["dishes"] == {"ctrl": 3, "drug": 2}
    # the flagged dish (k = 0.001) dragged the ratio down; without it the ratio is about 0.62
    assert with_flag < 0.4 and abs(strict["k"]["contrasts"][0]["ratio"] - 0.62) < 0.03


def test_one_condition_gives_no_comparison(tmp_path: Path) -> None:
    report = condition_report(ROWS[:3], tmp_path)
    assert report["unavailable"].startswith("fewer than two conditions")
    assert condition_lines(report)[-1].startswith("  no comparison: fewer than two conditions")
    assert not (tmp_path / CONDITIONS_FIGURE).exists()
