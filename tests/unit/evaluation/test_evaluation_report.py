"""evaluate_fit end to end on the 4 x 4 grid culture with known parameters (conftest.py)."""

from __future__ import annotations

import json

import pytest
import torch

from calcium_gnn.errors import ConfigError, OutputError
from calcium_gnn.evaluation.report import evaluate_fit
from calcium_gnn.evaluation.results import read_results
from calcium_gnn.physics.parameters import FittedParameters
from calcium_gnn.physics.setups import resolve_setup


def _true_parameters(data, k_scale: float = 1.0):
    gamma = torch.nan_to_num(data.truth_gamma, nan=0.0)
    return FittedParameters(k=data.truth_k * k_scale, gamma=gamma,
                            edge_weight_scale=data.truth_edge_weight_scale * k_scale, gamma_mode="per_cell")


def _evaluate(data, fitted, **kwargs):
    setup = resolve_setup(data, group="interior", gamma_mode="per_cell", name="setup1")
    return evaluate_fit(data, setup, fitted, method_name="truth", fit_seconds=0.0, train_fraction=0.6,
                        substeps=10, **kwargs)


def test_true_parameters_on_clean_data_give_a_near_zero_mse(clean_grid_graph):
    res = _evaluate(clean_grid_graph, _true_parameters(clean_grid_graph))
    assert res["modelled_cells"] == [6, 7, 10, 11]
    assert res["border_cells"] == [2, 3, 5, 8, 9, 12, 14, 15]
    assert res["simulation"]["train_frames"] == [0, 73] and res["simulation"]["test_frames"] == [73, 121]
    truth = res["truth"]
    assert truth["k"] == pytest.approx(0.05) and truth["k_rel_err"] == 0.0
    assert truth["gamma_mae"] == 0.0 and truth["gamma_median_abs_err_rel"] == 0.0
    assert truth["n_gamma_cells"] == 4
    # only the linear interpolation of the border pulses between frames is lost (traces vary by ~0.1)
    assert res["mse_train"] < 1e-6 and res["mse_test"] < 1e-6
    assert truth["mse_train_clean"] == pytest.approx(res["mse_train"])
    assert res["spikes"]["recall"] == 1.0 and res["spikes"]["precision"] == 1.0
    assert res["quality_groups"]["groups"]["1_good"] == [6, 7, 10, 11]
    # each interior cell has 4 neighbours with w = 1: c_i = k
    assert all(c == pytest.approx(0.05) for c in res["coupling_rate"].values())
    assert set(res["gamma"]) == {"6", "7", "10", "11"}


def test_noisy_data_mse_is_the_noise_variance(grid_graph, clean_grid_graph):
    res = _evaluate(grid_graph, _true_parameters(grid_graph))
    # observed = clean + N(0, 0.02^2): the MSE against the data is about the noise variance 4e-4,
    # against the clean traces far smaller
    assert 2e-4 < res["mse_train"] < 8e-4 and 2e-4 < res["mse_test"] < 8e-4
    assert res["truth"]["mse_train_clean"] < 0.1 * res["mse_train"]
    assert res["simulation"]["train_frames"] == [0, 37] and res["simulation"]["test_frames"] == [37, 61]


def test_another_weight_scale_gives_the_same_result(grid_graph):
    base = _evaluate(grid_graph, _true_parameters(grid_graph))
    scaled = _evaluate(grid_graph, _true_parameters(grid_graph, k_scale=2.0))  # k = 0.1 with s = 200
    assert scaled["k"] == pytest.approx(0.1) and scaled["truth"]["k"] == pytest.approx(0.1)
    assert scaled["truth"]["k_rel_err"] == pytest.approx(0.0, abs=1e-12)
    assert scaled["mse_train"] == pytest.approx(base["mse_train"], rel=1e-9)
    assert scaled["coupling_rate"] == pytest.approx(base["coupling_rate"])


def test_wrong_parameters_fit_worse(grid_graph):
    good = _evaluate(grid_graph, _true_parameters(grid_graph))
    wrong = FittedParameters(k=0.005, gamma=torch.full((16,), 0.01), edge_weight_scale=100.0,
                             gamma_mode="shared")
    bad = _evaluate(grid_graph, wrong)
    assert bad["truth"]["k_rel_err"] == pytest.approx(0.9)
    assert bad["truth"]["mse_train_clean"] > 100 * good["truth"]["mse_train_clean"]
    assert bad["mse_test"] > good["mse_test"]
    assert bad["gamma_mode"] == "shared"


def test_writes_results_and_figures(grid_graph, grid_label_image, tmp_path):
    res = _evaluate(grid_graph, _true_parameters(grid_graph), out_dir=tmp_path, labels=grid_label_image,
                    cells_to_plot=[6, 11], extra={"note": "truth"})
    names = {"error_map_train.png", "error_map_test.png", "traces.png", "parameters.png"}
    assert set(res["figures"]) == names
    for path in res["figure_paths"]:
        assert (tmp_path / path).stat().st_size > 1000
    on_disk = read_results(tmp_path / "results.json")
    assert on_disk == json.loads(json.dumps({k: v for k, v in res.items() if k != "figure_paths"}))
    assert on_disk["extra"] == {"note": "truth"}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic write left nothing
    with pytest.raises(OutputError, match="already exists"):
        _evaluate(grid_graph, _true_parameters(grid_graph), out_dir=tmp_path, cells_to_plot=[6])


def test_bad_options(grid_graph, tmp_path):
    with pytest.raises(ConfigError, match="^evaluation.cells_to_plot:"):
        _evaluate(grid_graph, _true_parameters(grid_graph), out_dir=tmp_path, cells_to_plot=[99])
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(ConfigError, match="^fitted.gamma:"):
        _evaluate(grid_graph, FittedParameters(k=0.05, gamma=torch.zeros(3), edge_weight_scale=100.0,
                                               gamma_mode="per_cell"))
    with pytest.raises(ConfigError, match="^model.train_fraction:"):
        evaluate_fit(grid_graph, resolve_setup(grid_graph), _true_parameters(grid_graph), method_name="x",
                     fit_seconds=0.0, train_fraction=1.5)


def test_windows_restart_from_the_data_and_the_input_is_untouched(grid_graph):
    from calcium_gnn.evaluation.report import simulate_windows
    from calcium_gnn.physics.edge_weights import edge_weights

    x_before = grid_graph.x.clone()
    setup = resolve_setup(grid_graph)
    w, _ = edge_weights(grid_graph.edge_attr.double(), scale=100.0)
    gamma = torch.nan_to_num(grid_graph.truth_gamma, nan=0.0)
    sim = simulate_windows(grid_graph, setup.modelled, 0.05, gamma, w, slice(0, 37), slice(37, 61))
    x = grid_graph.x.double()
    assert torch.equal(sim[:, 0], x[:, 0]) and torch.equal(sim[:, 37], x[:, 37])  # each window's start
    assert not torch.equal(sim[setup.modelled, 36], x[setup.modelled, 36])
    assert torch.equal(sim[~setup.modelled], x[~setup.modelled])  # other cells follow their data
    _evaluate(grid_graph, _true_parameters(grid_graph))
    assert torch.equal(grid_graph.x, x_before)


def test_train_only_split_has_no_test_scores(grid_graph):
    setup = resolve_setup(grid_graph)
    res = evaluate_fit(grid_graph, setup, _true_parameters(grid_graph), method_name="truth", fit_seconds=0.0,
                       train_fraction=1.0)
    assert res["mse_test"] is None and res["mse_train"] > 0
    assert res["spikes"]["test"]["n_observed"] == 0
    assert all(v["test"] is None for v in res["mse_per_cell"].values())
