"""Model selection with the learned coupling among the candidates: does it pick the generating family?

    .venv/bin/python benchmarks/bench_law_selection.py [--members saturating-2 border-3 ...] [--jobs 2]
        [--start-at-truth]

Each member of the law-discovery set (``bench_law_discovery.DEFAULT_MEMBERS``: nonlinear laws and
linear ones; none in the frozen test split, none used to choose the learned coupling's settings) is
fitted through the user's command, ``experiment=select_law selection.laws=[...]`` (the candidates of a
``--set "selection.laws=[...]"`` override; default: the paper's law, the leak law, the three named
nonlinear laws of :mod:`calcium_gnn.nn.named_laws` and the learned coupling;
:func:`benchmarks.zoo.fit_member`, interior drivers named as ``setup.drivers``): the laws ranked by BIC
on the training window, the learned coupling judged on the test window
(:mod:`calcium_gnn.evaluation.model_selection`). The right family is the generating law where it is a
candidate, else ``gnn_ode`` for a member of a nonlinear law (``paracrine`` has no named law: it reaches
beyond neighbours). ``--set "selection.laws=[linear,leak,gnn_ode]"`` gives the previous release's
comparison. Target (issue 14): the right family on >= 85% of members.

Printed per member: the chosen candidate, the BIC support of the best law over the runner-up law, each
candidate's BIC difference to the best law, the learned candidate's test-window MSE over the linear
law's and its paired ``z`` against the best law (:func:`calcium_gnn.evaluation.model_selection.
held_out_comparison`), and the wall time; then the share right, overall and by family.

``--start-at-truth`` starts each member's own named law at its true parameters (``model.law_start``),
an oracle: where the default start loses and this one wins, the optimiser's start was the problem; where
both lose, the member's data do not show its law at the price BIC charges for its parameters.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_law_discovery import DEFAULT_MEMBERS, run_members  # noqa: E402

CANDIDATES: tuple[str, ...] = ("linear", "leak", "saturating", "threshold", "rectifying", "gnn_ode")
SELECTION_TARGET: float = 0.85
LAWS_OVERRIDE: str = "selection.laws="


def right_family(law: str, candidates: tuple[str, ...] = CANDIDATES) -> str:
    """The candidate that should win on a member of ``law`` (module docstring)."""
    return law if law in candidates or law in ("linear", "leak") else "gnn_ode"


def candidates_of(overrides: tuple[str, ...]) -> tuple[str, ...]:
    """The candidates of the run's ``selection.laws=[...]`` override (:data:`CANDIDATES` without)."""
    for item in overrides:
        if item.startswith(LAWS_OVERRIDE):
            return tuple(n.strip() for n in item[len(LAWS_OVERRIDE):].strip("[]").split(",") if n.strip())
    return CANDIDATES


def truth_start(member_id: str) -> tuple[str, ...]:
    """The override starting a member's own named law at its true parameters
    (``+selection.model_overrides.<law>.law_start={...}``; ``model.law_start`` of ``model=gnn_ode``),
    or none for a member of another law."""
    from calcium_gnn.data import zoo as culture_zoo
    from calcium_gnn.nn.named_laws import NAMED_LAWS

    zoo_member = culture_zoo.member(member_id)
    law = zoo_member.law
    if law not in NAMED_LAWS:
        return ()
    constants = culture_zoo.member_graph(zoo_member).truth_law_constants
    values = ",".join(f"{name}:{float(constants[name])!r}" for name in NAMED_LAWS[law])
    return (f"+selection.model_overrides.{law}.law_start={{{values}}}",)


def run(member_id: str, cache: str, out: str, overrides: tuple[str, ...] = (),
        start_at_truth: bool = False) -> dict[str, Any]:
    from zoo import fit_member

    from calcium_gnn.data import zoo as culture_zoo

    culture_zoo.forbid_test_split("law selection: custom members only")  # in each worker, too
    candidates = candidates_of(overrides)
    extra = tuple(overrides) if any(o.startswith(LAWS_OVERRIDE) for o in overrides) else (
        LAWS_OVERRIDE + "[" + ",".join(candidates) + "]", *overrides)
    if start_at_truth:
        extra = (*extra, *truth_start(member_id))
    report, data, seconds, error = fit_member(member_id, "neural_ode", cache, out, extra, "select_law")
    row: dict[str, Any] = {"member": member_id, "law": data.truth_law, "n_cells": int(data.num_nodes),
                           "noise": float(data.truth_noise), "seconds": seconds, "error": error,
                           "expected": right_family(data.truth_law, candidates), "candidates": candidates}
    if report is None:
        return row
    rows = report["rows"]
    row.update(
        chosen=report["chosen"], support=report["support"], test_prefers=report.get("test_window_prefers"),
        failed=sorted(report.get("failed") or {}),
        delta_bic={n: rows[n].get("delta_bic") for n in rows},
        mse_test={n: rows[n].get("mse_test") for n in rows},
        n_parameters={n: rows[n].get("n_parameters") for n in rows},
        held_out=(rows.get("gnn_ode") or {}).get("held_out"),
        named_parameters={n: rows[n].get("parameters") for n in rows if rows[n].get("parameters")},
        true_parameters=next((rows[n]["true_parameters"] for n in rows if rows[n].get("true_parameters")),
                             None),
        not_identified={n: rows[n]["not_identified"] for n in rows if rows[n].get("not_identified")},
    )
    row["right"] = row["chosen"] == row["expected"]
    # a nonlinear member taken for some nonlinear candidate (the data reject the paper's law)
    row["nonlinear_chosen"] = row["chosen"] not in ("linear", "leak")
    return row


def table(rows: list[dict[str, Any]]) -> str:
    candidates = next((tuple(r["candidates"]) for r in rows if r.get("candidates")), CANDIDATES)
    head = " ".join(f"{'dBIC ' + n[:6]:>11}" for n in candidates)
    lines = [f"{'member':<14} {'law':<11} {'chosen':<11} {'right':>5} {'support':>9} {head} "
             f"{'test MSE gnn/lin':>16} {'z':>6} {'s':>5}"]
    for r in rows:
        if "chosen" not in r:
            lines.append(f"{r['member']:<14} failed: {r.get('error')}")
            continue
        nan = float("nan")
        dbic = " ".join(f"{r['delta_bic'][n] if r['delta_bic'].get(n) is not None else nan:>11.1f}"
                        for n in candidates)
        mse = r["mse_test"]
        ratio = (mse["gnn_ode"] / mse["linear"]) if mse.get("gnn_ode") and mse.get("linear") else float("nan")
        z = (r.get("held_out") or {}).get("z", nan)
        support = r["support"] if r["support"] is not None else nan  # None: one candidate fitted
        lines.append(f"{r['member']:<14} {r['law']:<11} {r['chosen']:<11} {str(r['right']):>5} "
                     f"{support:>9.1f} {dbic} {ratio:>16.3f} {z:>6.2f} {r['seconds']:>5.0f}")
    done = [r for r in rows if "chosen" in r]
    fitted = [r for r in done if r.get("true_parameters") and r["law"] in r.get("named_parameters", {})]
    if fitted:
        lines.append("the generating law's own candidate: fitted / true parameters "
                     "(* = chosen; ! = not identified)")
    for r in fitted:
        own, truth = r["named_parameters"][r["law"]], r["true_parameters"]
        pairs = ", ".join(f"{n} {own[n]:.4g} / {truth[n]:.4g}" for n in own if n in truth)
        mark = ("*" if r["chosen"] == r["law"] else " ") + (
            "!" if r["law"] in r.get("not_identified", {}) else " ")
        lines.append(f"  {r['member']:<14} {mark} {pairs}")
    if done:
        right = sum(r["right"] for r in done)
        lines.append(f"right family on {right}/{len(done)} = {right / len(done):.0%} of members "
                     f"(target >= {SELECTION_TARGET:.0%})")
        nonlinear = [r for r in done if r["law"] not in ("linear", "leak")]
        if nonlinear:
            lines.append(f"  nonlinear members taken for a nonlinear candidate: "
                         f"{sum(r['nonlinear_chosen'] for r in nonlinear)}/{len(nonlinear)}")
        for family in dict.fromkeys(r["expected"] for r in done):
            group = [r for r in done if r["expected"] == family]
            if group:
                chosen = ", ".join(sorted({r["chosen"] for r in group if not r["right"]}))
                lines.append(f"  expected {family}: {sum(r['right'] for r in group)}/{len(group)}"
                             + (f" (else chosen: {chosen})" if chosen else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", nargs="+", default=list(DEFAULT_MEMBERS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="extra Hydra overrides for every run")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    parser.add_argument("--start-at-truth", action="store_true",
                        help="start each member's own named law at its true parameters (model.law_start): "
                             "does a fit from there beat the linear law, where the default start does not?")
    args = parser.parse_args(argv)
    from calcium_gnn.data import zoo as culture_zoo

    culture_zoo.forbid_test_split("law selection: custom members only")
    fit = partial(run, start_at_truth=True) if args.start_at_truth else run
    rows = run_members(fit, args.members, tuple(args.set), args.jobs)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    print(table(rows))


if __name__ == "__main__":
    main()
