"""Law discovery: the learned coupling (``model=gnn_ode``) on members of nonlinear laws and of the linear one.

    .venv/bin/python benchmarks/bench_law_discovery.py [--members saturating-2 threshold-4 ...] [--jobs 2]

Each member (:func:`calcium_gnn.data.zoo.law_member`; none is in the frozen test split, and none was
used to choose the library or its rules, which were set on hand-made messages in
``tests/unit/inference/test_inference_learned_law.py``, nor the experiment's settings (conductance
form, gain, stopping), which were set on the tuning members ``TUNING_MEMBERS``) is fitted through the
real command path, ``experiment=discover_law`` (:func:`benchmarks.zoo.fit_member`; ``--set`` adds
overrides), interior
drivers named as ``setup.drivers``. Columns: ``gnn/lin`` and ``gnn/true`` the test-window MSE against the
observed traces over the linear fit's and over the true law's (the noise floor); ``clean g/l`` the same
ratio against the clean traces; ``summary`` and ``expl`` the symbolic summary's law and explained
fraction; ``match`` / ``lin`` how much of the true flux the learned / the linear flux explains
(``1 - sum (q - q_true)^2 / sum q_true^2``); ``kept`` the optimisation step whose validation MSE was
best (0: the linear start). Per member: the test-window MSE against the observed traces of the
learned law (``gnn``), of the linear output-error fit it started from (``linear``) and of the true law
(the clean traces: the noise floor), the same against the clean traces, the symbolic summary
(``learned_law``) and whether it names the generating law, and the wall time.

Targets (issue 14): on nonlinear members the GNN's test MSE >= 30% below the linear fit's and within
1.5x of the true law's. Against the observed traces every model's MSE holds the noise variance (the true
law's MSE *is* that variance), so the 30% gain is judged against the clean traces (what the model
gets wrong about the culture) and the 1.5x against the observed ones (a model within 1.5x of the noise
floor); on linear members within 5% of the linear fit; the summary names the generating
law's leading term on >= 80% of nonlinear members. ``paracrine`` reaches beyond neighbours, which a
message over the cell graph cannot express: its rows count against the targets and say so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: small members (<= 120 cells) of each law, and linear members for the no-overfitting check
DEFAULT_MEMBERS: tuple[str, ...] = (
    "saturating-2", "saturating-4", "saturating-6", "threshold-2", "threshold-4", "threshold-5",
    "rectifying-0", "rectifying-5", "rectifying-7", "paracrine-1", "paracrine-5", "paracrine-10",
    "border-1", "border-3", "stimulus-2",
)
#: members the discover_law settings were chosen on (seeds 20-39, disjoint from DEFAULT_MEMBERS):
#: ``--members`` with these reproduces the tuning runs
TUNING_MEMBERS: tuple[str, ...] = (
    "saturating-27", "saturating-28", "saturating-35", "saturating-38", "saturating-39", "threshold-23",
    "threshold-24", "threshold-25", "threshold-29", "threshold-32", "rectifying-23", "rectifying-24",
    "rectifying-27", "rectifying-35", "rectifying-38",
)
#: the command a user runs (configs/experiment/discover_law.yaml)
EXPERIMENT: str = "discover_law"
GAIN_TARGET, TRUE_RATIO_TARGET, LINEAR_TOLERANCE, NAMING_TARGET = 0.30, 1.5, 0.05, 0.80


def _true_law_mse(data: Any, train_fraction: float) -> float:
    """Test-window MSE of the clean traces against the observed ones, on the modelled (non-driver) cells."""
    from calcium_gnn.physics.interpolation import time_split

    _, test = time_split(data.x.shape[1], train_fraction)
    modelled = ~data.is_driver.bool() & ~data.touches_edge.bool()
    diff = (data.truth_x.double() - data.x.double())[modelled][:, test]
    return float(diff.pow(2).mean())


def run(member_id: str, cache: str, out: str, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    from zoo import fit_member

    from calcium_gnn.data import zoo as culture_zoo
    from calcium_gnn.physics.interpolation import DEFAULT_TRAIN_FRACTION

    culture_zoo.forbid_test_split("law discovery: custom members only")  # in each worker, too

    results, data, seconds, error = fit_member(member_id, "gnn_ode", cache, out, tuple(overrides), EXPERIMENT)
    row: dict[str, Any] = {"member": member_id, "law": data.truth_law, "n_cells": int(data.num_nodes),
                           "n_frames": int(data.x.shape[1]), "noise": float(data.truth_noise),
                           "seconds": seconds, "error": error}
    if results is None:
        return row
    versus, learned = results["gnn_vs_linear"], results["learned_law"]
    row.update(
        mse_gnn=versus["mse_test_gnn"], mse_linear=versus["mse_test_linear"],
        mse_true=_true_law_mse(data, DEFAULT_TRAIN_FRACTION),
        clean_gnn=versus.get("mse_test_clean_gnn"), clean_linear=versus.get("mse_test_clean_linear"),
        summary_law=learned["summary"]["law"], formula=learned["summary"]["formula"],
        explained=learned["summary"]["explained"], learned_matches_true=learned.get("learned_matches_true"),
        linear_matches_true=learned.get("linear_matches_true"), fit_ok=results["diagnostics"]["fit_ok"],
        k=results["k"], optimizer=results.get("optimizer", {}).get("stopped"),
        substeps=results.get("optimizer", {}).get("substeps"),
        kept=results.get("optimizer", {}).get("validation", {}).get("kept_step"),
        start=results.get("optimizer", {}).get("validation", {}).get("start"),
        node_law=(learned.get("node_term") or {}).get("law"),
        leak_rate=(learned.get("node_term") or {}).get("leak_rate"),
        true_leak_rate=float(getattr(data, "truth_leak", 0.0) or 0.0),
    )
    row["gain"] = 1.0 - row["clean_gnn"] / row["clean_linear"] if row["clean_linear"] else None
    row["true_ratio"] = row["mse_gnn"] / row["mse_true"] if row["mse_true"] > 0 else None
    row["named"] = row["summary_law"] == data.truth_law
    return row


def _node_cell(row: dict[str, Any]) -> str:
    """``  <law>, leak <rate> (true <rate>), from <start>`` where the fit had a node term."""
    if row.get("node_law") is None:
        return ""
    start = "leak start" if row.get("start") == "the leak law's fit" else "linear start"
    return (f"  {row['node_law']}, leak {row['leak_rate']:.4g} (true {row['true_leak_rate']:.4g}), "
            f"{start}")


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'member':<14} {'cells':>5} {'noise':>6} {'gnn/lin':>8} {'gnn/true':>8} {'clean g/l':>9} "
             f"{'summary':<12} {'expl':>5} {'match':>6} {'lin':>6} {'kept':>4} {'s':>5}  node term"]
    for r in rows:
        if r.get("error") or "mse_gnn" not in r:
            lines.append(f"{r['member']:<14} failed: {r.get('error')}")
            continue
        clean = (r["clean_gnn"] / r["clean_linear"]) if r.get("clean_linear") else float("nan")
        match = r["learned_matches_true"] if r["learned_matches_true"] is not None else float("nan")
        lin = r["linear_matches_true"] if r["linear_matches_true"] is not None else float("nan")
        lines.append(
            f"{r['member']:<14} {r['n_cells']:>5} {r['noise']:>6.3f} {r['mse_gnn'] / r['mse_linear']:>8.3f} "
            f"{r['true_ratio'] or float('nan'):>8.3f} {clean:>9.3f} {r['summary_law']:<12.12} "
            f"{r['explained']:>5.3f} {match:>6.3f} {lin:>6.3f} {str(r.get('kept')):>4} {r['seconds']:>5.0f}"
            + _node_cell(r)
        )
    nonlinear = [r for r in rows if "mse_gnn" in r and r["law"] not in ("linear", "leak")]
    linear = [r for r in rows if "mse_gnn" in r and r["law"] in ("linear", "leak")]
    if nonlinear:
        gain = sum((r["gain"] or 0.0) >= GAIN_TARGET for r in nonlinear)
        near = sum((r["true_ratio"] or float("inf")) <= TRUE_RATIO_TARGET for r in nonlinear)
        named = sum(r["named"] for r in nonlinear)
        n = len(nonlinear)
        lines.append(f"nonlinear members: clean test MSE >= {GAIN_TARGET:.0%} below linear on {gain}/{n} "
                     f"(target all); within {TRUE_RATIO_TARGET}x of the true law on {near}/{n} (target all); "
                     f"summary names the law on {named}/{n} = {named / n:.0%} "
                     f"(target >= {NAMING_TARGET:.0%})")
        expressible = [r for r in nonlinear if r["law"] != "paracrine"]
        if expressible:
            lines.append(f"  without paracrine (not expressible by a neighbour message): named "
                         f"{sum(r['named'] for r in expressible)}/{len(expressible)}, median gain "
                         f"{statistics.median(r['gain'] or 0.0 for r in expressible):.1%} (clean MSE)")
    if linear:
        within = sum(r["mse_gnn"] / r["mse_linear"] - 1 <= LINEAR_TOLERANCE for r in linear)
        named = sum(r["summary_law"] == "linear" for r in linear)
        lines.append(f"linear members: test MSE at most {LINEAR_TOLERANCE:.0%} above the linear fit's on "
                     f"{within}/{len(linear)}; "
                     f"summary says linear on {named}/{len(linear)}")
    lines.append(f"median wall time {statistics.median(r['seconds'] for r in rows):.0f} s per member")
    return "\n".join(lines)


def run_members(
    fit: Callable[[str, str, str, tuple[str, ...]], dict[str, Any]], members: list[str],
    overrides: tuple[str, ...], jobs: int, keep: Path | None = None,
) -> list[dict[str, Any]]:
    """``fit(member, cache, out, overrides)`` for every member in ``jobs`` processes, graphs cached and
    run folders written in a temporary folder (``keep``: the run folders there instead); the rows."""
    with tempfile.TemporaryDirectory() as tmp:
        root = keep if keep is not None else Path(tmp)
        cache, out = str(Path(tmp) / "cache"), str(root / "runs")
        Path(cache).mkdir()
        with ProcessPoolExecutor(jobs) as pool:
            futures = [pool.submit(fit, m, cache, out, overrides) for m in members]
            return [f.result() for f in futures]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", nargs="+", default=list(DEFAULT_MEMBERS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="extra Hydra overrides for every fit (e.g. model.validation_patience=4)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the run folders (results.json, learned_message.png) in this new folder")
    args = parser.parse_args(argv)
    from calcium_gnn.data import zoo as culture_zoo

    culture_zoo.forbid_test_split("law discovery: custom members only")
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep}: exists already (nothing is overwritten)")
    rows = run_members(run, args.members, tuple(args.set), args.jobs, args.keep)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    print(table(rows))


if __name__ == "__main__":
    main()
