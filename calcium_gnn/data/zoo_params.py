"""The parameter space of the culture zoo and how a member's parameters are drawn.

A member is fully described by a family (where its drivers are), a few categorical choices and a
dictionary of numbers. The numbers that the zoo must span are drawn from *unit values* ``u`` in
[0, 1] mapped onto their range (:data:`SPANNED`, log-uniform for scales, uniform otherwise); the
rest are drawn from the member's own random stream (:func:`member_params`).

=================  ===================================================  ==========================
parameter          range                                                 map
=================  ===================================================  ==========================
``n_cells``        30-300 (typical members), 300-2,000 (large ones)      log-uniform
``n_frames``       100-400 (typical), 400-1,000 (large)                  uniform
``cell_diameter``  15-80 px, equivalent diameter ``2 sqrt(area / pi)``   log-uniform, capped so
                                                                         the image side <= 1,024 px
``dt``             0.5-20 s                                              log-uniform
``k``              0.002-0.08 1/s                                        log-uniform
``noise``          0-5 % of the traces' dynamic range                    uniform
``timescale``      5-300 s (transient decay, plateau hold)               log-uniform
=================  ===================================================  ==========================

Categorical choices (:data:`CHOICES`): the law (``linear``: the paper's eq. 3; ``leak``: eq. 3 minus
``lambda (y - b)``), the drivers' signal (``transient``, ``oscillation``, ``plateau``), the size class,
the membranes (``dark`` or ``bright`` against the cytosol), the dye (``cytosolic`` or ``nuclear``), the
sign of the feeds and whether the dye bleaches. The fixed test split uses exactly the counts of
:data:`TEST_COUNTS` (60 members) and a Latin hypercube over the spanned numbers whose strata include
both ends of every range (:func:`test_plan`), so it spans every range by construction; dev members
draw the same categories with the same frequencies and the unit values independently.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from calcium_gnn.errors import ConfigError

FAMILIES: tuple[str, ...] = ("border", "stimulus", "pacemaker")
"""Where the drivers are: the cells touching the image edge only (the paper's setting); plus interior
cells hit by a point stimulus that starts a radial wave; plus interior spontaneous pacemakers."""
LAWS: tuple[str, ...] = ("linear", "leak")
SIGNALS: tuple[str, ...] = ("transient", "oscillation", "plateau")

#: the image side (px) a member's cell count and diameter may not exceed
MAX_SIDE: int = 1024
#: smallest and largest equivalent cell diameter (px)
DIAMETER_RANGE: tuple[float, float] = (15.0, 80.0)

#: spanned numbers: name -> (low, high, log-uniform?); ``n_cells`` / ``n_frames`` depend on the size class
SPANNED: dict[str, tuple[float, float, bool]] = {
    "cell_diameter": (*DIAMETER_RANGE, True),
    "dt": (0.5, 20.0, True),
    "k": (0.002, 0.08, True),
    "noise": (0.0, 0.05, False),
    "timescale": (5.0, 300.0, True),
}
SIZE_CLASSES: dict[str, dict[str, tuple[float, float, bool]]] = {
    "typical": {"n_cells": (30, 300, True), "n_frames": (100, 400, False)},
    "large": {"n_cells": (300, 2000, True), "n_frames": (400, 1000, False)},
}
UNIT_NAMES: tuple[str, ...] = ("n_cells", "n_frames", *SPANNED)

#: categorical choices and their counts in the 60-member test split (dev draws them with these frequencies)
TEST_COUNTS: dict[str, dict[str, int]] = {
    "family": {"border": 22, "stimulus": 19, "pacemaker": 19},
    "law": {"linear": 48, "leak": 12},
    "signal": {"transient": 24, "oscillation": 18, "plateau": 18},
    "size": {"typical": 52, "large": 8},
    "membrane": {"dark": 30, "bright": 30},
    "dye": {"cytosolic": 40, "nuclear": 20},
    "feed_sign": {"positive": 24, "negative": 12, "mixed": 24},
    "bleaching": {"bleached": 40, "none": 20},
}
CHOICES: dict[str, tuple[str, ...]] = {name: tuple(counts) for name, counts in TEST_COUNTS.items()}
N_TEST: int = 60
assert all(sum(c.values()) == N_TEST for c in TEST_COUNTS.values())
assert CHOICES["family"] == FAMILIES and CHOICES["law"] == LAWS and CHOICES["signal"] == SIGNALS

# -- ranges of the numbers drawn per member (not spanned by construction) --------------------------
LLOYD_ITERATIONS: tuple[int, int] = (2, 8)  # inclusive; more = rounder, more even cells
MEMBRANE_WIDTH: tuple[float, float] = (1.5, 3.0)  # px
MIN_SHARED_BORDER: float = 5.0  # px, the adjacency threshold of the graph builder (paper: 5)
BASELINE: tuple[float, float] = (0.3, 0.6)  # drivers' resting level (calcium units)
DRIFT_AMPLITUDE: tuple[float, float] = (0.0, 0.05)
AMPLITUDE: tuple[float, float] = (0.3, 1.0)  # transient / oscillation peak height
QUIET_AMPLITUDE: tuple[float, float] = (0.05, 0.2)  # edge drivers of stimulus / pacemaker members
RISE_FRACTION: tuple[float, float] = (0.05, 0.4)  # rise constant / timescale
EVENTS_PER_DRIVER: tuple[float, float] = (1.0, 4.0)  # expected transients per driver per recording
QUIET_EVENTS_PER_DRIVER: tuple[float, float] = (0.0, 1.0)
WAVES: tuple[float, float] = (0.0, 2.0)  # expected waves over the edge drivers per recording
WAVE_SPEED: tuple[float, float] = (0.1, 2.0)  # cell diameters per second (log-uniform)
WAVE_PARTICIPATION: tuple[float, float] = (0.5, 1.0)
PERIOD_FACTOR: tuple[float, float] = (2.0, 5.0)  # oscillation / pacemaker period / timescale
MIN_PERIOD_FRAMES: float = 6.0  # a period covers at least this many frames...
MAX_PERIOD_FRACTION: float = 0.5  # ...and at most this fraction of the recording
STIMULUS_AMPLITUDE: tuple[float, float] = (1.0, 2.0)
STIMULUS_TIME: tuple[float, float] = (0.1, 0.4)  # fraction of the recording
TWO_STIMULI: float = 0.3  # probability of a second stimulated cell
RELAY_FRACTION: tuple[float, float] = (0.0, 0.3)  # of the cells the wave reaches
WAVE_RADIUS: tuple[float, float] = (0.3, 0.8)  # fraction of the image side
PACEMAKER_FRACTION: tuple[float, float] = (0.01, 0.06)  # of the interior cells (at least one)
LEAK: tuple[float, float] = (1e-3, 3e-2)  # 1/s, log-uniform
FEED_OFFSET: tuple[float, float] = (0.05, 0.25)  # steady-state offset of the feeds (calcium units)
FEED_FLOOR: float = 0.2  # |u_i| >= this for one-signed feeds
# imaging
BLUR: tuple[float, float] = (0.5, 2.0)  # px
F_MIN: tuple[float, float] = (100.0, 600.0)  # photons at zero calcium
DYNAMIC_RATIO: tuple[float, float] = (3.0, 10.0)  # F_max / F_min
K_D: tuple[float, float] = (1.0, 5.0)  # calcium units
DARK_MEMBRANE: tuple[float, float] = (0.2, 0.6)  # x the dimmest cell level
BRIGHT_MEMBRANE: tuple[float, float] = (1.2, 2.0)  # x F_max
NUCLEUS_FRACTION: tuple[float, float] = (0.35, 0.55)  # nucleus radius / cell radius
CYTOPLASM_LEVEL: tuple[float, float] = (0.3, 0.6)  # nuclear dye: cytoplasm x F_min
BLEACH_LOSS: tuple[float, float] = (0.05, 0.5)  # fluorescence lost by the last frame
HOT_FRAMES: tuple[int, int] = (0, 4)  # inclusive
READ_NOISE: float = 3.0  # photoelectrons
GAIN: float = 1.0  # ADU per photoelectron
CAMERA_OFFSET: float = 100.0  # ADU
SIGNIFICANT_DIGITS: int = 4  # drawn numbers are rounded to this many significant digits


def span(u: float, low: float, high: float, log: bool) -> float:
    """Map a unit value ``u`` in [0, 1] onto ``[low, high]`` (log-uniformly when ``log``)."""
    if log:
        return float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
    return float(low + u * (high - low))


def rounded(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """``value`` rounded to ``digits`` significant digits (readable parameters and manifest)."""
    return float(f"{value:.{digits}g}")


def diameter_cap(n_cells: int) -> float:
    """Largest equivalent diameter (px) for which ``n_cells`` cells fit in :data:`MAX_SIDE` px."""
    return 2.0 * MAX_SIDE / math.sqrt(n_cells * math.pi)


def image_side(n_cells: int, cell_diameter: float) -> int:
    """Side (px) of the square image holding ``n_cells`` cells of that equivalent diameter.

    ``side**2 = n_cells * pi (cell_diameter / 2)**2``: the cells tile the image.
    """
    return int(round(cell_diameter * math.sqrt(n_cells * math.pi) / 2.0))


def unit_values(units: dict[str, float], size: str) -> dict[str, Any]:
    """The spanned numbers of a member from its unit values (:data:`UNIT_NAMES`) and size class."""
    out: dict[str, Any] = {}
    for name, (low, high, log) in SIZE_CLASSES[size].items():
        out[name] = int(round(span(units[name], low, high, log)))
    for name, (low, high, log) in SPANNED.items():
        if name == "cell_diameter":
            high = min(high, diameter_cap(out["n_cells"]))
        out[name] = rounded(span(units[name], low, high, log))
    return out


def draw_choices(rng: np.random.Generator) -> dict[str, str]:
    """Categorical choices with the frequencies of the test split (a dev or custom member)."""
    out = {}
    for name, counts in TEST_COUNTS.items():
        options = list(counts)
        weights = np.array([counts[o] for o in options], dtype=float)
        out[name] = options[int(rng.choice(len(options), p=weights / weights.sum()))]
    return out


def test_plan(rng: np.random.Generator) -> list[tuple[dict[str, str], dict[str, float]]]:
    """The 60 test members' (choices, unit values), a stratified design drawn from ``rng``.

    Every categorical choice appears exactly as often as in :data:`TEST_COUNTS` (shuffled
    independently). The unit values are a Latin hypercube: within each size class, the values of one
    number are ``0, 1/(n-1), ..., 1`` in a random order, so both ends of every range are present. The
    member with the largest diameter value gets the fewest cells of its size class (swapped in), so
    80 px cells are not lost to the image-side cap.
    """
    choices: list[dict[str, str]] = [{} for _ in range(N_TEST)]
    for name, counts in TEST_COUNTS.items():
        column = [option for option, count in counts.items() for _ in range(count)]
        for member, option in zip(choices, rng.permutation(np.array(column, dtype=object)), strict=True):
            member[name] = str(option)
    units: list[dict[str, float]] = [{} for _ in range(N_TEST)]
    for size in SIZE_CLASSES:
        idx = [i for i in range(N_TEST) if choices[i]["size"] == size]
        grid = np.arange(len(idx)) / max(len(idx) - 1, 1)
        for name in UNIT_NAMES:
            for i, u in zip(idx, rng.permutation(grid), strict=True):
                units[i][name] = float(u)
        widest = max(idx, key=lambda i: units[i]["cell_diameter"])
        fewest = min(idx, key=lambda i: units[i]["n_cells"])
        units[widest]["cell_diameter"], units[fewest]["cell_diameter"] = (
            units[fewest]["cell_diameter"],
            units[widest]["cell_diameter"],
        )
    return list(zip(choices, units, strict=True))


def draw_units(rng: np.random.Generator) -> dict[str, float]:
    """Independent unit values for every spanned number (a dev or custom member)."""
    return {name: float(rng.random()) for name in UNIT_NAMES}


def member_params(
    family: str, choices: dict[str, str], units: dict[str, float], rng: np.random.Generator
) -> dict[str, Any]:
    """All the parameters of a member: the spanned numbers from ``units``, the rest drawn from ``rng``.

    Args:
        family: one of :data:`FAMILIES` (wins over ``choices["family"]``).
        choices: the categorical choices (:data:`CHOICES`).
        units: unit values of :data:`UNIT_NAMES`.
        rng: the member's parameter stream; every draw is made whatever the choices, so changing a
            choice changes no other number.

    Returns:
        A flat dictionary of JSON values: the choices, the spanned numbers, ``side`` and the numbers
        drawn from the ranges defined in this module (``leak = 0`` for the linear law, ``bleach_loss = 0``
        without bleaching).
    """
    if family not in FAMILIES:
        raise ConfigError("zoo family", f"unknown family {family!r} (use one of {FAMILIES})")
    p: dict[str, Any] = {**choices, "family": family, **unit_values(units, choices["size"])}
    p["side"] = image_side(p["n_cells"], p["cell_diameter"])
    duration = (p["n_frames"] - 1) * p["dt"]

    def uniform(bounds: tuple[float, float]) -> float:
        return rounded(float(rng.uniform(*bounds)))

    def log_uniform(bounds: tuple[float, float]) -> float:
        return rounded(span(float(rng.random()), *bounds, log=True))

    p["lloyd_iterations"] = int(rng.integers(LLOYD_ITERATIONS[0], LLOYD_ITERATIONS[1] + 1))
    p["membrane_width"] = uniform(MEMBRANE_WIDTH)
    p["min_shared_border"] = MIN_SHARED_BORDER
    p["rise_fraction"] = uniform(RISE_FRACTION)
    p["events_per_driver"] = uniform(EVENTS_PER_DRIVER)
    p["quiet_events_per_driver"] = uniform(QUIET_EVENTS_PER_DRIVER)
    p["waves"] = uniform(WAVES)
    p["wave_speed"] = log_uniform(WAVE_SPEED)
    p["wave_participation"] = uniform(WAVE_PARTICIPATION)
    period = p["timescale"] * float(rng.uniform(*PERIOD_FACTOR))
    p["period"] = rounded(min(max(period, MIN_PERIOD_FRAMES * p["dt"]), MAX_PERIOD_FRACTION * duration))
    p["stimulus_time"] = rounded(duration * float(rng.uniform(*STIMULUS_TIME)))
    p["n_stimuli"] = 2 if rng.random() < TWO_STIMULI else 1
    p["stimulus_amplitude"] = uniform(STIMULUS_AMPLITUDE)
    p["relay_fraction"] = uniform(RELAY_FRACTION)
    p["wave_radius"] = rounded(p["side"] * float(rng.uniform(*WAVE_RADIUS)))
    p["pacemaker_fraction"] = uniform(PACEMAKER_FRACTION)
    leak = log_uniform(LEAK)
    p["leak"] = leak if choices["law"] == "leak" else 0.0
    p["leak_baseline"] = uniform(BASELINE)
    p["feed_offset"] = uniform(FEED_OFFSET)
    p["blur_sigma"] = uniform(BLUR)
    p["f_min"] = uniform(F_MIN)
    p["f_max"] = rounded(p["f_min"] * float(rng.uniform(*DYNAMIC_RATIO)))
    p["k_d"] = uniform(K_D)
    dark, bright = uniform(DARK_MEMBRANE), uniform(BRIGHT_MEMBRANE)
    p["membrane_factor"] = dark if choices["membrane"] == "dark" else bright
    p["nucleus_fraction"] = uniform(NUCLEUS_FRACTION)
    p["cytoplasm_level"] = uniform(CYTOPLASM_LEVEL)
    loss = uniform(BLEACH_LOSS)
    p["bleach_loss"] = loss if choices["bleaching"] == "bleached" else 0.0
    p["hot_frames"] = int(rng.integers(HOT_FRAMES[0], HOT_FRAMES[1] + 1))
    p["read_noise"], p["gain"], p["offset"] = READ_NOISE, GAIN, CAMERA_OFFSET
    return p
