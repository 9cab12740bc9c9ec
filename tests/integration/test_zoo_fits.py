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


def test_a_k_biased_past_the_border_noise_search_is_flagged(compose_train, tmp_path) -> None:
    """dev-186 (219 cells, pacemakers, 5% noise, 15 s frames): the border inputs' noise pulls ``k`` 38% low,
    with a 90% interval that excludes the truth; the border-noise correction's search runs to its end
    (x1.5), and that alone says the fit cannot be trusted; its intervals are withheld, not reported."""
    path = tmp_path / "dev-186.pt"
    save_graph(zoo.member_graph(zoo.member("dev-186")), path)
    cfg = compose_train(
        "experiment=setup1_neural_ode", f"data.graph={path}", "setup.drivers=is_driver", small=False
    )
    results = train(cfg)
    diagnostics = results["diagnostics"]
    assert results["truth"]["k_rel_err"] > 0.25
    assert results["k_interval"] is None and results["gamma_interval"] is None
    assert "search ran to its end" in results["intervals_withheld"]
    assert results["border_noise_correction"]["applied"] is False
    assert diagnostics["border_noise"]["search_end"] is True
    assert diagnostics["fit_ok"] is False
    assert [r for r in diagnostics["reasons"] if "its search ran to its end" in r] == diagnostics["reasons"]


def test_a_reference_on_data_that_reject_the_linear_law_is_the_leak_law_fit() -> None:
    """dev-10 (35 cells, generated with a leak back to baseline, 4% noise): the linear law's output-error fit
    absorbs the leak into a k 38% low, and an estimator agreeing with it would share that bias. The reference
    tests the linear law, finds it rejected, and becomes the leak law's fit, within 10% of the truth; asked
    not to test (``leak_rejection=None``) it stays linear."""
    from calcium_gnn.evaluation.reference_fit import ReferenceFit, reference_fit
    from calcium_gnn.physics.setups import resolve_setup

    data = zoo.member_graph(zoo.member("dev-10"))
    setup = resolve_setup(data, group="interior", gamma_mode="per_cell", name="setup1")
    options = {"train_fraction": 0.9, "edge_weight_scale": float(data.truth_edge_weight_scale),
               "k_bounds": (1e-3, 0.1), "gamma_bounds": (-0.1, 0.1)}
    k = float(data.truth_k)
    ref = reference_fit(data, setup, leak_rejection=(3.09, 0.02), **options)
    assert isinstance(ref, ReferenceFit) and ref.law == "leak"
    assert "score test z" in ref.law_reason
    assert ref.k == pytest.approx(k, rel=0.10)
    assert ref.linear_k < 0.75 * k
    lo, hi = ref.linear_k_interval
    assert hi < ref.k_interval[0]  # the two laws' intervals do not overlap
    plain = reference_fit(data, setup, leak_rejection=None, **options)
    assert isinstance(plain, ReferenceFit) and plain.law == "linear" and plain.linear_k is None
    assert plain.k == pytest.approx(ref.linear_k, rel=1e-6)
