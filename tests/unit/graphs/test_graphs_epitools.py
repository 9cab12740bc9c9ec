"""Neighbour counts of our graph built from EpiTools' own labels against EpiTools' stats table.

Data: the EpiTools sample epithelium (BSD-3, see SOURCE.md next to the files): a (199, 206) label
image with 94 tightly packed cells and a CSV whose ``label`` column is the cell's value in that
image and ``neighbours`` its neighbour count. EpiTools counts every cell in contact (no minimum
border length), so the comparison uses ``min_shared_border=0``; with the paper's 5 px threshold
the short borders of these small cells (~100-300 px) drop out by design.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile

from calcium_gnn.graphs.build import build_graph

ROOT = Path(__file__).resolve().parents[3]
CANDIDATES = [ROOT / "tests" / "data" / "epitools", Path("/work/shared/data/external/epitools-epithelium")]
LABELS = "test_image-projected-segmented.tif"
STATS = "test_image-projected-segmented-stats.csv"


def _data_dir() -> Path:
    for folder in CANDIDATES:
        if (folder / LABELS).is_file() and (folder / STATS).is_file():
            return folder
    pytest.skip("EpiTools sample data not found (tests/data/epitools)")


def _neighbour_agreement(min_shared_border: float, max_gap: float = 2) -> float:
    folder = _data_dir()
    labels = tifffile.imread(folder / LABELS)
    with open(folder / STATS, newline="") as fh:
        reference = {int(row["label"]): int(row["neighbours"]) for row in csv.DictReader(fh)}
    n = np.unique(labels[labels > 0]).size
    data = build_graph(labels, np.zeros((n, 2)), dt=1.0, min_shared_border=min_shared_border, max_gap=max_gap)
    degree = np.bincount(data.edge_index[0].numpy(), minlength=n)
    assert sorted(reference) == data.cell_id.tolist()
    return float(np.mean([degree[i] == reference[int(c)] for i, c in enumerate(data.cell_id)]))


def test_neighbour_counts_match_epitools() -> None:
    agreement = _neighbour_agreement(min_shared_border=0.0)
    assert agreement >= 0.85, agreement


def test_the_paper_threshold_prunes_short_borders_of_small_cells() -> None:
    # documents the definitional difference: fewer matching counts with a 5 px minimum border
    assert _neighbour_agreement(min_shared_border=5.0) < _neighbour_agreement(min_shared_border=0.0)
