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

**Drivers** are cells driven from outside the model (a stimulated cell, a pacemaker, the relays of a
wave): whatever the group, they are never modelled and follow their data like border cells (they are
removed from G, and the border is recomputed from what remains). They are chosen by any union of

==================================  =================================================================
keys                                driver cells
==================================  =================================================================
``drivers=[ids]``                   the cells with these labels (``data.cell_id``)
``drivers=is_driver``               the cells where the graph's (N,) bool attribute of that name holds
``point=[x, y]``, ``radius=R``      cells whose centroid lies within ``R`` px of the stimulus point
                                    ``q = (x, y)`` (px), and always the cell whose centroid is nearest
                                    to ``q`` (the cell containing it, for compact cells), even for R = 0
``auto_drivers=precedes``           cells of the group whose activation precedes all their
                                    neighbours' (below)
``auto_drivers=unexplained``        cells the fitted law cannot explain: after a fit, the modelled
                                    cells whose simulation residual is far above the others' (robust
                                    z-score, :mod:`calcium_gnn.evaluation.unexplained`), then a refit;
                                    applied by ``train`` (it needs a fit), named here as
                                    ``extra_drivers``
==================================  =================================================================

The rule ``precedes`` uses the activation times :math:`\\tau_i` of
:func:`calcium_gnn.graphs.activation.activation_times` (half-maximum crossings after
``stimulus_time`` when given): a cell ``i`` of the group is a driver when it activates and

.. math::
    \\tau_j - \\tau_i > m\\,\\Delta t \\quad \\text{for every neighbour } j \\in N_i
    \\text{ that activates,}

a strict local minimum of activation time over the graph's neighbours with a margin of ``m`` =
``auto_margin`` frames (:data:`AUTO_MARGIN_FRAMES`, half a frame: sub-frame differences are within the
interpolation error); neighbours (in or outside the group) that never activate count as later, cells
that never activate or have no neighbours are never drivers. Only cells of the group are candidates:
a cell outside it follows its data anyway. Every driver is recorded with its reason in
:attr:`Setup.drivers` (e.g. ``"within 30 px of the stimulus point (120, 88)"``, ``"activates 2.3
frames before every neighbour"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch_geometric.data import Data

from calcium_gnn.errors import ConfigError
from calcium_gnn.graphs.activation import activation_times, neighbour_lead
from calcium_gnn.nn.consensus import GAMMA_MODES

GROUPS: tuple[str, ...] = ("interior", "disc", "rectangle", "cells")
#: rules of ``auto_drivers`` (module docstring); ``unexplained`` needs a fit, so the caller applies it
#: (:func:`calcium_gnn.evaluation.unexplained.unexplained_cells`, run by ``train``) and names the cells it
#: finds in ``extra_drivers``
AUTO_RULES: tuple[str, ...] = ("precedes", "unexplained")
#: margin of the ``precedes`` rule, in frames: half a frame, beyond the interpolation error of a crossing
AUTO_MARGIN_FRAMES: float = 0.5


@dataclass
class Setup:
    """A modelled group and its border.

    Attributes:
        name: label of the setup (e.g. ``"setup1"``).
        modelled: (N,) bool, the group G whose states follow eqs. (1)-(3).
        border: (N,) bool, neighbours of G outside G (they follow the data).
        gamma_mode: ``"none"`` (eq. 1 without feed), ``"shared"`` (eq. 2) or ``"per_cell"`` (eq. 3).
        drivers: the driver cells, ``{cell id: reason}`` in node order (host values, empty when the
            setup names none); see the module docstring.
        point: the stimulus point ``(x, y)`` px, when the setup names one (the wave analysis measures
            distances from it); stimulus_time: the stimulus time (s), when given.
    """

    name: str
    modelled: Tensor
    border: Tensor
    gamma_mode: str
    drivers: dict[int, str] = field(default_factory=dict)
    point: tuple[float, float] | None = None
    stimulus_time: float | None = None

    def driver_lines(self) -> list[str]:
        """One printable line per driver cell: ``"cell 17: within 30 px of the stimulus point (120, 88)"``."""
        return [f"cell {cell}: {reason}" for cell, reason in self.drivers.items()]

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


def _number(value: object) -> float:
    """``value`` as a float; NaN when it is not a number."""
    try:
        return float("nan") if isinstance(value, str | bool) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def _stimulus_point(data: Data, point: object) -> tuple[float, float]:
    """``setup.point`` as (x, y) px inside the image extent."""
    try:
        values = [] if isinstance(point, str) else [_number(v) for v in point]  # type: ignore[union-attr]
    except TypeError:  # not a sequence
        values = []
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise ConfigError("setup.point", f"expected two numbers [x, y] in px, got {point!r}")
    x0, y0, x1, y1 = _extent(data)
    x, y = values
    if not (x0 <= x <= x1 and y0 <= y <= y1):
        raise ConfigError(
            "setup.point", f"({x:g}, {y:g}) lies outside the image (x {x0:g}..{x1:g}, y {y0:g}..{y1:g} px)"
        )
    return x, y


def _point_drivers(data: Data, point: object, r: float) -> dict[int, str]:
    """Nodes within ``r`` px of the stimulus point, and the node nearest to it: ``{node: reason}``."""
    x, y = _stimulus_point(data, point)
    dist = (data.pos.double() - data.pos.new_tensor([x, y], dtype=torch.float64)).norm(dim=1)
    where = f"the stimulus point ({x:g}, {y:g})"
    reasons = {int(i): f"within {r:g} px of {where}" for i in (dist <= r).nonzero().reshape(-1).tolist()}
    nearest = int(dist.argmin())
    reasons.setdefault(nearest, f"the cell nearest to {where} ({float(dist[nearest]):.1f} px)")
    return reasons


def _precedes_drivers(data: Data, group: Tensor, margin: object, stimulus_time: object) -> dict[int, str]:
    """The ``precedes`` rule (module docstring) over the cells of ``group`` (N,) bool: ``{node: reason}``."""
    m = _number(margin)
    if not (math.isfinite(m) and m >= 0):
        raise ConfigError("setup.auto_margin", f"expected a margin >= 0 in frames, got {margin!r}")
    t = data.t.detach().cpu().double()
    after = None if stimulus_time is None else _number(stimulus_time)
    if after is not None and not (math.isfinite(after) and after < float(t[-1])):
        problem = f"expected a time (s) before the last frame ({float(t[-1]):g} s), got {stimulus_time!r}"
        raise ConfigError("setup.stimulus_time", problem)
    tau = torch.as_tensor(activation_times(data.x, t, after=after), dtype=torch.float64)
    dt = float(getattr(data, "dt", None) or (t[1:] - t[:-1]).median())
    dst = data.edge_index[1].detach().cpu()
    # a neighbour that never activates counts as later (+inf)
    earliest = torch.as_tensor(neighbour_lead(tau, data.edge_index.detach().cpu()), dtype=torch.float64)
    degree = torch.bincount(dst, minlength=data.num_nodes)
    chosen = group.detach().cpu() & tau.isfinite() & (degree > 0) & (earliest > m * dt)
    reasons = {}
    for i in chosen.nonzero().reshape(-1).tolist():
        lead = float(earliest[i]) / dt
        reasons[i] = (
            f"activates {lead:.1f} frames before every neighbour"
            if math.isfinite(lead)
            else "activates while none of its neighbours does"
        )
    return reasons


def _drivers(
    data: Data,
    group: Tensor,
    drivers: list[int] | str | None,
    point: object,
    radius: object,
    auto_drivers: str | list[str] | None,
    auto_margin: object,
    stimulus_time: object,
    extra_drivers: dict[int, str] | None = None,
) -> dict[int, list[str]]:
    """Every driver node with its reasons (module docstring), in node order."""
    found: dict[int, list[str]] = {}

    def add(mask_or_reasons: Tensor | dict[int, str], reason: str = "") -> None:
        if isinstance(mask_or_reasons, dict):
            items = mask_or_reasons.items()
        else:
            items = ((i, reason) for i in mask_or_reasons.nonzero().reshape(-1).tolist())
        for node, why in items:
            found.setdefault(int(node), []).append(why)

    if isinstance(drivers, str):
        add(_driver_attribute(data, drivers), f"graph attribute '{drivers}'")
    elif drivers:
        add(_cells(data, drivers, "setup.drivers"), "listed in setup.drivers")
    r = _number(0.0 if radius is None else radius)
    if not (math.isfinite(r) and r >= 0):
        raise ConfigError("setup.radius", f"expected a distance >= 0 in px, got {radius!r}")
    if point is not None:
        add(_point_drivers(data, point, r))
    elif r > 0:
        raise ConfigError("setup.radius", "a radius needs a stimulus point: give setup.point=[x, y]")
    rules = auto_rules(auto_drivers)
    if "precedes" in rules:
        add(_precedes_drivers(data, group, auto_margin, stimulus_time))
    if extra_drivers:
        known = {int(c): i for i, c in enumerate(data.cell_id.reshape(-1).tolist())}
        missing = [c for c in extra_drivers if int(c) not in known]
        if missing:
            raise ConfigError("setup.drivers", f"no cell with id {missing} in the graph")
        add({known[int(c)]: why for c, why in extra_drivers.items()})
    return dict(sorted(found.items()))


def auto_rules(auto_drivers: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """The ``auto_drivers`` rules as a list (a name or a list of names), each checked.

    Raises:
        ConfigError: an unknown rule (``setup.auto_drivers``).
    """
    if auto_drivers is None:
        return []
    rules = [auto_drivers] if isinstance(auto_drivers, str) else list(auto_drivers)
    for rule in rules:
        if rule not in AUTO_RULES:
            raise ConfigError("setup.auto_drivers", f"unknown rule {rule!r} (one of {AUTO_RULES})")
    return rules


def resolve_setup(
    data: Data,
    group: str = "interior",
    gamma_mode: str = "per_cell",
    *,
    disc_radius: float = 0.3,
    rect: tuple[float, float, float, float] = (0.25, 0.25, 0.75, 0.75),
    cell_ids: list[int] | None = None,
    drivers: list[int] | str | None = None,
    point: list[float] | tuple[float, float] | None = None,
    radius: float = 0.0,
    auto_drivers: str | list[str] | None = None,
    auto_margin: float = AUTO_MARGIN_FRAMES,
    stimulus_time: float | None = None,
    require_drivers: bool = False,
    name: str | None = None,
    unexplained_z: float = 3.0,
    unexplained_try_z: float = 2.0,
    unexplained_gain: float = 0.2,
    unexplained_rounds: int = 4,
    extra_drivers: dict[int, str] | None = None,
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
        point: ``[x, y]`` px of a stimulus: the cells within ``radius`` of it are drivers, and always
            the cell nearest to it (module docstring).
        radius: px, >= 0 (default 0: the nearest cell only).
        auto_drivers: ``"precedes"``: also the cells of the group whose activation precedes all their
            neighbours'; ``"unexplained"`` (or a list of both): the cells a fit cannot explain, applied
            by the caller after a fit (``unexplained_z``, ``unexplained_try_z``, ``unexplained_gain``,
            ``unexplained_rounds``: :mod:`calcium_gnn.evaluation.unexplained`), who names them in
            ``extra_drivers`` ``{cell id: reason}``.
        auto_margin: the rule's margin in frames (default :data:`AUTO_MARGIN_FRAMES`).
        stimulus_time: s; the rule looks for activations after it (default: the whole recording).
        require_drivers: refuse a setup that chooses no driver (the ``stimulus`` setup).
        name: label of the setup; default ``group``.

    Returns:
        the :class:`Setup`; ``border`` = neighbours of G that are not in G; ``drivers`` = ``{cell id:
        reason}`` of every driver cell.

    Raises:
        ConfigError: unknown group / gamma_mode, bad geometry, unknown cell ids, a setup selecting no
            cell, a modelled cell without neighbours (it has no consensus term to fit), a point that is
            not two numbers or lies outside the image, a negative radius, an unknown auto rule, no
            driver when ``require_drivers``.
    """
    if gamma_mode not in GAMMA_MODES:
        raise ConfigError("setup.gamma_mode", f"unknown gamma_mode '{gamma_mode}' (use one of {GAMMA_MODES})")
    modelled, key = _group_mask(data, group, disc_radius, rect, cell_ids)
    modelled = modelled.reshape(-1).bool().clone()
    found = _drivers(data, modelled, drivers, point, radius, auto_drivers, auto_margin, stimulus_time,
                     extra_drivers)
    if require_drivers and not found and "unexplained" not in auto_rules(auto_drivers):
        if auto_drivers is not None:
            raise ConfigError(
                "setup.auto_drivers", f"rule '{auto_drivers}' finds no driver in setup '{name or group}' (no "
                "cell of the group activates before all its neighbours): give setup.point=[x, y] instead",
            )
        raise ConfigError(
            "setup.point", f"setup '{name or group}' chooses no driver: give setup.point=[x, y] (with "
            "setup.radius) or setup.auto_drivers=precedes",
        )
    if found:
        modelled[torch.as_tensor(list(found), dtype=torch.long, device=modelled.device)] = False
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
    cell_id = data.cell_id.reshape(-1).tolist()
    record = {int(cell_id[node]): "; ".join(reasons) for node, reasons in found.items()}
    where = None if point is None else _stimulus_point(data, point)
    when = None if stimulus_time is None else float(stimulus_time)
    return Setup(name=name or group, modelled=modelled, border=border, gamma_mode=gamma_mode, drivers=record,
                 point=where, stimulus_time=when)
