"""Stimulated waves with a leak: the stimulus setup, the law family, model selection and the wave map.

    .venv/bin/python benchmarks/zoo_waves.py --set eval3    # frozen members, never tuned on
    .venv/bin/python benchmarks/zoo_waves.py --set dev      # tune on these
    .venv/bin/python benchmarks/zoo_waves.py --set test     # the zoo's test split (report once)
    .venv/bin/python benchmarks/zoo_waves.py --set dev --override physics.train_fraction=0.8  # a variant

Members: the zoo's ``stimulus`` family (an interior point stimulus starts a radial wave carried by relay
cells; :mod:`calcium_gnn.data.zoo`) at <= 2% observation noise, both laws. ``dev``: custom members
``stimulus-<seed>``, seed < 1000; ``eval``: seeds from 1000 on (run once, then its failures informed
one change: the unexplained-driver rule's group trial), ``eval2``: seeds from 2000 on (frozen: run once
after every setting was chosen; its unflagged misses then motivated, with dev, the leak-identification
flag), ``eval3``: seeds from 3000 on (run once after that), the first ``--n-leak`` leak and
``--n-linear`` linear ones of at most ``--max-cells`` cells; ``test``: the stimulus members of the
zoo's frozen test split at <= 2% noise.

Each member goes through the real command path, as a lab would run it: ``train()`` with
``experiment=select_law setup=stimulus setup.point=[x,y]`` (the centroid of the stimulated cell that
rises first: where the pipette was), ``setup.stimulus_time`` (when),
``setup.auto_drivers=[precedes,unexplained]`` (the relays are not given) and the candidates
``linear`` and ``leak``. From ``model_selection.json`` and the candidates' ``results.json``:

* ``chosen``: the law the selection picked, against the generating law;
* ``k err``: ``|k - k*| / k*`` of the leak law's fit (the acceptance's "stimulus setup plus the leak
  law") and of the chosen law's;
* ``map``: the share of modelled cells whose activation time in the chosen law's simulation is within
  one frame of the clean truth's: both timed at the level the observed trace crossed (half-way from
  its baseline before the stimulus to its peak after it; the cells whose observed rise clears the
  noise rule, :func:`calcium_gnn.graphs.activation.crossing_levels`), as ``results.json`` ``waves``
  times the simulation; a cell active in one map only counts as a miss;
* ``linear inadequate``: the paper's law is reported inadequate by the selection (leak members);
* flagged misses: a chosen fit more than 10% off counts as flagged when its ``fit_ok`` is false or the
  selection reports that ``k`` depends on a law the data do not decide (``k_depends_on_law``);
* drivers: true drivers found (recall) and modelled cells wrongly made drivers;
* ``k_identified``: the selection's verdict on ``k`` (``model_selection.json`` ``k_verdict``), and how
  many members it calls identified while the chosen ``k`` is more than 10% off;
* what ``results.json`` ``waves.comparison`` tells the user, the chosen law's simulated map against the
  *observed* one: the share within one frame and the share within the observed times' noise band
  (:func:`calcium_gnn.evaluation.waves.compare_activation`).
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
from pathlib import Path
from typing import Any

MAX_NOISE = 0.02
EVAL_SEED0 = 1000
EVAL2_SEED0 = 2000
EVAL3_SEED0 = 3000
TARGETS = ("leak members: k within 10% and map within 1 frame for >= 90% of cells; selection right in "
           ">= 90%; linear law reported inadequate")


def pick_members(which: str, n_leak: int, n_linear: int, max_cells: int) -> list[str]:
    from calcium_gnn.data import zoo

    if which == "test":
        return [m.id for m in zoo.test_members() if m.family == "stimulus" and m.noise <= MAX_NOISE]
    zoo.forbid_test_split(f"benchmarks/zoo_waves.py --set {which}")
    start = {"dev": 0, "eval": EVAL_SEED0, "eval2": EVAL2_SEED0, "eval3": EVAL3_SEED0}[which]
    seeds = range(start, EVAL_SEED0 if which == "dev" else start + 1000)
    chosen: dict[str, list[str]] = {"leak": [], "linear": []}
    wanted = {"leak": n_leak, "linear": n_linear}
    for seed in seeds:
        m = zoo.custom_member("stimulus", seed)
        if m.noise <= MAX_NOISE and m.n_cells <= max_cells and len(chosen[m.law]) < wanted[m.law]:
            chosen[m.law].append(m.id)
        if all(len(chosen[k]) >= wanted[k] for k in wanted):
            break
    return chosen["leak"] + chosen["linear"]


def run_one(member_id: str, cache: str, out: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from calcium_gnn.data import zoo
    from calcium_gnn.data.zoo_drivers import STIMULUS
    from calcium_gnn.errors import CalciumGNNError
    from calcium_gnn.graphs.activation import activation_times, crossing_levels, trace_noise
    from calcium_gnn.io.graph_files import save_graph
    from calcium_gnn.train import CONFIG_DIR, train

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    member = zoo.member(member_id)
    data = zoo.member_graph(member)
    path = Path(cache) / f"{member_id}.pt"
    save_graph(data, path)
    t_s = float(member.params["stimulus_time"])
    # the pipette's cell: of the stimulated cells (two in some members), the one that rises first
    stim = (data.truth_driver_kind == STIMULUS).nonzero().reshape(-1)
    onset = activation_times(data.truth_x[stim].double().numpy(), data.t.double().numpy(), after=t_s)
    first = int(stim[int(np.nanargmin(onset))]) if np.isfinite(onset).any() else int(stim[0])
    x0, y0 = (float(v) for v in data.pos[first])
    run_dir = Path(out) / member_id
    overrides = [
        "experiment=select_law", f"data.graph={path}", "logger=none", "callbacks=none",
        f"paths.root_dir={out}", f"paths.cache_dir={cache}", "trainer.enable_progress_bar=false",
        "setup=stimulus", f"setup.point=[{x0:.2f},{y0:.2f}]", f"setup.stimulus_time={t_s}",
        "setup.auto_drivers=[precedes,unexplained]", *extra,
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train.yaml", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    start = time.perf_counter()
    row: dict[str, Any] = {"member": member_id, "law": member.law, "n_cells": member.n_cells,
                           "noise": member.noise, "k_true": float(member.k)}
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            report = train(cfg)
    except CalciumGNNError as err:
        row.update(error=str(err), seconds=time.perf_counter() - start)
        return row
    row["seconds"] = time.perf_counter() - start
    row["chosen"] = report["chosen"]
    row["support"] = report["support"]
    row["linear_inadequate"] = bool(report["rows"]["linear"]["inadequate"])
    row["k_depends_on_law"] = report.get("k_depends_on_law") is not None
    row["k_identified"] = bool((report.get("k_verdict") or {}).get("identified"))
    results = {name: json.loads((run_dir / name / "results.json").read_text())
               for name in report["rows"]}
    for name, res in results.items():
        row[f"k_err_{name}"] = (res.get("truth") or {}).get("k_rel_err")
        row[f"fit_ok_{name}"] = res["diagnostics"]["fit_ok"]
    chosen = results[report["chosen"]]
    row["k_err_chosen"] = row[f"k_err_{report['chosen']}"]
    # drivers found against the truth
    drivers = {int(c) for c in chosen.get("drivers", {})}
    ids = data.cell_id.tolist()
    true_interior = {ids[i] for i in (data.is_driver & ~data.touches_edge).nonzero().reshape(-1).tolist()}
    row["drivers_true"] = len(true_interior)
    row["drivers_found"] = len(true_interior & drivers)
    row["drivers_wrong"] = len(drivers - true_interior)
    # the activation map: the chosen law's simulation against the clean truth, same rule
    modelled = [int(c) for c in chosen["modelled_cells"]]
    sim_times = (chosen.get("waves") or {}).get("activation_s", {}).get("simulated", {})
    x_obs, t = data.x.double().numpy(), data.t.double().numpy()
    noise = trace_noise(x_obs)
    levels = crossing_levels(x_obs, t, after=t_s, noise=noise)  # the levels the report times at
    truth_times = activation_times(data.truth_x.double().numpy(), t, after=t_s, noise=noise, levels=levels)
    by_id = dict(zip(ids, truth_times.tolist(), strict=True))
    dt = float(member.dt)
    within, scored = 0, 0
    for c in modelled:
        a, b = by_id[c], sim_times.get(str(c))
        a_on, b_on = not math.isnan(a), b is not None
        if not a_on and not b_on:
            continue
        scored += 1
        within += int(a_on and b_on and abs(a - b) <= dt)
    row["map_cells"] = scored
    row["map_within_1_frame"] = within / scored if scored else None
    # what results.json says a user: the simulation against the *observed* map, within one frame and
    # within the observed times' noise band
    comparison = (chosen.get("waves") or {}).get("comparison") or {}
    row["observed_within_1_frame"] = comparison.get("share_within")
    row["observed_within_noise"] = comparison.get("share_within_noise")
    return row


def _share(values: list[bool]) -> str:
    return f"{sum(values)}/{len(values)}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", choices=("dev", "eval", "eval2", "eval3", "test"), default="eval3")
    parser.add_argument("--n-leak", type=int, default=20)
    parser.add_argument("--n-linear", type=int, default=10)
    parser.add_argument("--max-cells", type=int, default=400)
    parser.add_argument("--members", nargs="*", default=None)
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)))
    parser.add_argument("--out", default=None, help="write every row as JSON here")
    parser.add_argument("--override", nargs="*", default=[],
                        help="extra Hydra overrides for every run (e.g. physics.train_fraction=0.9)")
    args = parser.parse_args()
    ids = args.members or pick_members(args.set, args.n_leak, args.n_linear, args.max_cells)
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(max_workers=args.jobs) as pool:
        (Path(tmp) / "cache").mkdir()
        futures = [pool.submit(run_one, m, str(Path(tmp) / "cache"), str(Path(tmp) / "runs"),
                               tuple(args.override)) for m in ids]
        for future in futures:
            row = future.result()
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                  flush=True)
    print(f"\n{len(rows)} members in {time.perf_counter() - start:.0f} s ({args.set}, {args.jobs} processes)")
    ok = [r for r in rows if "error" not in r]
    leak = [r for r in ok if r["law"] == "leak"]
    print(f"errors: {len(rows) - len(ok)}")
    print(f"selection picks the generating law: {_share([r['chosen'] == r['law'] for r in ok])} "
          f"(leak {_share([r['chosen'] == 'leak' for r in leak])}, linear "
          f"{_share([r['chosen'] == 'linear' for r in ok if r['law'] == 'linear'])})")
    print(f"leak members, leak-law k within 10%: {_share([(r['k_err_leak'] or 1) <= 0.1 for r in leak])}; "
          f"median k err {statistics.median([r['k_err_leak'] for r in leak]):.1%}" if leak else "")
    maps = [r["map_within_1_frame"] for r in leak if r["map_within_1_frame"] is not None]
    if maps:
        print(f"leak members, activation map within 1 frame: median {statistics.median(maps):.1%} of cells; "
              f"members with >= 90%: {sum(v >= 0.9 for v in maps)}/{len(maps)}")
    against_data = [(r["observed_within_1_frame"], r["observed_within_noise"]) for r in ok
                    if r.get("observed_within_noise") is not None]
    if against_data:
        print(f"results.json, simulated vs observed map (all members with one): within 1 frame median "
              f"{statistics.median(a for a, _ in against_data):.1%}, within the observed times' noise "
              f"median {statistics.median(b for _, b in against_data):.1%}; members >= 90%: "
              f"{sum(a >= 0.9 for a, _ in against_data)} and {sum(b >= 0.9 for _, b in against_data)} "
              f"of {len(against_data)}")
    print(f"leak members, linear law reported inadequate: {_share([r['linear_inadequate'] for r in leak])}")
    wrong = [r for r in ok if (r["k_err_chosen"] if r["k_err_chosen"] is not None else 1.0) > 0.1]
    unflagged = [r["member"] for r in wrong if r[f"fit_ok_{r['chosen']}"] and not r.get("k_depends_on_law")]
    print(f"chosen fits more than 10% off: {len(wrong)}, of which not flagged (fit_ok true, k not reported "
          "as depending on the law): "
          f"{len(unflagged)} {unflagged}")
    said = [r for r in ok if r["k_identified"]]
    wrong_said = [r["member"] for r in said
                  if (r["k_err_chosen"] if r["k_err_chosen"] is not None else 1.0) > 0.1]
    print(f"verdict 'k identified by this recording': {len(said)} of {len(ok)} members; of them more than "
          f"10% off: {len(wrong_said)} {wrong_said}")
    found = sum(r["drivers_found"] for r in ok)
    true = sum(r["drivers_true"] for r in ok)
    print(f"interior drivers found: {found}/{true}; modelled cells wrongly made drivers: "
          f"{sum(r['drivers_wrong'] for r in ok)}")
    print("targets: " + TARGETS)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
