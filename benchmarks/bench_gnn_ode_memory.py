"""Peak memory and wall time of the learned coupling's fit with and without the autograd budget.

    .venv/bin/python benchmarks/bench_gnn_ode_memory.py [--member dev-273] [--budgets none 1024]

The learned coupling (``experiment=setup1_gnn_ode``) is fitted by backpropagating through its RK4
simulation, whose autograd graph holds the message MLP's activations for every edge, shooting window,
stage and frame interval: it grows with cells x frames. ``model.autograd_budget_mb`` bounds what one
backward pass keeps (:func:`calcium_gnn.physics.simulate.integrate`: blocks of frame intervals
recomputed during the backward pass once the budget is exceeded).

Each budget fits the same zoo dev member (:mod:`calcium_gnn.data.zoo`; default ``dev-273``: 980 cells,
842 frames) through the real command path (``benchmarks/zoo.py``'s ``fit_member``) in a fresh Python
process, and prints its peak resident memory (``VmHWM``, imports included), its wall time, ``k`` and
its error, and the ratios of memory and time to the first budget (the reference: ``none``, nothing
recomputed). The same ``k`` to rounding is expected: only the memory and the time may change.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

RUNNER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from calcium_gnn.data import zoo as zoo_data
zoo_data.forbid_test_split("the memory benchmark")
import zoo

member, budget, cache, out = sys.argv[2:6]
value = "null" if budget == "none" else budget
results, data, seconds, error = zoo.fit_member(member, "gnn_ode", cache, out,
                                               extra=(f"model.autograd_budget_mb={value}",))
row = zoo._row(member, "gnn_ode", results, data, seconds, error)
with open("/proc/self/status") as lines:
    peak = next(int(line.split()[1]) for line in lines if line.startswith("VmHWM:")) * 1024
print(json.dumps({"peak": peak, "seconds": seconds, "error": error, "k_err": row["k_err"],
                  "k": None if results is None else results["k"], "n_cells": row["n_cells"],
                  "n_frames": row["n_frames"]}))
"""


def run_budget(member: str, budget: str, cache: str, out: str) -> dict:
    """Fit ``member`` with ``model.autograd_budget_mb=budget`` in a fresh process; its measurements."""
    done = subprocess.run([sys.executable, "-c", RUNNER, str(HERE), member, budget, cache, out],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the fit with budget {budget} failed (exit {done.returncode}):\n"
                         f"{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--member", default="dev-273", help="a zoo dev member (never the test split)")
    parser.add_argument("--budgets", nargs="+", default=["none", "1024"],
                        help="model.autograd_budget_mb values in MB, 'none' for no limit; the first is "
                             "the reference")
    parser.add_argument("--cache", default=None,
                        help="folder for the member's graph (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or str(Path(tmp) / "cache")
        Path(cache).mkdir(parents=True, exist_ok=True)
        rows = [(budget, run_budget(args.member, budget, cache, str(Path(tmp) / f"runs-{budget}")))
                for budget in args.budgets]
    first = rows[0][1]
    print(f"{args.member}: {first['n_cells']} cells, {first['n_frames']} frames, experiment=setup1_gnn_ode")
    print(f"{'budget MB':>10} {'peak GB':>8} {'x ref':>6} {'time s':>7} {'x ref':>6} {'k':>10} {'k err':>7}")
    for budget, row in rows:
        k = "failed" if row["k"] is None else f"{row['k']:.6g}"
        err = "-" if row["k_err"] is None else f"{100 * row['k_err']:.1f}%"
        print(f"{budget:>10} {row['peak'] / 2**30:8.2f} {row['peak'] / first['peak']:6.2f} "
              f"{row['seconds']:7.1f} {row['seconds'] / first['seconds']:6.2f} {k:>10} {err:>7}")
        if row["error"]:
            print(f"{'':>10} error: {row['error']}")


if __name__ == "__main__":
    main()
