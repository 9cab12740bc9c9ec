"""Delimited text tables (CSV, TSV): the one parser behind the traces and centroids tables.

A table is read as strings, cell by cell, so a reader can pick its columns and convert only those
(:func:`numbers`), naming the line and column of the first cell that is not a number.

* Delimiter: ``.csv`` -> ``,``; ``.tsv`` / ``.tab`` -> tab; any other suffix (``.txt``, ImageJ's
  ``.xls``, which is tab-separated text) -> sniffed among tab, ``,`` and ``;``.
* Header: with ``header=None`` the first row is a header when one of its cells is not a number
  (``cell_id, t_0, ...``, ImageJ's `` ,Mean1,Mean2``); ``True`` / ``False`` force it.
* Blank lines are skipped; a trailing delimiter on every line (an empty last column) is dropped; a
  byte-order mark (Excel's UTF-8 CSV) is ignored. Every other row must have as many cells as the
  header (or the first row).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calcium_gnn.errors import InputFileError

__all__ = ["TextTable", "read_text_table", "numbers", "is_number"]

_BY_SUFFIX = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_SNIFFED = "\t,;"


@dataclass(frozen=True)
class TextTable:
    """A delimited table as strings.

    Attributes:
        path: the file it was read from.
        header: (C,) column names (stripped), or None when the file has no header row.
        rows: (R, C) cells as stripped strings, blank lines left out.
        lines: (R,) the 1-based line number of each row in the file (for messages).
        delimiter: the delimiter used.
    """

    path: Path
    header: list[str] | None
    rows: list[list[str]]
    lines: list[int]
    delimiter: str

    @property
    def n_columns(self) -> int:
        """Number of columns C."""
        if self.header is not None:
            return len(self.header)
        return len(self.rows[0]) if self.rows else 0

    def column_name(self, column: int) -> str:
        """The column's header name (quoted), or its 1-based position when there is no header."""
        if self.header is not None and self.header[column]:
            return repr(self.header[column])
        return f"{column + 1}"


def is_number(text: str) -> bool:
    """True when ``text`` parses as a float (``nan`` and ``inf`` included)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _delimiter(path: Path, sample: str) -> str:
    suffix = path.suffix.lower()
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    try:
        return csv.Sniffer().sniff(sample, delimiters=_SNIFFED).delimiter
    except csv.Error:
        first = next((line for line in sample.splitlines() if line.strip()), "")
        counts = {d: first.count(d) for d in _SNIFFED}
        best = max(counts, key=counts.get)
        if counts[best] == 0:
            return ","  # a single column: any delimiter reads it
        return best


def read_text_table(path: str | Path, *, header: bool | None = None) -> TextTable:
    """Read a delimited text table (module docstring) as strings.

    Args:
        path: a CSV / TSV / text file. Never modified.
        header: None detects the header row (the first row holds a cell that is not a number);
            True / False force it.

    Returns:
        A :class:`TextTable` with at least one data row.

    Raises:
        InputFileError: naming the file: missing, a folder, empty, not text, no data rows, or a row
            with the wrong number of cells (naming its line).
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "file not found")
    if path.is_dir():
        raise InputFileError(path, "is a folder, expected a CSV or TSV table")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputFileError(path, "not a text table (the file is binary or not UTF-8 text)") from None
    except OSError as err:
        raise InputFileError(path, f"cannot read the file ({err.strerror})") from None
    if not text.strip():
        raise InputFileError(path, "file is empty: expected a CSV or TSV table")
    delimiter = _delimiter(path, text[:65536])
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    rows: list[list[str]] = []
    lines: list[int] = []
    for row in reader:
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        rows.append(cells)
        lines.append(reader.line_num)
    if header is None:
        header = any(not is_number(cell) for cell in rows[0])
    names = rows.pop(0) if header else None
    if header:
        lines.pop(0)
    if not rows:
        raise InputFileError(path, "no data rows (only a header)")
    everything = ([names] if names is not None else []) + rows
    if all(len(row) > 1 and row[-1] == "" for row in everything):
        everything = [row[:-1] for row in everything]
        names = everything[0] if names is not None else None
        rows = everything[1:] if names is not None else everything
    width = len(names) if names is not None else len(rows[0])
    for row, line in zip(rows, lines, strict=True):
        if len(row) != width:
            what = "the header" if names is not None else "the first row"
            raise InputFileError(
                path, f"line {line} has {len(row)} cells, {what} has {width} (delimiter {delimiter!r})"
            )
    return TextTable(path, names, rows, lines, delimiter)


def numbers(table: TextTable, columns: Sequence[int], what: str = "value") -> np.ndarray:
    """The cells of ``columns`` as float64, every row.

    Args:
        table: the table.
        columns: the column indices to convert, in the order wanted.
        what: what a cell holds, for messages ("trace value", "x coordinate").

    Returns:
        (R, len(columns)) float64.

    Raises:
        InputFileError: naming the file, the line and the column of the first cell that is not a
            number, or that is NaN / Inf (empty cells included).
    """
    block = [[row[c] for c in columns] for row in table.rows]
    try:
        values = np.asarray(block, dtype=np.float64).reshape(len(block), len(columns))
    except ValueError:
        values = None
    if values is None:
        for row, line in zip(block, table.lines, strict=True):
            for cell, c in zip(row, columns, strict=True):
                if not is_number(cell):
                    hint = " (a decimal comma? use '.' for decimals)" if _decimal_comma(cell) else ""
                    shown = "an empty cell" if cell == "" else f"{cell!r}"
                    raise InputFileError(
                        table.path,
                        f"line {line}, column {table.column_name(c)}: {shown} is not a number{hint}",
                    )
        raise InputFileError(table.path, f"cannot read the {what}s as numbers")  # pragma: no cover
    bad = ~np.isfinite(values)
    if bad.any():
        r, k = (int(i) for i in np.argwhere(bad)[0])
        raise InputFileError(
            table.path,
            f"line {table.lines[r]}, column {table.column_name(columns[k])}: "
            f"{what} is {table.rows[r][columns[k]]!r} (NaN or Inf values are not allowed)",
        )
    return values


def _decimal_comma(cell: str) -> bool:
    """'1,5' or '-0,25': a number written with a decimal comma."""
    head, _, tail = cell.partition(",")
    if not tail:
        return False
    try:
        return math.isfinite(float(f"{head}.{tail}"))
    except ValueError:
        return False
