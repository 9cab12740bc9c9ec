"""compare_laws: BIC with the AR(1) effective size, inadequate laws named, comparable candidates only."""

from __future__ import annotations

import math

import pytest

from calcium_gnn.evaluation.model_selection import compare_laws, information_criteria, selection_table


def _results(law: str, mse_train: float, mse_test: float, p: int, *, rho: float = 0.0, constant: float = 1.0,
             fit_ok: bool = True, cells: int = 10, frames: tuple[int, int] = (0, 101)) -> dict:
    return {
        "modelled_cells": list(range(cells)),
        "simulation": {"train_frames": list(frames), "test_frames": [frames[1], frames[1] + 50]},
        "mse_train": mse_train, "mse_test": mse_test, "k": 0.01, "k_interval": None, "method": "neural_ode",
        "gamma": {str(i): 0.0 for i in range(cells)},
        "law": {"name": law, "n_parameters": p, "leak": 0.01 if law == "leak" else None},
        "diagnostics": {"fit_ok": fit_ok, "reasons": [] if fit_ok else ["k is on its lower bound"],
                        "residuals": {"lag1_autocorrelation": rho}, "baselines": {"mse_constant": constant}},
    }


def test_the_effective_size_shrinks_with_residual_autocorrelation() -> None:
    white = information_criteria(rss=10.0, m=1000, p=5, rho=0.0)
    red = information_criteria(rss=10.0, m=1000, p=5, rho=0.6)
    assert white["m_effective"] == 1000 and red["m_effective"] == pytest.approx(250.0)
    assert white["bic"] == pytest.approx(1000 * math.log(0.01) + 5 * math.log(1000))


def test_a_real_improvement_wins_and_the_worse_law_is_named_inadequate() -> None:
    report = compare_laws({"linear": _results("linear", 2e-3, 4e-3, 21, constant=3e-3),
                           "leak": _results("leak", 1e-3, 1e-3, 22, constant=3e-3)})
    assert report["chosen"] == "leak" and report["strength"] == "strong"
    linear = report["rows"]["linear"]
    assert linear["inadequate"] and len(linear["why_inadequate"]) == 2  # loses to a constant, and by BIC
    assert not report["rows"]["leak"]["inadequate"]
    assert "support the law 'leak'" in selection_table(report).splitlines()[-2]


def test_a_parameter_that_buys_nothing_loses_and_the_test_window_is_mentioned() -> None:
    report = compare_laws({"linear": _results("linear", 1e-3, 1.0e-3, 21),
                           "leak": _results("leak", 0.9999e-3, 0.9e-3, 22)})
    assert report["chosen"] == "linear" and report["strength"] == "weak"
    assert report["test_window_prefers"] == "leak" and "test window prefers 'leak'" in report["statement"]


def test_a_failed_fit_is_inadequate_even_when_chosen_and_failures_are_listed() -> None:
    report = compare_laws({"linear": _results("linear", 1e-3, 1e-3, 21, fit_ok=False)},
                          failed={"stimulus": "model.stimulus_time: missing"})
    assert report["rows"]["linear"]["inadequate"]
    assert report["failed"] == {"stimulus": "model.stimulus_time: missing"}
    assert "no law is adequate" in report["statement"]


def test_the_report_ends_with_whether_the_recording_identifies_k() -> None:
    """The acceptance a lab reads: k with an interval narrower than itself from an adequate law, or a
    plain statement that the recording does not identify k, and why; never a number that failed."""
    linear = _results("linear", 2e-3, 4e-3, 21, constant=3e-3)
    leak = _results("leak", 1e-3, 1e-3, 22, constant=3e-3)
    leak["k"], leak["k_interval"] = 0.010, [0.008, 0.012]
    verdict = compare_laws({"linear": linear, "leak": leak})["k_verdict"]
    assert verdict["identified"] and verdict["law"] == "leak" and verdict["k_interval"] == [0.008, 0.012]
    assert verdict["test_mse_over_constant"] == pytest.approx(1 / 3)
    assert "0.33x a constant" in verdict["statement"]
    leak["k_interval"] = [0.002, 0.025]  # wider than k
    report = compare_laws({"linear": linear, "leak": leak})
    verdict = report["k_verdict"]
    assert not verdict["identified"] and verdict["k"] is None and "wider than k" in verdict["reasons"][0]
    assert selection_table(report).splitlines()[-1].startswith("this recording does not identify k: ")
    leak["k_interval"] = None
    assert "reports no interval" in compare_laws({"linear": linear, "leak": leak})["k_verdict"]["statement"]
    failed = _results("leak", 1e-3, 1e-3, 22, constant=3e-3, fit_ok=False)
    failed["k_interval"] = [0.0099, 0.0101]  # a narrow interval from a fit that failed says nothing
    failed["diagnostics"]["likely_causes"] = ["k at its lower bound: the box set k, not the data"]
    verdict = compare_laws({"linear": linear, "leak": failed})["k_verdict"]
    assert not verdict["identified"] and "its fit reports problems" in verdict["statement"]
    assert verdict["statement"].endswith("(likely cause: k at its lower bound)")


def test_candidates_on_different_cells_are_refused() -> None:
    with pytest.raises(ValueError, match="different cells"):
        compare_laws({"linear": _results("linear", 1e-3, 1e-3, 21),
                      "leak": _results("leak", 1e-3, 1e-3, 22, cells=9)})


def test_a_k_that_depends_on_an_undecided_law_is_reported() -> None:
    linear = _results("linear", 1e-3, 1e-3, 21)
    leak = _results("leak", 0.99995e-3, 1e-3, 22)
    linear["k"], linear["k_interval"], leak["k"] = 0.010, [0.0095, 0.0105], 0.013
    report = compare_laws({"linear": linear, "leak": leak})
    assert report["chosen"] == "linear" and report["strength"] == "weak"
    assert report["k_depends_on_law"]["runner_up"] == "leak"
    assert "k depends on the law" in report["statement"]
    # an adequate law with a narrow interval, but its k is a choice the data do not make: not identified
    assert not report["k_verdict"]["identified"]
    assert "k depends on a law the data do not decide: 0.01 ('linear') vs 0.013 ('leak')" in (
        report["k_verdict"]["statement"])
    leak["k"] = 0.0101  # inside the chosen law's interval: nothing to say
    again = compare_laws({"linear": linear, "leak": leak})
    assert again["k_depends_on_law"] is None and again["k_verdict"]["identified"]


def _per_cell(results: dict, values: list[float]) -> dict:
    results["mse_per_cell"] = {str(i): {"train": v, "test": v} for i, v in enumerate(values)}
    results["mse_test"] = sum(values) / len(values)
    return results


def test_a_learned_coupling_that_predicts_the_test_window_better_is_chosen_despite_its_weights() -> None:
    """A network of 400 weights loses by BIC whatever it buys; on the test window, paired over the cells,
    a 20% lower MSE on every cell chooses it, and the best law is said to be outdone."""
    law_mse = [1e-3 * (1 + 0.1 * i) for i in range(10)]
    linear = _per_cell(_results("linear", 1e-3, 0.0, 21), law_mse)
    leak = _per_cell(_results("leak", 1e-3, 0.0, 22), law_mse)
    gnn = _per_cell(_results("gnn_ode", 0.8e-3, 0.0, 421), [0.8 * v for v in law_mse])
    report = compare_laws({"linear": linear, "leak": leak, "gnn_ode": gnn}, learned=["gnn_ode"])
    assert report["chosen"] == "gnn_ode" and report["best_law"] == "linear"
    held = report["rows"]["gnn_ode"]["held_out"]
    assert held["better"] and held["gain"] == pytest.approx(0.2) and held["n_cells"] == 10
    assert report["rows"]["gnn_ode"]["delta_bic"] > 0  # its BIC still says otherwise, and is reported
    assert "learned coupling 'gnn_ode'" in report["statement"] and "not an independent" in report["statement"]
    assert any("predicts the test window better" in w for w in report["rows"]["linear"]["why_inadequate"])
    # without the learned flag the same numbers are ranked by BIC: the law wins
    assert compare_laws({"linear": linear, "gnn_ode": gnn})["chosen"] == "linear"


@pytest.mark.parametrize("scale", [
    [1.0] * 10,  # the learned law is the linear start (nothing learned): no gain
    [0.99] * 10,  # 1% lower everywhere: significant but below the minimum gain
    [0.7, 1.3] * 5,  # 30% better on half the cells, 30% worse on the others: no consistent gain
])
def test_a_learned_coupling_without_a_clear_test_window_gain_loses(scale) -> None:
    law_mse = [1e-3] * 10
    linear = _per_cell(_results("linear", 1e-3, 0.0, 21), law_mse)
    gnn = _per_cell(_results("gnn_ode", 1e-3, 0.0, 421), [s * v for s, v in zip(scale, law_mse, strict=True)])
    report = compare_laws({"linear": linear, "gnn_ode": gnn}, learned=["gnn_ode"])
    assert report["chosen"] == "linear"
    row = report["rows"]["gnn_ode"]
    assert row["inadequate"] and "not clearly below the best law's" in row["why_inadequate"][0]
    assert "does not predict the test window clearly better" in report["statement"]


def test_a_chosen_named_law_is_quoted_with_its_formula_and_what_it_does_not_identify() -> None:
    """A named law's row carries its parameters, formula, unidentified parameters and (zoo) truth; the
    statement quotes the chosen law's formula and, with a ``but``, each parameter it does not pin down."""
    threshold = _results("threshold", 1e-3, 1e-3, 24, constant=3e-3)
    why = "theta = 17.7 lies outside the sending levels the data visit"
    threshold["law"].update(parameters={"a": 13220.0, "theta": 17.7, "epsilon": 1.85},
                            formula="q = 0.02 Delta (1 + a S((z_j - theta) / epsilon)), a = 1.322e+04",
                            not_identified=[why], true_parameters={"a": 3.4, "theta": 0.76, "epsilon": 0.09})
    report = compare_laws({"linear": _results("linear", 2e-3, 2e-3, 21, constant=3e-3),
                           "threshold": threshold})
    row = report["rows"]["threshold"]
    assert report["chosen"] == "threshold"
    assert row["not_identified"] == [why] and row["true_parameters"]["a"] == 3.4
    assert report["statement"].endswith(f"; fitted: {threshold['law']['formula']}; but {why}")
    assert report["rows"]["linear"]["not_identified"] == [] and report["rows"]["linear"]["formula"] is None
    # not chosen: the row still says it, the statement does not
    report = compare_laws({"linear": _results("linear", 1e-3, 1e-3, 21), "threshold": threshold})
    assert report["chosen"] == "linear" and why not in report["statement"]
    assert report["rows"]["threshold"]["not_identified"] == [why]
