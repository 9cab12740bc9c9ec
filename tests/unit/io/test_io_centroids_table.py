"""read_centroids: x, y columns in any case, optional id, other columns ignored; bad input named."""

from __future__ import annotations

import numpy as np
import pytest

from calcium_gnn.errors import InputFileError
from calcium_gnn.io.centroids_table import read_centroids


def test_x_y_and_default_ids(tmp_path) -> None:
    (tmp_path / "c.csv").write_text("x,y\n1.5,2\n10,20.25\n")
    cells = read_centroids(tmp_path / "c.csv")
    np.testing.assert_array_equal(cells.xy, [[1.5, 2.0], [10.0, 20.25]])
    assert cells.cell_ids.tolist() == [1, 2]


def test_id_column_and_extra_columns(tmp_path) -> None:
    # an ImageJ-like results table: blank index column, text Label-free extras, X/Y in capitals
    (tmp_path / "c.tsv").write_text(
        " \tArea\tX\tY\tcell_id\tnote\n1\t30\t5\t6\t12\tround\n2\t31\t7\t8\t4\tflat\n"
    )
    cells = read_centroids(tmp_path / "c.tsv")
    assert cells.cell_ids.tolist() == [12, 4]
    np.testing.assert_array_equal(cells.xy, [[5.0, 6.0], [7.0, 8.0]])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1,2\n3,4\n", "no header"),
        ("x,z\n1,2\n", "no column named y"),
        ("x,y\n1,a\n", r"line 2, column 'y': 'a' is not a number"),
        ("x,y\n1,-2\n", "negative coordinate"),
        ("x,y,id\n1,2,1\n3,4,1\n", "cell id 1 appears more than once"),
        ("x,y,id\n1,2,0\n", "is not a positive integer"),
        ("x,y\n1,2\n1,2\n", "cells share the centroid"),
        ("x,y,X\n1,2,3\n", "several columns named 'x'"),
    ],
)
def test_bad_centroid_tables(tmp_path, text, problem) -> None:
    (tmp_path / "c.csv").write_text(text)
    with pytest.raises(InputFileError, match=problem):
        read_centroids(tmp_path / "c.csv")
