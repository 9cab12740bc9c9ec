"""Setups: which cells are modelled (the group G) and which border cells follow the data.

The paper (section 3.2, Fig. 13) models a group of cells with eqs. (2)/(3); the neighbours of the
group that are not in it are *border cells*: their intensities are taken from the data. Four groups:

==============  =====================================================================================
``group``       modelled cells
==============  =====================================================================================
``interior``    setup I: every cell that does not touch the image border (``touches_edge`` False)
``disc``        setup II: centroids within ``disc_radius * min(width, height)`` of the image centre
``rectangle``   setup III: centroids inside ``rect = (x0, y0, x1, y1)``, fractions of the image extent
``cells``       the cells whose label (``data.cell_id``) is in ``cell_ids`` (e.g. the single-cell case)
==============  =====================================================================================

The image extent is ``data.image_shape`` = (height, width) in pixels when the graph carries it, and
otherwise the bounding box of the cell centroids ``data.pos``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import Data

from calcium_gnn.errors import ConfigError
from calcium_gnn.nn.consensus import GAMMA_MODES

GROUPS: tuple[str, ...] = ("interior", "disc", "rectangle", "cells")


@dataclass
class Setup:
    """A modelled group and its border.

    Attributes:
        name: label of the setup (e.g. ``"setup1"``).
        modelled: (N,) bool, the group G whose states follow eqs. (1)-(3).
        border: (N,) bool, neighbours of G outside G (they follow the data).
        gamma_mode: ``"none"`` (eq. 1 without feed), ``"shared"`` (eq. 2) or ``"per_cell"`` (eq. 3).
    """

    name: str
    modelled: Tensor
    border: Tensor
    gamma_mode: str

    @property
    def modelled_index(self) -> Tensor:
        """Node indices of the modelled cells, (G,) long, increasing."""
        return self.modelled.nonzero().reshape(-1)

    @property
    def num_modelled(self) -> int:
        """G, the number of modelled cells."""
        return int(self.modelled.sum())


def _extent(data: Data) -> tuple[float, float, float, float]:
    """(x_min, y_min, x_max, y_max) of the image in pixels (see the module docstring)."""
    shape = getattr(data, "image_shape", None)
    if shape is not None:
        height, width = (float(v) for v in torch.as_tensor(shape).reshape(-1)[:2])
        return 0.0, 0.0, width, height
    pos = data.pos.double()
    lo, hi = pos.min(dim=0).values, pos.max(dim=0).values
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _driver_attribute(data: Data, name: str) -> Tensor:
    """The graph's (N,) bool attribute ``name`` marking driver cells."""
    value = getattr(data, name, None)
    if not isinstance(value, Tensor) or value.shape != (data.num_nodes,) or value.dtype != torch.bool:
        raise ConfigError("setup.drivers", f"the graph has no ({data.num_nodes},) bool attribute '{name}'")
    return value.to(data.cell_id.device)


def _cells(data: Data, cell_ids: list[int], key: str) -> Tensor:
    """(N,) bool mask of the cells with these labels (``data.cell_id``); every label must exist."""
    known = data.cell_id.long()
    try:
        wanted = torch.as_tensor(list(cell_ids), dtype=torch.long, device=known.device).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(key, f"expected a list of integer cell ids, got {cell_ids!r}") from None
    missing = wanted[~torch.isin(wanted, known)]
    if missing.numel():
        raise ConfigError(key, f"no cell with id {missing.tolist()} in the graph")
    return torch.isin(known, wanted)


def _group_mask(
    data: Data,
    group: str,
    disc_radius: float,
    rect: tuple[float, float, float, float],
    cell_ids: list[int] | None,
) -> tuple[Tensor, str]:
    """The (N,) bool mask of the group and the config key that chose it."""
    if group == "interior":
        return ~data.touches_edge.bool(), "setup.group"
    if group == "disc":
        if not (float(disc_radius) > 0):
            raise ConfigError("setup.disc_radius", f"expected a positive fraction, got {disc_radius!r}")
        x0, y0, x1, y1 = _extent(data)
        pos = data.pos.double()
        centre = pos.new_tensor([(x0 + x1) / 2, (y0 + y1) / 2])
        radius = float(disc_radius) * min(x1 - x0, y1 - y0)
        dist = (pos - centre).norm(dim=1)
        return dist <= radius, "setup.disc_radius"
    if group == "rectangle":
        try:
            fx0, fy0, fx1, fy1 = (float(v) for v in rect)
        except (TypeError, ValueError):
            raise ConfigError("setup.rect", f"expected four fractions (x0, y0, x1, y1), got {rect!r}") \
                from None
        if not (0 <= fx0 < fx1 <= 1 and 0 <= fy0 < fy1 <= 1):
            raise ConfigError("setup.rect", f"expected 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {rect!r}")
        x0, y0, x1, y1 = _extent(data)
        px, py = data.pos[:, 0].double(), data.pos[:, 1].double()
        inside_x = (px >= x0 + fx0 * (x1 - x0)) & (px <= x0 + fx1 * (x1 - x0))
        inside_y = (py >= y0 + fy0 * (y1 - y0)) & (py <= y0 + fy1 * (y1 - y0))
        return inside_x & inside_y, "setup.rect"
    if group == "cells":
        if not cell_ids:
            raise ConfigError("setup.cell_ids", "group 'cells' needs a non-empty list of cell ids")
        return _cells(data, cell_ids, "setup.cell_ids"), "setup.cell_ids"
    raise ConfigError("setup.group", f"unknown group '{group}' (use one of {GROUPS})")


def resolve_setup(
    data: Data,
    group: str = "interior",
    gamma_mode: str = "per_cell",
    *,
    disc_radius: float = 0.3,
    rect: tuple[float, float, float, float] = (0.25, 0.25, 0.75, 0.75),
    cell_ids: list[int] | None = None,
    drivers: list[int] | str | None = None,
    name: str | None = None,
) -> Setup:
    """Choose the modelled cells G and their border cells on a cell graph.

    Args:
        data: a cell graph (see :mod:`calcium_gnn.io.graph_schema`).
        group: ``"interior"`` (setup I), ``"disc"`` (setup II), ``"rectangle"`` (setup III) or
            ``"cells"`` (explicit ``cell_ids``, e.g. the single-cell case).
        gamma_mode: ``"none"``, ``"shared"`` (eq. 2) or ``"per_cell"`` (eq. 3).
        disc_radius: disc radius as a fraction of the image's smaller side (default 0.3).
        rect: ``(x0, y0, x1, y1)`` as fractions of the image extent (default the central quarter).
        cell_ids: cell labels (values of ``data.cell_id``) for ``group="cells"``.
        drivers: cells driven from outside the model (a stimulated cell, a pacemaker): never
            modelled, whatever the group; they follow their data like border cells. A list of cell
            labels, or the name of an (N,) bool attribute of the graph (e.g. ``"is_driver"``).
        name: label of the setup; default ``group``.

    Returns:
        the :class:`Setup`; ``border`` = neighbours of G that are not in G.

    Raises:
        ConfigError: unknown group / gamma_mode, bad geometry, unknown cell ids, a setup selecting no
            cell, or a modelled cell without neighbours (it has no consensus term to fit).
    """
    if gamma_mode not in GAMMA_MODES:
        raise ConfigError("setup.gamma_mode", f"unknown gamma_mode '{gamma_mode}' (use one of {GAMMA_MODES})")
    modelled, key = _group_mask(data, group, disc_radius, rect, cell_ids)
    modelled = modelled.reshape(-1).bool().clone()
    if isinstance(drivers, str):
        modelled &= ~_driver_attribute(data, drivers)
    elif drivers:
        modelled &= ~_cells(data, drivers, "setup.drivers")
    if not bool(modelled.any()):
        raise ConfigError(key, f"setup '{name or group}' selects no cell")
    src, dst = data.edge_index
    n = data.num_nodes
    degree = torch.bincount(dst, minlength=n)
    isolated = modelled & (degree == 0)
    if bool(isolated.any()):
        ids = data.cell_id[isolated].tolist()
        raise ConfigError(key, f"modelled cell(s) {ids} have no neighbours (isolated): nothing to couple")
    border = torch.zeros_like(modelled)
    border[src[modelled[dst]]] = True
    border &= ~modelled
    return Setup(name=name or group, modelled=modelled, border=border, gamma_mode=gamma_mode)
