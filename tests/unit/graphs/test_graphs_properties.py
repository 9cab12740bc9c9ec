"""Property-based tests of the graph builder on random label images (hypothesis).

For random Voronoi-like cultures (24-40 px, 1-14 cells, some cells dropped to background, membranes
of 0-2 px between cells, non-consecutive ids), :func:`calcium_gnn.graphs.build.build_graph`:

* is symmetric, has no self loops and no duplicate edges (what ``aggr="mean"`` relies on);
* has exactly the edges and ``l_ij`` of a brute-force count written as a plain double loop over
  pixels, following the documented estimator of :mod:`calcium_gnn.graphs.adjacency`: after gap
  closing, ``l_ij = pi/8 * sum over the four directions (0, pi/4, pi/2, 3pi/4) of d_theta * n_theta``
  with ``d_theta = 1, 1/sqrt(2), 1, 1/sqrt(2)`` and ``n_theta`` the number of neighbouring pixel
  pairs in that direction labelled ``{i, j}``;
* has ``u_ij`` equal to the distance of the two cells' pixel centroids.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from calcium_gnn.graphs.adjacency import close_gaps
from calcium_gnn.graphs.build import build_graph

#: (row step, column step, line spacing d_theta) of the four Crofton directions, written out here
#: independently of the module's constant
DIRECTIONS = ((0, 1, 1.0), (1, 0, 1.0), (1, 1, 1.0 / math.sqrt(2.0)), (1, -1, 1.0 / math.sqrt(2.0)))


@st.composite
def label_images(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """A random label image and the membrane width (0-2 px) drawn between its cells."""
    height = draw(st.integers(24, 40))
    width = draw(st.integers(24, 40))
    n_seeds = draw(st.integers(1, 14))
    seeds = draw(st.lists(st.tuples(st.integers(0, height - 1), st.integers(0, width - 1)),
                          min_size=n_seeds, max_size=n_seeds))
    rows, cols = np.mgrid[0:height, 0:width]
    dist = np.stack([(rows - r) ** 2 + (cols - c) ** 2 for r, c in seeds])
    labels = dist.argmin(axis=0) + 1  # Voronoi cells 1..n_seeds
    gap = draw(st.integers(0, 2))
    if gap:
        # a membrane: pixels with a 4-neighbour of a higher label (gap 1) or of any other label (gap 2)
        other = np.zeros_like(labels, dtype=bool)
        for axis in (0, 1):
            for shift in (1, -1):
                neighbour = np.roll(labels, shift, axis=axis)
                valid = np.ones_like(other)
                if axis == 0:
                    valid[0 if shift == 1 else -1, :] = False
                else:
                    valid[:, 0 if shift == 1 else -1] = False
                differs = (neighbour > labels) if gap == 1 else (neighbour != labels)
                other |= differs & valid
        labels = np.where(other, 0, labels)
    dropped = draw(st.sets(st.integers(1, n_seeds), max_size=n_seeds // 3))
    labels[np.isin(labels, list(dropped))] = 0
    scale = draw(st.sampled_from([1, 3, 1000]))  # non-consecutive ids
    return (labels * scale).astype(np.int32), gap


def brute_force_borders(labels: np.ndarray) -> dict[tuple[int, int], float]:
    """``{(id_a, id_b): l_ab}`` for ``id_a < id_b`` by a double loop over pixels (module docstring)."""
    height, width = labels.shape
    lengths: dict[tuple[int, int], float] = {}
    for r in range(height):
        for c in range(width):
            a = int(labels[r, c])
            if a == 0:
                continue
            for dr, dc, spacing in DIRECTIONS:
                rr, cc = r + dr, c + dc
                if not (0 <= rr < height and 0 <= cc < width):
                    continue
                b = int(labels[rr, cc])
                if b == 0 or b == a:
                    continue
                key = (min(a, b), max(a, b))
                lengths[key] = lengths.get(key, 0.0) + math.pi / 8.0 * spacing
    return lengths


def brute_force_centroids(labels: np.ndarray) -> dict[int, tuple[float, float]]:
    """``{id: (x, y)}``: the mean column and row of each cell's pixels, by a loop over pixels."""
    sums: dict[int, list[float]] = {}
    for r in range(labels.shape[0]):
        for c in range(labels.shape[1]):
            a = int(labels[r, c])
            if a:
                s = sums.setdefault(a, [0.0, 0.0, 0.0])
                s[0] += c
                s[1] += r
                s[2] += 1
    return {a: (s[0] / s[2], s[1] / s[2]) for a, s in sums.items()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_images(), st.sampled_from([0, 1, 2]))
def test_graph_is_symmetric_simple_and_matches_the_brute_force(image: tuple[np.ndarray, int],
                                                               max_gap: int) -> None:
    labels, _ = image
    ids = np.unique(labels[labels > 0])
    assume(ids.size >= 1)
    traces = np.zeros((ids.size, 3), dtype=np.float32)
    data = build_graph(labels, traces, dt=1.0, min_shared_border=0.0, max_gap=max_gap)

    src, dst = data.edge_index.tolist()
    pairs = list(zip(src, dst, strict=True))
    assert all(a != b for a, b in pairs), "self loop"
    assert len(set(pairs)) == len(pairs), "duplicate edge"
    assert set(pairs) == {(b, a) for a, b in pairs}, "not symmetric"

    cell_id = data.cell_id.tolist()
    assert cell_id == ids.tolist()
    expected = brute_force_borders(close_gaps(labels, max_gap))
    got: dict[tuple[int, int], float] = {}
    l_of: dict[tuple[int, int], float] = {}
    for e, (a, b) in enumerate(pairs):
        l_of[(a, b)] = float(data.l[e])
        if cell_id[a] < cell_id[b]:
            got[(cell_id[a], cell_id[b])] = float(data.l[e])
    assert set(got) == set(expected)
    for key, length in expected.items():
        assert math.isclose(got[key], length, rel_tol=1e-5), (key, got[key], length)
    assert all(math.isclose(l_of[(a, b)], l_of[(b, a)]) for a, b in pairs), "l_ij != l_ji"

    centroid = brute_force_centroids(labels)
    for e, (a, b) in enumerate(pairs):
        (xa, ya), (xb, yb) = centroid[cell_id[a]], centroid[cell_id[b]]
        assert math.isclose(float(data.u[e]), math.hypot(xa - xb, ya - yb), rel_tol=1e-5, abs_tol=1e-5)
        assert math.isclose(float(data.edge_attr[e, 0]), float(data.u[e]) * float(data.l[e]), rel_tol=1e-5)


@settings(max_examples=20, deadline=None)
@given(label_images())
def test_without_gap_closing_the_brute_force_runs_on_the_raw_labels(image: tuple[np.ndarray, int]) -> None:
    """max_gap = 0: no pixel changes owner, so cells separated by any membrane are never adjacent and
    ``l_ij`` is the plain Crofton count on the user's labels."""
    labels, gap = image
    ids = np.unique(labels[labels > 0])
    assume(ids.size >= 1)
    data = build_graph(labels, np.zeros((ids.size, 2), dtype=np.float32), dt=1.0, min_shared_border=0.0,
                       max_gap=0)
    expected = brute_force_borders(labels)
    if gap == 2:
        assert expected == {} and data.edge_index.shape[1] == 0  # a 2 px membrane everywhere
    cell_id = data.cell_id.tolist()
    got = {(cell_id[a], cell_id[b]): float(data.l[e])
           for e, (a, b) in enumerate(data.edge_index.t().tolist()) if cell_id[a] < cell_id[b]}
    assert got.keys() == expected.keys()
    assert all(math.isclose(got[k], expected[k], rel_tol=1e-5) for k in expected)


@settings(max_examples=20, deadline=None)
@given(label_images(), st.floats(0.0, 12.0))
def test_min_shared_border_keeps_exactly_the_long_borders(image: tuple[np.ndarray, int],
                                                          threshold: float) -> None:
    labels, _ = image
    ids = np.unique(labels[labels > 0])
    assume(ids.size >= 1)
    data = build_graph(labels, np.zeros((ids.size, 2), dtype=np.float32), dt=1.0,
                       min_shared_border=threshold, max_gap=1)
    expected = {k for k, v in brute_force_borders(close_gaps(labels, 1)).items() if v >= threshold}
    cell_id = data.cell_id.tolist()
    got = {(cell_id[a], cell_id[b]) for a, b in data.edge_index.t().tolist() if cell_id[a] < cell_id[b]}
    # borders within float rounding of the threshold may go either way
    near = {k for k, v in brute_force_borders(close_gaps(labels, 1)).items() if abs(v - threshold) < 1e-9}
    assert got - near == expected - near
