"""Keeping the zoo's test split fixed and untouched by tuning.

* **Disjoint seeds.** Dev member ``i`` draws from ``SeedSequence(ZOO_ENTROPY, spawn_key=(DEV, i))``,
  test member ``i`` from ``spawn_key=(TEST, i)`` and the test split's design from ``(TEST,)``; custom
  members use ``(CUSTOM, family, seed)``. Different spawn keys give independent streams, so no dev
  member shares a draw with a test member, for any number of dev members.
* **Frozen.** ``zoo_test_split.json`` (checked in, next to this module) lists every test member's id,
  family, law, key parameters and a *fingerprint* of its truth graph (:func:`fingerprint`): an exact
  SHA-256 over the integer arrays (edges, drivers, ids) and float sums compared to a relative
  tolerance of :data:`FINGERPRINT_RTOL` (exact float hashes would break on another BLAS).
  ``tests/unit/data/test_zoo.py`` rebuilds the split and compares: any change of the generator that
  alters a test member fails it. After an intended change, regenerate the file with
  ``python scripts/make_zoo.py freeze=true`` and say so in the commit: old scores are then void.
* **Guarded.** A tuning script calls :func:`forbid_test_split` first; from then on, in that process,
  asking for a test member raises. A unit test also reads every script in ``benchmarks/`` and
  ``scripts/`` and the package: only the files in :data:`TEST_SPLIT_USERS` may name the test split,
  and a benchmark that uses the zoo must call :func:`forbid_test_split` unless it is one of them.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from calcium_gnn.errors import ConfigError, InputFileError

DEV, TEST, CUSTOM = 1, 2, 3
MANIFEST_PATH: Path = Path(__file__).with_name("zoo_test_split.json")
MANIFEST_FORMAT = "calcium_gnn.zoo_test_split"
MANIFEST_VERSION = 1
#: relative tolerance of the fingerprint's float sums, and the absolute one (for sums near zero:
#: signed feeds are at least 1e-8 1/s, their rounding about 1e-19)
FINGERPRINT_RTOL: float = 1e-6
FINGERPRINT_ATOL: float = 1e-12
#: files (relative to the repository root) allowed to use the test split: evaluation, not tuning
TEST_SPLIT_USERS: tuple[str, ...] = (
    "scripts/make_zoo.py",
    "benchmarks/zoo.py",
    "benchmarks/zoo_segmentation.py",
    "benchmarks/zoo_waves.py",
)
#: the manifest's key parameters of a member
MANIFEST_KEYS: tuple[str, ...] = (
    "family", "law", "signal", "size", "n_cells", "n_frames", "dt", "k", "noise", "cell_diameter", "side",
    "timescale", "leak", "membrane", "dye", "feed_sign", "bleaching",
)

_closed: list[str] = []


def forbid_test_split(reason: str = "tuning") -> None:
    """Close the test split for the rest of this process (call it first thing in a tuning script)."""
    _closed.append(reason)


def check_test_access(what: str) -> None:
    """Raise when the test split was closed by :func:`forbid_test_split` in this process.

    Raises:
        ConfigError: naming ``what`` and the reason the split was closed.
    """
    if _closed:
        raise ConfigError(
            "zoo split",
            f"{what}: the test split is closed in this process ({_closed[0]}); tune on dev_members()",
        )


#: the signed sums weigh the ``m``-th finite value by ``cos(m * SIGN_STEP)`` (an irrational step:
#: no pattern), so one changed value moves the sum by its change while the sum itself only grows
#: like the square root of the count: a local change of 1e-3 is caught in a 100,000-value array
SIGN_STEP: float = 2.0 * math.pi * (math.sqrt(5.0) - 1.0) / 2.0


def _sum(tensor: torch.Tensor) -> float:
    values = tensor.double().reshape(-1)
    return float(values[torch.isfinite(values)].sum())


def _signed_sum(tensor: torch.Tensor) -> float:
    values = tensor.double().reshape(-1)
    values = values[torch.isfinite(values)]
    weights = torch.cos(torch.arange(values.numel(), dtype=torch.float64) * SIGN_STEP)
    return float((weights * values).sum())


def fingerprint(data: Data) -> dict[str, Any]:
    """The truth graph's fingerprint: ``structure`` (SHA-256, 16 hex digits) and float ``sums``."""
    digest = hashlib.sha256()
    for name in ("edge_index", "is_driver", "truth_driver_kind", "touches_edge", "cell_id"):
        array = getattr(data, name).cpu().numpy()
        digest.update(name.encode() + str(array.shape).encode() + np.ascontiguousarray(array).tobytes())
    sums = {
        "truth_k": float(data.truth_k),
        "gamma": _sum(data.truth_gamma),
        "gamma_abs": _sum(data.truth_gamma.abs()),
        "truth_x": _sum(data.truth_x),
        "truth_x_sq": _sum(data.truth_x.double() ** 2),
        "truth_x_modelled": _sum(data.truth_x[~data.is_driver]),
        "truth_x_signed": _signed_sum(data.truth_x),
        "gamma_signed": _signed_sum(data.truth_gamma),
        "x": _sum(data.x),
        "x_signed": _signed_sum(data.x),
        "u": _sum(data.u),
        "l": _sum(data.l),
        "area": _sum(data.area),
        "t": _sum(data.t),
    }
    return {"structure": digest.hexdigest()[:16], "sums": sums}


def fingerprint_problems(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints (empty when they agree)."""
    problems = []
    if expected["structure"] != actual["structure"]:
        problems.append(f"structure {actual['structure']} != {expected['structure']}")
    for name, value in expected["sums"].items():
        got = actual["sums"].get(name, math.nan)
        if not math.isclose(got, value, rel_tol=FINGERPRINT_RTOL, abs_tol=FINGERPRINT_ATOL):
            problems.append(f"{name} {got!r} != {value!r}")
    return problems


def manifest_entry(member_id: str, params: dict[str, Any], data: Data) -> dict[str, Any]:
    """One member's line of the manifest: id, key parameters, counts and fingerprint."""
    return {
        "id": member_id,
        **{key: params[key] for key in MANIFEST_KEYS},
        "n_drivers": int(data.is_driver.sum()),
        "n_edges": int(data.edge_index.shape[1]) // 2,
        "fingerprint": fingerprint(data),
    }


def manifest(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest document around the members' ``entries``."""
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "description": "the frozen test split of calcium_gnn.data.zoo: never tune on it. Regenerate "
        "only after an intended change of the generator (python scripts/make_zoo.py freeze=true).",
        "fingerprint": f"structure: sha256 of edge_index, is_driver, truth_driver_kind, touches_edge, "
        f"cell_id; sums: float sums (signed: weights cos(m * {SIGN_STEP!r})) compared with rel_tol "
        f"{FINGERPRINT_RTOL}, abs_tol {FINGERPRINT_ATOL}",
        "members": entries,
    }


def write_manifest(document: dict[str, Any], path: str | Path = MANIFEST_PATH) -> Path:
    """Write the manifest as indented JSON (one member per block)."""
    path = Path(path)
    path.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return path


def read_manifest(path: str | Path = MANIFEST_PATH) -> dict[str, Any]:
    """Read the frozen manifest.

    Raises:
        InputFileError: missing, unreadable or not a zoo manifest.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputFileError(path, f"cannot read the zoo's test-split manifest ({err})") from None
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        raise InputFileError(path, f"not a '{MANIFEST_FORMAT}' file")
    return document
