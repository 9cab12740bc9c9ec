"""The design table of a multi-dish experiment: which culture belongs to which condition and plate.

``python train.py data=culture_folder data.table=design.csv`` reads a CSV / TSV table (any format of
:func:`calcium_gnn.io.delimited.read_text_table`, with a header row) with one row per dish:

==============  ========  ==================================================================
column          needed    meaning
==============  ========  ==================================================================
``path``        yes       the dish's movie (a TIFF file or a folder of frames) or saved cell graph
                          (``.pt``); a relative path is relative to the table's folder
``condition``   yes       the dish's condition (any label: ``control``, ``CBX 50uM``)
``plate``       no        the plate or batch it was imaged in (a grouping factor); ``batch`` is
                          accepted as its name too. An empty cell: a plate of its own
any other       no        a numeric covariate (passage number, days in vitro, density); every cell
                          of such a column must be a number
==============  ========  ==================================================================

Column names are matched without regard to case. Nothing is written back to the table.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from calcium_gnn.errors import InputFileError, OutputError
from calcium_gnn.io.atomic import atomic_write_text
from calcium_gnn.io.delimited import is_number, read_text_table

__all__ = ["Dish", "read_conditions_table", "write_conditions_table", "PLATE_COLUMNS"]

#: the names the plate column may have (the first one present is used)
PLATE_COLUMNS: tuple[str, ...] = ("plate", "batch")


@dataclass(frozen=True)
class Dish:
    """One row of the design table.

    Attributes:
        path: the movie or graph file (absolute, resolved against the table's folder).
        condition: the condition label.
        plate: the plate / batch label, or None when the table has no plate column (or the cell is
            empty).
        covariates: numeric covariates by column name (the table's spelling).
        line: the row's line number in the table (for messages).
    """

    path: Path
    condition: str
    plate: str | None
    covariates: dict[str, float] = field(default_factory=dict)
    line: int = 0

    @property
    def is_graph(self) -> bool:
        """True for a saved cell graph (``.pt``), False for a movie."""
        return self.path.suffix.lower() == ".pt"


def read_conditions_table(path: str | Path) -> list[Dish]:
    """Read the design table (module docstring).

    Args:
        path: the CSV / TSV table. Never modified.

    Returns:
        The dishes in table order (at least one).

    Raises:
        InputFileError: naming the table (and the line and column where it applies): unreadable,
            no header, no ``path`` or ``condition`` column, an empty path or condition, a dish file
            that does not exist, the same file listed twice, or a covariate cell that is not a number.
    """
    path = Path(path)
    table = read_text_table(path, header=True)
    if table.header is None:  # pragma: no cover - header=True always gives one
        raise InputFileError(path, "the design table needs a header row (path, condition, ...)")
    names = [name.strip() for name in table.header]
    lower = [name.lower() for name in names]
    for needed in ("path", "condition"):
        if needed not in lower:
            raise InputFileError(path, f"no {needed!r} column (columns: {', '.join(names)}); the design "
                                       "table needs 'path' and 'condition', optionally 'plate' and "
                                       "numeric covariates")
    duplicated = sorted({name for name in lower if name and lower.count(name) > 1})
    if duplicated:
        raise InputFileError(path, f"column {duplicated[0]!r} appears more than once")
    path_col, condition_col = lower.index("path"), lower.index("condition")
    plate_col = next((lower.index(name) for name in PLATE_COLUMNS if name in lower), None)
    covariate_cols = [c for c in range(len(names)) if c not in (path_col, condition_col, plate_col)]
    root = path.resolve().parent
    dishes: list[Dish] = []
    seen: dict[Path, int] = {}
    for row, line in zip(table.rows, table.lines, strict=True):
        where = f"line {line}"
        if not row[path_col]:
            raise InputFileError(path, f"{where}: the 'path' cell is empty")
        if not row[condition_col]:
            raise InputFileError(path, f"{where}: the 'condition' cell is empty ({row[path_col]})")
        dish_path = Path(row[path_col]).expanduser()
        dish_path = (dish_path if dish_path.is_absolute() else root / dish_path).resolve()
        if not dish_path.exists():
            raise InputFileError(path, f"{where}: {dish_path} does not exist")
        if dish_path in seen:
            raise InputFileError(path, f"{where}: {dish_path} is listed twice "
                                       f"(also on line {seen[dish_path]})")
        seen[dish_path] = line
        covariates: dict[str, float] = {}
        for c in covariate_cols:
            cell = row[c]
            if not is_number(cell) or cell.lower() in ("nan", "inf", "-inf", "+inf"):
                shown = "an empty cell" if cell == "" else repr(cell)
                raise InputFileError(
                    path, f"{where}, column {names[c]!r}: {shown} is not a number (columns other than "
                          "path, condition and plate are numeric covariates)")
            covariates[names[c]] = float(cell)
        plate = row[plate_col] if plate_col is not None and row[plate_col] else None
        dishes.append(Dish(dish_path, row[condition_col], plate, covariates, line))
    return dishes


def write_conditions_table(dishes: list[Dish], path: str | Path) -> Path:
    """Write a design table (CSV) that :func:`read_conditions_table` reads back: ``path`` (relative to the
    table's folder where the dish lies below it), ``condition``, ``plate`` when any dish has one, and the
    covariates of the first dish. Written atomically; an existing file is never replaced.

    Raises:
        OutputError: ``path`` exists, or cannot be written.
    """
    path = Path(path)
    if path.exists():
        raise OutputError(path, "exists: a design table is never overwritten (choose another path)")
    root = path.resolve().parent
    with_plate = any(d.plate is not None for d in dishes)
    covariates = list(dishes[0].covariates) if dishes else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "condition", *(["plate"] if with_plate else []), *covariates])
    for d in dishes:
        target = d.path.resolve()
        shown = target.relative_to(root) if target.is_relative_to(root) else target
        writer.writerow([str(shown), d.condition, *([d.plate or ""] if with_plate else []),
                         *(repr(float(d.covariates[c])) for c in covariates)])
    return atomic_write_text(path, buffer.getvalue(), make_parents=True)
