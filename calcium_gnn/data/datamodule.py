"""A LightningDataModule that serves one cell graph per step.

The consensus models here fit the whole culture at once (full batch): every training step sees
the graph ``Data`` with all traces ``x: (N, T)``; models draw their own time points (collocation
points, windows) from it.

The device contract: Lightning moves each batch to the model's device, and PyG's ``Data.to`` moves
a graph *in place*. :meth:`CellGraphDataModule.transfer_batch_to_device` therefore moves a shallow
copy (new ``Data``, same tensors until moved), so the graph the rest of the run keeps (evaluation,
figures, results) stays where it was, on the host.

Data parallelism (``strategy=ddp``): every process gets the same graph for the same number of steps
(the dataset is iterable, Lightning gives it no distributed sampler); a data-parallel model takes its
share of the points itself (:class:`calcium_gnn.models.pinn.PINNModule`, by ``global_rank`` /
``world_size``), since the points live in the model (collocation points), not in the batch.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
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
        data: the cell graph (schema: ``calcium_gnn.io.graph_schema``).
        steps_per_epoch: how many optimisation steps make one epoch (default 1).
    """

    def __init__(self, data: Data, steps_per_epoch: int = 1) -> None:
        super().__init__()
        self.data = data
        self.steps_per_epoch = steps_per_epoch

    def train_dataloader(self) -> DataLoader:
        repeat = _RepeatGraph(self.data, self.steps_per_epoch)
        return DataLoader(repeat, batch_size=None, collate_fn=_identity)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move a shallow copy of the graph to ``device``: ``Data.to`` works in place, and the graph
        served here is the run's own (module docstring)."""
        if isinstance(batch, Data):
            batch = copy.copy(batch)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)
