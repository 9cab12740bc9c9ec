"""Traces tables: one calcium trace per cell, in a CSV or TSV file (:mod:`calcium_gnn.io.delimited`).

Orientation (``data.traces_orientation``):

* ``cells_x_frames``: one row per cell, one column per frame (the layout of
  :func:`calcium_gnn.io.graph_files.export_traces_csv`: ``cell_id, t_0, t_1, ...``);
* ``frames_x_cells``: one row per frame, one column per cell (spreadsheets, ImageJ);
* None (default): ``cells_x_frames``, except for an ImageJ Multi-Measure result, which is
  ``frames_x_cells`` by construction.

What is recognised in the header (matched ignoring case and surrounding spaces):

* an **id column** ``cell_id``, ``id`` or ``label``: the cell id of each row (cells_x_frames only),
  matched to the label ids (the ROI number, the centroid id) by the caller; without it, rows are the
  cells in ascending label id (ROI order, centroid order);
* a column with an **empty name** is an index column (ImageJ's frame number, pandas' index) and is
  dropped;
* **ImageJ Multi-Measure** results: columns ``Mean1, Mean2, ...`` or ``Mean(name)`` (frames x
  cells, after a leading index column); only the ``Mean`` columns are kept, in their order (the
  ROI Manager's order), other measurements (``Area1``, ``Min1``...) are ignored.

Every other column must hold numbers: a text cell, an empty cell, NaN or Inf is an error naming the
file, line and column, never a silently shifted trace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calcium_gnn.errors import ConfigError, InputFileError
from calcium_gnn.io.delimited import TextTable, numbers, read_text_table

__all__ = ["ORIENTATIONS", "ID_COLUMNS", "TracesTable", "read_traces_table", "check_orientation"]

#: the values of ``data.traces_orientation`` (None: cells_x_frames, or frames_x_cells for ImageJ)
ORIENTATIONS: tuple[str, ...] = ("cells_x_frames", "frames_x_cells")
#: header names of the id column (case-insensitive)
ID_COLUMNS: tuple[str, ...] = ("cell_id", "id", "label")
_IMAGEJ_MEAN = re.compile(r"^mean\s*(\d+|\(.*\))$", re.IGNORECASE)


@dataclass(frozen=True)
class TracesTable:
    """The traces of a table, cells first.

    Attributes:
        traces: (N, T) float64, row ``i`` the trace of the ``i``-th cell of the table.
        cell_ids: (N,) int64 ids from the id column, or None (rows in ascending label id).
        orientation: ``"cells_x_frames"`` or ``"frames_x_cells"``, as read.
        imagej: the table is an ImageJ Multi-Measure result.
        other_axis: the length the table would give N had it the other orientation (for hints),
            or None when that orientation is impossible (an id column).
        path: the file.
    """

    traces: np.ndarray
    cell_ids: np.ndarray | None
    orientation: str
    imagej: bool
    other_axis: int | None
    path: Path

    @property
    def n_cells(self) -> int:
        """Number of traces N."""
        return int(self.traces.shape[0])

    @property
    def n_frames(self) -> int:
        """Number of frames T."""
        return int(self.traces.shape[1])


def check_orientation(orientation: str | None) -> str | None:
    """Return ``orientation`` when it is None or one of :data:`ORIENTATIONS`.

    Raises:
        ConfigError: naming ``data.traces_orientation`` for any other value.
    """
    if orientation is None or orientation in ORIENTATIONS:
        return orientation
    raise ConfigError(
        "data.traces_orientation",
        f"unknown orientation {orientation!r}: use cells_x_frames or frames_x_cells",
    )


def read_traces_table(
    path: str | Path, *, orientation: str | None = None, header: bool | None = None
) -> TracesTable:
    """Read a traces table (module docstring).

    Args:
        path: the CSV / TSV file. Never modified.
        orientation: ``"cells_x_frames"``, ``"frames_x_cells"`` or None (module docstring).
        header: None detects a header row; True / False force it.

    Returns:
        A :class:`TracesTable`, traces (N, T) with N >= 1 and T >= 2.

    Raises:
        ConfigError: an unknown orientation, or one that contradicts the table (an ImageJ
            Multi-Measure result read as cells_x_frames, an id column with frames_x_cells).
        InputFileError: naming the file: unreadable, a non-numeric / empty / NaN cell (line and
            column), bad ids (not positive integers, repeated), fewer than two frames.
    """
    orientation = check_orientation(orientation)
    table = read_text_table(path, header=header)
    columns = list(range(table.n_columns))
    names = [name.lower() for name in table.header] if table.header is not None else None
    imagej = False
    id_column = None
    if names is not None:
        columns = [c for c in columns if names[c] != ""]
        means = [c for c in columns if _IMAGEJ_MEAN.match(names[c])]
        imagej = bool(means)
        if imagej:
            if orientation == "cells_x_frames":
                raise ConfigError(
                    "data.traces_orientation",
                    f"{table.path} is an ImageJ Multi-Measure "
                    "result (columns Mean1, Mean2, ...): frames x cells, not cells_x_frames",
                )
            orientation, columns = "frames_x_cells", means
        else:
            id_columns = [c for c in columns if names[c] in ID_COLUMNS]
            if len(id_columns) > 1:
                both = ", ".join(repr(table.header[c]) for c in id_columns)
                raise InputFileError(table.path, f"several id columns ({both}): keep one")
            if id_columns:
                id_column = id_columns[0]
                columns.remove(id_column)
                if orientation == "frames_x_cells":
                    raise ConfigError(
                        "data.traces_orientation",
                        f"{table.path} has an id column "
                        f"{table.header[id_column]!r} naming the cell of each row: "
                        "the table is cells_x_frames",
                    )
    orientation = orientation or "cells_x_frames"
    if not columns:
        raise InputFileError(table.path, "no trace columns (only an id or index column)")
    values = numbers(table, columns, "trace value")
    traces = values if orientation == "cells_x_frames" else values.T
    if traces.shape[1] < 2:
        raise InputFileError(
            table.path,
            f"{orientation}: only {traces.shape[1]} frame per trace, a trace "
            "needs at least 2 (is data.traces_orientation right?)",
        )
    cell_ids = _ids(table, id_column) if id_column is not None else None
    other = None if cell_ids is not None else int(traces.shape[1])
    return TracesTable(np.ascontiguousarray(traces), cell_ids, orientation, imagej, other, table.path)


def _ids(table: TextTable, column: int) -> np.ndarray:
    """The id column as (N,) int64: positive integers, no repeats."""
    raw = numbers(table, [column], "cell id")[:, 0]
    whole = raw == np.round(raw)
    if not (whole.all() and (raw >= 1).all()):
        r = int(np.nonzero(~(whole & (raw >= 1)))[0][0])
        raise InputFileError(
            table.path,
            f"line {table.lines[r]}: cell id {table.rows[r][column]!r} is not a "
            "positive integer (label ids start at 1)",
        )
    ids = raw.astype(np.int64)
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise InputFileError(
            table.path,
            f"cell id {int(values[counts > 1][0])} appears "
            f"{int(counts[counts > 1][0])} times in column {table.header[column]!r}",
        )
    return ids
