"""Saving/loading cell graphs (torch.load weights_only=True) and the GeoJSON / CSV / GraphML exports."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import shapely
import tifffile
import torch
from torch_geometric.data import Data

from calcium_gnn.errors import GraphError, OutputError
from calcium_gnn.graphs.build import build_graph
from calcium_gnn.graphs.geometry import cell_polygons
from calcium_gnn.io.graph_files import (
    GRAPH_SAFE_GLOBALS,
    export_geojson,
    export_graphml,
    export_traces_csv,
    load_graph,
    save_graph,
    save_labels,
)


def _labels() -> np.ndarray:
    labels = np.zeros((12, 30), dtype=np.int32)
    labels[:, :10] = 1
    labels[:, 11:20] = 2  # a one-pixel membrane between 1 and 2
    labels[2:10, 20:28] = 7
    return labels


def _graph(pixel_size: float = math.nan) -> Data:
    traces = np.arange(15, dtype=np.float32).reshape(3, 5) / 7.0
    return build_graph(_labels(), traces, dt=2.5, pixel_size=pixel_size)


@pytest.mark.parametrize("pixel_size", [math.nan, 0.65])
def test_round_trip_keeps_every_field_and_type(tmp_path: Path, pixel_size: float) -> None:
    data = _graph(pixel_size)
    path = save_graph(data, tmp_path / "graph.pt")
    back = load_graph(path)
    assert isinstance(back, Data)
    for key in ("x", "t", "pos", "edge_index", "edge_attr", "u", "l", "area", "touches_edge", "cell_id"):
        assert torch.equal(getattr(back, key), getattr(data, key)), key
        assert getattr(back, key).dtype == getattr(data, key).dtype
    assert isinstance(back.dt, float) and back.dt == 2.5
    assert isinstance(back.unit, str) and back.unit == data.unit
    assert (math.isnan(back.pixel_size) and math.isnan(pixel_size)) or back.pixel_size == pixel_size
    assert [p.name for p in tmp_path.iterdir()] == ["graph.pt"]  # no temporary file left behind


def test_plain_weights_only_load_with_the_safe_globals(tmp_path: Path) -> None:
    path = save_graph(_graph(), tmp_path / "g.pt")
    with torch.serialization.safe_globals(list(GRAPH_SAFE_GLOBALS)):
        back = torch.load(path, weights_only=True)
    assert back.unit == "px" and back.dt == 2.5


def test_save_replaces_an_existing_file_and_refuses_a_bad_graph(tmp_path: Path) -> None:
    path = tmp_path / "g.pt"
    path.write_text("old")
    save_graph(_graph(), path)
    assert load_graph(path).x.shape == (3, 5)
    bad = _graph()
    del bad.u
    with pytest.raises(GraphError, match="missing schema field 'u'"):
        save_graph(bad, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()
    with pytest.raises(OutputError, match="does not exist"):
        save_graph(_graph(), tmp_path / "nowhere" / "g.pt")


class _Evil:
    def __reduce__(self):  # pragma: no cover - must never run
        return (print, ("pwned",))


def test_load_errors_are_one_line_and_name_the_file(tmp_path: Path) -> None:
    cases = {}
    cases["missing"] = (tmp_path / "missing.pt", "file not found")
    text = tmp_path / "text.pt"
    text.write_text("not a torch file\n")
    cases["text"] = (text, "not a")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    cases["empty"] = (empty, "empty")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    cases["tensor"] = (tensor, "holds a Tensor, not a cell graph")
    broken = tmp_path / "broken.pt"
    data = _graph()
    data.t = torch.zeros(2)
    torch.save(data, broken)
    cases["schema"] = (broken, "'t' must have shape")
    evil = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, evil)
    cases["evil"] = (evil, "outside the safe list")
    for name, (path, problem) in cases.items():
        with pytest.raises(GraphError) as info:
            load_graph(path)
        message = str(info.value)
        assert message.startswith(f"{path}: "), name
        assert problem in message, (name, message)
        assert "\n" not in message, name


def test_labels_tiff_round_trip(tmp_path: Path) -> None:
    labels = _labels()
    save_labels(labels, tmp_path / "labels.tif")
    back = tifffile.imread(tmp_path / "labels.tif")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)
    big = labels.astype(np.int64) * 100_000
    save_labels(big, tmp_path / "big.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "big.tif"), big)


def test_geojson_features_carry_polygons_and_properties(tmp_path: Path) -> None:
    data = _graph()
    polygons = cell_polygons(_labels())
    export_geojson(data, polygons, tmp_path / "cells.geojson", frame=2)
    doc = json.loads((tmp_path / "cells.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 3
    assert doc["properties"]["pixel_size_um"] is None
    feature = doc["features"][2]
    props = feature["properties"]
    assert props["cell_id"] == 7 and props["area"] == 64.0 and props["touches_edge"] is False
    assert props["centroid"] == [23.5, 5.5]
    assert props["mean_intensity"] == pytest.approx(float(data.x[2].mean()))
    assert props["intensity"] == pytest.approx(float(data.x[2, 2]))
    assert shapely.geometry.shape(feature["geometry"]).area == pytest.approx(polygons[2].area)
    with pytest.raises(GraphError, match="2 polygons for 3 cells"):
        export_geojson(data, polygons[:2], tmp_path / "x.geojson")


def test_traces_csv_has_times_in_the_header_and_ids_in_the_first_column(tmp_path: Path) -> None:
    data = _graph()
    export_traces_csv(data, tmp_path / "traces.csv")
    with open(tmp_path / "traces.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["cell_id", "0", "2.5", "5", "7.5", "10"]
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 7]
    values = np.array([[float(v) for v in r[1:]] for r in rows[1:]], dtype=np.float32)
    np.testing.assert_array_equal(values, data.x.numpy())


def test_graphml_has_node_and_edge_attributes(tmp_path: Path) -> None:
    data = _graph()
    export_graphml(data, tmp_path / "graph.graphml")
    g = nx.read_graphml(tmp_path / "graph.graphml", node_type=int)
    assert sorted(g.nodes) == [1, 2, 7]
    assert g.number_of_edges() == data.edge_index.shape[1] // 2
    e = g.edges[1, 2]
    assert e["u"] == pytest.approx(float(data.u[0])) and e["ul"] == pytest.approx(e["u"] * e["l"], rel=1e-6)
    assert g.nodes[7]["area"] == 64.0 and g.nodes[7]["touches_edge"] is False
    assert g.graph["unit"] == "px"


def test_written_files_get_ordinary_permissions(tmp_path: Path) -> None:
    import os

    umask = os.umask(0o022)
    try:
        path = save_graph(_graph(), tmp_path / "g.pt")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
