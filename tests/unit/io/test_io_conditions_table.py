"""The design table of a multi-dish experiment: paths resolved against the table, plates, covariates,
and errors that name the table, the line and the column."""

from __future__ import annotations

from pathlib import Path

import pytest

from calcium_gnn.errors import InputFileError
from calcium_gnn.io.conditions_table import read_conditions_table


@pytest.fixture()
def dishes(tmp_path: Path) -> Path:
    for name in ("a.tif", "b.pt", "c.tif"):
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def test_rows_give_resolved_paths_conditions_plates_and_covariates(dishes: Path) -> None:
    table = dishes / "design.csv"
    table.write_text("Path,Condition,Batch,DIV\na.tif,control,p1,12\nb.pt,CBX 50uM,p1,13\n"
                     f"{dishes / 'c.tif'},CBX 50uM,,14\n")
    before = table.read_bytes()
    rows = read_conditions_table(table)
    assert [r.path for r in rows] == [(dishes / n).resolve() for n in ("a.tif", "b.pt", "c.tif")]
    assert [r.condition for r in rows] == ["control", "CBX 50uM", "CBX 50uM"]
    assert [r.plate for r in rows] == ["p1", "p1", None]  # an empty plate cell: a plate of its own
    assert [r.covariates for r in rows] == [{"DIV": 12.0}, {"DIV": 13.0}, {"DIV": 14.0}]
    assert [r.is_graph for r in rows] == [False, True, False]
    assert [r.line for r in rows] == [2, 3, 4]
    assert table.read_bytes() == before


def test_a_table_without_plates_has_none(dishes: Path) -> None:
    table = dishes / "design.tsv"
    table.write_text("path\tcondition\na.tif\tx\nc.tif\ty\n")
    assert [r.plate for r in read_conditions_table(table)] == [None, None]


@pytest.mark.parametrize(("content", "message"), [
    ("path,treatment\na.tif,x\n", "no 'condition' column (columns: path, treatment)"),
    ("file,condition\na.tif,x\n", "no 'path' column"),
    ("path,condition\na.tif,x\nmissing.tif,y\n", "line 3: "),
    ("path,condition\na.tif,x\na.tif,y\n", "line 3: "),
    ("path,condition,density\na.tif,x,high\nc.tif,y,2\n", "line 2, column 'density': 'high' is not a number"),
    ("path,condition\na.tif,\n", "line 2: the 'condition' cell is empty"),
    ("path,condition,condition\na.tif,x,y\n", "column 'condition' appears more than once"),
])
def test_bad_tables_name_the_table_and_the_problem(dishes: Path, content: str, message: str) -> None:
    table = dishes / "design.csv"
    table.write_text(content)
    with pytest.raises(InputFileError) as err:
        read_conditions_table(table)
    assert str(err.value).startswith(str(table)) and message in str(err.value)


def test_missing_dish_and_duplicate_are_explained(dishes: Path) -> None:
    table = dishes / "design.csv"
    table.write_text("path,condition\na.tif,x\nmissing.tif,y\n")
    with pytest.raises(InputFileError, match="missing.tif does not exist"):
        read_conditions_table(table)
    table.write_text("path,condition\na.tif,x\n./a.tif,y\n")
    with pytest.raises(InputFileError, match="listed twice \\(also on line 2\\)"):
        read_conditions_table(table)


def test_a_written_table_reads_back_and_is_never_overwritten(dishes: Path) -> None:
    from calcium_gnn.errors import OutputError
    from calcium_gnn.io.conditions_table import Dish, write_conditions_table

    rows = [Dish((dishes / "a.tif").resolve(), "ctrl", "p1", {"DIV": 12.0}),
            Dish((dishes / "b.pt").resolve(), "drug, 5 uM", None, {"DIV": 14.5})]
    table = write_conditions_table(rows, dishes / "design.csv")
    assert table.read_text().splitlines()[1] == "a.tif,ctrl,p1,12.0"
    back = read_conditions_table(table)
    assert [(r.path, r.condition, r.plate, r.covariates) for r in back] == [
        (r.path, r.condition, r.plate, r.covariates) for r in rows]
    with pytest.raises(OutputError, match="never overwritten"):
        write_conditions_table(rows, table)
