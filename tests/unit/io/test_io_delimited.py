"""read_text_table / numbers: delimiter by suffix or sniffed, header detection, errors naming the line."""

from __future__ import annotations

import numpy as np
import pytest

from calcium_gnn.errors import InputFileError
from calcium_gnn.io.delimited import numbers, read_text_table


def test_csv_with_header(tmp_path) -> None:
    (tmp_path / "t.csv").write_text("cell_id,0,10\n1,0.5,0.25\n2,1.5,2\n")
    table = read_text_table(tmp_path / "t.csv")
    assert table.header == ["cell_id", "0", "10"] and table.delimiter == ","
    assert table.rows == [["1", "0.5", "0.25"], ["2", "1.5", "2"]] and table.lines == [2, 3]
    np.testing.assert_array_equal(numbers(table, [1, 2]), [[0.5, 0.25], [1.5, 2.0]])


def test_numeric_first_row_is_data_unless_forced(tmp_path) -> None:
    (tmp_path / "t.csv").write_text("1,2\n3,4\n")
    assert read_text_table(tmp_path / "t.csv").header is None
    forced = read_text_table(tmp_path / "t.csv", header=True)
    assert forced.header == ["1", "2"] and forced.rows == [["3", "4"]]


@pytest.mark.parametrize(
    ("name", "text", "delimiter"),
    [
        ("t.tsv", "a\tb\n1\t2\n", "\t"),
        ("t.txt", "a;b\n1;2\n3;4\n", ";"),
        ("Results.xls", " \tMean1\tMean2\n1\t2\t3\n2\t4\t5\n", "\t"),  # ImageJ's tab-separated .xls
    ],
)
def test_delimiter_from_suffix_or_sniffed(tmp_path, name, text, delimiter) -> None:
    (tmp_path / name).write_text(text)
    assert read_text_table(tmp_path / name).delimiter == delimiter


def test_bom_blank_lines_and_trailing_delimiter(tmp_path) -> None:
    (tmp_path / "t.csv").write_text("\ufeffx,y,\n\n1,2,\n3,4,\n\n", encoding="utf-8")
    table = read_text_table(tmp_path / "t.csv")
    assert table.header == ["x", "y"] and table.rows == [["1", "2"], ["3", "4"]] and table.lines == [3, 4]


def test_ragged_row_names_its_line(tmp_path) -> None:
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3\n")
    with pytest.raises(InputFileError, match=r"t\.csv: line 3 has 1 cells, the header has 2"):
        read_text_table(tmp_path / "t.csv")


def test_non_numeric_and_nan_cells_are_named(tmp_path) -> None:
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(InputFileError, match=r"line 3, column 'b': 'oops' is not a number"):
        numbers(read_text_table(tmp_path / "t.csv"), [0, 1])
    (tmp_path / "n.csv").write_text("a,b\n1,nan\n")
    with pytest.raises(InputFileError, match=r"line 2, column 'b': value is 'nan' \(NaN or Inf"):
        numbers(read_text_table(tmp_path / "n.csv"), [0, 1])
    (tmp_path / "e.csv").write_text("a,b\n1,\n2,3\n")
    with pytest.raises(InputFileError, match="an empty cell is not a number"):
        numbers(read_text_table(tmp_path / "e.csv"), [0, 1])


def test_decimal_comma_gets_a_hint(tmp_path) -> None:
    (tmp_path / "t.txt").write_text("a;b\n1,5;2,25\n3,0;4,5\n")
    with pytest.raises(InputFileError, match="decimal comma"):
        numbers(read_text_table(tmp_path / "t.txt"), [0, 1])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "file is empty"),
        (b"\n  \n", "file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not a text table"),
        (b"a,b\n", "no data rows"),
    ],
)
def test_unusable_files(tmp_path, content, problem) -> None:
    (tmp_path / "t.csv").write_bytes(content)
    with pytest.raises(InputFileError, match=problem):
        read_text_table(tmp_path / "t.csv")


def test_missing_file_and_folder(tmp_path) -> None:
    with pytest.raises(InputFileError, match="file not found"):
        read_text_table(tmp_path / "nope.csv")
    with pytest.raises(InputFileError, match="is a folder"):
        read_text_table(tmp_path)
