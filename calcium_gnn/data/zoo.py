"""The culture zoo: families of synthetic cultures with ground truth, beyond ``make_culture``.

Every accuracy figure from :func:`calcium_gnn.data.synthetic.make_culture` comes from one kind of
culture. The zoo spans what real recordings show (:mod:`calcium_gnn.data.zoo_params`): drivers at
the image edge (the paper's setting), at interior cells hit by a point stimulus that starts a radial
wave, or at spontaneous pacemakers (:mod:`calcium_gnn.data.zoo_drivers`); transients of 5 s to 5 min,
slow oscillations and plateaus; ``k`` in [0.002, 0.08] 1/s; feeds of both signs; the paper's linear
law or a law with a leak back to baseline (and, outside both splits, four nonlinear coupling laws:
:mod:`calcium_gnn.data.zoo_laws`); 30 to 2,000 cells of 15 to 80 px; frame intervals of 0.5
to 20 s; 100 to 1,000 frames; observation noise 0 to 5 %; bleaching; dark or bright membranes;
cytosolic or nuclear dye.

Every modelled (non-driver) cell follows the member's law

.. math::
    \\dot y_i = \\frac{k}{|N_i|} \\sum_{j \\in N_i} w_{ij} (z_j - y_i) + \\gamma_i - \\lambda (y_i - b),
    \\qquad w_{ij} = u_{ij} l_{ij} / s, \\quad s = \\operatorname{mean}_{\\text{edges}}(u l),

(``law = "linear"``: ``lambda = 0``, the paper's eq. 3; ``law = "leak"``: ``lambda > 0``, NOT the
paper's law), integrated exactly for drivers that are linear between frames
(:mod:`calcium_gnn.data.zoo_dynamics`), so that a simulator given the observed driver traces and the
true parameters reproduces the truth to rounding.

Usage::

    from calcium_gnn.data import zoo

    zoo.forbid_test_split()              # first thing in any tuning script
    for member in zoo.dev_members(20):   # tune here
        data = zoo.member_graph(member)  # PyG Data, the graph schema + truth (see member_graph)
    rendered = zoo.member_movie(zoo.member("dev-3"))  # on request: .movie (T, H, W), .labels (H, W)

    for member in zoo.test_members():    # evaluation only: 60 frozen members
        ...

Members are identified by strings: ``"dev-<i>"`` (any ``i >= 0``), ``"test-<i>"`` (``0 <= i < 60``)
``"<family>-<seed>"`` (a custom member of that family, e.g. ``"stimulus-7"``) and ``"<law>-<seed>"`` (a
member of a nonlinear law, e.g. ``"saturating-2"``, :func:`law_member`). Each is
deterministic from its id. How the test split is kept apart and frozen: :mod:`calcium_gnn.data.zoo_split`.

What "truth" means. In every member the cells touching the image edge are drivers (the paper's
setup I border cells); in the ``stimulus`` and ``pacemaker`` families some interior cells are drivers
too. The graph's ``is_driver`` (N,) marks all of them and ``truth_driver_kind`` says which kind
(:data:`~calcium_gnn.data.zoo_drivers.DRIVER_KINDS`); a fit must treat every driver as a border cell
(follows its data), and ``truth_gamma`` is NaN there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from calcium_gnn.data import zoo_params as zp
from calcium_gnn.data.synthetic import true_geometry_graph
from calcium_gnn.data.zoo_culture import ZOO_ENTROPY, ZooCulture, make_zoo_culture, member_streams
from calcium_gnn.data.zoo_laws import NONLINEAR_LAWS, draw_law_params
from calcium_gnn.data.zoo_render import ZooMovie, render_zoo_movie
from calcium_gnn.data.zoo_split import (
    CUSTOM,
    DEV,
    TEST,
    check_test_access,
    forbid_test_split,
    manifest,
    manifest_entry,
)
from calcium_gnn.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch_geometric.data import Data

__all__ = [
    "ZooMember",
    "ZooMovie",
    "FAMILIES",
    "LAWS",
    "SIGNALS",
    "N_TEST",
    "member",
    "members",
    "dev_members",
    "test_members",
    "custom_member",
    "law_member",
    "NONLINEAR_LAWS",
    "dish_member",
    "member_culture",
    "member_graph",
    "member_movie",
    "forbid_test_split",
    "test_manifest",
]

FAMILIES, LAWS, SIGNALS, N_TEST = zp.FAMILIES, zp.LAWS, zp.SIGNALS, zp.N_TEST
SPLITS: tuple[str, ...] = ("dev", "test")
#: how many dev members ``members("dev")`` returns by default
DEV_DEFAULT: int = 60
_ID = re.compile(r"^([a-z]+)-(\d+)$")


@dataclass(frozen=True)
class ZooMember:
    """One member of the zoo: everything needed to regenerate it.

    Attributes:
        id: ``"dev-<i>"``, ``"test-<i>"`` or ``"<family>-<seed>"``.
        split: ``"dev"``, ``"test"`` or ``"custom"``.
        family: ``"border"``, ``"stimulus"`` or ``"pacemaker"`` (where the drivers are).
        law: ``"linear"`` (the paper's eq. 3), ``"leak"`` (eq. 3 minus ``leak (y - leak_baseline)``) or,
            for :func:`law_member`, a nonlinear law (:mod:`calcium_gnn.data.zoo_laws`).
        signal: the drivers' signal, ``"transient"``, ``"oscillation"`` or ``"plateau"``.
        n_cells, n_frames: N and T. dt: frame interval (s). k: coupling constant (1/s).
        noise: observation noise of the graph's ``x``, a fraction of the traces' dynamic range.
        key: the spawn key of the member's random streams.
        params: every parameter (:func:`calcium_gnn.data.zoo_params.member_params`).
    """

    id: str
    split: str
    family: str
    law: str
    signal: str
    n_cells: int
    n_frames: int
    dt: float
    k: float
    noise: float
    key: tuple[int, ...]
    params: dict[str, Any]

    def __hash__(self) -> int:
        return hash((self.id, self.key))


def _member(member_id: str, split: str, key: tuple[int, ...], params: dict[str, Any]) -> ZooMember:
    return ZooMember(
        id=member_id,
        split=split,
        family=params["family"],
        law=params["law"],
        signal=params["signal"],
        n_cells=int(params["n_cells"]),
        n_frames=int(params["n_frames"]),
        dt=float(params["dt"]),
        k=float(params["k"]),
        noise=float(params["noise"]),
        key=key,
        params=params,
    )


@lru_cache(maxsize=1)
def _test_plan() -> tuple[tuple[dict[str, str], dict[str, float]], ...]:
    """The test split's design (choices and unit values of its 60 members), drawn once."""
    rng = np.random.default_rng(np.random.SeedSequence(ZOO_ENTROPY, spawn_key=(TEST,)))
    return tuple(zp.test_plan(rng))


def _dev_member(index: int) -> ZooMember:
    key = (DEV, index)
    rng = member_streams(key)["params"]
    choices = zp.draw_choices(rng)
    units = zp.draw_units(rng)
    return _member(f"dev-{index}", "dev", key, zp.member_params(choices["family"], choices, units, rng))


def _test_member(index: int) -> ZooMember:
    check_test_access(f"test-{index}")
    key = (TEST, index)
    choices, units = _test_plan()[index]
    rng = member_streams(key)["params"]
    return _member(f"test-{index}", "test", key, zp.member_params(choices["family"], choices, units, rng))


def _custom_key(kind: str, name: str, options: tuple[str, ...], seed: int, tag: int) -> tuple[int, ...]:
    """``(CUSTOM, tag + index of name, seed)``, the spawn key of a custom member, checked.

    Raises:
        ConfigError: ``name`` not among ``options`` (``kind`` says what it names) or a negative seed.
    """
    if name not in options:
        raise ConfigError(f"zoo {kind}", f"unknown {kind} {name!r} (use one of {options})")
    if int(seed) < 0:
        raise ConfigError("zoo seed", f"must be >= 0, got {seed}")
    return (CUSTOM, tag + options.index(name), int(seed))


def custom_member(family: str, seed: int) -> ZooMember:
    """A member of ``family`` drawn from ``seed`` outside both splits (id ``"<family>-<seed>"``).

    Raises:
        ConfigError: unknown family or a negative seed.
    """
    key = _custom_key("family", family, FAMILIES, seed, 0)
    rng = member_streams(key)["params"]
    choices = {**zp.draw_choices(rng), "family": family}
    units = zp.draw_units(rng)
    return _member(f"{family}-{int(seed)}", "custom", key, zp.member_params(family, choices, units, rng))


#: spawn keys of nonlinear-law members are ``(CUSTOM, LAW_TAG + law index, seed)``, disjoint from the
#: custom members' ``(CUSTOM, family index, seed)``
LAW_TAG: int = 10


def law_member(law: str, seed: int) -> ZooMember:
    """A member of the nonlinear ``law`` (:data:`~calcium_gnn.data.zoo_laws.NONLINEAR_LAWS`) drawn from
    ``seed`` (id ``"<law>-<seed>"``), outside both splits.

    Its family, signal, imaging and spanned numbers are drawn as a custom member's (typical size: 30-300
    cells, 100-400 frames), its law's parameters (:data:`~calcium_gnn.data.zoo_laws.LAW_RANGES`) after
    them from the same stream. Neither the frozen test split nor any dev member changes.

    Raises:
        ConfigError: unknown law or a negative seed.
    """
    key = _custom_key("law", law, NONLINEAR_LAWS, seed, LAW_TAG)
    rng = member_streams(key)["params"]
    choices = {**zp.draw_choices(rng), "size": "typical", "law": "linear"}
    params = zp.member_params(choices["family"], choices, zp.draw_units(rng), rng)
    params.update(draw_law_params(law, rng), law=law)
    return _member(f"{law}-{int(seed)}", "custom", key, params)


#: spawn-key tag of the dishes of simulated plates (:func:`dish_member`)
DISH_TAG: int = 7


def dish_member(base: ZooMember, *, k: float, noise: float, experiment: int, dish: int) -> ZooMember:
    """One dish of a simulated multi-dish experiment: ``base``'s design with its own culture.

    The dish keeps every parameter of ``base`` (family, law, cell count and size, frame interval,
    drivers' signal, imaging) but draws its own geometry, drivers, feeds and noise (its key extends
    ``base``'s by ``(DISH_TAG, experiment, dish)``), with coupling ``k`` and observation ``noise``. This is
    how ``scripts/power.py`` builds plates: the dishes of one experiment differ as cultures do.

    Raises:
        ConfigError: ``base`` is a member of the frozen test split (never a design for simulations), or
            ``k`` / ``noise`` outside (0, inf) / [0, inf).
    """
    if base.split == "test":
        raise ConfigError("zoo dish", f"{base.id} is in the frozen test split: base plates on a dev or "
                                      "custom member")
    if not k > 0:
        raise ConfigError("zoo dish", f"k must be > 0, got {k}")
    if not noise >= 0:
        raise ConfigError("zoo dish", f"noise must be >= 0, got {noise}")
    params = {**base.params, "k": float(k), "noise": float(noise)}
    key = (*base.key, DISH_TAG, int(experiment), int(dish))
    return _member(f"{base.id}/experiment-{int(experiment)}/dish-{int(dish)}", "custom", key, params)


def member(member_id: str) -> ZooMember:
    """The member with id ``"dev-<i>"``, ``"test-<i>"`` (``i < 60``) or ``"<family>-<seed>"``.

    Raises:
        ConfigError: an id of none of these forms, or a test id while the test split is closed.
    """
    match = _ID.match(str(member_id))
    expected = (
        f"expected 'dev-<i>', 'test-<i>' with 0 <= i < {N_TEST}, '<family>-<seed>' with a family "
        f"in {FAMILIES}, or '<law>-<seed>' with a law in {NONLINEAR_LAWS}"
    )
    if match is None:
        raise ConfigError("zoo member", f"bad member id {member_id!r}: {expected}")
    prefix, index = match.group(1), int(match.group(2))
    if prefix == "dev":
        return _dev_member(index)
    if prefix == "test" and index < N_TEST:
        return _test_member(index)
    if prefix in FAMILIES:
        return custom_member(prefix, index)
    if prefix in NONLINEAR_LAWS:
        return law_member(prefix, index)
    raise ConfigError("zoo member", f"unknown member id {member_id!r}: {expected}")


def dev_members(n: int = DEV_DEFAULT, start: int = 0) -> list[ZooMember]:
    """Dev members ``dev-<start>`` ... ``dev-<start + n - 1>``: tune on these."""
    if n < 0 or start < 0:
        raise ConfigError("zoo dev", f"need n >= 0 and start >= 0, got n={n}, start={start}")
    return [_dev_member(i) for i in range(start, start + n)]


def test_members() -> list[ZooMember]:
    """The 60 frozen test members, for evaluation only (raises after :func:`forbid_test_split`)."""
    check_test_access("test_members()")
    return [_test_member(i) for i in range(N_TEST)]


def members(split: str, n: int = DEV_DEFAULT) -> list[ZooMember]:
    """``dev_members(n)`` for ``split="dev"``, ``test_members()`` for ``split="test"``."""
    if split == "dev":
        return dev_members(n)
    if split == "test":
        return test_members()
    raise ConfigError("zoo split", f"unknown split {split!r} (use one of {SPLITS})")


def member_culture(zoo_member: ZooMember) -> ZooCulture:
    """The member's ground truth (geometry, drivers, feeds, clean traces); no rendering."""
    if zoo_member.split == "test":
        check_test_access(zoo_member.id)
    return make_zoo_culture(zoo_member.params, zoo_member.key)


def member_graph(zoo_member: ZooMember, dtype: torch.dtype | None = None) -> Data:
    """The member's true cell graph, following ``calcium_gnn.io.graph_schema``.

    As :func:`calcium_gnn.data.synthetic.truth_graph`: ``x = truth_x + sigma N(0, 1)`` i.i.d. with
    ``sigma = noise * (max - min)`` of the clean traces; nodes in label order; both directions of every
    adjacent pair, sorted; ``edge_attr = u * l`` (E, 1); ``pos`` the polygon centroids; px units.

    Returns:
        ``Data`` with the schema fields and ``image_shape``, plus the truth: ``truth_k``,
        ``truth_gamma`` (N,) (NaN for drivers), ``truth_edge_weight_scale``, ``truth_x`` (N, T),
        ``is_driver`` (N,) bool (every cell with prescribed levels: treat as border cells),
        ``truth_driver_kind`` (N,) long (codes of ``zoo_drivers.DRIVER_KINDS``), ``truth_law``
        (``"linear"`` / ``"leak"`` / a nonlinear law), ``truth_law_constants`` (a nonlinear law's
        resolved constants, :mod:`calcium_gnn.data.zoo_laws`; empty otherwise), ``truth_leak``
        (``lambda``, 1/s; 0 for linear),
        ``truth_leak_baseline`` (``b``), ``truth_noise``, ``zoo_id``, ``zoo_family``, ``zoo_signal``.
    """
    import torch

    from calcium_gnn.io.graph_schema import validate_graph

    dtype = torch.float32 if dtype is None else dtype
    c = member_culture(zoo_member)
    clean = c.traces
    sigma = zoo_member.noise * float(clean.max() - clean.min())
    observed = clean + sigma * member_streams(zoo_member.key)["observation"].standard_normal(clean.shape)
    data = true_geometry_graph(
        observed, clean, c.t, c.centroids, c.areas, c.touches_edge, c.edge_index, c.u, c.l,
        np.arange(1, len(c.areas) + 1), dt=float(zoo_member.dt), image_shape=(int(c.side), int(c.side)),
        k=float(c.k), gamma=c.gamma, edge_weight_scale=float(c.edge_weight_scale), is_driver=c.is_driver,
        dtype=dtype,
    )
    data.truth_driver_kind = torch.as_tensor(c.drivers.kind, dtype=torch.long)
    data.truth_law = zoo_member.law
    data.truth_law_constants = {name: float(v) for name, v in c.law_constants.items()}
    data.truth_leak = float(c.leak)
    data.truth_leak_baseline = float(c.leak_baseline)
    data.truth_noise = float(zoo_member.noise)
    data.zoo_id = zoo_member.id
    data.zoo_family = zoo_member.family
    data.zoo_signal = zoo_member.signal
    return validate_graph(data, f"zoo member {zoo_member.id}")


def member_movie(zoo_member: ZooMember, culture: ZooCulture | None = None) -> ZooMovie:
    """Render the member's movie: ``movie`` (T, H, W) uint16, ``labels`` (H, W), ``nuclei``, ``hot_pixels``.

    Costly (seconds for a typical member); ``culture`` reuses an already generated ground truth.
    """
    culture = member_culture(zoo_member) if culture is None else culture
    return render_zoo_movie(culture, member_streams(zoo_member.key)["imaging"])


def test_manifest() -> dict[str, Any]:
    """The manifest of the test split as the generator makes it now (builds all 60 graphs).

    ``tests/unit/data/test_zoo.py`` compares it with the frozen ``zoo_test_split.json``.
    """
    import torch

    entries = []
    for m in test_members():
        entries.append(manifest_entry(m.id, m.params, member_graph(m, dtype=torch.float64)))
    return manifest(entries)
