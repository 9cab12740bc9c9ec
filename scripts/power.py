"""Power analysis: how many dishes per condition does a coupling experiment need?

    .venv/bin/python scripts/power.py --base border-25 --dishes 5 --effect 0.2 --noise 0.05 \\
        --dish-cv 0.1 --experiments 200 --jobs 2

Simulates ``--experiments`` experiments of ``--dishes`` dishes per condition from the zoo design
``--base`` (each dish its own culture; :mod:`calcium_gnn.evaluation.plate_power`), fits every dish
with the experiment's model (``--experiment``, default ``setup1_neural_ode``: the output-error fit with
its ``k`` interval), compares the conditions with the hierarchical model of ``data.table`` runs
(:mod:`calcium_gnn.inference.conditions`) and prints the power against a ``--effect`` drop of ``k``,
the false-positive rate with no difference, both with their Monte-Carlo standard errors, and
``--out`` gets every experiment as JSON. Several ``--dishes`` or ``--dish-cv`` values give a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calcium_gnn.errors import CalciumGNNError  # noqa: E402
from calcium_gnn.evaluation.plate_power import PlateDesign, fit_dish, simulate_experiment, summarise  # noqa: E402

_FIT: dict[str, Any] = {}


def _dish_fit(data: Any) -> dict[str, Any]:
    """Fit one dish with the experiment's setup and model, as ``train()`` does (no evaluation); the
    model is the output-error fit (checked in :func:`main`)."""
    from omegaconf import OmegaConf

    from calcium_gnn.physics.setups import resolve_setup
    from calcium_gnn.train import instantiate_model

    cfg = _FIT["cfg"]
    setup = resolve_setup(data, **OmegaConf.to_container(cfg.setup, resolve=True))
    model = instantiate_model(cfg.model, data, setup)
    return fit_dish(model, max_iterations=int(cfg.trainer.max_epochs) * int(model.steps_per_epoch))


def _init(experiment: str) -> None:
    import torch
    from hydra import compose, initialize_config_dir

    from calcium_gnn.train import CONFIG_DIR

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        _FIT["cfg"] = compose("train.yaml", overrides=[f"experiment={experiment}"])


def _one(design: PlateDesign, experiment: int) -> dict[str, Any]:
    return simulate_experiment(design, experiment, _dish_fit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="border-25", help="zoo design of every dish (a border member)")
    parser.add_argument("--dishes", type=int, nargs="+", default=[5], help="dishes per condition")
    parser.add_argument("--effect", type=float, default=0.2, help="relative drop of k in the treated dishes")
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--dish-cv", type=float, nargs="+", default=[0.1],
                        help="between-dish coefficient of variation of k")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--experiment", default="setup1_neural_ode",
                        help="the experiment config that fits a dish")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=None, help="write every experiment as JSON here")
    args = parser.parse_args()
    designs = [PlateDesign(args.base, n, args.effect, args.noise, cv, args.alpha)
               for n in args.dishes for cv in args.dish_cv]
    try:
        base = designs[0].check()
        for design in designs:
            design.check()
    except CalciumGNNError as err:
        parser.exit(2, f"power.py: {err}\n")
    try:
        _init(args.experiment)
    except Exception as err:  # noqa: BLE001 - Hydra's own errors for an unknown experiment name
        first = (str(err).splitlines() or [type(err).__name__])[0]
        parser.exit(2, f"power.py: --experiment: {args.experiment!r} does not compose: {first}\n")
    if not str(_FIT["cfg"].model.get("_target_", "")).endswith(".OutputErrorODE"):
        parser.exit(2, f"power.py: --experiment: {args.experiment} fits model {_FIT['cfg'].model._target_}; "
                       "power.py needs the output-error fit (experiment=setup1_neural_ode or one like it)\n")
    print(f"base {base.id}: {base.n_cells} cells, {base.n_frames} frames at {base.dt} s, k0 {base.k}; "
          f"{args.experiments} experiments per design, {args.jobs} processes, fit by "
          f"experiment={args.experiment}", flush=True)
    everything: list[dict[str, Any]] = []
    header = (f"{'dishes':>6} {'dish cv':>7} {'power':>15} {'false pos.':>15} {'ratio (true)':>14} "
              f"{'ratio CI cover':>14} {'dish k err':>10} {'s/exp':>6}")
    lines = [header]
    for design in designs:
        start = time.perf_counter()
        with ProcessPoolExecutor(max_workers=args.jobs, initializer=_init,
                                 initargs=(args.experiment,)) as pool:
            rows = list(pool.map(_one, [design] * args.experiments, range(args.experiments)))
        summary = summarise(design, rows)
        summary["wall_seconds"] = time.perf_counter() - start
        everything.append({"summary": summary, "experiments": rows})
        line = (f"{design.n_dishes:>6} {design.dish_cv:>7.2f} "
                f"{summary['power']:>8.1%} ±{summary['power_mc_se']:>5.1%} "
                f"{summary['false_positive_rate']:>8.1%} ±{summary['false_positive_rate_mc_se']:>5.1%} "
                f"{summary['ratio_effect_median']:>6.3f} ({1 - design.effect:.2f}) "
                f"{summary['coverage_effect']:>14.1%} {summary['dish_k_rel_err_median']:>10.1%} "
                f"{summary['seconds_per_experiment']:>6.1f}")
        lines.append(line)
        print(line, flush=True)
        if summary["dishes_failed"]:
            print(f"       {summary['dishes_failed']} dishes without an estimate (left out)", flush=True)
    print(f"\nalpha {args.alpha}, effect {args.effect:.0%} drop of k, noise {args.noise:.0%}; power and "
          "false-positive rate ± Monte-Carlo standard error; ratio = median estimated k_treated / "
          "k_control; cover = share of ratio intervals holding the truth")
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
