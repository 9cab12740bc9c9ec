"""The console summary of a learned law: the verdict against the linear fit, the formula, the
effective k beside the layer's."""

from __future__ import annotations

from typing import Any

import pytest

from calcium_gnn.evaluation.summary import run_summary

from .test_evaluation_diagnostics import _evaluate, _fitted


def _learned(res: dict[str, Any], kept: int, gnn: float, linear: float) -> dict[str, Any]:
    return {**res, "gnn_vs_linear": {"mse_test_gnn": gnn, "mse_test_linear": linear},
            "optimizer": {"validation": {"kept_step": kept}},
            "learned_law": {"effective_k": 0.0201, "true_effective_k": 0.02,
                            "summary": {"formula": "q ~ +0.0201 Delta", "explained": 0.999, "law": "linear"}}}


@pytest.mark.parametrize(("kept", "gnn", "verdict"), [
    (0, 0.01, "the same: the validation window kept the linear start"),
    (2, 0.009, "better"),
    (2, 0.011, "NOT better"),
])
def test_the_verdict_against_the_linear_fit(grid_graph, kept: int, gnn: float, verdict: str) -> None:
    res = _evaluate(grid_graph, _fitted(grid_graph))
    text = run_summary(_learned(res, kept, gnn, 0.01))
    assert f"({verdict})" in text
    line = "learned message: q ~ +0.0201 Delta, explains 99.9% -> linear; effective k 0.0201 (true 0.02)"
    assert line in text
    assert "the layer's k; the coupling is the effective k below" in text


def test_a_fit_without_a_learned_law_prints_neither_line(grid_graph) -> None:
    text = run_summary(_evaluate(grid_graph, _fitted(grid_graph)))
    assert "learned" not in text and "effective k" not in text


def test_a_node_term_is_summarised_and_its_leak_start_is_not_called_the_linear_one(grid_graph) -> None:
    res = _learned(_evaluate(grid_graph, _fitted(grid_graph)), 0, 0.004, 0.01)
    res["optimizer"]["validation"]["start"] = "the leak law's fit"
    res["learned_law"]["node_term"] = {"formula": "nu ~ const -0.0098 (y - c)", "explained": 0.995,
                                       "law": "leak", "leak_rate": 0.0098, "true_leak_rate": 0.01}
    text = run_summary(res)
    assert "(better; the validation window kept the leak law's fit)" in text
    assert ("node term: nu ~ const -0.0098 (y - c), the line explains 99.5% -> leak; leak rate 0.0098/s "
            "(true 0.01)") in text


def test_the_mse_line_names_the_held_out_window(grid_graph) -> None:
    res = _evaluate(grid_graph, _fitted(grid_graph))
    start, stop = res["simulation"]["test_frames"]
    assert stop == grid_graph.x.shape[1] and 0 < start < stop
    line = f"test MSE {res['mse_test']:.4g} (last {stop - start} of {stop} frames, held out)"
    assert line in run_summary(res)


def test_the_activation_map_line_gives_both_agreements(grid_graph) -> None:
    res = _evaluate(grid_graph, _fitted(grid_graph))
    assert "activation map" not in run_summary(res)  # no wave analysis in this run
    waves = {"comparison": {"n_both": 4, "share_within": 0.25, "share_within_noise": 0.75}}
    text = run_summary({**res, "waves": waves})
    assert ("activation map, simulated vs observed: 4 cells activated in both, 25% within one frame, "
            "75% within the observed times' noise") in text
