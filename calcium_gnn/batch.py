"""Many cultures at once: one fit per movie of a folder, and a summary table of them all.

``python train.py data=culture_folder data.folder=PATH`` (config ``configs/data/culture_folder.yaml``)
fits every movie found under ``data.folder`` with the run's setup and model:

1. **find the movies** (:func:`find_movies`): ``data.folder`` is a folder searched for
   ``data.pattern`` (default ``*.tif``, not recursive), or a glob pattern whose matches are the
   movies (``cultures/*/movie.tif``; ``**`` recurses; a matched folder is a folder of frames);
2. **fit each culture** exactly as a single run does, by calling the single-culture fit it is given
   (``train(cfg)`` hands over :func:`calcium_gnn.train.train`; this module never imports it) on a
   copy of the config whose ``data`` is that one movie and whose ``paths.output_dir`` is the
   culture's own subfolder ``<run folder>/<culture>/``: the graph is built once and cached (keyed by
   the movie's content and every option, ``data.cache_dir``), the model comes from ``cfg.model``,
   Lightning trains it with ``cfg.trainer`` / ``cfg.logger``, and ``evaluate_fit`` writes
   ``results.json`` and the figures into the subfolder; W&B is closed after each culture;
3. **never stop for one bad culture**: a culture whose movie or graph is bad (any
   :class:`~calcium_gnn.errors.CalciumGNNError`) is recorded as ``failed`` with its one-line error
   (also written to ``<culture>/error.txt``) and the others go on; an unexpected exception is
   recorded as ``crashed`` (with its traceback in the log);
4. **summarise**: ``summary.csv`` and ``summary.json`` in the run folder (written atomically), one
   row per culture with the columns of :data:`SUMMARY_COLUMNS`.

With a design table instead of a folder (``data.table=design.csv``,
:mod:`calcium_gnn.io.conditions_table`: one dish per row, its movie or saved graph, its condition,
optionally its plate and numeric covariates) the dishes are fitted the same way, in table order, and
step 4 also compares the conditions (:mod:`calcium_gnn.evaluation.condition_report`: a hierarchical
model of ``log k`` across dishes, the ratio of each condition to the reference with its interval and
p-value) into ``summary.json`` ``conditions``, ``conditions.png`` and the console.

Each culture gets its own parameters: the CRLSM identifies one coupling constant ``k`` and one
``gamma_i`` per cell of *one* culture, so cultures are fitted one after another, never merged into a
PyG mini-batch (a ``torch_geometric.loader.DataLoader`` batch would be one disconnected graph with
a single shared ``k``, a different model). Models that could share parameters across cultures
(a GNN trained on many cultures) would batch there instead.
"""

from __future__ import annotations

import copy
import csv
import glob
import io
import json
import logging
import math
import os
import re
import statistics
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from calcium_gnn.errors import CalciumGNNError, ConfigError, OutputError
from calcium_gnn.evaluation.condition_report import condition_lines, condition_report
from calcium_gnn.inference.conditions import log_k_and_se
from calcium_gnn.io.atomic import atomic_write_text
from calcium_gnn.io.conditions_table import Dish, read_conditions_table
from calcium_gnn.utils.wandb_mode import finish_wandb

__all__ = ["SUMMARY_COLUMNS", "SUMMARY_CSV", "SUMMARY_JSON", "find_movies", "culture_names",
           "summary_row", "write_summary", "is_culture_folder", "fit_cultures"]

log = logging.getLogger(__name__)

#: The columns of ``summary.csv`` (and the keys of each ``summary.json`` row), in order.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "culture", "movie", "condition", "plate", "status", "n_modelled", "k", "k_low", "k_high", "se_log_k",
    "gamma_mean", "gamma_median", "mse_train", "mse_test", "spike_f1", "fit_ok", "fit_problems",
    "fit_seconds", "out_dir", "error",
)
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
#: ``data`` keys of the culture-folder config that are passed on to each culture's single run.
_PASSED_DATA_KEYS = ("dt", "pixel_size", "z_projection", "cache_dir")
_GLOB_CHARS = re.compile(r"[*?\[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: A single-culture fit: the run config of one culture -> its results (:func:`calcium_gnn.train.train`).
FitOne = Callable[[DictConfig], Mapping[str, Any]]


def find_movies(folder: str | Path, pattern: str = "*.tif") -> list[Path]:
    """The movies of a culture folder, sorted by path.

    Args:
        folder: a folder (searched for ``pattern``, not recursively), or a glob pattern (with ``*``,
            ``?`` or ``[``; ``**`` recurses) whose matches are the movies: files, or folders of
            single-frame TIFFs (read by :func:`calcium_gnn.io.movie.read_movie`).
        pattern: the file pattern inside a plain folder (default ``*.tif``).

    Returns:
        The movie paths (at least one).

    Raises:
        ConfigError: ``data.folder`` is missing or not a folder, or nothing matches
            (``data.pattern`` names the pattern when the folder holds no match).
    """
    text = str(folder)
    if not text:
        raise ConfigError("data.folder", "empty: give the folder of movies (or a glob pattern)")
    if _GLOB_CHARS.search(text):
        found = sorted(Path(p) for p in glob.glob(text, recursive=True))
        if not found:
            raise ConfigError("data.folder", f"no movie matches the pattern {text}")
        return found
    path = Path(text)
    if not path.exists():
        raise ConfigError("data.folder", f"{path} does not exist")
    if not path.is_dir():
        raise ConfigError("data.folder", f"{path} is not a folder (give a folder of movies or a glob)")
    found = sorted(p for p in path.glob(pattern) if p.is_file() or p.is_dir())
    if not found:
        raise ConfigError("data.pattern", f"no file matches {pattern!r} in {path}")
    return found


def culture_names(movies: Sequence[Path]) -> list[str]:
    """A unique, file-system-safe name per movie: its path below the movies' common folder without
    the suffix, ``/`` as ``__`` (``a/movie.tif`` and ``b/movie.tif`` -> ``a__movie``, ``b__movie``)."""
    paths = [Path(os.path.abspath(m)) for m in movies]
    if len(paths) == 1:
        root = paths[0].parent
    else:
        root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    names: list[str] = []
    for p in paths:
        rel = p.relative_to(root)
        stem = rel.with_suffix("") if rel.suffix.lower() in (".tif", ".tiff", ".npy", ".pt") else rel
        name = _UNSAFE.sub("_", "__".join(stem.parts)).strip("._") or "culture"
        base, i = name, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def summary_row(
    culture: str, movie: Path, out_dir: Path, results: Mapping[str, Any] | None, *,
    status: str = "ok", error: str | None = None, fit_seconds: float | None = None,
) -> dict[str, Any]:
    """One row of the summary (:data:`SUMMARY_COLUMNS`) from a culture's results.

    ``results`` is what the single-culture fit (:func:`calcium_gnn.train.train`) returned: the
    content of ``results.json`` (``k``, ``gamma`` per modelled cell, ``mse_train``, ``mse_test``,
    ``spikes.f1``, ``diagnostics.fit_ok`` and its reasons), or the training metrics (``fit/k``,
    ``fit/gamma_mean``, ``fit/gamma_median``)
    when evaluation is off. Numbers that are missing or not finite are None.
    """
    row: dict[str, Any] = dict.fromkeys(SUMMARY_COLUMNS)
    row.update(culture=culture, movie=str(movie), status=status, out_dir=str(out_dir), error=error,
               fit_seconds=_number(fit_seconds))
    if not results:
        return row
    if "gamma" in results and isinstance(results["gamma"], Mapping):
        gammas = [v for v in (_number(g) for g in results["gamma"].values()) if v is not None]
        row["k"] = _number(results.get("k"))
        interval = results.get("k_interval") or (None, None)
        row["k_low"], row["k_high"] = _number(interval[0]), _number(interval[1])
        row["se_log_k"] = log_k_and_se(results)[1]
        row["n_modelled"] = len(results.get("modelled_cells", gammas))
        row["gamma_mean"] = statistics.fmean(gammas) if gammas else None
        row["gamma_median"] = statistics.median(gammas) if gammas else None
        row["mse_train"] = _number(results.get("mse_train"))
        row["mse_test"] = _number(results.get("mse_test"))
        row["spike_f1"] = _number((results.get("spikes") or {}).get("f1"))
        row["fit_seconds"] = _number(results.get("fit_seconds", fit_seconds))
        diagnostics = results.get("diagnostics")
        if isinstance(diagnostics, Mapping):
            row["fit_ok"] = bool(diagnostics.get("fit_ok"))
            row["fit_problems"] = "; ".join(diagnostics.get("reasons") or []) or None
    else:  # training metrics only (evaluate=false)
        row["k"] = _number(results.get("fit/k"))
        row["gamma_mean"] = _number(results.get("fit/gamma_mean"))
        row["gamma_median"] = _number(results.get("fit/gamma_median"))
    return row


def write_summary(
    rows: Sequence[Mapping[str, Any]], out_dir: str | Path, conditions: Mapping[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``summary.csv`` and ``summary.json`` into ``out_dir`` atomically; return both paths.

    The CSV has a header of :data:`SUMMARY_COLUMNS` and empty cells for missing values; the JSON is
    ``{"columns": [...], "cultures": [row, ...], "n_ok": int, "n_failed": int}`` (null for missing),
    plus ``"conditions"`` (the comparison of :func:`calcium_gnn.evaluation.condition_report.condition_report`)
    when given.
    """
    out = Path(out_dir)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(SUMMARY_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in SUMMARY_COLUMNS})
    n_ok = sum(1 for r in rows if r.get("status") == "ok")
    payload = {"columns": list(SUMMARY_COLUMNS), "cultures": [dict(r) for r in rows], "n_ok": n_ok,
               "n_failed": len(rows) - n_ok}
    if conditions is not None:
        payload["conditions"] = dict(conditions)
    csv_path = atomic_write_text(out / SUMMARY_CSV, buffer.getvalue(), make_parents=True)
    json_path = atomic_write_text(out / SUMMARY_JSON, json.dumps(payload, indent=1, allow_nan=False) + "\n",
                                  make_parents=True)
    return csv_path, json_path


def _run_folder(cfg: DictConfig) -> Path:
    out = Path(str(cfg.paths.output_dir))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(out, f"cannot create the run folder (paths.output_dir): {exc.strerror or exc}") \
            from None
    return out


def _culture_config(cfg: DictConfig, data: Mapping[str, Any], movie: Path, out_dir: Path) -> DictConfig:
    """A copy of ``cfg`` for one culture: ``data`` = that movie (or saved graph, ``.pt``), output into its
    own subfolder."""
    one = copy.deepcopy(cfg)
    is_graph = movie.suffix.lower() == ".pt"
    with open_dict(one):
        one.data = OmegaConf.create({"graph": str(movie) if is_graph else None,
                                     "movie": None if is_graph else str(movie),
                                     **{k: data.get(k) for k in _PASSED_DATA_KEYS}})
        one.paths.output_dir = str(out_dir)
    return one


def is_culture_folder(cfg: DictConfig) -> bool:
    """True when the run's ``data`` is a culture folder (``data=culture_folder``: it has a ``folder``
    key, set or not): the hook of :func:`calcium_gnn.train.train` that hands the run to
    :func:`fit_cultures`."""
    data = cfg.get("data")
    return isinstance(data, DictConfig) and "folder" in data.keys()


def _dishes(data: Mapping[str, Any]) -> list[Dish]:
    """The cultures of the run: the rows of ``data.table``, or the movies of ``data.folder`` (no
    condition, no plate)."""
    folder, table = data.get("folder"), data.get("table")
    if folder and table:
        raise ConfigError("data.table", "set either data.folder or data.table (the design table lists "
                                        "the dishes), not both")
    if table:
        return read_conditions_table(str(table))
    if not folder:
        raise ConfigError("data.folder", "not set: give the folder of movies (or a glob pattern), or "
                                         "data.table, a design table of dishes and conditions")
    movies = find_movies(folder, str(data.get("pattern") or "*.tif"))
    return [Dish(movie, "", None) for movie in movies]


def fit_cultures(cfg: DictConfig, fit_one: FitOne) -> list[dict[str, Any]]:
    """Fit every culture of ``cfg.data.folder`` (or of the design table ``cfg.data.table``) and write the
    summary (module docstring).

    Args:
        cfg: the composed train config with ``data=culture_folder``: ``data.folder`` and
            ``data.pattern``, or ``data.table`` (:mod:`calcium_gnn.io.conditions_table`: a path, a
            condition and optionally a plate and covariates per dish) with ``data.reference``,
            ``data.level`` and ``data.exclude_flagged`` for the comparison; ``data.cache_dir`` (graphs
            are cached there) and ``data.dt`` / ``pixel_size`` / ``z_projection`` for movies without
            metadata; every other group as for a single run.
        fit_one: the single-culture fit, called with each culture's config (``train(cfg)``
            passes :func:`calcium_gnn.train.train`); what it returns feeds :func:`summary_row`.

    Returns:
        The summary rows (one per culture, in path order, or in table order; :data:`SUMMARY_COLUMNS`),
        also written to ``<run folder>/summary.csv`` and ``summary.json``; with a design table of two
        or more conditions, ``summary.json`` also holds the comparison of the conditions
        (:func:`calcium_gnn.evaluation.condition_report.condition_report`) and ``conditions.png``
        shows it.

    Raises:
        ConfigError: no movie found (``data.folder`` / ``data.pattern``), both or neither of
            ``data.folder`` and ``data.table``, or ``ckpt_path`` set (one checkpoint cannot seed many
            cultures).
        InputFileError: the design table is unreadable or names a file that does not exist.
        OutputError: the run folder or the summary cannot be written.
    """
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if cfg.get("ckpt_path"):
        raise ConfigError("ckpt_path", "resuming from a checkpoint is not supported with data.folder")
    dishes = _dishes(data)
    run = _run_folder(cfg)
    rows: list[dict[str, Any]] = []
    names = culture_names([d.path for d in dishes])
    for i, (dish, name) in enumerate(zip(dishes, names, strict=True), start=1):
        out_dir = run / name
        log.info("culture %d/%d: %s -> %s", i, len(dishes), dish.path, out_dir)
        start = time.perf_counter()
        try:
            results = fit_one(_culture_config(cfg, data, dish.path, out_dir))
            rows.append(summary_row(name, dish.path, out_dir, results,
                                    fit_seconds=time.perf_counter() - start))
        except CalciumGNNError as err:
            log.error("culture %s failed: %s", name, err)
            rows.append(summary_row(name, dish.path, out_dir, None, status="failed", error=str(err),
                                    fit_seconds=time.perf_counter() - start))
        except Exception as err:  # noqa: BLE001 - one culture's bug must not lose the others' fits
            log.error("culture %s crashed:\n%s", name, traceback.format_exc())
            first = (str(err).strip().splitlines() or [""])[0][:300]
            rows.append(summary_row(name, dish.path, out_dir, None, status="crashed",
                                    error=f"{type(err).__name__}: {first}",
                                    fit_seconds=time.perf_counter() - start))
        finally:
            finish_wandb()
        rows[-1].update(condition=dish.condition or None, plate=dish.plate)
        if dish.covariates:
            rows[-1]["covariates"] = dict(dish.covariates)
        if rows[-1]["status"] != "ok":
            try:
                atomic_write_text(out_dir / "error.txt", rows[-1]["error"] + "\n", make_parents=True)
            except OutputError as err:
                log.warning("could not record the error of %s: %s", name, err)
    comparison = None
    if data.get("table"):
        comparison = condition_report(rows, run, reference=data.get("reference"),
                                      level=float(data.get("level") or 0.95),
                                      exclude_flagged=bool(data.get("exclude_flagged")))
    csv_path, _ = write_summary(rows, run, comparison)
    n_ok = sum(r["status"] == "ok" for r in rows)
    print(f"summary: {csv_path} ({n_ok} of {len(rows)} cultures fitted)")
    if comparison is not None:
        print("\n".join(condition_lines(comparison)))
    return rows
