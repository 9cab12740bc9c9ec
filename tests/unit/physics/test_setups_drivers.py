"""Driver cells of a setup: by a stimulus point and radius, by ids / attribute, and by the `precedes` rule."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch_geometric.data import Data

from calcium_gnn.data import zoo
from calcium_gnn.data.zoo_drivers import MODELLED, RELAY, STIMULUS
from calcium_gnn.errors import ConfigError
from calcium_gnn.io.graph_schema import validate_graph
from calcium_gnn.physics.setups import resolve_setup

SIDE, STEP = 5, 20.0  # 5 x 5 cells, centroids (10 + 20 c, 10 + 20 r), ids 1..25 row by row
CENTRE = 12  # node (2, 2) at (50, 50), cell id 13
CONFIG_DIR = str(Path(__file__).resolve().parents[3] / "configs")


def grid(onsets: np.ndarray | None = None, dt: float = 1.0) -> Data:
    """A 5 x 5 grid, 4-neighbour adjacency; traces are pulses from 0 starting at ``onsets`` (N,) s: up to
    1 over 3 frames, 10 frames there, down over 3 frames (NaN: the cell stays at 0)."""
    n = SIDE * SIDE
    pos = torch.tensor([[10.0 + STEP * c, 10.0 + STEP * r] for r in range(SIDE) for c in range(SIDE)])
    edges = []
    for i in range(n):
        r, c = divmod(i, SIDE)
        if c + 1 < SIDE:
            edges += [(i, i + 1), (i + 1, i)]
        if r + 1 < SIDE:
            edges += [(i, i + SIDE), (i + SIDE, i)]
    edge_index = torch.tensor(sorted(edges)).t()
    e = edge_index.shape[1]
    t = torch.arange(60.0) * dt
    onsets = np.full(n, np.nan) if onsets is None else np.asarray(onsets, dtype=float)
    x = np.zeros((n, t.numel()))
    for i, onset in enumerate(onsets):
        if np.isfinite(onset):
            up = np.clip((t.numpy() - onset) / (3 * dt), 0.0, 1.0)
            x[i] = up - np.clip((t.numpy() - onset - 13 * dt) / (3 * dt), 0.0, 1.0)
    rows, cols = pos[:, 1], pos[:, 0]
    data = Data(
        x=torch.tensor(x, dtype=torch.float32), t=t, pos=pos, edge_index=edge_index,
        edge_attr=torch.full((e, 1), 400.0), u=torch.full((e,), 20.0), l=torch.full((e,), 20.0),
        area=torch.full((n,), 400.0), touches_edge=(rows == 10) | (cols == 10) | (rows == 90) | (cols == 90),
        cell_id=torch.arange(1, n + 1), dt=dt, pixel_size=float("nan"), unit="px",
        image_shape=torch.tensor([100, 100]),
    )
    return validate_graph(data)


def nodes(mask: torch.Tensor) -> list[int]:
    return mask.nonzero().reshape(-1).tolist()


INTERIOR = [6, 7, 8, 11, 12, 13, 16, 17, 18]


def test_point_with_radius_zero_keeps_the_nearest_cell():
    setup = resolve_setup(grid(), point=[52.0, 47.0], radius=0)
    assert setup.drivers == {13: "the cell nearest to the stimulus point (52, 47) (3.6 px)"}
    assert nodes(setup.modelled) == [i for i in INTERIOR if i != CENTRE]
    assert CENTRE in nodes(setup.border)  # the driver follows its data next to the group
    assert setup.driver_lines() == ["cell 13: the cell nearest to the stimulus point (52, 47) (3.6 px)"]


def test_point_with_radius_takes_every_centroid_within_it():
    setup = resolve_setup(grid(), point=(50, 50), radius=20.0, name="stimulus")
    assert sorted(setup.drivers) == [8, 12, 13, 14, 18]  # ids of nodes 7, 11, 12, 13, 17
    assert setup.drivers[13] == "within 20 px of the stimulus point (50, 50)"
    assert nodes(setup.modelled) == [6, 8, 16, 18]
    # the border is recomputed: the drivers next to the remaining group, and the ring next to it
    assert nodes(setup.border) == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23]


def test_ids_attribute_and_point_combine_with_their_reasons():
    data = grid()
    data.is_driver = torch.zeros(25, dtype=torch.bool)
    data.is_driver[6] = True
    by_ids = resolve_setup(data, drivers=[13, 9], point=[50, 50])
    assert by_ids.drivers == {9: "listed in setup.drivers",
                              13: "listed in setup.drivers; within 0 px of the stimulus point (50, 50)"}
    by_attribute = resolve_setup(data, drivers="is_driver")
    assert by_attribute.drivers == {7: "graph attribute 'is_driver'"}
    assert nodes(by_attribute.modelled) == [i for i in INTERIOR if i != 6]


def test_existing_setups_name_no_driver():
    setup = resolve_setup(grid())
    assert setup.drivers == {} and setup.driver_lines() == [] and nodes(setup.modelled) == INTERIOR


def radial_onsets(speed: float = 10.0, t0: float = 20.0) -> np.ndarray:
    """Onsets of a radial wave from the centre cell: each neighbour step (20 px) is 2 s later."""
    pos = np.array([[10.0 + STEP * c, 10.0 + STEP * r] for r in range(SIDE) for c in range(SIDE)])
    return t0 + np.linalg.norm(pos - pos[CENTRE], axis=1) / speed


def test_precedes_finds_the_initiators_with_their_lead():
    onsets = radial_onsets()
    onsets[18] = 5.0  # an interior pacemaker firing long before its neighbours
    onsets[0] = 1.0  # an edge cell: outside the group, never a candidate
    onsets[6] = np.nan  # an interior cell that never activates is never a driver
    setup = resolve_setup(grid(onsets), auto_drivers="precedes")
    assert setup.drivers == {13: "activates 2.0 frames before every neighbour",
                             19: "activates 17.0 frames before every neighbour"}
    assert CENTRE not in nodes(setup.modelled) and 18 not in nodes(setup.modelled)
    # after the pacemaker: only the stimulated cell
    assert list(resolve_setup(grid(onsets), auto_drivers="precedes", stimulus_time=10.0).drivers) == [13]
    # a margin beyond the lead: nobody
    assert resolve_setup(grid(radial_onsets()), auto_drivers="precedes", auto_margin=2.5).drivers == {}


def test_precedes_margin_is_a_fraction_of_a_frame():
    onsets = radial_onsets()
    onsets[CENTRE + 1] = onsets[CENTRE] + 0.3  # a neighbour 0.3 frame later
    assert resolve_setup(grid(onsets), auto_drivers="precedes").drivers == {}
    assert list(resolve_setup(grid(onsets), auto_drivers="precedes", auto_margin=0.1).drivers) == [13]
    alone = np.full(25, np.nan)
    alone[CENTRE] = 20.0
    lone = resolve_setup(grid(alone), auto_drivers="precedes")
    assert lone.drivers == {13: "activates while none of its neighbours does"}


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"point": "50,50"}, "setup.point"),
        ({"point": [50.0]}, "setup.point"),
        ({"point": [1, 2, 3]}, "setup.point"),
        ({"point": [math.nan, 2]}, "setup.point"),
        ({"point": ["a", 2]}, "setup.point"),
        ({"point": 50}, "setup.point"),
        ({"point": [150.0, 50.0]}, "setup.point"),
        ({"point": [50.0, -3.0]}, "setup.point"),
        ({"point": [50, 50], "radius": -1.0}, "setup.radius"),
        ({"point": [50, 50], "radius": "wide"}, "setup.radius"),
        ({"radius": 5.0}, "setup.radius"),
        ({"auto_drivers": "first"}, "setup.auto_drivers"),
        ({"auto_drivers": "precedes", "auto_margin": -0.5}, "setup.auto_margin"),
        ({"auto_drivers": "precedes", "stimulus_time": 1e9}, "setup.stimulus_time"),
        ({"require_drivers": True}, "setup.point"),
        ({"require_drivers": True, "auto_drivers": "precedes", "auto_margin": 5.0}, "setup.auto_drivers"),
    ],
)
def test_bad_driver_keys_name_the_key(options, key):
    with pytest.raises(ConfigError) as caught:
        resolve_setup(grid(radial_onsets()), **options)
    assert caught.value.culprit == key


def test_stimulus_config_composes_into_resolve_setup():
    overrides = ["experiment=setup1_crlsm", "setup=stimulus", "setup.point=[50,50]", "setup.radius=20"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train.yaml", overrides=overrides)
    options = OmegaConf.to_container(cfg.setup, resolve=True)
    setup = resolve_setup(grid(radial_onsets()), **options)
    assert setup.name == "stimulus" and sorted(setup.drivers) == [8, 12, 13, 14, 18]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        bare = compose("train.yaml", overrides=["setup=stimulus"])
    with pytest.raises(ConfigError, match="chooses no driver"):
        resolve_setup(grid(), **OmegaConf.to_container(bare.setup, resolve=True))


def test_zoo_stimulus_member_stimulated_cell_is_found_both_ways():
    member = zoo.member("dev-3")
    data = zoo.member_graph(member)
    kind = data.truth_driver_kind.numpy()
    ids = data.cell_id.numpy()
    stimulated = np.flatnonzero(kind == STIMULUS)
    assert member.family == "stimulus" and stimulated.size == 1
    point = (data.pos[stimulated[0]] + torch.tensor([2.0, -1.5])).tolist()
    by_point = resolve_setup(data, point=point, radius=0.0, require_drivers=True)
    assert list(by_point.drivers) == [int(ids[stimulated[0]])]
    diameter = member.params["cell_diameter"]
    wider = resolve_setup(data, point=point, radius=diameter)
    assert int(ids[stimulated[0]]) in wider.drivers and len(wider.drivers) > 1
    auto = resolve_setup(data, auto_drivers="precedes", stimulus_time=member.params["stimulus_time"])
    found = np.isin(ids, list(auto.drivers))
    assert found[stimulated].all()
    assert not (found & (kind == MODELLED)).any()  # no cell that follows the law is taken for a driver
    relays = kind == RELAY
    share = float(found[relays].mean())
    print(f"{member.id}: precedes finds {found[relays].sum()} of {relays.sum()} relays ({share:.0%})")
    assert share > 0
    assert not auto.modelled[torch.as_tensor(found)].any()
