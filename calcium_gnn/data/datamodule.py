"""A LightningDataModule that serves one cell graph per step.

The consensus models here fit the whole culture at once (full batch): every training step sees
the graph ``Data`` with all traces ``x: (N, T)``; models draw their own time points (collocation
points, windows) from it.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
from torch.utils.data import DataLoader, IterableDataset
from torch_geometric.data import Data


class _RepeatGraph(IterableDataset):
    """Yields the same graph ``steps`` times: one epoch = ``steps`` optimisation steps."""

    def __init__(self, data: Data, steps: int) -> None:
        super().__init__()
        self.data = data
        self.steps = steps

    def __iter__(self) -> Iterator[Data]:
        for _ in range(self.steps):
            yield self.data

    def __len__(self) -> int:
        return self.steps


def _identity(data: Data) -> Data:
    return data


class CellGraphDataModule(L.LightningDataModule):
    """Serves the cell graph ``data`` as the single batch of every step.

    Args:
        data: the cell graph (schema: ``calcium_gnn.graphs.schema``).
        steps_per_epoch: how many optimisation steps make one epoch (default 1).
    """

    def __init__(self, data: Data, steps_per_epoch: int = 1) -> None:
        super().__init__()
        self.data = data
        self.steps_per_epoch = steps_per_epoch

    def train_dataloader(self) -> DataLoader:
        repeat = _RepeatGraph(self.data, self.steps_per_epoch)
        return DataLoader(repeat, batch_size=None, collate_fn=_identity)
