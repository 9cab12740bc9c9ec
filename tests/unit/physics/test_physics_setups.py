"""resolve_setup on a 4x4 grid of cells: the groups of setups I-III and the single-cell case."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Data

from calcium_gnn.errors import CalciumGNNError, ConfigError
from calcium_gnn.io.graph_schema import validate_graph
from calcium_gnn.physics.setups import resolve_setup


def grid_graph(rows: int = 4, cols: int = 4, isolated: bool = False) -> Data:
    """Cells on a grid, 4-neighbour adjacency, centroids at (10 + 20c, 10 + 20r); ids 1..N."""
    n = rows * cols
    pos = torch.tensor([[10.0 + 20 * c, 10.0 + 20 * r] for r in range(rows) for c in range(cols)])
    edges = []
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            if c + 1 < cols:
                edges += [(i, i + 1), (i + 1, i)]
            if r + 1 < rows:
                edges += [(i, i + cols), (i + cols, i)]
    if isolated:
        pos = torch.cat([pos, torch.tensor([[200.0, 200.0]])])
        n += 1
    edge_index = torch.tensor(edges).t()
    e = edge_index.shape[1]
    rr, cc = pos[:, 1], pos[:, 0]
    touches = (rr == 10) | (cc == 10) | (rr == 10 + 20 * (rows - 1)) | (cc == 10 + 20 * (cols - 1))
    data = Data(
        x=torch.rand(n, 6),
        t=torch.arange(6.0),
        pos=pos,
        edge_index=edge_index,
        edge_attr=torch.full((e, 1), 400.0),
        u=torch.full((e,), 20.0),
        l=torch.full((e,), 20.0),
        area=torch.full((n,), 400.0),
        touches_edge=touches,
        cell_id=torch.arange(1, n + 1),
        dt=1.0,
        pixel_size=float("nan"),
        unit="px",
    )
    return validate_graph(data)


def _idx(mask):
    return mask.nonzero().reshape(-1).tolist()


def test_setup_interior_is_setup_one():
    setup = resolve_setup(grid_graph())
    assert _idx(setup.modelled) == [5, 6, 9, 10]
    assert _idx(setup.border) == [1, 2, 4, 7, 8, 11, 13, 14]  # ring cells next to the interior
    assert setup.gamma_mode == "per_cell" and setup.name == "interior" and setup.num_modelled == 4
    assert setup.modelled_index.tolist() == [5, 6, 9, 10]


def test_setup_disc_uses_centroid_bounding_box_or_image_shape():
    data = grid_graph()
    # extent 10..70 in x and y: centre (40, 40); radius 0.3 * 60 = 18 covers the four central cells
    assert _idx(resolve_setup(data, "disc", disc_radius=0.3).modelled) == [5, 6, 9, 10]
    # with an 80 x 80 image the centre is the same; radius 0.5*80 = 40 reaches (10, 40)-ish cells at 31.6
    data.image_shape = torch.tensor([80, 80])
    setup = resolve_setup(data, "disc", disc_radius=0.5, name="setup2")
    assert _idx(setup.modelled) == [1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14]
    assert setup.name == "setup2"


def test_setup_rectangle_and_cells():
    data = grid_graph()
    setup = resolve_setup(data, "rectangle", "shared", rect=(0.0, 0.0, 0.5, 0.5))
    assert _idx(setup.modelled) == [0, 1, 4, 5]
    assert _idx(setup.border) == [2, 6, 8, 9]
    single = resolve_setup(data, "cells", "none", cell_ids=[6])  # node 5
    assert _idx(single.modelled) == [5] and _idx(single.border) == [1, 4, 6, 9]


def test_driver_cells_are_never_modelled_and_drive_their_neighbours():
    data = grid_graph()
    # the 4 x 4 interior group minus a stimulated cell (id 7 = node 6): it follows its data
    setup = resolve_setup(data, "interior", drivers=[7])
    assert 6 not in _idx(setup.modelled) and 6 in _idx(setup.border)
    assert len(_idx(setup.modelled)) == len(_idx(resolve_setup(data, "interior").modelled)) - 1
    # or named by a bool attribute of the graph (the zoo's is_driver)
    data.is_driver = torch.zeros(data.num_nodes, dtype=torch.bool)
    data.is_driver[6] = True
    by_attribute = resolve_setup(data, "interior", drivers="is_driver")
    assert torch.equal(by_attribute.modelled, setup.modelled)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"group": "hexagon"}, "setup.group"),
        ({"gamma_mode": "double"}, "setup.gamma_mode"),
        ({"group": "cells", "cell_ids": [99]}, "setup.cell_ids"),
        ({"group": "cells", "cell_ids": []}, "setup.cell_ids"),
        ({"drivers": [99]}, "setup.drivers"),
        ({"drivers": ["a"]}, "setup.drivers"),
        ({"drivers": "is_driver"}, "setup.drivers"),
        ({"group": "disc", "disc_radius": 0.01}, "setup.disc_radius"),
        ({"group": "disc", "disc_radius": -1.0}, "setup.disc_radius"),
        ({"group": "rectangle", "rect": (0.6, 0.0, 0.5, 1.0)}, "setup.rect"),
        ({"group": "rectangle", "rect": (0.9, 0.9, 0.95, 0.95)}, "setup.rect"),
    ],
)
def test_setup_errors_name_the_config_key(kwargs, key):
    with pytest.raises(ConfigError) as info:
        resolve_setup(grid_graph(), **kwargs)
    assert info.value.culprit == key
    assert "\n" not in str(info.value)


def test_setup_rejects_isolated_modelled_cell():
    data = grid_graph(isolated=True)
    with pytest.raises(CalciumGNNError, match="isolated"):
        resolve_setup(data, "cells", cell_ids=[17])
