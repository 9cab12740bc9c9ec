"""results.json: schema validation and an atomic write / read round trip."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from calcium_gnn.errors import InputFileError, OutputError
from calcium_gnn.evaluation.report import evaluate_fit
from calcium_gnn.evaluation.results import (
    ResultsSchemaError,
    jsonable,
    read_results,
    validate_results,
    write_results,
)
from calcium_gnn.physics.parameters import FittedParameters
from calcium_gnn.physics.setups import resolve_setup


@pytest.fixture(scope="module")
def results(grid_graph) -> dict:
    fitted = FittedParameters(k=0.04, gamma=torch.full((16,), 0.003), edge_weight_scale=100.0,
                             gamma_mode="per_cell")
    return evaluate_fit(grid_graph, resolve_setup(grid_graph), fitted, method_name="crlsm", fit_seconds=1.5)


def test_evaluate_fit_output_is_valid(results):
    assert validate_results(results) is results
    assert results["method"] == "crlsm" and results["fit_seconds"] == 1.5
    json.dumps(results, allow_nan=False)  # plain JSON, no NaN


def test_round_trip(results, tmp_path):
    path = write_results(results, tmp_path / "run" / "results.json")
    assert read_results(path) == json.loads(json.dumps(results))
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary file left


def test_never_overwrites_silently(results, tmp_path):
    path = tmp_path / "results.json"
    path.write_text("{}")
    with pytest.raises(OutputError, match="already exists"):
        write_results(results, path)
    assert path.read_text() == "{}"
    write_results(results, path, overwrite=True)
    assert read_results(path)["method"] == "crlsm"


def test_invalid_results_are_not_written(results, tmp_path):
    bad = copy.deepcopy(results)
    bad["spikes"]["precision"] = 1.5
    with pytest.raises(ResultsSchemaError, match=r"^results.json:spikes.precision:"):
        write_results(bad, tmp_path / "results.json")
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda d: d.pop("mse_test"), "mse_test"),
        (lambda d: d["gamma"].pop(next(iter(d["gamma"]))), "gamma"),
        (lambda d: d.update(k=float("nan")), "k"),
        (lambda d: d.update(edge_weight_scale=0.0), "edge_weight_scale"),
        (lambda d: d.update(gamma_mode="sometimes"), "gamma_mode"),
        (lambda d: d.update(border_cells=d["modelled_cells"][:1]), "border_cells"),
        (lambda d: d["quality_groups"]["groups"]["other"].append(d["modelled_cells"][0]),
         "quality_groups.groups"),
        (lambda d: d["spikes"]["test"].update(n_matched=10**6), "spikes.test.n_matched"),
        (lambda d: d["mse_per_cell"][next(iter(d["mse_per_cell"]))].update(train=-1.0), "mse_per_cell"),
        (lambda d: d["quality_groups"]["rule"].pop("statement"), "quality_groups.rule.statement"),
    ],
)
def test_schema_violations_name_the_key(results, mutate, key):
    bad = copy.deepcopy(results)
    mutate(bad)
    with pytest.raises(ResultsSchemaError, match=f"^results.json:{key}"):
        validate_results(jsonable(bad))


def test_jsonable_converts_tensors_and_nan():
    converted = jsonable({"a": torch.tensor([1.0, float("nan")]), 2: (torch.tensor(3),)})
    assert converted == {"a": [1.0, None], "2": [3]}


def test_read_errors(tmp_path):
    with pytest.raises(InputFileError, match="cannot read"):
        read_results(tmp_path / "missing.json")
    broken = tmp_path / "results.json"
    broken.write_text("{not json")
    with pytest.raises(InputFileError, match="not valid JSON"):
        read_results(broken)
