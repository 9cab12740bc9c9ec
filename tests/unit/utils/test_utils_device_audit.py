"""The device audit catches tensors a module keeps where ``.to(device)`` cannot reach them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from calcium_gnn.utils.device_audit import stray_tensors


@dataclass
class _Holder:
    mask: Tensor


class _Clean(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))
        self.register_buffer("mask", torch.ones(3, dtype=torch.bool))
        self.inner = nn.Linear(2, 2)
        self.name = "clean"
        self.shape = (3, 4)


class _Bad(_Clean):
    def __init__(self) -> None:
        super().__init__()
        self.cache = torch.zeros(3)
        self.setup = _Holder(mask=torch.ones(3, dtype=torch.bool))
        self.truth = {"gamma": torch.zeros(3), "k": 0.1}
        self.history = [torch.zeros(1)]
        self.graph = Data(x=torch.zeros(4, 2))
        self.inner.scratch = torch.zeros(2)


class _ClearedCache(_Clean):
    def __init__(self) -> None:
        super().__init__()
        self._derived = {"basis": torch.eye(3)}

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - nn.Module's signature
        self._derived = {}
        return super()._apply(fn, recurse)


class _UnclearedCache(_Clean):
    def __init__(self) -> None:
        super().__init__()
        self._derived = {"basis": torch.eye(3)}


def test_a_clean_module_passes() -> None:
    assert stray_tensors(_Clean()) == []


def test_every_kind_of_stray_tensor_is_named() -> None:
    found = stray_tensors(_Bad())
    assert sorted(found) == sorted(
        [
            "cache",
            "setup.mask",
            "truth['gamma']",
            "history[0]",
            "graph.x",
            "inner.scratch",
        ]
    )


def test_a_derived_cache_is_allowed_only_when_a_device_move_clears_it() -> None:
    assert stray_tensors(_ClearedCache()) == []
    assert stray_tensors(_UnclearedCache()) == ["_derived['basis']"]
    module = _ClearedCache()
    module.to(torch.float64)
    assert module._derived == {}
