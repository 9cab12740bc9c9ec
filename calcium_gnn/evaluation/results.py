"""``results.json``: the one summary every model writes, in the same shape (a contract).

Every fitted model (CRLSM, PINN, neural ODE, ...) is evaluated the same way
(:func:`calcium_gnn.evaluation.report.evaluate_fit`: the fitted consensus problem is simulated and
compared with the data) and summarised in a JSON object with these keys. Cell ids are the labels of
the cells (``data.cell_id``); as object keys they are strings. ``null`` stands for "not defined"
(e.g. a precision with no simulated peak, an MSE on an empty window); NaN is never written.

=====================  ==========================================================================
key                    value
=====================  ==========================================================================
``schema_version``     int, currently 1
``method``             str, the fitting method (``"crlsm"``, ``"pinn"``, ...)
``setup``              str, the setup name; ``gamma_mode`` str: ``"none" | "shared" | "per_cell"``
``modelled_cells``     [int], cell ids of the group G (eqs. 2-3)
``border_cells``       [int], cell ids of the border cells (follow the data)
``k``                  float, fitted coupling constant (1/s) for the weights ``w = u*l / s``
``edge_weight_scale``  float, the scale ``s`` the fit used: ``w_ij = u_ij * l_ij / s``
``gamma``              {cell id: float}, fitted feed ``gamma_i`` of every modelled cell
``coupling_rate``      {cell id: float}, ``c_i = k / |N_i| * sum_j w_ij`` (1/s) of every modelled cell
``mse_train``          float | null, mean over modelled cells of the per-cell MSE, training window
``mse_test``           float | null, same on the test window
``mse_per_cell``       {cell id: {"train": float | null, "test": float | null}}, modelled cells
``simulation``         {"method": "rk4" | "euler", "substeps": int, "train_fraction": float,
                       "train_frames": [start, stop), "test_frames": [start, stop),
                       "scored": how the MSE frames are chosen (text)}
``spikes``             {"rule": {...detection parameters...}, "precision", "recall", "f1",
                       "median_timing_error_s", "median_abs_timing_error_s", "n_observed",
                       "n_simulated", "n_matched" (pooled over modelled cells and both windows),
                       "train": {same counts}, "test": {same counts}}
``quality_groups``     {"rule": {... thresholds, "statement": text}, "groups": {group name: [cell id]},
                       "per_cell": {cell id: {"correlation", "relative_bias", "spike_recall",
                       "group"}}}
``fit_seconds``        float, wall time of the fit
``truth``              only with ground truth on the graph: {"k": true k in the fit's scale ``s``,
                       "k_rel_err", "gamma_mae", "gamma_median_abs_err_rel", "n_gamma_cells",
                       "mse_train_clean", "mse_test_clean" (simulation vs clean traces, when
                       ``truth_x`` exists)}
``diagnostics``        whether the fit can be trusted (:mod:`calcium_gnn.evaluation.diagnostics`):
                       {"fit_ok": bool, "reasons": [str] (empty exactly when fit_ok), "bounds",
                       "baselines" (test MSE vs a constant level and vs no coupling, ratios),
                       "residuals" (lag-1 autocorrelation, noise estimate), "identification",
                       "own_trajectory", "rule", "likely_causes" ([str]: what to try, when not
                       fit_ok)}; ``k_interval`` / ``gamma_interval`` are null with
                       ``intervals_withheld`` saying why when ``k`` is not identified or the
                       border-noise search ran to its end (``border_noise`` in ``diagnostics``)
``law``                {"name": the law (:mod:`calcium_gnn.physics.laws`; ``"linear"``: the paper's),
                       and for the output-error model "terms", "leak", "leak_interval", "stimulus_feed",
                       "n_parameters"}
``drivers``            only when the setup names drivers: {cell id: why it follows its data}
``waves``              only with the wave analysis (:mod:`calcium_gnn.evaluation.waves`): activation
                       times, speed and direction with intervals, observed vs simulated maps
``figures``            [str], file names of the figures written next to results.json
``extra``              object, free-form (method-specific numbers)
=====================  ==========================================================================

The file is written atomically (a temporary file in the same folder, then :func:`os.replace`), and an
existing results.json is never overwritten unless asked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calcium_gnn.errors import CalciumGNNError, InputFileError, OutputError
from calcium_gnn.io.atomic import atomic_write_text

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
GAMMA_MODES = ("none", "shared", "per_cell")
SPIKE_KEYS = ("precision", "recall", "f1", "median_timing_error_s", "n_observed", "n_simulated", "n_matched")
REQUIRED_KEYS: tuple[str, ...] = (
    "schema_version",
    "method",
    "setup",
    "gamma_mode",
    "modelled_cells",
    "border_cells",
    "k",
    "edge_weight_scale",
    "gamma",
    "coupling_rate",
    "mse_train",
    "mse_test",
    "mse_per_cell",
    "simulation",
    "spikes",
    "quality_groups",
    "fit_seconds",
    "extra",
)


class ResultsSchemaError(CalciumGNNError):
    """A results dict / results.json breaks the schema; the culprit is ``results.json:<key>``."""


def _fail(key: str, problem: str) -> None:
    raise ResultsSchemaError(f"{RESULTS_FILE}:{key}", problem)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_optional_number(v: Any) -> bool:
    return v is None or _is_number(v)


def _check_cell_map(d: Mapping, key: str, cells: set[str], check_value) -> None:
    value = d[key]
    if not isinstance(value, Mapping):
        _fail(key, "must be an object keyed by cell id")
    if set(value) != cells:
        _fail(key, "keys must be exactly the modelled cell ids (as strings)")
    for cell, v in value.items():
        if not check_value(v):
            _fail(f"{key}.{cell}", f"invalid value {v!r}")


def _check_spike_block(block: Any, key: str) -> None:
    if not isinstance(block, Mapping):
        _fail(key, "must be an object")
    for name in SPIKE_KEYS:
        if name not in block:
            _fail(f"{key}.{name}", "missing")
    for name in ("precision", "recall", "f1"):
        v = block[name]
        if not (v is None or (_is_number(v) and 0.0 <= v <= 1.0)):
            _fail(f"{key}.{name}", f"must be null or in [0, 1], got {v!r}")
    if not _is_optional_number(block["median_timing_error_s"]):
        _fail(f"{key}.median_timing_error_s", "must be null or a number")
    for name in ("n_observed", "n_simulated", "n_matched"):
        v = block[name]
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            _fail(f"{key}.{name}", f"must be a count >= 0, got {v!r}")
    if block["n_matched"] > min(block["n_observed"], block["n_simulated"]):
        _fail(f"{key}.n_matched", "exceeds the number of observed or simulated peaks")


def validate_results(d: Mapping[str, Any]) -> Mapping[str, Any]:
    """Check that ``d`` follows the results.json schema (module docstring); return it unchanged.

    Raises:
        ResultsSchemaError: naming the first offending key.
    """
    if not isinstance(d, Mapping):
        _fail("<root>", f"must be a JSON object, got {type(d).__name__}")
    for key in REQUIRED_KEYS:
        if key not in d:
            _fail(key, "missing")
    if d["schema_version"] != SCHEMA_VERSION:
        _fail("schema_version", f"expected {SCHEMA_VERSION}, got {d['schema_version']!r}")
    for key in ("method", "setup"):
        if not isinstance(d[key], str) or not d[key]:
            _fail(key, "must be a non-empty string")
    if d["gamma_mode"] not in GAMMA_MODES:
        _fail("gamma_mode", f"must be one of {GAMMA_MODES}, got {d['gamma_mode']!r}")
    for key in ("modelled_cells", "border_cells"):
        ids = d[key]
        if not isinstance(ids, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in ids):
            _fail(key, "must be a list of integer cell ids")
        if len(set(ids)) != len(ids):
            _fail(key, "has duplicate cell ids")
    if not d["modelled_cells"]:
        _fail("modelled_cells", "is empty")
    if set(d["modelled_cells"]) & set(d["border_cells"]):
        _fail("border_cells", "overlaps modelled_cells")
    if not (_is_number(d["k"])):
        _fail("k", "must be a finite number")
    if not (_is_number(d["edge_weight_scale"]) and d["edge_weight_scale"] > 0):
        _fail("edge_weight_scale", "must be a positive number")
    cells = {str(c) for c in d["modelled_cells"]}
    _check_cell_map(d, "gamma", cells, _is_number)
    _check_cell_map(d, "coupling_rate", cells, lambda v: _is_number(v) and v >= 0)
    _check_cell_map(
        d,
        "mse_per_cell",
        cells,
        lambda v: isinstance(v, Mapping)
        and set(v) == {"train", "test"}
        and all(_is_optional_number(x) and (x is None or x >= 0) for x in v.values()),
    )
    for key in ("mse_train", "mse_test"):
        if not (_is_optional_number(d[key]) and (d[key] is None or d[key] >= 0)):
            _fail(key, "must be null or a number >= 0")
    sim = d["simulation"]
    if not isinstance(sim, Mapping) or not {"method", "substeps", "train_frames", "test_frames"} <= set(sim):
        _fail("simulation", "must hold method, substeps, train_frames and test_frames")
    spikes = d["spikes"]
    if not isinstance(spikes, Mapping) or not isinstance(spikes.get("rule"), Mapping):
        _fail("spikes.rule", "missing detection rule")
    _check_spike_block(spikes, "spikes")
    for window in ("train", "test"):
        _check_spike_block(spikes.get(window), f"spikes.{window}")
    quality = d["quality_groups"]
    if not isinstance(quality, Mapping) or not isinstance(quality.get("rule"), Mapping):
        _fail("quality_groups.rule", "missing")
    if not isinstance(quality["rule"].get("statement"), str):
        _fail("quality_groups.rule.statement", "missing the rule stated in words")
    groups = quality.get("groups")
    if not isinstance(groups, Mapping):
        _fail("quality_groups.groups", "must be an object: group name -> [cell id]")
    grouped = [c for members in groups.values() for c in members]
    if sorted(grouped) != sorted(d["modelled_cells"]):
        _fail("quality_groups.groups", "every modelled cell must be in exactly one group")
    if not (_is_number(d["fit_seconds"]) and d["fit_seconds"] >= 0):
        _fail("fit_seconds", "must be a number >= 0")
    if "truth" in d:
        truth = d["truth"]
        if not isinstance(truth, Mapping):
            _fail("truth", "must be an object")
        for key in ("k", "k_rel_err", "gamma_mae", "gamma_median_abs_err_rel"):
            if key not in truth or not _is_optional_number(truth[key]):
                _fail(f"truth.{key}", "missing or not a number / null")
    figures = d.get("figures", [])
    if not (isinstance(figures, list) and all(isinstance(f, str) for f in figures)):
        _fail("figures", "must be a list of file names")
    if not isinstance(d["extra"], Mapping):
        _fail("extra", "must be an object")
    if "diagnostics" in d:
        diagnostics = d["diagnostics"]
        if not (isinstance(diagnostics, Mapping) and isinstance(diagnostics.get("fit_ok"), bool)):
            _fail("diagnostics.fit_ok", "must be true or false")
        reasons = diagnostics.get("reasons")
        if not (isinstance(reasons, list) and all(isinstance(r, str) for r in reasons)):
            _fail("diagnostics.reasons", "must be a list of sentences")
        if diagnostics["fit_ok"] == bool(reasons):
            _fail("diagnostics.fit_ok", "must be true exactly when no reason is given")
    return d


def jsonable(value: Any) -> Any:
    """``value`` with tensors / numpy scalars turned into Python numbers and NaN / Inf into None."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(results: Mapping[str, Any], path: str | Path, *, overwrite: bool = False) -> Path:
    """Validate ``results`` and write them to ``path`` atomically (temp file + :func:`os.replace`).

    Args:
        results: the results dict (see the module docstring).
        path: the target file, normally ``<run dir>/results.json``.
        overwrite: replace an existing file (default False: refuse).

    Returns:
        the path written.

    Raises:
        ResultsSchemaError: ``results`` breaks the schema.
        OutputError: the file exists (and ``overwrite`` is False) or cannot be written.
    """
    path = Path(path)
    clean = jsonable(results)
    validate_results(clean)
    if path.exists() and not overwrite:
        raise OutputError(path, "already exists; refusing to overwrite it (use a new run directory)")
    text = json.dumps(clean, indent=2, allow_nan=False) + "\n"
    atomic_write_text(path, text, overwrite=overwrite, make_parents=True)
    return path


def read_results(path: str | Path) -> dict[str, Any]:
    """Read and validate a results.json.

    Raises:
        InputFileError: the file is missing or not JSON.
        ResultsSchemaError: it breaks the schema.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputFileError(path, f"cannot read ({err.strerror})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputFileError(path, f"not valid JSON (line {err.lineno}: {err.msg})") from None
    validate_results(d)
    return d
