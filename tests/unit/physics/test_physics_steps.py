"""Step counts from the stiffness of the consensus law, worked out by hand."""

from __future__ import annotations

import torch

from calcium_gnn.physics.steps import stiffness_substeps

# path 0-1-2, both directions; cell 1 modelled with two neighbours of weights 1 and 3
EDGE_INDEX = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
W = torch.tensor([1.0, 1.0, 3.0, 3.0])
MODELLED = torch.tensor([False, True, False])


def test_steps_by_hand() -> None:
    # c_1 = k / 2 * (1 + 3) = 2 k; rho = 2 * slope * c_1 = 4 k slope
    t = torch.tensor([0.0, 10.0, 15.0])  # longest interval 10 s
    assert stiffness_substeps(0.01, EDGE_INDEX, W, MODELLED, t, step_rate=0.5) == 1  # 10 * 0.04 = 0.4
    assert stiffness_substeps(0.05, EDGE_INDEX, W, MODELLED, t, step_rate=0.5) == 4  # 10 * 0.2 / 0.5
    assert stiffness_substeps(0.05, EDGE_INDEX, W, MODELLED, t, step_rate=0.5, slope=2.0) == 8


def test_driver_cells_do_not_set_the_step() -> None:
    """Only modelled cells' rates count: cell 0 (a driver) would be the stiffest with a huge weight."""
    w = torch.tensor([100.0, 100.0, 3.0, 3.0])
    t = torch.tensor([0.0, 1.0])
    only_1 = stiffness_substeps(0.01, EDGE_INDEX, w, MODELLED, t, step_rate=0.5)
    assert only_1 == 3  # c_1 = 0.01 / 2 * 103 = 0.515; rho = 1.03; 1.03 / 0.5 -> 3
    assert stiffness_substeps(0.01, EDGE_INDEX, w, torch.zeros(3, dtype=torch.bool), t, 0.5) == 1
