"""lab_inputs and its dispatch in sources: routes chosen from the keys, traces matched to cells by order or
id, dt from the file or the config, the centroid route's pos / u / touches_edge, and every refusal."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import tifffile
from omegaconf import OmegaConf

from calcium_gnn.data.lab_inputs import GraphOptions, graph_from_centroids, graph_from_labels, load_lab_inputs
from calcium_gnn.data.sources import DATA_KEYS, load_cell_graph
from calcium_gnn.errors import ConfigError, InputFileError, MasksError

TRACES = np.arange(15, dtype=float).reshape(3, 5)  # cells 1, 2, 5 x 5 frames


@pytest.fixture
def files(tmp_path):
    """12 x 30 label image: cells 1, 2, 5 side by side (10 columns each); their traces, cells x frames."""
    labels = np.zeros((12, 30), np.uint16)
    labels[:, :10], labels[:, 10:20], labels[:, 20:] = 1, 2, 5
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    np.savetxt(tmp_path / "traces.csv", TRACES, delimiter=",")
    return tmp_path


def _table(path, rows) -> None:
    path.write_text("\n".join(",".join(str(v) for v in row) for row in rows) + "\n")


def test_labels_route(files) -> None:
    source = graph_from_labels(
        files / "labels.tif", files / "traces.csv", dt=2.0, pixel_size=0.5, options=GraphOptions(max_gap=0)
    )
    data = source.data
    assert data.cell_id.tolist() == [1, 2, 5] and data.x.tolist() == TRACES.tolist()
    assert data.dt == 2.0 and data.t.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert data.unit == "um" and data.u.tolist() == [5.0, 5.0, 5.0, 5.0]  # 10 px centroid spacing x 0.5 um
    assert data.edge_index.tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]
    assert (
        data.origin == source.origin == f"label image {files / 'labels.tif'} + traces {files / 'traces.csv'} "
        "(cells_x_frames)"
    )
    assert data.segmentation["route"] == "labels" and data.segmentation["dt_source"] == "data.dt"


def test_id_column_reorders_rows(files) -> None:
    _table(
        files / "ids.csv",
        [["label", "a", "b", "c", "d", "e"], [5, *TRACES[2]], [1, *TRACES[0]], [2, *TRACES[1]]],
    )
    data = graph_from_labels(files / "labels.tif", files / "ids.csv", dt=1.0).data
    assert data.x.tolist() == TRACES.tolist()


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ([TRACES[0], TRACES[1]], r"2 traces \(rows, cells_x_frames\) but .*labels.tif has 3 cells$"),
        ([["id", "a", "b"], [1, 0, 1], [2, 0, 1]], r"no trace for 1 of the 3 cells .* \(ids 5\)"),
        (
            [["id", "a", "b"], [1, 0, 1], [2, 0, 1], [5, 0, 1], [9, 0, 1]],
            r"1 traces have ids that are not cells .* \(ids 9\)",
        ),
    ],
)
def test_traces_that_do_not_fit_the_cells(files, rows, problem) -> None:
    _table(files / "bad.csv", rows)
    with pytest.raises(InputFileError, match=problem) as err:
        graph_from_labels(files / "labels.tif", files / "bad.csv", dt=1.0)
    assert str(err.value).startswith(str(files / "bad.csv"))


def test_a_transposed_table_gets_a_hint(files) -> None:
    np.savetxt(files / "t.csv", TRACES.T, delimiter=",")  # 5 frames x 3 cells, read as cells x frames
    with pytest.raises(
        InputFileError, match="the table fits frames_x_cells: set data.traces_orientation=frames_x_cells"
    ):
        graph_from_labels(files / "labels.tif", files / "t.csv", dt=1.0)
    data = graph_from_labels(
        files / "labels.tif", files / "t.csv", dt=1.0, traces_orientation="frames_x_cells"
    ).data
    assert data.x.tolist() == TRACES.tolist()


@pytest.mark.parametrize(
    ("kwargs", "key", "problem"),
    [
        ({}, "data", "no lab input"),
        ({"labels": "l.tif", "centroids": "c.csv", "traces": "t.csv"}, "data.centroids", "not both"),
        ({"traces": "t.csv"}, "data.traces", "needs the cells it belongs to"),
        ({"labels": "l.tif"}, "data.traces", "needs a traces table"),
        ({"suite2p": "s2p", "traces": "t.csv"}, "data.traces", "carries its own traces"),
        ({"suite2p": "s2p", "voronoi_clip": 5.0}, "data.voronoi_clip", "not used by data.suite2p"),
        (
            {"labels": "l.tif", "traces": "t.csv", "image_shape": [4, 4]},
            "data.image_shape",
            "not used by data.labels",
        ),
        ({"caiman": "r.h5", "traces_orientation": "cells_x_frames"}, "data.traces_orientation", "not used"),
    ],
)
def test_route_selection_errors(kwargs, key, problem) -> None:
    with pytest.raises(ConfigError, match=problem) as err:
        load_lab_inputs(**kwargs)
    assert err.value.culprit == key


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"dt": None}, "data.dt"),
        ({"dt": -1.0}, "data.dt"),
        ({"dt": 1.0, "pixel_size": 0.0}, "data.pixel_size"),
        ({"dt": 1.0, "traces_orientation": "sideways"}, "data.traces_orientation"),
    ],
)
def test_bad_options(files, kwargs, key) -> None:
    with pytest.raises(ConfigError) as err:
        load_lab_inputs(labels=files / "labels.tif", traces=files / "traces.csv", **kwargs)
    assert err.value.culprit == key


def test_missing_files_are_named(files) -> None:
    with pytest.raises(MasksError, match="nope.tif: file not found"):
        load_lab_inputs(labels=files / "nope.tif", traces=files / "traces.csv", dt=1.0)
    with pytest.raises(InputFileError, match="nope.csv: file not found"):
        load_lab_inputs(labels=files / "labels.tif", traces=files / "nope.csv", dt=1.0)
    with pytest.raises(InputFileError, match="folder not found"):
        load_lab_inputs(suite2p=files / "nope")
    with pytest.raises(InputFileError, match="r.h5: file not found"):
        load_lab_inputs(caiman=files / "r.h5")


def test_centroid_route_uses_the_given_centroids_and_flags_clipped_cells(tmp_path) -> None:
    grid = [(5.3 + 10 * i, 5.3 + 10 * j) for j in range(3) for i in range(3)]
    _table(tmp_path / "c.csv", [["x", "y"], *grid])
    np.savetxt(tmp_path / "t.csv", np.arange(27.0).reshape(9, 3), delimiter=",")
    data = graph_from_centroids(tmp_path / "c.csv", tmp_path / "t.csv", dt=1.0, image_shape=[30, 30]).data
    np.testing.assert_allclose(data.pos.numpy(), grid, atol=1e-5)
    np.testing.assert_allclose(data.u.numpy(), 10.0, rtol=1e-6)  # grid neighbours; diagonals share no border
    np.testing.assert_allclose(data.edge_attr[:, 0].numpy(), (data.u * data.l).numpy())
    assert data.touches_edge.tolist() == [i != 4 for i in range(9)]
    # with a 7.2 px clip the middle cell's 7.07 px vertices stay inside: it is whole, as is its region
    tight = graph_from_centroids(
        tmp_path / "c.csv", tmp_path / "t.csv", dt=1.0, image_shape=[30, 30], voronoi_clip=7.2
    ).data
    assert not tight.touches_edge[4] and tight.segmentation["voronoi_clip"] == 7.2
    clipped = graph_from_centroids(
        tmp_path / "c.csv", tmp_path / "t.csv", dt=1.0, image_shape=[30, 30], voronoi_clip=6.0
    ).data
    assert clipped.touches_edge.all()  # nothing touches the frame, but every region is cut


def _suite2p(folder, ops) -> None:
    folder.mkdir()
    stat = [
        {"ypix": np.array([1, 1, 2]), "xpix": np.array([1, 2, 1]), "lam": np.ones(3, np.float32)},
        {"ypix": np.array([1, 1, 2]), "xpix": np.array([3, 4, 3]), "lam": np.ones(3, np.float32)},
    ]
    np.save(folder / "stat.npy", np.array(stat, dtype=object))
    np.save(folder / "F.npy", np.arange(8.0).reshape(2, 4))
    np.save(folder / "Fneu.npy", np.ones((2, 4)))
    np.save(folder / "iscell.npy", np.array([[1.0, 0.9], [1.0, 0.8]]))
    np.save(folder / "ops.npy", ops)


def test_dt_from_the_file_wins_and_a_different_config_value_is_reported(tmp_path, caplog) -> None:
    _suite2p(tmp_path / "plane0", {"Ly": 4, "Lx": 6, "fs": 4.0})
    with caplog.at_level(logging.WARNING):
        source = load_lab_inputs(suite2p=tmp_path / "plane0", dt=1.0, neuropil_coefficient=0.5)
    assert source.data.dt == 0.25 and any("data.dt=1 ignored" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(source.data.x.numpy(), np.arange(8.0).reshape(2, 4) - 0.5)
    assert source.data.cell_id.tolist() == [1, 2] and "F - 0.5 Fneu" in source.origin


def test_dt_from_the_config_when_the_file_has_none(tmp_path) -> None:
    _suite2p(tmp_path / "plane0", {"Ly": 4, "Lx": 6})
    with pytest.raises(ConfigError, match="has no frame rate \\(fs\\): set data.dt") as err:
        load_lab_inputs(suite2p=tmp_path / "plane0")
    assert err.value.culprit == "data.dt"
    source = load_lab_inputs(suite2p=tmp_path / "plane0", dt=3.0)
    assert source.data.dt == 3.0 and source.data.segmentation["dt_source"] == "data.dt"
    with pytest.raises(ConfigError, match="data.neuropil_coefficient"):
        load_lab_inputs(suite2p=tmp_path / "plane0", dt=3.0, neuropil_coefficient=-1)
    with pytest.raises(ConfigError, match="data.footprint_threshold"):
        load_lab_inputs(caiman=tmp_path / "r.h5", footprint_threshold=1.5)


def _lab_cfg(**values):
    base = {
        key: None
        for key in (
            "traces",
            "traces_orientation",
            "traces_header",
            "labels",
            "rois",
            "centroids",
            "suite2p",
            "caiman",
            "image_shape",
            "voronoi_clip",
            "neuropil_coefficient",
            "footprint_threshold",
            "dt",
            "pixel_size",
        )
    }
    return OmegaConf.create({**base, **values})


def test_load_cell_graph_dispatches_lab_keys(files) -> None:
    assert {"traces", "labels", "rois", "centroids", "suite2p", "caiman", "voronoi_clip"} <= set(DATA_KEYS)
    cfg = _lab_cfg(labels=str(files / "labels.tif"), traces=str(files / "traces.csv"), dt=2.0)
    source = load_cell_graph(cfg)
    assert source.data.x.tolist() == TRACES.tolist() and source.data.edge_index.shape[1] == 4
    assert source.labels.shape == (12, 30)
    # the graph group's options reach build_graph: 12 px borders are below a 20 px threshold
    strict = load_cell_graph(
        cfg, {"max_gap": 0, "min_shared_border": 20.0, "edge_margin": 1, "min_area": "auto"}
    )
    assert strict.data.edge_index.shape[1] == 0


def test_load_cell_graph_refusals(files) -> None:
    with pytest.raises(ConfigError, match="data: no input"):
        load_cell_graph(_lab_cfg())
    cfg = OmegaConf.create({"graph": "g.pt", "labels": str(files / "labels.tif"), "traces": "t.csv"})
    with pytest.raises(ConfigError, match="set either data.graph or lab inputs \\(data.labels\\)"):
        load_cell_graph(cfg)
    with pytest.raises(ConfigError, match="data.centriods: unknown key"):
        load_cell_graph(_lab_cfg(centriods="c.csv"))
    with pytest.raises(ConfigError, match="set either data.graph or data.movie, not both"):
        load_cell_graph({"graph": "g.pt", "movie": "m.tif"})


def test_image_shape_from_a_config_list(tmp_path) -> None:
    _table(tmp_path / "c.csv", [["x", "y"], (3.0, 3.0), (12.0, 4.0), (7.0, 12.0)])
    np.savetxt(tmp_path / "t.csv", np.ones((3, 4)), delimiter=",")
    cfg = _lab_cfg(
        centroids=str(tmp_path / "c.csv"), traces=str(tmp_path / "t.csv"), dt=1.0, image_shape=[20, 25]
    )
    data = load_cell_graph(cfg).data
    assert tuple(data.image_shape) == (20, 25) and math.isnan(data.pixel_size)
