"""likely_causes: a failed fit names drivers inside the group, decay the law lacks, and k at a bound."""

from __future__ import annotations

import torch

from calcium_gnn.evaluation.causes import decay_missing, early_cells, likely_causes


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


def test_data_falling_back_under_a_simulation_that_stays_up_is_decay_missing() -> None:
    t = torch.arange(0.0, 60.0, 1.0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.exp(-t / 20.0).repeat(4, 1) + 0.01 * torch.randn(4, 60, generator=gen, dtype=torch.float64)
    stays = torch.ones_like(x)
    modelled = torch.ones(4, dtype=torch.bool)
    test = slice(30, 60)
    assert decay_missing(x, stays, modelled, test) is not None
    assert decay_missing(x, x.clone(), modelled, test) is None  # a simulation that follows the data


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
