"""evaluate_fit on a synthetic culture (independent ground-truth integrator), with the true parameters
and with a real CRLSM fit (calcium_gnn.physics.least_squares)."""

from __future__ import annotations

import time

import pytest
import torch

from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.evaluation.report import evaluate_fit
from calcium_gnn.physics.least_squares import fit_least_squares
from calcium_gnn.physics.parameters import FittedParameters
from calcium_gnn.physics.setups import resolve_setup


@pytest.fixture(scope="module")
def culture_graph():
    # the culture of tests/conftest.py's small_truth_graph, without rendering the movie (not needed)
    return truth_graph(make_culture(seed=7, n_cells=24, size=160, n_frames=80, render=False), noise=0.0)


def test_true_parameters_give_a_near_zero_mse(culture_graph):
    setup = resolve_setup(culture_graph, "interior", "per_cell")
    assert torch.equal(setup.modelled, ~culture_graph.is_driver)  # drivers = border of the group
    truth = FittedParameters(
        k=float(culture_graph.truth_k), gamma=torch.nan_to_num(culture_graph.truth_gamma.double()),
        edge_weight_scale=float(culture_graph.truth_edge_weight_scale), gamma_mode="per_cell",
    )
    res = evaluate_fit(culture_graph, setup, truth, method_name="truth", fit_seconds=0.0)
    variance = float(culture_graph.x[setup.modelled].var())
    # only the linear interpolation of the smooth driver signals between frames differs
    assert res["mse_train"] < 1e-3 * variance and res["mse_test"] < 1e-3 * variance
    assert res["truth"]["k_rel_err"] == 0.0 and res["truth"]["gamma_mae"] == 0.0
    assert res["spikes"]["f1"] == 1.0


def test_crlsm_fit_is_evaluated_end_to_end(culture_graph):
    setup = resolve_setup(culture_graph, "interior", "per_cell", name="setup1")
    start = time.perf_counter()
    fitted = fit_least_squares(culture_graph, setup)
    seconds = time.perf_counter() - start
    res = evaluate_fit(culture_graph, setup, fitted, method_name="crlsm", fit_seconds=seconds)
    assert res["method"] == "crlsm" and res["setup"] == "setup1"
    assert res["truth"]["k_rel_err"] < 0.05
    variance = float(culture_graph.x[setup.modelled].var())
    assert res["mse_test"] < 1e-3 * variance
