"""Errors raised for bad user input.

Every error the user can trigger with a file or a config value is a :class:`CalciumGNNError`
whose message names the culprit (a file path or a config key) and the problem, in one line.
Subclasses say which kind of input was wrong, so tests (and batch drivers) can tell them apart.
"""

from __future__ import annotations

from pathlib import Path


class CalciumGNNError(ValueError):
    """Base class: a one-line, user-facing message naming the culprit and the problem."""

    def __init__(self, culprit: str | Path | None, problem: str) -> None:
        self.culprit = None if culprit is None else str(culprit)
        self.problem = problem
        message = problem if culprit is None else f"{culprit}: {problem}"
        super().__init__(message)

    def __reduce__(self) -> tuple[type, tuple[str | None, str]]:
        """Rebuilt from ``(culprit, problem)``: the error crosses process boundaries (a worker of a batch
        or a benchmark raises it, the parent reports it) instead of breaking the pool."""
        return type(self), (self.culprit, self.problem)


class InputFileError(CalciumGNNError):
    """A file the user gave us is missing, unreadable, or holds the wrong kind of data."""


class MovieError(InputFileError):
    """A movie is unreadable or its contents cannot be used (wrong axes, NaNs, constant...)."""


class MasksError(InputFileError):
    """A label image / masks file is unreadable, empty, or does not fit the movie."""


class GraphError(CalciumGNNError):
    """A cell graph breaks the schema or cannot support the requested model."""


class ConfigError(CalciumGNNError):
    """A configuration value is invalid; the culprit is the config key."""


class SegmentationError(CalciumGNNError):
    """Segmentation could not run (missing weights, no cells found...)."""


class OutputError(CalciumGNNError):
    """An output location cannot be written."""


class FitError(CalciumGNNError):
    """A fit diverged or produced non-finite values; the culprit is the fitting method."""
