"""read_traces_table: orientations, id column, index columns, ImageJ Multi-Measure, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from calcium_gnn.errors import ConfigError, InputFileError
from calcium_gnn.io.traces_table import read_traces_table

TRACES = np.array([[0.1, 0.2, 0.3], [1.1, 1.2, 1.3]])  # 2 cells x 3 frames


def _write(path, rows) -> None:
    path.write_text("\n".join(",".join(str(v) for v in row) for row in rows) + "\n")


def test_cells_x_frames_without_header(tmp_path) -> None:
    _write(tmp_path / "t.csv", TRACES)
    table = read_traces_table(tmp_path / "t.csv")
    np.testing.assert_array_equal(table.traces, TRACES)
    assert table.cell_ids is None and table.orientation == "cells_x_frames" and not table.imagej
    assert table.other_axis == 3


def test_frames_x_cells(tmp_path) -> None:
    _write(tmp_path / "t.csv", [["a", "b"], *TRACES.T])
    table = read_traces_table(tmp_path / "t.csv", orientation="frames_x_cells")
    np.testing.assert_array_equal(table.traces, TRACES)
    assert (table.n_cells, table.n_frames) == (2, 3)


@pytest.mark.parametrize("name", ["cell_id", "ID", " Label "])
def test_id_column_maps_rows(tmp_path, name) -> None:
    _write(tmp_path / "t.csv", [[name, "t0", "t1", "t2"], [7, *TRACES[0]], [3, *TRACES[1]]])
    table = read_traces_table(tmp_path / "t.csv")
    assert table.cell_ids.tolist() == [7, 3] and table.other_axis is None
    np.testing.assert_array_equal(table.traces, TRACES)


def test_id_column_with_frames_x_cells_is_a_contradiction(tmp_path) -> None:
    _write(tmp_path / "t.csv", [["cell_id", "a", "b"], [1, 2, 3], [2, 4, 5]])
    with pytest.raises(ConfigError, match="data.traces_orientation: .* id column 'cell_id'"):
        read_traces_table(tmp_path / "t.csv", orientation="frames_x_cells")


def test_empty_named_column_is_an_index(tmp_path) -> None:
    # pandas' df.to_csv() of a frames x cells frame: an unnamed index column first
    _write(tmp_path / "t.csv", [["", "0", "1"], [0, *TRACES[:, 0]], [1, *TRACES[:, 1]], [2, *TRACES[:, 2]]])
    table = read_traces_table(tmp_path / "t.csv", orientation="frames_x_cells")
    np.testing.assert_array_equal(table.traces, TRACES)


@pytest.mark.parametrize("names", [["Mean1", "Mean2"], ["Mean(cell a)", "Mean(b)"], ["mean 1", "MEAN 2"]])
def test_imagej_multi_measure_is_recognised(tmp_path, names) -> None:
    # ImageJ: a blank-named frame-number column, other measurements around the Mean columns
    header = [" ", "Area1", names[0], "Min1", "Area2", names[1], "Min2"]
    rows = [[t + 1, 50, TRACES[0, t], 0, 60, TRACES[1, t], 0] for t in range(3)]
    _write(tmp_path / "Results.csv", [header, *rows])
    table = read_traces_table(tmp_path / "Results.csv")
    assert table.imagej and table.orientation == "frames_x_cells"
    np.testing.assert_array_equal(table.traces, TRACES)
    with pytest.raises(ConfigError, match="ImageJ Multi-Measure result .* not cells_x_frames"):
        read_traces_table(tmp_path / "Results.csv", orientation="cells_x_frames")


def test_unknown_orientation(tmp_path) -> None:
    _write(tmp_path / "t.csv", TRACES)
    with pytest.raises(ConfigError, match="data.traces_orientation: unknown orientation 'rows'"):
        read_traces_table(tmp_path / "t.csv", orientation="rows")


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ([[1, 2, 3], [3, 4, "x"]], r"line 2, column 3: 'x' is not a number"),
        ([["id", "a", "b"], [1, 2, "NaN"]], r"line 2, column 'b': trace value is 'NaN'"),
        ([["id", "a", "b"], [1.5, 2, 3]], r"line 2: cell id '1.5' is not a positive integer"),
        ([["id", "a", "b"], [0, 2, 3]], r"line 2: cell id '0' is not a positive integer"),
        ([["id", "a", "b"], [4, 2, 3], [4, 5, 6]], "cell id 4 appears 2 times"),
        ([["id", "label", "a"], [1, 2, 3]], "several id columns"),
        ([["id"], [1]], "no trace columns"),
        ([[1], [2]], "only 1 frame per trace"),
    ],
)
def test_bad_tables(tmp_path, rows, problem) -> None:
    _write(tmp_path / "t.csv", rows)
    with pytest.raises(InputFileError, match=problem) as err:
        read_traces_table(tmp_path / "t.csv")
    assert str(tmp_path / "t.csv") in str(err.value)
