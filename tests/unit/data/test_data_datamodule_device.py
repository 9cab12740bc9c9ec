"""The DataModule hands Lightning a copy of the graph: moving the batch never moves the run's graph."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch_geometric.data import Data

from calcium_gnn.data.datamodule import CellGraphDataModule


def _graph() -> Data:
    return Data(x=torch.rand(4, 7), edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]), dt=2.0)


@pytest.mark.parametrize("target", ["device", "meta"])
def test_the_moved_batch_is_a_copy(device: torch.device, target: str) -> None:
    """``Data.to`` works in place: the module must move a copy. ``meta`` stands for a foreign device
    where there is no GPU."""
    g = _graph()
    x, edge_index = g.x, g.edge_index
    where = device if target == "device" else torch.device("meta")
    moved = CellGraphDataModule(g).transfer_batch_to_device(g, where, 0)
    assert moved is not g and moved.x.device.type == where.type and moved.dt == 2.0
    assert g.x is x and g.edge_index is edge_index and g.x.device.type == "cpu"


class _SeesBatch(L.LightningModule):
    """Records the device of every batch it is given (no optimisation)."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.register_buffer("anchor", torch.zeros(()))
        self.seen: list[Data] = []

    def training_step(self, batch: Data, batch_idx: int) -> None:
        self.seen.append(batch)

    def configure_optimizers(self) -> None:
        return None


def test_fit_on_the_device_leaves_the_graph_on_the_host(device: torch.device) -> None:
    g = _graph()
    x = g.x
    model = _SeesBatch()
    trainer = L.Trainer(max_epochs=1, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model, datamodule=CellGraphDataModule(g, steps_per_epoch=2))
    assert [b.x.device.type for b in model.seen] == [device.type, device.type]
    assert all(b is not g for b in model.seen)  # Lightning used the DataModule's transfer hook
    assert g.x is x and g.x.device.type == "cpu"
