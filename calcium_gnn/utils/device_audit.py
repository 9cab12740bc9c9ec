"""The device contract, checked: a module's tensors are parameters, buffers or submodules, nothing else.

``module.to(device)`` moves parameters, buffers and submodules; a tensor anywhere else (a plain
attribute, a dict, list or tuple, a dataclass such as a ``Setup``, a PyG ``Data``) stays behind and a
later computation mixes devices ("Expected all tensors to be on the same device"). CI has no GPU,
so this check is how such a tensor is caught before a user with a GPU finds it.

One exception is allowed: a cache of *derived* values in an attribute named ``_derived`` on a
module whose ``_apply`` (what ``.to()``, ``.cuda()``, ``.double()`` call) clears it, so nothing
derived outlives a move (:class:`calcium_gnn.physics.output_error.OutputErrorProblem` does this).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from functools import cache
from typing import Any

from torch import Tensor, nn

#: the attribute name of a derived-value cache that ``_apply`` clears (module docstring)
DERIVED_CACHE = "_derived"


@cache
def _framework_attributes() -> frozenset[str]:
    """Attributes every ``nn.Module`` / LightningModule / PyG ``MessagePassing`` sets up itself."""
    import lightning as L
    from torch_geometric.nn import MessagePassing

    class _Conv(MessagePassing):
        pass

    names = set(nn.Module().__dict__) | set(L.LightningModule().__dict__) | set(_Conv().__dict__)
    return frozenset(names)


def _tensors_in(value: Any, path: str, depth: int = 0) -> Iterator[str]:
    """Paths of the tensors inside ``value`` (containers, dataclasses, PyG data objects)."""
    if depth > 6 or isinstance(value, nn.Module):
        return
    if isinstance(value, Tensor):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors_in(item, f"{path}[{key!r}]", depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for i, item in enumerate(value):
            yield from _tensors_in(item, f"{path}[{i}]", depth + 1)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _tensors_in(getattr(value, f.name), f"{path}.{f.name}", depth + 1)
    elif hasattr(value, "stores") and hasattr(value, "keys"):  # a torch_geometric Data / HeteroData
        for key in value.keys():
            yield from _tensors_in(value[key], f"{path}.{key}", depth + 1)


def stray_tensors(module: nn.Module) -> list[str]:
    """Where ``module`` (or any submodule) keeps a tensor outside its parameters, buffers and submodules.

    Returns:
        paths such as ``"problem.cache['theta']"``; empty when the module keeps the contract.
    """
    framework = _framework_attributes()
    found: list[str] = []
    for prefix, sub in module.named_modules():
        clears_cache = type(sub)._apply is not nn.Module._apply
        for name, value in vars(sub).items():
            if name in framework or (name == DERIVED_CACHE and clears_cache):
                continue
            where = f"{prefix}.{name}" if prefix else name
            found.extend(_tensors_in(value, where))
    return found
