"""Lab inputs end to end: every route, from files written in its real format for a synthetic culture
with known labels and traces, gives the graph of the true labels (cells, traces, adjacency, dt); and
``train()`` runs from a traces CSV and a centroids CSV (``data=lab``)."""

from __future__ import annotations

import csv
import datetime
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import roifile
import scipy.sparse as sp
import tifffile
import torch

from calcium_gnn.data.lab_inputs import load_lab_inputs
from calcium_gnn.data.sources import load_cell_graph
from calcium_gnn.data.synthetic import SyntheticCulture, make_culture
from calcium_gnn.graphs.build import build_graph
from calcium_gnn.graphs.geometry import cell_polygons
from calcium_gnn.io.graph_files import export_traces_csv, load_graph, save_graph
from calcium_gnn.train import train

SIZE, N_CELLS, N_FRAMES, DT = 160, 20, 60, 10.0


@pytest.fixture(scope="module")
def culture() -> SyntheticCulture:
    return make_culture(seed=3, n_cells=N_CELLS, size=SIZE, n_frames=N_FRAMES, dt=DT, render=False)


@pytest.fixture(scope="module")
def reference(culture):
    """The graph of the true labels and traces: what every route must reproduce."""
    return build_graph(culture.labels, culture.traces, dt=DT)


def _edges(data) -> set[tuple[int, int]]:
    ids = data.cell_id.tolist()
    return {(ids[a], ids[b]) for a, b in data.edge_index.t().tolist()}


def _assert_same_graph(data, reference, *, atol: float = 1e-5, geometry: bool = True) -> None:
    assert data.cell_id.tolist() == reference.cell_id.tolist()
    np.testing.assert_allclose(data.x.numpy(), reference.x.numpy(), atol=atol)
    assert data.dt == pytest.approx(DT)
    assert data.t.tolist() == pytest.approx(reference.t.tolist())
    assert _edges(data) == _edges(reference)
    assert data.touches_edge.tolist() == reference.touches_edge.tolist()
    if geometry:
        np.testing.assert_allclose(data.l.numpy(), reference.l.numpy(), rtol=1e-6)
        np.testing.assert_allclose(data.u.numpy(), reference.u.numpy(), rtol=1e-6)
        np.testing.assert_allclose(data.area.numpy(), reference.area.numpy())


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _imagej_multi_measure(path: Path, traces: np.ndarray, named: bool = False) -> None:
    """ImageJ's Multi Measure results saved as CSV: a blank-named frame-number column, then Mean1..N."""
    names = [f"Mean(cell{i + 1})" if named else f"Mean{i + 1}" for i in range(traces.shape[0])]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([" ", *names])
        for t in range(traces.shape[1]):
            writer.writerow([t + 1, *(f"{v:.9g}" for v in traces[:, t])])


def test_label_tiff_and_traces_csv(tmp_path, culture, reference) -> None:
    tifffile.imwrite(tmp_path / "labels.tif", culture.labels.astype(np.uint16))
    export_traces_csv(reference, tmp_path / "traces.csv")  # cell_id, t_0, t_1, ... (an id column)
    before = _snapshot(tmp_path)
    source = load_lab_inputs(labels=tmp_path / "labels.tif", traces=tmp_path / "traces.csv", dt=DT)
    _assert_same_graph(source.data, reference)
    np.testing.assert_array_equal(source.labels, culture.labels)
    assert source.data.origin == source.origin and str(tmp_path / "labels.tif") in source.origin
    assert _snapshot(tmp_path) == before, "a user file was modified"


def test_cellpose_seg_npy_and_frames_x_cells_tsv(tmp_path, culture, reference) -> None:
    seg = {
        "masks": culture.labels.astype(np.uint16),
        "outlines": np.zeros_like(culture.labels, np.uint16),
        "filename": "culture.tif",
        "diameter": 30.0,
        "chan_choose": [0, 0],
        "ismanual": np.zeros(N_CELLS, bool),
        "flows": [np.zeros((1, SIZE, SIZE, 3), np.uint8), []],
    }
    np.save(tmp_path / "culture_seg.npy", seg, allow_pickle=True)
    with open(tmp_path / "traces.tsv", "w", newline="") as fh:  # a spreadsheet: one column per cell
        writer = csv.writer(fh, delimiter="\t")
        writer.writerow([f"cell {i}" for i in range(1, N_CELLS + 1)])
        writer.writerows(culture.traces.T.tolist())
    source = load_lab_inputs(
        labels=tmp_path / "culture_seg.npy",
        traces=tmp_path / "traces.tsv",
        traces_orientation="frames_x_cells",
        dt=DT,
    )
    _assert_same_graph(source.data, reference)
    assert "Cellpose _seg.npy" in source.origin


@pytest.mark.parametrize("named", [False, True])
def test_imagej_roi_set_and_multi_measure(tmp_path, culture, reference, named) -> None:
    # cell outlines through the pixel-edge midpoints, in ImageJ coordinates (pixel corners at integers)
    rois = [
        roifile.ImagejRoi.frompoints(np.asarray(p.exterior.coords)[:-1] + 0.5, name=f"cell{i + 1}")
        for i, p in enumerate(cell_polygons(culture.labels))
    ]
    roifile.roiwrite(tmp_path / "RoiSet.zip", rois)
    _imagej_multi_measure(tmp_path / "Results.csv", culture.traces, named=named)
    source = load_lab_inputs(
        rois=tmp_path / "RoiSet.zip", traces=tmp_path / "Results.csv", image_shape=[SIZE, SIZE], dt=DT
    )
    np.testing.assert_array_equal(source.labels, culture.labels)  # rasterised exactly
    _assert_same_graph(source.data, reference)
    assert "ImageJ Multi-Measure" in source.origin


def test_single_roi_file(tmp_path, culture) -> None:
    mask = culture.labels == 1
    outline = np.asarray(cell_polygons(mask.astype(np.int32))[0].exterior.coords)[:-1] + 0.5
    roifile.ImagejRoi.frompoints(outline, name="one").tofile(tmp_path / "one.roi")
    np.savetxt(tmp_path / "trace.csv", culture.traces[:1], delimiter=",")
    # two cells are needed for a graph with an edge; one cell is still a valid (edgeless) graph
    source = load_lab_inputs(
        rois=tmp_path / "one.roi", traces=tmp_path / "trace.csv", image_shape=[SIZE, SIZE], dt=DT
    )
    assert source.data.num_nodes == 1 and int(source.data.area[0]) == int(mask.sum())


def test_centroids_give_the_true_tiling(tmp_path, culture, reference) -> None:
    # the synthetic culture is a Lloyd-relaxed Voronoi tiling: its cells' centroids rebuild it
    with open(tmp_path / "centroids.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["cell_id", "x", "y"])
        for cid, (x, y) in zip(culture.cell_ids, culture.centroids, strict=True):
            writer.writerow([int(cid), f"{x:.6f}", f"{y:.6f}"])
    export_traces_csv(reference, tmp_path / "traces.csv")
    source = load_lab_inputs(
        centroids=tmp_path / "centroids.csv", traces=tmp_path / "traces.csv", image_shape=[SIZE, SIZE], dt=DT
    )
    data = source.data
    _assert_same_graph(data, reference, geometry=False)  # no membranes: borders and areas differ
    np.testing.assert_allclose(data.pos.numpy(), culture.centroids, atol=1e-4)  # the given centroids
    # interior cells (every region whole) keep their borders within the membrane's width
    interior = (
        ~reference.touches_edge[reference.edge_index[0]] & ~reference.touches_edge[reference.edge_index[1]]
    )
    np.testing.assert_allclose(data.l[interior].numpy(), reference.l[interior].numpy(), atol=3.0)
    assert data.segmentation["backend"] == "voronoi" and data.segmentation["clipped_cells"] == int(
        reference.touches_edge.sum()
    )


def _suite2p_plane(folder: Path, culture: SyntheticCulture, rng: np.random.Generator) -> None:
    """A suite2p plane as suite2p writes it: np.save of a list of dicts, of the ops dict, and arrays."""
    folder.mkdir(parents=True)
    n_rois = N_CELLS + 2
    stat, fneu = [], rng.normal(100.0, 5.0, size=(n_rois, N_FRAMES)).astype(np.float32)
    f = np.zeros((n_rois, N_FRAMES), np.float32)
    iscell = np.zeros((n_rois, 2), np.float64)
    for r in range(n_rois):
        if r < N_CELLS:
            y, x = np.nonzero(culture.labels == r + 1)
            f[r] = culture.traces[r] + 0.7 * fneu[r]
            iscell[r] = [1.0, 0.95]
        else:  # two rejected ROIs on top of cell 1: ignored, although their lam is larger
            y, x = np.nonzero(culture.labels == 1)
            iscell[r] = [0.0, 0.1]
        lam = np.full(y.size, 1.0 if r < N_CELLS else 5.0, np.float32)
        stat.append(
            {
                "ypix": y.astype(np.int32),
                "xpix": x.astype(np.int32),
                "lam": lam,
                "med": [float(np.median(y)), float(np.median(x))],
                "npix": int(y.size),
                "overlap": np.zeros(y.size, bool),
                "radius": 8.0,
                "compact": 1.1,
                "skew": np.float32(0.5),
            }
        )
    np.save(folder / "stat.npy", np.array(stat, dtype=object))
    np.save(folder / "F.npy", f)
    np.save(folder / "Fneu.npy", fneu)
    np.save(folder / "iscell.npy", iscell)
    np.save(folder / "spks.npy", np.zeros_like(f))
    ops = {
        "Ly": SIZE,
        "Lx": SIZE,
        "fs": 1.0 / DT,
        "nframes": N_FRAMES,
        "neucoeff": 0.7,
        "tau": 1.0,
        "date_proc": datetime.datetime(2025, 1, 2, 3, 4, 5),
        "filelist": ["culture.tif"],
        "save_path": str(folder),
        "meanImg": np.zeros((SIZE, SIZE), np.float32),
        "xrange": [0, SIZE],
    }
    np.save(folder / "ops.npy", ops)


def test_suite2p_folder(tmp_path, culture, reference) -> None:
    _suite2p_plane(tmp_path / "suite2p" / "plane0", culture, np.random.default_rng(0))
    before = _snapshot(tmp_path)
    source = load_lab_inputs(suite2p=tmp_path / "suite2p")  # the plane is found, dt comes from fs
    _assert_same_graph(source.data, reference, atol=5e-5)  # float32 F - 0.7 Fneu
    assert source.data.segmentation["dt_source"].startswith("fs in ")
    assert _snapshot(tmp_path) == before


def _caiman_file(path: Path, culture: SyntheticCulture, rng: np.random.Generator) -> None:
    """An HDF5 file laid out as CaImAn's ``cnm.save``: estimates and params groups, A as CSC parts,
    None as the string 'NoneType'; footprints are smooth blobs, largest inside their cell."""
    from scipy.ndimage import gaussian_filter

    columns = []
    for k in range(N_CELLS):
        cell = (culture.labels == k + 1).astype(np.float64)
        blob = gaussian_filter(cell, 1.0) * cell + 0.05 * gaussian_filter(cell, 3.0)  # tails spill over
        blob[blob < 1e-3] = 0.0
        columns.append(blob.ravel(order="F") / np.linalg.norm(blob))
    a = sp.csc_matrix(np.stack(columns, axis=1).astype(np.float32))
    with h5py.File(path, "w") as f:
        est = f.create_group("estimates")
        for key in ("data", "indices", "indptr"):
            est[f"A/{key}"] = getattr(a, key)
        est["A/shape"] = np.array(a.shape)
        est["C"] = culture.traces.astype(np.float32)
        est["YrA"] = rng.normal(size=culture.traces.shape).astype(np.float32)
        est["S"] = np.zeros_like(culture.traces, np.float32)
        est["b"] = np.ones((SIZE * SIZE, 1), np.float32)
        est["f"] = np.ones((1, N_FRAMES), np.float32)
        est["dims"] = np.array([SIZE, SIZE])
        est["idx_components"] = np.arange(N_CELLS)
        est["idx_components_bad"] = np.array([], dtype=np.int64)
        est["F_dff"] = "NoneType"
        f["params/data/fr"] = 1.0 / DT
        f["params/data/dims"] = np.array([SIZE, SIZE])
        f["params/data/dxy"] = np.array([1.0, 1.0])
        f["params/data/fnames"] = np.array([b"culture.tif"])
        f["params/init/K"] = 4
        f["dims"] = np.array([SIZE, SIZE])
        f["dview"] = "NoneType"
        f["remove_very_bad_comps"] = False


def test_caiman_hdf5(tmp_path, culture, reference) -> None:
    _caiman_file(tmp_path / "results.hdf5", culture, np.random.default_rng(1))
    source = load_lab_inputs(caiman=tmp_path / "results.hdf5")
    # thresholded at 0.2 x each footprint's maximum, the faint tails are dropped: the true cells
    np.testing.assert_array_equal(source.labels, culture.labels)
    _assert_same_graph(source.data, reference)


def test_a_lab_graph_saves_and_loads_with_its_origin(tmp_path, culture, reference) -> None:
    _caiman_file(tmp_path / "results.hdf5", culture, np.random.default_rng(1))
    source = load_lab_inputs(caiman=tmp_path / "results.hdf5", pixel_size=0.5)
    save_graph(source.data, tmp_path / "graph.pt")
    back = load_graph(tmp_path / "graph.pt")
    assert back.origin == source.origin and back.unit == "um"
    assert torch.equal(back.x, source.data.x)
    np.testing.assert_allclose(back.u.numpy(), reference.u.numpy() * 0.5, rtol=1e-6)


def test_load_cell_graph_routes_a_composed_lab_config(compose_train, tmp_path, culture, reference) -> None:
    tifffile.imwrite(tmp_path / "labels.tif", culture.labels.astype(np.uint16))
    np.savetxt(tmp_path / "traces.csv", culture.traces, delimiter=",")
    cfg = compose_train(
        "data=lab",
        f"data.labels={tmp_path / 'labels.tif'}",
        f"data.traces={tmp_path / 'traces.csv'}",
        f"data.dt={DT}",
        small=False,
    )
    _assert_same_graph(load_cell_graph(cfg.data).data, reference)
    assert "synthetic" in compose_train().data  # data=synthetic stays the default


def test_train_from_traces_csv_and_centroids_csv(compose_train, tmp_path, culture, reference) -> None:
    with open(tmp_path / "centroids.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["x", "y"])  # no id column: row i is cell i + 1
        writer.writerows(culture.centroids.tolist())
    export_traces_csv(reference, tmp_path / "traces.csv")
    cfg = compose_train(
        "experiment=setup1_crlsm",
        "data=lab",
        f"data.centroids={tmp_path / 'centroids.csv'}",
        f"data.traces={tmp_path / 'traces.csv'}",
        f"data.dt={DT}",
        f"data.image_shape=[{SIZE},{SIZE}]",
        small=False,
    )
    results = train(cfg)
    on_disk = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert "Voronoi cells of centroids" in on_disk["extra"]["data"]
    # the setup I cells are the culture's interior cells, and the paper's CRLSM finds its k
    interior = reference.cell_id[~reference.touches_edge].tolist()
    assert sorted(int(c) for c in results["modelled_cells"]) == interior
    assert results["k"] == pytest.approx(culture.k, rel=0.05)
