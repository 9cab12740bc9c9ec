"""Cell centroids from a CSV / TSV table (:mod:`calcium_gnn.io.delimited`).

The table needs a header with columns ``x`` and ``y`` (matched ignoring case): the centroid of each
cell in **pixels** of the original image, ``x`` the column and ``y`` the row, pixel ``(row r,
column c)`` centred at ``(x=c, y=r)`` (the convention of the graph's ``pos`` and of scikit-image;
ImageJ's ``X``/``Y`` measurements are in calibrated units with pixel centres at ``+0.5``: convert
them first). An optional id column (``cell_id``, ``id`` or ``label``) gives each cell its label
id; without it cell ``i`` (0-based row) gets id ``i + 1``. Other columns (ImageJ's ``Area``,
``Mean``...) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calcium_gnn.errors import InputFileError
from calcium_gnn.io.delimited import numbers, read_text_table
from calcium_gnn.io.traces_table import ID_COLUMNS

__all__ = ["CentroidTable", "read_centroids"]


@dataclass(frozen=True)
class CentroidTable:
    """Cell centroids, in the table's row order.

    Attributes:
        xy: (N, 2) float64 centroids ``(x, y)`` in pixels.
        cell_ids: (N,) int64 label ids (the id column, else ``1..N``).
        path: the file.
    """

    xy: np.ndarray
    cell_ids: np.ndarray
    path: Path


def read_centroids(path: str | Path) -> CentroidTable:
    """Read a centroids table (module docstring).

    Args:
        path: the CSV / TSV file with a header. Never modified.

    Returns:
        A :class:`CentroidTable` with N >= 1 rows.

    Raises:
        InputFileError: naming the file: no header, no ``x`` / ``y`` column, a non-numeric, empty,
            NaN or negative coordinate, ids that are not distinct positive integers, or two cells
            at the same place.
    """
    table = read_text_table(path, header=None)
    if table.header is None:
        raise InputFileError(table.path, "no header: a centroids table needs columns named x and y")
    names = [name.lower() for name in table.header]
    missing = [axis for axis in ("x", "y") if axis not in names]
    if missing:
        raise InputFileError(
            table.path,
            f"no column named {' or '.join(missing)} (columns: {', '.join(repr(n) for n in table.header)})",
        )
    for axis in ("x", "y"):
        if names.count(axis) > 1:
            raise InputFileError(table.path, f"several columns named {axis!r}")
    xy = numbers(table, [names.index("x"), names.index("y")], "centroid coordinate")
    if (xy < 0).any():
        r = int(np.nonzero((xy < 0).any(axis=1))[0][0])
        raise InputFileError(
            table.path,
            f"line {table.lines[r]}: negative coordinate ({xy[r, 0]:g}, {xy[r, 1]:g}) "
            "(centroids are pixel coordinates in the image, from 0)",
        )
    id_columns = [c for c, name in enumerate(names) if name in ID_COLUMNS]
    if len(id_columns) > 1:
        raise InputFileError(
            table.path, f"several id columns ({', '.join(table.header[c] for c in id_columns)})"
        )
    if id_columns:
        raw = numbers(table, id_columns, "cell id")[:, 0]
        if not ((raw == np.round(raw)) & (raw >= 1)).all():
            r = int(np.nonzero(~((raw == np.round(raw)) & (raw >= 1)))[0][0])
            raise InputFileError(
                table.path,
                f"line {table.lines[r]}: cell id {table.rows[r][id_columns[0]]!r} is not a positive integer",
            )
        ids = raw.astype(np.int64)
    else:
        ids = np.arange(1, xy.shape[0] + 1, dtype=np.int64)
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise InputFileError(table.path, f"cell id {int(values[counts > 1][0])} appears more than once")
    _, first, counts = np.unique(xy, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        r = int(first[counts > 1][0])
        raise InputFileError(
            table.path,
            f"cells share the centroid {tuple(float(v) for v in xy[r])} "
            f"(line {table.lines[r]} and another): one point per cell",
        )
    return CentroidTable(xy, ids, table.path)
