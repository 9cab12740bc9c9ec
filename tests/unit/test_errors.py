"""User-facing errors survive a process boundary (a batch or benchmark worker raises, the parent reports)."""

from __future__ import annotations

import pickle
from concurrent.futures import ProcessPoolExecutor

import pytest

from calcium_gnn.errors import CalciumGNNError, ConfigError, FitError, GraphError


def _raise_config_error() -> None:
    raise ConfigError("model.law", "unknown law 'x'")


@pytest.mark.parametrize("error", [ConfigError("model.k", "must be > 0"), GraphError(None, "no edges"),
                                   FitError("movie.tif", "diverged")])
def test_errors_pickle_with_their_class_and_message(error: CalciumGNNError) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert (back.culprit, back.problem, str(back)) == (error.culprit, error.problem, str(error))


def test_an_error_raised_in_a_worker_reaches_the_parent() -> None:
    with ProcessPoolExecutor(1) as pool, pytest.raises(ConfigError, match="model.law: unknown law 'x'"):
        pool.submit(_raise_config_error).result()
