"""The cell-graph schema check (calcium_gnn.io.graph_schema): a valid graph passes, each kind of
violation names its field."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Data

from calcium_gnn.errors import GraphError
from calcium_gnn.io.graph_schema import validate_graph


def _path_graph(n: int = 3, t: int = 5) -> Data:
    """A path 0-1-...-(n-1) with both edge directions, satisfying the schema."""
    src = torch.arange(n - 1)
    edge_index = torch.cat([torch.stack([src, src + 1]), torch.stack([src + 1, src])], dim=1)
    e = edge_index.shape[1]
    u = torch.full((e,), 10.0)
    l = torch.full((e,), 4.0)
    return Data(
        x=torch.rand(n, t), t=torch.arange(t) * 10.0, pos=torch.rand(n, 2), edge_index=edge_index,
        edge_attr=(u * l).unsqueeze(1), u=u, l=l, area=torch.full((n,), 600.0),
        touches_edge=torch.zeros(n, dtype=torch.bool), cell_id=torch.arange(1, n + 1), dt=10.0,
        pixel_size=float("nan"), unit="px",
    )


def test_valid_graph_passes_and_is_returned() -> None:
    g = _path_graph()
    assert validate_graph(g) is g


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda g: delattr(g, "u"), "missing schema field 'u'"),
        (lambda g: setattr(g, "edge_attr", g.edge_attr.squeeze(1)), "'edge_attr' must be a 2-D tensor"),
        (lambda g: setattr(g, "t", g.t[:-1]), "'t' must have shape"),
        (lambda g: g.x.__setitem__((0, 0), float("nan")), "NaN or Inf"),
        (lambda g: setattr(g, "t", g.t.flip(0)), "strictly increasing"),
        (lambda g: setattr(g, "unit", "mm"), "'unit' must be"),
        (lambda g: setattr(g, "edge_index", g.edge_index[:, :1]), "'edge_attr' must have shape"),
    ],
)
def test_violations_name_the_field(breakage, message: str) -> None:
    g = _path_graph()
    breakage(g)
    with pytest.raises(GraphError, match=message) as err:
        validate_graph(g, source="cells/graph.pt")
    assert str(err.value).startswith("cells/graph.pt: ")


def test_asymmetric_self_loop_and_duplicate_edges_are_refused() -> None:
    g = _path_graph()
    one_way = g.clone()
    keep = torch.tensor([0, 1, 2])
    one_way.edge_index, one_way.edge_attr = g.edge_index[:, keep], g.edge_attr[keep]
    one_way.u, one_way.l = g.u[keep], g.l[keep]
    with pytest.raises(GraphError, match="not symmetric"):
        validate_graph(one_way)
    loop = g.clone()
    loop.edge_index = g.edge_index.clone()
    loop.edge_index[1, 0] = loop.edge_index[0, 0]
    with pytest.raises(GraphError, match="self loops"):
        validate_graph(loop)
    dup = g.clone()
    dup.edge_index = g.edge_index.clone()
    dup.edge_index[:, 1] = dup.edge_index[:, 0]
    with pytest.raises(GraphError, match="duplicate"):
        validate_graph(dup)


def test_not_a_graph_is_refused() -> None:
    with pytest.raises(GraphError, match="expected a torch_geometric Data"):
        validate_graph({"x": torch.zeros(2, 2)}, source="weights.pt")

