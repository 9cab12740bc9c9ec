"""Fits on zoo members built to trigger a diagnostic, through the real command path (``train()``).

A pacemaker member (``zoo.custom_member("pacemaker", 17)``: 62 cells, two interior pacemakers that
fire on their own) fitted as if every interior cell followed the consensus law gives a ``k`` the data
do not support, and the run must say so; naming the pacemakers as drivers (``setup.drivers``) fixes
the fit. Custom members are neither the dev nor the frozen test split.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from calcium_gnn.data import zoo
from calcium_gnn.io.graph_files import save_graph
from calcium_gnn.train import train

PACEMAKER = ("pacemaker", 17)


@pytest.fixture(scope="module")
def pacemaker_graph(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("zoo") / "pacemaker.pt"
    save_graph(zoo.member_graph(zoo.custom_member(*PACEMAKER)), path)
    return path


def test_undeclared_pacemakers_make_the_fit_say_it_failed(compose_train, pacemaker_graph) -> None:
    cfg = compose_train("experiment=setup1_neural_ode", f"data.graph={pacemaker_graph}", small=False)
    results = train(cfg)
    diagnostics = results["diagnostics"]
    assert results["truth"]["k_rel_err"] > 0.25
    assert diagnostics["fit_ok"] is False and diagnostics["reasons"]


def test_declared_drivers_give_a_trusted_fit(compose_train, pacemaker_graph) -> None:
    cfg = compose_train(
        "experiment=setup1_neural_ode", f"data.graph={pacemaker_graph}", "setup.drivers=is_driver",
        small=False,
    )
    results = train(cfg)
    assert results["diagnostics"]["fit_ok"] is True
    assert results["truth"]["k_rel_err"] < 0.05
    lo, hi = results["k_interval"]
    assert lo <= results["truth"]["k"] <= hi
