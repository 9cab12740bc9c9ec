"""The comparison of conditions of a multi-dish run (``data.table``): ``summary.json`` ``conditions``,
``conditions.png`` and the console lines.

From the summary rows of the dishes (``k`` and its interval, ``gamma_median``, ``fit_ok``, condition,
plate, covariates) :func:`condition_report` fits the hierarchical model of
:mod:`calcium_gnn.inference.conditions` twice: on ``log k`` (per-condition geometric mean of ``k``, the
ratio of each condition to the reference with its interval and p-value) and on the dishes' median
feed (the feeds' distribution per condition: the mean over dishes of the median ``gamma_i``, and the
difference). Failed dishes are left out and listed. Dishes whose fit is flagged (``fit_ok`` false)
stay in by default, counted per condition and said out loud; ``exclude_flagged`` leaves them out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from calcium_gnn.evaluation.condition_figures import plot_conditions
from calcium_gnn.inference.conditions import compare_conditions

__all__ = ["CONDITIONS_FIGURE", "condition_report", "condition_lines"]

CONDITIONS_FIGURE = "conditions.png"


def condition_report(
    rows: Sequence[Mapping[str, Any]], out_dir: str | Path, *, reference: str | None = None,
    level: float = 0.95, exclude_flagged: bool = False,
) -> dict[str, Any]:
    """The comparison block (module docstring); writes ``conditions.png`` into ``out_dir``.

    Returns:
        ``{"k": ..., "gamma_median": ..., "flagged": {condition: n}, "dishes": {condition: n},
        "excluded": {culture: reason}, "figure": path}``; ``"unavailable"`` (a reason) instead of the
        model blocks when the dishes cannot be compared (one condition, too few dishes).
    """
    conditions = [str(r.get("condition") or "") for r in rows]
    order = list(dict.fromkeys(c for c in conditions if c))
    excluded: dict[str, str] = {}
    keep: list[int] = []
    for j, r in enumerate(rows):
        if r.get("status") != "ok" or r.get("k") is None:
            excluded[r["culture"]] = f"fit {r.get('status')}: {r.get('error') or 'no k'}"
        elif exclude_flagged and r.get("fit_ok") is False:
            excluded[r["culture"]] = f"fit flagged: {r.get('fit_problems')}"
        else:
            keep.append(j)
    kept = [rows[j] for j in keep]
    flagged = {c: sum(1 for r in kept if r.get("condition") == c and r.get("fit_ok") is False) for c in order}
    counts = {c: sum(1 for r in kept if r.get("condition") == c) for c in order}
    report: dict[str, Any] = {"dishes": counts, "flagged": flagged, "excluded": excluded,
                              "exclude_flagged": exclude_flagged}
    if len([c for c in order if counts[c]]) < 2:
        report["unavailable"] = "fewer than two conditions with fitted dishes: nothing to compare"
        return report
    plates = [r.get("plate") for r in kept]
    names = sorted({n for r in kept for n in (r.get("covariates") or {})})
    covariates = {n: [float((r.get("covariates") or {}).get(n, math.nan)) for r in kept] for n in names}
    kept_conditions = [str(r["condition"]) for r in kept]
    common = {"plates": plates if any(p is not None for p in plates) else None,
              "covariates": covariates, "names": [r["culture"] for r in kept], "level": level,
              "reference": reference}
    try:
        k_model = compare_conditions([r["k"] for r in kept], [r.get("se_log_k") for r in kept],
                                     kept_conditions, quantity="k", log_scale=True, **common)
        gamma_model = compare_conditions([r.get("gamma_median") for r in kept], None, kept_conditions,
                                         quantity="gamma_median", log_scale=False, **common)
    except ValueError as err:
        report["unavailable"] = str(err)
        return report
    report["k"] = k_model.to_dict()
    report["gamma_median"] = gamma_model.to_dict()
    report["no_interval"] = sum(1 for r in kept if r.get("se_log_k") is None)
    intervals = [(r["k_low"], r["k_high"]) if r.get("k_low") and r.get("k_high") else None for r in kept]
    path = Path(out_dir) / CONDITIONS_FIGURE
    plot_conditions(k_model, kept_conditions, [r["k"] for r in kept], intervals, path,
                    flagged=[r.get("fit_ok") is False for r in kept])
    report["figure"] = str(path)
    return report


def condition_lines(report: Mapping[str, Any]) -> list[str]:
    """The console lines of the comparison."""
    lines = ["conditions:"]
    if "unavailable" in report:
        return [*lines, f"  no comparison: {report['unavailable']}"]
    k = report["k"]
    level = f"{100 * k['level']:.0f}%"
    for est in k["conditions"]:
        lo, hi = est["interval"]
        n_flag = report["flagged"].get(est["condition"], 0)
        flag = f", {n_flag} fit(s) flagged" if n_flag else ""
        lines.append(f"  {est['condition']}: k = {est['estimate']:.4g} 1/s (geometric mean of "
                     f"{est['n_dishes']} dishes{flag}), {level} interval [{lo:.4g}, {hi:.4g}]")
    for c in k["contrasts"]:
        lo, hi = c["interval"]
        lines.append(f"  {c['condition']} / {c['reference']}: k ratio {c['ratio']:.3f} [{lo:.3f}, {hi:.3f}], "
                     f"p = {c['p_value']:.3g} (t = {c['t']:.2f}, {c['df']} df)")
    for c in report["gamma_median"]["contrasts"]:
        lo, hi = c["interval"]
        lines.append(f"  feeds (median gamma_i per dish), {c['condition']} - {c['reference']}: "
                     f"{c['difference']:.3g} [{lo:.3g}, {hi:.3g}] 1/s, p = {c['p_value']:.3g}")
    plate = "" if k["plate_variance"] is None else f", plate variance {k['plate_variance']:.3g}"
    lines.append(f"  between-dish variance of log k {k['tau2']:.3g}{plate}; {k['method']}")
    n_flagged = sum(report["flagged"].values())
    if n_flagged:
        lines.append(f"  WARNING: {n_flagged} dish fit(s) are flagged (fit_ok false) and included; "
                     "data.exclude_flagged=true leaves them out")
    if report.get("no_interval"):
        lines.append(f"  note: {report['no_interval']} dish(es) have no k interval: their fit error is "
                     "counted in the between-dish variance")
    if report["excluded"]:
        lines.append(f"  left out: {', '.join(f'{n} ({why})' for n, why in report['excluded'].items())}")
    return lines
