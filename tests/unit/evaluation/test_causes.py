"""likely_causes: a failed fit names drivers inside the group, decay the law lacks, and k at a bound."""

from __future__ import annotations

import torch

from calcium_gnn.evaluation.causes import decay_missing, early_cells, likely_causes, shared_event


def _chain(n: int = 5) -> torch.Tensor:
    """A path graph 0 - 1 - ... - n-1, both directions."""
    src = list(range(n - 1)) + list(range(1, n))
    dst = list(range(1, n)) + list(range(n - 1))
    return torch.tensor([src, dst])


def _wave(onsets: list[float], t: torch.Tensor) -> torch.Tensor:
    """Unit steps smoothed over 2 s, one per cell, at these onsets (s)."""
    return torch.stack([torch.sigmoid((t - on) / 2.0) for on in onsets])


def test_a_cell_activating_before_all_its_neighbours_is_named() -> None:
    t = torch.arange(0.0, 100.0, 1.0, dtype=torch.float64)
    x = _wave([50.0, 40.0, 20.0, 40.0, 50.0], t)  # cell 2 starts the wave
    modelled = torch.ones(5, dtype=torch.bool)
    assert early_cells(x, t, modelled, _chain()) == [2]
    modelled[2] = False  # already a driver: nothing to say
    assert early_cells(x, t, modelled, _chain()) == []


def test_cells_are_timed_after_the_stimulus_like_the_setups_precedes_rule() -> None:
    """A spontaneous event before the stimulus does not make a cell 'activate before its neighbours': the
    run that named the stimulus time (and used the precedes rule with it) would otherwise be told to
    make a driver of a cell that the rule, rightly, left alone."""
    t = torch.arange(0.0, 100.0, 1.0, dtype=torch.float64)
    x = _wave([35.0, 40.0, 45.0, 50.0, 55.0], t)  # the wave starts at cell 0 after the stimulus at 30 s
    x[2] += 1.5 * torch.exp(-((t - 10.0) / 3.0) ** 2)  # cell 2: a spontaneous event at 10 s
    modelled = torch.ones(5, dtype=torch.bool)
    assert 2 in early_cells(x, t, modelled, _chain())  # timed over the whole recording
    assert early_cells(x, t, modelled, _chain(), after=30.0) == [0]
    failed = {"fit_ok": False, "bounds": {}}
    ids = torch.tensor([11, 12, 13, 14, 15])
    causes = likely_causes(x, t, x, modelled, _chain(), ids, slice(60, 100), failed, after=30.0)
    assert any("drivers inside the group: 1 modelled cell(s) (11)" in c for c in causes)


def test_data_falling_back_under_a_simulation_that_stays_up_is_decay_missing() -> None:
    t = torch.arange(0.0, 60.0, 1.0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.exp(-t / 20.0).repeat(4, 1) + 0.01 * torch.randn(4, 60, generator=gen, dtype=torch.float64)
    stays = torch.ones_like(x)
    modelled = torch.ones(4, dtype=torch.bool)
    test = slice(30, 60)
    assert decay_missing(x, stays, modelled, test) is not None
    assert decay_missing(x, x.clone(), modelled, test) is None  # a simulation that follows the data


def _shared_rise(amplitude: float, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """40 cells (30 modelled, 10 following their data) over 120 frames, noise 0.02, whose simulation is
    the clean traces; every cell's data rise by ``amplitude`` from frame 112 on (the test window is
    108-119): what a global stimulus late in a recording looks like to the law."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(0.0, 120.0, dtype=torch.float64)
    clean = 0.5 + 0.2 * torch.sin(t / 15.0 + torch.rand(40, 1, generator=gen, dtype=torch.float64))
    x = clean + 0.02 * torch.randn(40, 120, generator=gen, dtype=torch.float64)
    x = x + amplitude * torch.sigmoid((t - 112.0) / 1.0)
    modelled = torch.arange(40) < 30
    return x, clean, modelled, t


def test_a_rise_of_every_cell_in_the_test_window_is_named_an_event_from_outside_the_model() -> None:
    test = slice(108, 120)
    x, sim, modelled, t = _shared_rise(0.1)  # 5 noise levels
    event = shared_event(x, sim, modelled, test)
    assert event is not None and 112 <= event["frame"] < 120
    assert event["others_shift"] > 2 and event["modelled_off_simulation"] > 2
    failed = {"fit_ok": False, "bounds": {}}
    causes = likely_causes(x, t, sim, modelled, _chain(40), torch.arange(40), test, failed, law="leak")
    assert any(c.startswith("an event from outside the model in the test window") for c in causes)
    quiet, sim, modelled, _ = _shared_rise(0.0)
    assert shared_event(quiet, sim, modelled, test) is None  # the same culture without the event
    falling, sim, modelled, _ = _shared_rise(-0.1)  # a shared fall is read as a missing leak, not here
    assert shared_event(falling, sim, modelled, test) is None
    # the modelled cells' rise explained by the simulation (their neighbours carried it): no event
    x, sim, modelled, _ = _shared_rise(0.1)
    assert shared_event(x, sim + 0.1 * torch.sigmoid((t - 112.0) / 1.0), modelled, test) is None


def test_causes_are_given_only_for_a_failed_fit_and_name_cells_by_id() -> None:
    t = torch.arange(0.0, 100.0, 1.0, dtype=torch.float64)
    x = _wave([50.0, 40.0, 20.0, 40.0, 50.0], t)
    modelled = torch.ones(5, dtype=torch.bool)
    ids = torch.tensor([11, 12, 13, 14, 15])
    ok = {"fit_ok": True, "bounds": {"k_on_bound": "lower"}}
    assert likely_causes(x, t, x, modelled, _chain(), ids, slice(60, 100), ok) == []
    failed = {"fit_ok": False, "bounds": {"k_on_bound": "lower"}}
    causes = likely_causes(x, t, x, modelled, _chain(), ids, slice(60, 100), failed)
    assert any("drivers inside the group" in c and "(13)" in c for c in causes)
    assert any(c.startswith("k at its lower bound") for c in causes)


def test_an_unidentified_or_uncertain_leak_is_flagged() -> None:
    from calcium_gnn.evaluation.diagnostics import DiagnosticRule, check_leak

    def diagnose(law):
        block = {"fit_ok": True, "reasons": []}
        check_leak(law, DiagnosticRule(), block)
        return block

    sharp = diagnose({"leak": 0.016, "leak_interval": [0.015, 0.0176], "leak_bounds": [0.0, 0.1]})
    assert sharp["fit_ok"] and sharp["leak"]["half_width_over_leak"] < 0.1
    none = diagnose({"leak": 0.002, "leak_interval": [0.0, 0.004], "leak_bounds": [0.0, 0.1]})
    assert not none["fit_ok"] and "not identified" in none["reasons"][0]
    wide = diagnose({"leak": 0.057, "leak_interval": [0.027, 0.088], "leak_bounds": [0.0, 0.1]})
    assert not wide["fit_ok"] and "uncertain" in wide["reasons"][0]
    assert diagnose({"name": "linear"})["fit_ok"]  # the paper's law has no leak to check
