"""Every estimator on the zoo's frozen test split: accuracy, interval coverage, flags and time.

    .venv/bin/python benchmarks/zoo.py [--estimators crlsm pinn neural_ode gnn_ode] [--jobs 2]
    .venv/bin/python benchmarks/zoo.py --split dev --n-dev 30      # for tuning: never the test split
    .venv/bin/python benchmarks/zoo.py --split dev --start 240 --n-dev 240 --out rows.json   # a fresh check

Each member of the split (:mod:`calcium_gnn.data.zoo`; the 60 test members are frozen and never used
for tuning, see :mod:`calcium_gnn.data.zoo_split`) is written as a graph (its true geometry, its noisy
traces) and fitted by each estimator's experiment through the real command path
(:func:`calcium_gnn.train.train`, ``experiment=setup1_<estimator>``, ``data.graph=...``): setup I,
with the member's driver cells (``is_driver``: stimulated cells, pacemakers) named as
``setup.drivers`` so that they follow their data like border cells.

Per run: the error of ``k`` (``|k - k*| / k*`` at the fit's edge-weight scale), the median relative
error of the coupling rates ``c_i = k / |N_i| sum_j w_ij`` (the comparable quantity where the law is
not the paper's: the ``leak`` members), the feeds' error ``median_i |gamma_i - gamma_i*| / mean_i
|gamma_i*|`` (linear members), whether the 90% interval of ``k`` holds ``k*`` and the share of cells
whose ``gamma_i`` interval holds ``gamma_i*`` (models with intervals), ``fit_ok`` and its reasons
(:mod:`calcium_gnn.evaluation.diagnostics`; a run that stops with a FitError counts as flagged), the law
check's score statistic ``law_check_z`` (output-error fits of the linear law; ``--out`` rows), and
the wall time of the whole run; the signed error ``k / k* - 1``, the fit's relative standard error
``k_se / k*`` and, for a learned coupling, the error of its effective ``k`` (``results.json``
``learned_law.effective_k`` against ``true_effective_k``) (``--out`` rows). The table: per estimator,
on the members the linear law generated with at most 5% noise (where the targets apply) and on all
members, next to the targets; its ``p90 se`` column is the 90th percentile of the error that
calibrated, unbiased fits with those standard errors would have
(:mod:`calcium_gnn.evaluation.precision`): what the data allow.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import statistics
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

ESTIMATORS = ("crlsm", "pinn", "neural_ode", "gnn_ode")
#: tries per run when its worker process is killed from outside
MAX_ATTEMPTS = 3
#: an estimator more than this far off must have flagged its run
FLAG_ERROR = 0.25
TARGETS = {
    "neural_ode": "median k err <= 2%, p90 <= 8%, k coverage 85-95%, gamma coverage 85-95%",
    "pinn": "k within 10% on >= 90% of members at <= 1% noise",
    "any": f"every run more than {FLAG_ERROR:.0%} off is flagged",
}


def _member_graph_path(member_id: str, cache: Path) -> tuple[Path, list[int]]:
    """The member's graph saved under ``cache`` (built once) and the ids of its interior drivers."""
    import torch

    from calcium_gnn.data import zoo
    from calcium_gnn.io.graph_files import load_graph, save_graph

    path = cache / f"{member_id}.pt"
    if not path.exists():
        save_graph(zoo.member_graph(zoo.member(member_id)), path)
    data = load_graph(path)
    interior_drivers = data.is_driver.bool() & ~data.touches_edge.bool()
    return path, [int(c) for c in data.cell_id[interior_drivers].tolist()] if bool(
        torch.any(interior_drivers)
    ) else []


def _truth_coupling(data: Any, scale: float) -> dict[str, float]:
    """True coupling rates ``c_i = k* / |N_i| sum_j u_ij l_ij / s*`` by cell id."""
    import torch

    w = data.edge_attr.reshape(-1).double() / float(data.truth_edge_weight_scale)
    dst = data.edge_index[1]
    n = data.num_nodes
    total = torch.zeros(n, dtype=torch.float64).index_add_(0, dst, w)
    degree = torch.bincount(dst, minlength=n).clamp_min(1).double()
    c = float(data.truth_k) * total / degree
    return {str(int(i)): float(v) for i, v in zip(data.cell_id.tolist(), c.tolist(), strict=True)}


def _row(
    member_id: str,
    estimator: str,
    results: dict[str, Any] | None,
    data: Any,
    seconds: float,
    error: str | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "member": member_id,
        "family": data.zoo_family,
        "law": data.truth_law,
        "signal": data.zoo_signal,
        "n_cells": int(data.num_nodes),
        "n_frames": int(data.x.shape[1]),
        "dt": float(data.dt),
        "noise": float(data.truth_noise),
        "k_true": float(data.truth_k),
        "estimator": estimator,
        "seconds": seconds,
        "status": "ok" if error is None else "failed",
        "error": error,
        "k_err": None,
        "k_signed_err": None,
        "k_rel_se": None,
        "coupling_err": None,
        "gamma_err": None,
        "k_covered": None,
        "gamma_coverage": None,
        "effective_k_err": None,
        "fit_ok": False,
        "reasons": [error] if error else [],
        "law_check_z": None,
        "border_noise": None,
        "reference": None,
        "effective_k": None,
    }
    if results is None:
        return row
    truth = results.get("truth") or {}
    k_true = truth.get("k")
    row["k_err"] = truth.get("k_rel_err")
    if k_true:
        row["k_signed_err"] = float(results["k"]) / float(k_true) - 1.0
        if results.get("k_se") is not None:
            row["k_rel_se"] = float(results["k_se"]) / float(k_true)
    true_c = _truth_coupling(data, results["edge_weight_scale"])
    errs = [
        abs(c - true_c[i]) / abs(true_c[i]) for i, c in results["coupling_rate"].items() if true_c[i] != 0
    ]
    row["coupling_err"] = statistics.median(errs) if errs else None
    truth_gamma = {
        str(int(i)): float(g) for i, g in zip(data.cell_id.tolist(), data.truth_gamma.tolist(), strict=True)
    }
    pairs = [(g, truth_gamma[i]) for i, g in results["gamma"].items() if math.isfinite(truth_gamma[i])]
    if pairs and data.truth_law == "linear" and results.get("gamma_mode") == "per_cell":
        scale = statistics.fmean(abs(t) for _, t in pairs)
        row["gamma_err"] = statistics.median(abs(g - t) for g, t in pairs) / scale if scale > 0 else None
    k_interval = results.get("k_interval")
    if k_interval and k_true is not None:
        row["k_covered"] = bool(k_interval[0] <= k_true <= k_interval[1])
    gamma_interval = results.get("gamma_interval")
    if gamma_interval and data.truth_law == "linear":
        inside = [
            lo <= truth_gamma[i] <= hi
            for i, (lo, hi) in gamma_interval.items()
            if math.isfinite(truth_gamma[i])
        ]
        row["gamma_coverage"] = sum(inside) / len(inside) if inside else None
    learned = results.get("learned_law") or {}
    if learned.get("effective_k") is not None and learned.get("true_effective_k"):
        true_effective = float(learned["true_effective_k"])
        row["effective_k_err"] = abs(float(learned["effective_k"]) - true_effective) / abs(true_effective)
    diagnostics = results["diagnostics"]
    row["fit_ok"] = bool(diagnostics["fit_ok"])
    row["reasons"] = list(diagnostics["reasons"])
    score = (results.get("law") or {}).get("leak_score") or {}
    row["law_check_z"] = score.get("z")
    row["border_noise"] = diagnostics.get("border_noise")
    row["reference"] = diagnostics.get("reference")
    row["effective_k"] = learned.get("effective_k")
    return row


def fit_member(
    member_id: str, estimator: str, cache: str, out: str, extra: tuple[str, ...] = (),
    experiment: str | None = None,
) -> tuple[dict[str, Any] | None, Any, float, str | None]:
    """Fit one member with one estimator through ``train()`` (``extra``: more Hydra overrides;
    ``experiment``: default ``setup1_<estimator>``).

    Returns:
        ``(results or None, the member's graph, seconds, error or None)``.
    """
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from calcium_gnn.errors import CalciumGNNError
    from calcium_gnn.io.graph_files import load_graph
    from calcium_gnn.train import CONFIG_DIR, train

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    path, drivers = _member_graph_path(member_id, Path(cache))
    data = load_graph(path)
    run_dir = Path(out) / member_id / estimator
    overrides = [
        f"experiment={experiment or f'setup1_{estimator}'}",
        f"data.graph={path}",
        "logger=none",
        "callbacks=none",
        f"paths.root_dir={out}",
        f"paths.cache_dir={cache}",
        "trainer.enable_progress_bar=false",
        *extra,
    ]
    if drivers:
        overrides.append("setup.drivers=[" + ",".join(map(str, drivers)) + "]")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train.yaml", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            results = train(cfg)
        error = None
    except CalciumGNNError as err:
        results, error = None, str(err)
    return results, data, time.perf_counter() - start, error


def run_one(
    member_id: str, estimator: str, cache: str, out: str, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Fit one member with one estimator through ``train()`` (``extra``: more Hydra overrides); the row of
    the table."""
    results, data, seconds, error = fit_member(member_id, estimator, cache, out, extra)
    return _row(member_id, estimator, results, data, seconds, error)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:5.1f}%"


def _error(row: dict[str, Any]) -> float | None:
    """The run's headline error: ``k`` where the law is the paper's, the coupling rates otherwise."""
    return row["k_err"] if row["law"] == "linear" else row["coupling_err"]


def summarise(rows: list[dict[str, Any]], estimator: str, subset: str) -> dict[str, Any]:
    """One line of the table: ``subset`` is "linear<=5%" or "all"."""
    from calcium_gnn.evaluation.precision import implied_error_quantile

    mine = [r for r in rows if r["estimator"] == estimator]
    if subset != "all":
        mine = [r for r in mine if r["law"] == "linear" and r["noise"] <= 0.05 + 1e-12]
    errors = [e for r in mine if (e := _error(r)) is not None]
    rel_se = [r["k_rel_se"] for r in mine if r.get("k_rel_se") is not None]
    gamma = [r["gamma_err"] for r in mine if r["gamma_err"] is not None]
    covered = [r["k_covered"] for r in mine if r["k_covered"] is not None]
    gamma_cov = [r["gamma_coverage"] for r in mine if r["gamma_coverage"] is not None]
    off = [r for r in mine if r["status"] != "ok" or (_error(r) or 0.0) > FLAG_ERROR]
    low_noise = [
        r for r in mine if r["law"] == "linear" and r["noise"] <= 0.01 + 1e-12 and r["k_err"] is not None
    ]
    return {
        "estimator": estimator,
        "subset": subset,
        "runs": len(mine),
        "err_median": _quantile(errors, 0.5),
        "err_p90": _quantile(errors, 0.9),
        # the p90 a calibrated fit with each run's own standard error would reach (linear members)
        "err_p90_se": implied_error_quantile(rel_se, 0.9) if rel_se and subset != "all" else None,
        "gamma_median": _quantile(gamma, 0.5),
        "k_coverage": sum(covered) / len(covered) if covered else None,
        "gamma_coverage": statistics.fmean(gamma_cov) if gamma_cov else None,
        "flagged": sum(not r["fit_ok"] for r in mine) / len(mine) if mine else None,
        "off": len(off),
        "off_flagged": sum(not r["fit_ok"] for r in off),
        "within10_at_1pct": (sum(r["k_err"] <= 0.10 for r in low_noise) / len(low_noise))
        if low_noise
        else None,
        "time_median": _quantile([r["seconds"] for r in mine], 0.5),
    }


def effective_summary(rows: list[dict[str, Any]], estimator: str) -> dict[str, Any] | None:
    """For a learned coupling, the error of its effective ``k`` (the coupling its message implements, which
    the reference check compares; the layer's own ``k`` of the headline error can trade against the
    network) over all its runs: median, p90, runs more than 25% off and how many of them are flagged.
    None for estimators without an effective ``k``."""
    mine = [r for r in rows if r["estimator"] == estimator and r.get("effective_k_err") is not None]
    if not mine:
        return None
    errors = [r["effective_k_err"] for r in mine]
    off = [r for r in mine if r["effective_k_err"] > FLAG_ERROR]
    return {"runs": len(mine), "err_median": _quantile(errors, 0.5), "err_p90": _quantile(errors, 0.9),
            "off": len(off), "off_flagged": sum(not r["fit_ok"] for r in off)}


def print_table(rows: list[dict[str, Any]], estimators: list[str]) -> None:
    header = (
        f"{'estimator':<11}{'members':<12}{'runs':>5} {'err med':>7} {'err p90':>7} {'p90 se':>7} "
        f"{'gamma':>7} {'k cov':>7} {'g cov':>7} {'flagged':>8} {'>25% off (flagged)':>19} "
        f"{'<=10% @1%':>10} {'time':>7}"
    )
    print(header)
    print("-" * len(header))
    for estimator in estimators:
        for subset in ("linear<=5%", "all"):
            s = summarise(rows, estimator, subset)
            print(
                f"{estimator:<11}{subset:<12}{s['runs']:>5} "
                f"{_pct(s['err_median']):>7} {_pct(s['err_p90']):>7} {_pct(s['err_p90_se']):>7} "
                f"{_pct(s['gamma_median']):>7} {_pct(s['k_coverage']):>7} {_pct(s['gamma_coverage']):>7} "
                f"{_pct(s['flagged']):>8} {s['off']:>11} ({s['off_flagged']:>3})   "
                f"{_pct(s['within10_at_1pct']):>10} {s['time_median'] or 0:6.1f}s"
            )
    for estimator in estimators:
        effective = effective_summary(rows, estimator)
        if effective is not None:
            print(
                f"{estimator:<11}{'effective k':<12}{effective['runs']:>5} "
                f"{_pct(effective['err_median']):>7} {_pct(effective['err_p90']):>7}   (all members; "
                f"learned coupling: the k its message implements)  >25% off: {effective['off']} "
                f"({effective['off_flagged']} flagged)"
            )
    print("\nerr: |k - k*| / k* on linear-law members, median relative error of the coupling rates on")
    print("leak members; gamma: median |gamma_i - gamma_i*| / mean |gamma_i*| (linear law); k cov / g cov:")
    print("90% intervals holding the truth; flagged: runs with fit_ok false or stopped by a FitError.")
    print("p90 se: the p90 of |k - k*| / k* if each run's error were N(0, se^2) with its own standard error")
    print("(calcium_gnn.evaluation.precision; linear members with a k_se): what the data allow; err p90")
    print("above it is bias or optimistic intervals.")
    print("targets: " + "; ".join(f"{k}: {v}" for k, v in TARGETS.items()))


def _print_row(row: dict[str, Any]) -> None:
    print(
        f"{row['member']:<9} {row['estimator']:<10} {row['family']:<9} {row['law']:<6} "
        f"N={row['n_cells']:<5} T={row['n_frames']:<5} dt={row['dt']:<5g} noise={row['noise']:<6g} "
        f"err={_pct(_error(row))} fit_ok={row['fit_ok']!s:<5} {row['seconds']:6.1f}s "
        + ("; ".join(row["reasons"])[:140]),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", choices=("test", "dev"), default="test")
    parser.add_argument("--n-dev", type=int, default=30, help="dev members (--split dev)")
    parser.add_argument("--start", type=int, default=0,
                        help="first dev member: dev-<start> ... dev-<start + n-dev - 1> (--split dev)")
    parser.add_argument("--members", nargs="*", default=None, help="only these member ids")
    parser.add_argument("--estimators", nargs="*", default=list(ESTIMATORS), choices=ESTIMATORS)
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="Hydra overrides for every run, e.g. evaluation.reference_fit.leak_check=false")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)))
    parser.add_argument(
        "--cache", default=None, help="folder for the members' graphs (default: a temporary one)"
    )
    parser.add_argument("--out", default=None,
                        help="write every row as JSON to this new file, rewritten as each run ends "
                        "(a stopped benchmark keeps the rows of its finished runs)")
    args = parser.parse_args()
    if args.out and Path(args.out).exists():
        parser.error(f"--out {args.out}: the file exists; name a new one (it is not overwritten)")

    from calcium_gnn.data import zoo
    from calcium_gnn.io.atomic import atomic_write_text

    if args.split == "dev":
        zoo.forbid_test_split("benchmarks/zoo.py --split dev")
        ids = [m.id for m in zoo.dev_members(args.n_dev, start=args.start)]
    else:
        ids = [m.id for m in zoo.test_members()]
    if args.members:
        ids = [i for i in ids if i in set(args.members)]
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp) / "graphs"
        cache.mkdir(parents=True, exist_ok=True)
        jobs = [(m, e) for m in ids for e in args.estimators]
        start = time.perf_counter()
        rows: list[dict[str, Any]] = []
        pending = list(jobs)
        for attempt in range(MAX_ATTEMPTS):
            # a worker that dies (killed from outside) breaks the pool: the unfinished jobs go to a new one,
            # with run folders of their own (a killed run may have left its results.json half-way)
            out = Path(tmp) / f"runs-{attempt}"
            broken = []
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                futures = {pool.submit(run_one, m, e, str(cache), str(out), tuple(args.override)): (m, e)
                           for m, e in pending}
                for future, job in futures.items():
                    try:
                        row = future.result()
                    except BrokenProcessPool:
                        broken.append(job)
                        continue
                    rows.append(row)
                    _print_row(row)
                    if args.out:
                        atomic_write_text(args.out, json.dumps(rows, indent=1))
            pending = broken
            if not pending:
                break
        for m, e in pending:
            print(f"{m} {e}: its worker process was killed {MAX_ATTEMPTS} times; left out", flush=True)
    print(
        f"\n{len(ids)} members x {len(args.estimators)} estimators in {time.perf_counter() - start:.0f} s "
        f"({args.split} split, {args.jobs} processes)\n"
    )
    print_table(rows, args.estimators)


if __name__ == "__main__":
    main()
