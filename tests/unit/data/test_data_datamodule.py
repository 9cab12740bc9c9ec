"""The DataModule serves the whole graph as the batch of every step."""

from __future__ import annotations

import torch
from torch_geometric.data import Data

from calcium_gnn.data.datamodule import CellGraphDataModule


def test_each_step_gets_the_same_graph() -> None:
    g = Data(x=torch.rand(4, 7))
    batches = list(CellGraphDataModule(g, steps_per_epoch=3).train_dataloader())
    assert len(batches) == 3
    assert all(b is g for b in batches)
