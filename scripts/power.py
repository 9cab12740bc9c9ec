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

Then it answers "how many dishes?" without fitting again: the fitted dishes' errors are resampled
(:func:`calcium_gnn.evaluation.plate_power.resampled_power`) into the power and false-positive rate
at every ``--curve-dishes`` count and ``--dish-cv``, with the fewest dishes that reach
``--target-power``, and each simulated design's resampled power beside its simulated one as a check.
``--from-json`` takes the fitted dishes of an earlier ``--out`` and prints only that curve:

    .venv/bin/python scripts/power.py --from-json power.json --dish-cv 0.05 0.1 0.15
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

from calcium_gnn.errors import CalciumGNNError, ConfigError  # noqa: E402
from calcium_gnn.evaluation.plate_power import (  # noqa: E402
    PlateDesign,
    ceiling_power,
    dish_errors,
    error_spread,
    fit_dish,
    resampled_power,
    simulate_experiment,
    summarise,
)

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


def _resampled(args: tuple[PlateDesign, list[tuple[float | None, float | None]], int]) -> dict[str, Any]:
    design, errors, experiments = args
    return resampled_power(design, errors, experiments)


def _rate(summary: dict[str, Any], key: str) -> str:
    return f"{summary[key]:>8.1%} ±{summary[key + '_mc_se']:>5.1%}"


def _load_fitted(path: str) -> tuple[list[dict[str, Any]], list[tuple[float | None, float | None]]]:
    """The simulated designs' summaries and every dish's fit error of an earlier ``--out`` file;
    ConfigError naming the file when it is not one."""
    try:
        runs = json.loads(Path(path).read_text())
        summaries = [run["summary"] for run in runs]
        for summary in summaries:
            PlateDesign(**summary["design"])
        errors = [e for run in runs for e in dish_errors(run["experiments"])]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise ConfigError("from-json", f"{path}: not the --out file of power.py ({type(err).__name__}: "
                                       f"{err})") from err
    if not summaries or not any(e is not None for e, _ in errors):
        raise ConfigError("from-json", f"{path}: holds no fitted dish")
    return summaries, errors


def power_curve(base: dict[str, Any], errors: list[tuple[float | None, float | None]],
                args: argparse.Namespace, simulated: list[dict[str, Any]]) -> list[str]:
    """Print and return the resampled power table (module docstring) at ``args.curve_dishes`` x
    ``args.dish_cv``, the fewest dishes reaching ``args.target_power`` per spread, and each simulated
    design's check."""
    def design(n: int, cv: float) -> PlateDesign:
        return PlateDesign(base["base"], n, args.effect, base["noise"], cv, args.alpha)

    fitted = sum(e is not None for e, _ in errors)
    spread = error_spread(errors)
    table = [design(n, cv) for cv in args.dish_cv for n in args.curve_dishes]
    checks = [design(s["design"]["n_dishes"], s["design"]["dish_cv"]) for s in simulated]
    todo = table + [d for d in checks if d not in table]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        summaries = list(pool.map(_resampled, [(d, errors, args.curve_experiments) for d in todo]))
    by_design = dict(zip(todo, summaries, strict=True))
    target = f"{args.target_power:.0%} power"
    lines = [f"\nhow many dishes: {args.curve_experiments} resampled experiments per row, dish fits "
             f"drawn from the {fitted} fitted dishes ({len(errors) - fitted} without an estimate) of "
             f"{base['base']} at {base['noise']:.0%} noise; effect {args.effect:.0%} drop of k, "
             f"alpha {args.alpha}; ceilings: the power of a t-test on the dishes' true log k, and on fits "
             f"with the fitted dishes' error spread ({spread:.3f} on log k) but no bias",
             f"{'dishes':>6} {'dish cv':>7} {'power':>15} {'false pos.':>15} {'ceiling':>8} {'fits':>6}"]
    for d in table:
        lines.append(f"{d.n_dishes:>6} {d.dish_cv:>7.2f} {_rate(by_design[d], 'power')} "
                     f"{_rate(by_design[d], 'false_positive_rate')} "
                     f"{ceiling_power(d.n_dishes, d.effect, d.dish_cv, d.alpha):>8.1%} "
                     f"{ceiling_power(d.n_dishes, d.effect, d.dish_cv, d.alpha, spread):>6.1%}")
    for cv in args.dish_cv:
        enough = [d.n_dishes for d in table if d.dish_cv == cv and by_design[d]["power"] >= args.target_power]
        lines.append(f"dish cv {cv:.2f}: " + (f"{min(enough)} dishes per condition reach {target}" if enough
                                              else f"no count in {args.curve_dishes} reaches {target}"))
    for s, d in zip(simulated, checks, strict=True):
        r = by_design[d]
        lines.append(f"check at {d.n_dishes} dishes, dish cv {d.dish_cv:.2f}: simulated power "
                     f"{_rate(s, 'power').strip()}, resampled {_rate(r, 'power').strip()}; false positives "
                     f"{_rate(s, 'false_positive_rate').strip()}, resampled "
                     f"{_rate(r, 'false_positive_rate').strip()}")
    print("\n".join(lines), flush=True)
    return lines


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
    parser.add_argument("--curve-dishes", type=int, nargs="+", default=[3, 4, 5, 6, 7, 8],
                        help="dishes per condition of the resampled power table")
    parser.add_argument("--curve-experiments", type=int, default=1000,
                        help="resampled experiments per row of that table (0: no table)")
    parser.add_argument("--target-power", type=float, default=0.8)
    parser.add_argument("--from-json", default=None,
                        help="an earlier --out file: resample its fitted dishes, fit nothing")
    args = parser.parse_args()
    if min(args.curve_dishes) < 2 or args.curve_experiments < 0 or not 0 < args.target_power < 1:
        parser.exit(2, "power.py: --curve-dishes must be >= 2, --curve-experiments >= 0 and --target-power "
                       "in (0, 1)\n")
    if args.from_json:
        try:
            simulated, errors = _load_fitted(args.from_json)
        except CalciumGNNError as err:
            parser.exit(2, f"power.py: {err}\n")
        test = (args.effect, args.alpha)
        same_test = [s for s in simulated if (s["design"]["effect"], s["design"]["alpha"]) == test]
        power_curve(simulated[0]["design"], errors, args, same_test)
        return
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
        fitted = dish_errors(rows)
        if any(e is not None for e, _ in fitted):
            spread = error_spread(fitted)
            exact = ceiling_power(design.n_dishes, design.effect, design.dish_cv, design.alpha)
            as_fitted = ceiling_power(design.n_dishes, design.effect, design.dish_cv, design.alpha, spread)
            ceiling = (f"       ceiling: a t-test on the dishes' true log k {exact:.1%}; on unbiased fits "
                       f"with this design's error spread ({spread:.3f} on log k) {as_fitted:.1%}")
            lines.append(ceiling)
            print(ceiling, flush=True)
    print(f"\nalpha {args.alpha}, effect {args.effect:.0%} drop of k, noise {args.noise:.0%}; power and "
          "false-positive rate ± Monte-Carlo standard error; ratio = median estimated k_treated / "
          "k_control; cover = share of ratio intervals holding the truth")
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text(json.dumps(everything, indent=1))
    if args.curve_experiments:
        errors = [e for run in everything for e in dish_errors(run["experiments"])]
        if any(e is not None for e, _ in errors):
            simulated = [run["summary"] for run in everything]
            power_curve(everything[0]["summary"]["design"], errors, args, simulated)


if __name__ == "__main__":
    main()
