"""The ``unexplained`` driver rule finds the relay cells a point stimulus setup misses."""

from __future__ import annotations

import pytest
import torch

from calcium_gnn.data import zoo
from calcium_gnn.data.zoo_drivers import RELAY, STIMULUS
from calcium_gnn.evaluation.unexplained import FitOutcome, UnexplainedRule, find_unexplained
from calcium_gnn.models.neural_ode import OutputErrorODE
from calcium_gnn.physics.setups import resolve_setup


@pytest.mark.slow
def test_missed_relays_are_found_and_no_ordinary_cell_is_taken() -> None:
    member = zoo.custom_member("stimulus", 25)  # a custom member: not the test split
    data = zoo.member_graph(member, dtype=torch.float64)
    kind = data.truth_driver_kind
    first = (kind == STIMULUS).nonzero().reshape(-1)[0]
    options = {"point": data.pos[first].tolist(), "auto_drivers": "precedes",
               "stimulus_time": member.params["stimulus_time"]}

    def setup_with(extra):
        return resolve_setup(data, **options, extra_drivers=extra)

    def fit(setup):
        model = OutputErrorODE(data, setup, law="leak", gamma_bounds=(-0.1, 0.1))
        model.fit_exact(60)
        model.finish_fit()
        return FitOutcome(model.fitted_parameters(), model.train_fraction)

    missed = set(data.cell_id[(kind == RELAY) | (kind == STIMULUS)].tolist()) - set(setup_with({}).drivers)
    assert missed, "the point and precedence rules alone should miss a relay on this member"
    found = find_unexplained(data, setup_with, fit, UnexplainedRule())
    assert set(found) == missed
    assert all(reason.startswith("the fitted law cannot explain it") for reason in found.values())
