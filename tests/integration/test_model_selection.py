"""``python train.py experiment=select_law``: the data say which law generated them."""

from __future__ import annotations

import json

import pytest
import torch

from calcium_gnn.data import zoo
from calcium_gnn.errors import ConfigError
from calcium_gnn.io.graph_files import save_graph
from calcium_gnn.selection import SELECTION_JSON
from calcium_gnn.train import train


@pytest.mark.slow
@pytest.mark.parametrize("member_id,law", [("stimulus-95", "leak"), ("stimulus-134", "linear")])
def test_selection_picks_the_generating_law(compose_train, tmp_path, member_id, law) -> None:
    """Two small stimulus members (custom: not the test split), one per law, with their true drivers."""
    member = zoo.custom_member(*member_id.split("-")[:1], int(member_id.split("-")[1]))
    assert member.law == law
    graph = tmp_path / "graph.pt"
    save_graph(zoo.member_graph(member, dtype=torch.float64), graph)
    cfg = compose_train("experiment=select_law", f"data.graph={graph}", "setup.drivers=is_driver",
                        small=False)
    report = train(cfg)
    assert report["chosen"] == law
    # a leak the data carry is strong evidence; a leak they do not carry costs its parameter only (the
    # BIC of the nested law is log M_eff above: the support for the simpler law grows as log M)
    written = json.loads((tmp_path / "outputs" / "select_law" / "runs" / "run" / SELECTION_JSON).read_text())
    assert written["chosen"] == law and set(written["rows"]) == {"linear", "leak"}
    other = "linear" if law == "leak" else "leak"
    if law == "leak":  # the paper's law on leak data is reported inadequate, with the reason
        assert report["strength"] == "strong"
        assert written["rows"]["linear"]["inadequate"] and written["rows"]["linear"]["why_inadequate"]
        leak = written["rows"]["leak"]
        assert leak["k"] == pytest.approx(float(member.k), rel=0.1)
    assert written["rows"][other]["delta_bic"] > 0
    for name in ("linear", "leak"):  # every candidate wrote its own run folder
        results = json.loads((tmp_path / "outputs" / "select_law" / "runs" / "run" / name / "results.json")
                             .read_text())
        assert results["law"]["name"] == name


def test_an_unknown_candidate_is_refused_before_any_fit(compose_train) -> None:
    cfg = compose_train("experiment=select_law", "selection.laws=[linear,quadratic]")
    with pytest.raises(ConfigError, match="selection.laws"):
        train(cfg)


def test_a_stimulus_law_without_its_time_is_reported_as_failed(compose_train) -> None:
    cfg = compose_train("experiment=select_law", "selection.laws=[linear,stimulus]")
    report = train(cfg)
    assert report["chosen"] == "linear" and "stimulus" in report["failed"]
    assert "stimulus_time" in report["failed"]["stimulus"]


@pytest.mark.slow
def test_the_learned_coupling_joins_the_comparison_and_pays_for_its_parameters(compose_train) -> None:
    """On the built-in culture (the linear law generated it) the GNN ODE's MLP buys nothing: judged on the
    test window against the linear law (its BIC would charge every weight), it is not clearly better and
    is reported inadequate."""
    cfg = compose_train("experiment=select_law", "selection.laws=[linear,gnn_ode]", "trainer.max_epochs=1")
    report = train(cfg)
    gnn = report["rows"]["gnn_ode"]
    assert report["chosen"] == "linear" and gnn["inadequate"]
    assert gnn["n_parameters"] > report["rows"]["linear"]["n_parameters"] + 100
    assert gnn["held_out"] is not None and not gnn["held_out"]["better"]
    assert "not clearly below the best law's" in gnn["why_inadequate"][0]


def test_the_learned_coupling_candidate_is_the_one_of_discover_law(compose_train) -> None:
    """select_law's gnn_ode candidate carries every model setting of experiment=discover_law (the two
    configs are kept alike), and those settings reach the candidate's run config."""
    from pathlib import Path

    from calcium_gnn.selection import candidate_config
    from calcium_gnn.train import CONFIG_DIR

    select = compose_train("experiment=select_law", "selection.laws=[linear,gnn_ode]")
    discover = compose_train("experiment=discover_law")
    overrides = select.selection.model_overrides.gnn_ode
    default_gnn = compose_train("model=gnn_ode").model
    tuned = {key for key in discover.model if discover.model[key] != default_gnn[key]}
    assert tuned == set(overrides), "discover_law's model settings and select_law's gnn_ode overrides differ"
    candidate = candidate_config(select, "gnn_ode", Path(CONFIG_DIR))
    for key in tuned:
        assert candidate.model[key] == discover.model[key]
    assert candidate.model._target_ == default_gnn._target_


def test_an_override_of_a_key_the_model_lacks_is_refused(compose_train) -> None:
    cfg = compose_train("experiment=select_law", "selection.laws=[linear,gnn_ode]",
                        "+selection.model_overrides.gnn_ode.message_shape=2")
    with pytest.raises(ConfigError, match="selection.model_overrides.gnn_ode.message_shape"):
        train(cfg)


def test_a_named_law_candidate_is_the_gnn_ode_with_that_closed_form_law(compose_train) -> None:
    """``selection.laws=[...,saturating]``: configs/model/gnn_ode.yaml with the law as its message form and
    select_law's named-law settings (the whole training window, one simulation, no node term)."""
    from pathlib import Path

    from calcium_gnn.selection import candidate_config
    from calcium_gnn.train import CONFIG_DIR

    select = compose_train("experiment=select_law", "selection.laws=[linear,saturating,threshold]")
    for law in ("saturating", "threshold"):
        model = candidate_config(select, law, Path(CONFIG_DIR)).model
        assert model._target_ == compose_train("model=gnn_ode").model._target_
        assert model.message_form == law
        for key, value in select.selection.named_law_model.items():
            assert model[key] == value
    assert select.selection.named_law_model.validation_fraction == 0.0


@pytest.mark.parametrize("override,key", [
    ("+selection.named_law_model.message_form=threshold", "selection.named_law_model.message_form"),
    ("+selection.named_law_model.law_shape=2", "selection.named_law_model.law_shape"),
])
def test_named_law_settings_that_cannot_apply_are_refused_before_any_fit(compose_train, override,
                                                                        key) -> None:
    cfg = compose_train("experiment=select_law", "selection.laws=[linear,rectifying]", override)
    with pytest.raises(ConfigError, match=key):
        train(cfg)


@pytest.mark.slow
def test_a_named_law_runs_through_the_selection_and_reports_its_fitted_formula(compose_train) -> None:
    """On the built-in culture (the linear law generated it, at almost no noise) a saturating junction
    costs one parameter and is never strongly supported (it may win weakly: it absorbs a little of the
    mismatch between the generator's integration and the fit's); its row carries its fitted sigma and
    formula, and the statement quotes the formula when it is chosen."""
    cfg = compose_train("experiment=select_law", "selection.laws=[linear,saturating]", "trainer.max_epochs=1")
    report = train(cfg)
    rows = report["rows"]
    assert not report.get("failed") and report["strength"] == "weak"
    saturating = rows["saturating"]
    assert saturating["n_parameters"] == rows["linear"]["n_parameters"] + 1
    assert set(saturating["parameters"]) == {"sigma"} and saturating["parameters"]["sigma"] > 0
    assert saturating["formula"].startswith("q = ") and "sigma tanh" in saturating["formula"]
    assert rows["linear"]["formula"] is None and rows["linear"]["not_identified"] == []
    assert ("fitted: " + saturating["formula"] in report["statement"]) == (report["chosen"] == "saturating")
    # its sigma is far beyond the culture's level differences: the report says it is not identified, and
    # when the law is chosen so does the statement
    assert saturating["parameters"]["sigma"] > 1.0
    assert "sigma is not identified" in saturating["not_identified"][0]
    assert ("sigma is not identified" in report["statement"]) == (report["chosen"] == "saturating")


def test_one_named_law_takes_its_own_settings_over_the_shared_ones(compose_train) -> None:
    """``selection.model_overrides.<law>`` (e.g. a hypothesis start, ``law_start``) applies to that named
    law only, on top of ``selection.named_law_model``; a message form there is refused by name."""
    from pathlib import Path

    from calcium_gnn.selection import candidate_config
    from calcium_gnn.train import CONFIG_DIR

    select = compose_train("experiment=select_law", "selection.laws=[linear,saturating,rectifying]",
                           "+selection.model_overrides.rectifying.law_start={r:0.25}",
                           "+selection.model_overrides.rectifying.lbfgs_max_iter=7")
    rectifying = candidate_config(select, "rectifying", Path(CONFIG_DIR)).model
    saturating = candidate_config(select, "saturating", Path(CONFIG_DIR)).model
    assert rectifying.law_start == {"r": 0.25} and rectifying.lbfgs_max_iter == 7
    assert saturating.law_start is None and saturating.lbfgs_max_iter != 7
    for model in (rectifying, saturating):  # the shared named-law settings still apply
        assert model.validation_fraction == select.selection.named_law_model.validation_fraction
    refused = compose_train("experiment=select_law", "selection.laws=[linear,rectifying]",
                            "+selection.model_overrides.rectifying.message_form=threshold")
    with pytest.raises(ConfigError, match="selection.model_overrides.rectifying.message_form"):
        candidate_config(refused, "rectifying", Path(CONFIG_DIR))
