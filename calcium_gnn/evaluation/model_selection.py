"""Which law do the data support? A comparison of fitted laws on the same cells and frames.

Every candidate (a law of :mod:`calcium_gnn.physics.laws` fitted by the output-error model, or the
learned GNN coupling) is fitted on the same modelled cells G and training frames and simulated over
the training and the test window (:func:`calcium_gnn.evaluation.report.evaluate_fit`); this module
reads their ``results.json`` and ranks them.

Information criterion (training window). With ``M`` residuals, ``RSS`` their sum of squares at the
fit's optimum (the model's own objective, ``law.rss_train`` and ``law.n_residuals`` of results.json:
with its fitted initial states, not the evaluation's restart from the observed first frame, which a
leak forgets faster and would be rewarded for; for models that do not report it, ``M = G (T_train -
1)`` and ``RSS = M mse_train`` of the evaluation) and ``P`` fitted parameters, Schwarz's criterion for
Gaussian residuals is
``BIC = M log(RSS / M) + P log M``. The residuals of a simulation are correlated in time; with lag-1
autocorrelation ``rho`` an AR(1) series carries about ``M_eff = M (1 - rho) / (1 + rho)`` independent
values, so

.. math::
    \\mathrm{BIC} = M_{\\mathrm{eff}} \\log(\\mathrm{RSS} / M) + P \\log M_{\\mathrm{eff}},

with one ``rho`` for every candidate (that of the candidate with the smallest RSS, the one closest to
white residuals: the pooled lag-1 autocorrelation of its fit's residuals, ``law.rho_train``, else the
median of the evaluation's), so the criterion compares the same data. The chosen law has the smallest BIC; the
difference to the next one is its support (Kass and Raftery: above :data:`STRONG_SUPPORT` is strong).

Test window. Each candidate's test-window MSE is reported beside the two baselines of the diagnostics
(a constant level; eq. 3 without coupling): a candidate that does not beat the constant level there,
whose fit says it failed (``diagnostics.fit_ok``), or whose BIC is more than :data:`STRONG_SUPPORT`
above the chosen one is reported *inadequate*, with the reasons. When the test window prefers a law
other than the BIC's, the report says so; and when the support is weak and the runner-up's ``k`` lies
outside the chosen law's interval, it says that ``k`` depends on a choice the data do not make
(``k_depends_on_law``).

Is ``k`` identified? The report ends with one verdict on ``k`` (``k_verdict``): ``k`` is identified by
the recording when the chosen candidate is adequate, reports a ``k`` with an interval, that interval
is narrower than ``k`` itself, and ``k`` does not depend on a law the data do not decide
(``k_depends_on_law``); otherwise the verdict says that this recording does not
identify ``k`` and why (the chosen candidate's problems first, then the first words of its likely
causes, :mod:`calcium_gnn.evaluation.causes`). A number that fails these checks is still in the table,
never in the verdict.

Learned candidates (a network in the law: ``gnn_ode``). A parameter count charges a network for every
weight, hundreds, which its fit does not spend freely (it starts from the linear law, and its output
is a smooth function of a few inputs): by BIC it always loses (on saturating-2, whose learned law cut
the clean-trace test error by 60%, its BIC was 3,338 above the linear law's). So a learned candidate
is judged on data it was not fitted to, the test window, against the law the BIC chose among the laws:
with ``d_c`` the per-cell difference of the test-window MSEs (law minus learned) over the modelled
cells,

.. math::
    z = \frac{\bar d}{s_d / \\sqrt{n}}, \\qquad
    \text{gain} = 1 - \frac{\\mathrm{MSE}_\text{test}(\text{learned})}{\\mathrm{MSE}_\text{test}(\text{law})},

and the learned candidate is chosen when ``z`` exceeds :data:`LEARNED_Z` (one-sided ``p < 0.01``; the
cells are treated as independent, which neighbours are not quite) and the gain exceeds
:data:`LEARNED_MIN_GAIN`. Both were set before any run of the benchmark
(``benchmarks/bench_law_selection.py``), not tuned. The test window then served the choice: the chosen
candidate's test MSE is no longer an independent estimate of its error, and the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from calcium_gnn.inference.held_out import BETTER_MIN_GAIN, BETTER_Z, paired_comparison

#: a BIC difference above this is strong evidence (Kass and Raftery 1995: 6-10 strong, > 10 very strong)
STRONG_SUPPORT: float = 10.0
#: with weak support and no interval, a runner-up ``k`` this far from the chosen one is reported
K_LAW_SHARE: float = 0.1
#: the AR(1) correction's rho is clipped to [0, this] (rho -> 1 would leave no independent residual)
MAX_RHO: float = 0.95
#: a learned candidate wins over the best law only with a paired z of the per-cell test MSEs above this
#: (one-sided p < 0.01) and a test-window MSE lower by more than LEARNED_MIN_GAIN
#: (:mod:`calcium_gnn.inference.held_out`)
LEARNED_Z: float = BETTER_Z
LEARNED_MIN_GAIN: float = BETTER_MIN_GAIN


def held_out_comparison(law: Mapping[str, Any], learned: Mapping[str, Any]) -> dict[str, Any] | None:
    """The paired test-window comparison of a learned candidate with a law (module docstring).

    Args:
        law, learned: rows of :func:`compare_laws` (``mse_test``, ``mse_test_per_cell``: cell id -> MSE).

    Returns:
        ``{"n_cells", "z", "gain", "better"}``, or ``None`` without per-cell test MSEs on two cells or more.
    """
    a, b = law.get("mse_test_per_cell") or {}, learned.get("mse_test_per_cell") or {}
    cells = sorted(set(a) & set(b))
    if len(cells) < 2 or not law.get("mse_test") or learned.get("mse_test") is None:
        return None
    compared = paired_comparison([a[c] for c in cells], [b[c] for c in cells], float(law["mse_test"]),
                                 float(learned["mse_test"]))
    return None if compared is None else compared.as_results()


def _scored_residuals(results: Mapping[str, Any]) -> int:
    """``M = G (T_train - 1)``: the residuals the training MSE averages (its first frame is the start)."""
    start, stop = results["simulation"]["train_frames"]
    return len(results["modelled_cells"]) * max(int(stop) - int(start) - 1, 0)


def n_parameters(results: Mapping[str, Any]) -> int:
    """The number of fitted parameters: the law block's ``n_parameters`` when the model reports it, else
    ``1 + G`` (``k`` and the feeds; the paper's least squares)."""
    law = results.get("law") or {}
    if law.get("n_parameters") is not None:
        return int(law["n_parameters"])
    return 1 + len(results["gamma"])


def information_criteria(rss: float, m: int, p: int, rho: float) -> dict[str, float]:
    """``bic`` and ``aic`` with the AR(1) effective sample size (module docstring)."""
    rho = min(max(rho, 0.0), MAX_RHO)
    m_eff = m * (1.0 - rho) / (1.0 + rho)
    log_var = math.log(max(rss / m, 1e-300))
    return {"bic": m_eff * log_var + p * math.log(max(m_eff, 2.0)), "aic": m_eff * log_var + 2.0 * p,
            "m_effective": m_eff}


def compare_laws(candidates: Mapping[str, Mapping[str, Any]],
                 failed: Mapping[str, str] | None = None, learned: Collection[str] = ()) -> dict[str, Any]:
    """Rank fitted candidates (module docstring).

    Args:
        candidates: candidate name -> its results (``results.json`` content), all on the same cells and
            windows.
        failed: candidate name -> why it has no results (its fit raised an error).
        learned: the candidates whose law holds a network (judged on the test window, module docstring).

    Returns:
        ``{"chosen", "support" (BIC difference to the runner-up), "strength", "criterion", "rho",
        "test_window_prefers", "rows": {name: {...}}, "failed", "statement"}``.

    Raises:
        ValueError: no candidate, or candidates fitted on different cells or windows.
    """
    if not candidates:
        raise ValueError("no fitted candidate to compare")
    shapes = {(tuple(r["modelled_cells"]), tuple(r["simulation"]["train_frames"]),
               tuple(r["simulation"]["test_frames"])) for r in candidates.values()}
    if len(shapes) != 1:
        raise ValueError("the candidates were fitted on different cells or windows: not comparable")
    rows: dict[str, dict[str, Any]] = {}
    for name, res in candidates.items():
        law = res.get("law") or {}
        own = law.get("rss_train") is not None and law.get("n_residuals")
        m = int(law["n_residuals"]) if own else _scored_residuals(res)
        mse_train = res.get("mse_train")
        rss = float(law["rss_train"]) if own else (None if mse_train is None else float(mse_train) * m)
        rows[name] = {
            "law": (res.get("law") or {}).get("name", name),
            "method": res.get("method"),
            "k": res.get("k"),
            "k_interval": res.get("k_interval"),
            "leak": (res.get("law") or {}).get("leak"),
            # a named law's parameters in level units and its fitted flux (calcium_gnn.nn.named_laws)
            "parameters": law.get("parameters"),
            "formula": law.get("formula"),
            "not_identified": list(law.get("not_identified") or []),
            "true_parameters": law.get("true_parameters"),
            "mse_train": mse_train,
            "mse_test": res.get("mse_test"),
            "mse_test_per_cell": {str(c): v.get("test") for c, v in (res.get("mse_per_cell") or {}).items()
                                  if isinstance(v, Mapping) and v.get("test") is not None},
            "learned": name in learned,
            "n_parameters": n_parameters(res),
            "n_residuals": m,
            "rss": rss,
            "rss_source": "the fit's objective" if own else "the evaluation's training-window MSE",
            # the fit's own residuals' autocorrelation when reported, else the evaluation's
            "rho": law["rho_train"] if own and law.get("rho_train") is not None else
            ((res.get("diagnostics") or {}).get("residuals") or {}).get("lag1_autocorrelation"),
            "baselines": (res.get("diagnostics") or {}).get("baselines"),
            "fit_ok": (res.get("diagnostics") or {}).get("fit_ok"),
            "fit_problems": list((res.get("diagnostics") or {}).get("reasons") or []),
            "likely_causes": list((res.get("diagnostics") or {}).get("likely_causes") or []),
        }
    scored = {n: r for n, r in rows.items() if r["rss"] is not None and r["n_residuals"] > 0}
    if not scored:
        raise ValueError("no candidate has a training-window MSE to compare")
    closest = min(scored, key=lambda n: scored[n]["rss"])
    rho = float(scored[closest]["rho"] or 0.0)
    for r in scored.values():
        r.update(information_criteria(r["rss"], r["n_residuals"], r["n_parameters"], rho))
    laws = [n for n in scored if not scored[n]["learned"]] or list(scored)
    ranked = sorted(laws, key=lambda n: scored[n]["bic"])
    best_law = ranked[0]
    support = scored[ranked[1]]["bic"] - scored[best_law]["bic"] if len(ranked) > 1 else math.inf
    for name, r in rows.items():
        r["held_out"] = held_out_comparison(rows[best_law], r) if r["learned"] and name != best_law else None
    winners = [n for n, r in rows.items() if r["held_out"] and r["held_out"]["better"]]
    chosen = min(winners, key=lambda n: rows[n]["mse_test"]) if winners else best_law
    for name, r in rows.items():
        r["delta_bic"] = r["bic"] - scored[best_law]["bic"] if "bic" in r else None
        r["inadequate"], r["why_inadequate"] = _adequacy(name, r, best_law, chosen)
    tested = {n: r["mse_test"] for n, r in rows.items() if r["mse_test"] is not None}
    test_best = min(tested, key=tested.get) if tested else None
    strength = "strong" if support > STRONG_SUPPORT else "weak"
    statement = (f"the data support the law '{rows[chosen]['law']}' ({name_list(ranked)} by BIC; "
                 f"difference to the next {support:.1f}: {strength})")
    if chosen != best_law:
        held = rows[chosen]["held_out"]
        statement = (f"the data support the learned coupling '{chosen}': its test-window MSE is "
                     f"{100 * held['gain']:.0f}% below the best law's, '{rows[best_law]['law']}' (paired "
                     f"over {held['n_cells']} cells, z = {held['z']:.1f}; among the laws "
                     f"{name_list(ranked)} by BIC); the test window made the choice, so its MSE is not an "
                     "independent estimate of the error")
    for name, r in rows.items():
        if r["held_out"] is not None and name != chosen and not r["held_out"]["better"]:
            statement += (f"; the learned '{name}' does not predict the test window clearly better than "
                          f"'{rows[best_law]['law']}' (gain {100 * r['held_out']['gain']:.1f}%, "
                          f"z = {r['held_out']['z']:.1f})")
    if rows[chosen].get("formula"):
        statement += f"; fitted: {rows[chosen]['formula']}"
        for why in rows[chosen]["not_identified"]:
            statement += f"; but {why}"
    if test_best is not None and test_best != chosen:
        statement += f"; the test window prefers '{rows[test_best]['law']}'"
    sensitivity = _k_sensitivity(rows, ranked, support) if chosen == best_law else None
    if sensitivity is not None:
        statement += (f"; k depends on the law the data cannot decide between: {sensitivity['k_chosen']:.4g} "
                      f"('{chosen}') vs {sensitivity['k_runner_up']:.4g} ('{sensitivity['runner_up']}'), "
                      f"{100 * sensitivity['relative_difference']:+.0f}%")
    if rows[chosen]["inadequate"]:
        statement = ("no law is adequate: even the best by BIC, '" + rows[chosen]["law"] + "', "
                     + "; ".join(rows[chosen]["why_inadequate"]) + " (" + statement + ")")
    return {
        "chosen": chosen,
        "support": support if math.isfinite(support) else None,
        "strength": strength,
        "criterion": "BIC = M_eff log(RSS/M) + P log M_eff on the training window, "
                     f"M_eff = M (1-rho)/(1+rho), rho = {rho:.3f} (lag-1 autocorrelation of the "
                     f"residuals of '{closest}')" + (
                         "; learned candidates against the best law on the test window (paired over cells, "
                         f"z > {LEARNED_Z:g} and gain > {LEARNED_MIN_GAIN:.0%})" if learned else ""),
        "best_law": best_law,
        "rho": rho,
        "test_window_prefers": test_best,
        "rows": rows,
        "failed": dict(failed or {}),
        "k_depends_on_law": sensitivity,
        "statement": statement,
        "k_verdict": k_verdict(chosen, rows[chosen], sensitivity),
    }


def k_verdict(
    name: str, row: Mapping[str, Any], sensitivity: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The verdict on ``k`` of the chosen candidate ``name`` (module docstring, "Is k identified?");
    ``sensitivity``: the report's ``k_depends_on_law`` (a ``k`` that depends on a law the data do not
    decide is not identified by them).

    Returns:
        ``{"identified", "law", "k", "k_interval", "test_mse_over_constant", "reasons", "statement"}``;
        ``k`` and ``k_interval`` are None unless identified; ``reasons`` lists why not (empty when
        identified); ``test_mse_over_constant`` is the chosen candidate's test-window MSE over a constant
        level's (None without them).
    """
    k, interval = row.get("k"), row.get("k_interval")
    reasons = [f"'{name}' is inadequate: {why}" for why in row.get("why_inadequate") or []]
    if not reasons:
        if k is None:
            reasons.append(f"'{name}' reports no k")
        elif not interval:
            reasons.append(f"'{name}' reports no interval for k")
        elif not interval[1] - interval[0] < abs(k):
            reasons.append(f"the interval of k [{interval[0]:.4g}, {interval[1]:.4g}] is wider than k "
                           f"({k:.4g})")
        if sensitivity is not None:
            reasons.append(f"k depends on a law the data do not decide: {sensitivity['k_chosen']:.4g} "
                           f"('{name}') vs {sensitivity['k_runner_up']:.4g} ('{sensitivity['runner_up']}')")
    identified = not reasons
    constant = (row.get("baselines") or {}).get("mse_constant")
    ratio = row["mse_test"] / constant if row.get("mse_test") is not None and constant else None
    if identified:
        statement = (f"k = {k:.4g} 1/s, interval [{interval[0]:.4g}, {interval[1]:.4g}], under the law "
                     f"'{row.get('law', name)}': identified by this recording")
        if ratio is not None:
            statement += f" (test-window MSE {ratio:.2f}x a constant level's)"
    else:
        statement = "this recording does not identify k: " + "; ".join(reasons)
        causes = [cause.split(":")[0] for cause in row.get("likely_causes") or []]
        if causes:
            statement += " (likely cause: " + "; ".join(causes) + ")"
    return {"identified": identified, "law": name, "k": k if identified else None,
            "k_interval": list(interval) if identified else None, "test_mse_over_constant": ratio,
            "reasons": reasons, "statement": statement}


def _k_sensitivity(rows: Mapping[str, Any], ranked: list[str], support: float) -> dict[str, Any] | None:
    """When the support is weak, whether ``k`` of the runner-up lies outside the chosen law's interval
    (or more than :data:`K_LAW_SHARE` away without one): then ``k`` depends on a choice the data do not
    make, and the report says so."""
    if len(ranked) < 2 or support > STRONG_SUPPORT:
        return None
    first, second = rows[ranked[0]], rows[ranked[1]]
    k1, k2 = first.get("k"), second.get("k")
    if not k1 or k2 is None:
        return None
    interval = first.get("k_interval")
    outside = (not interval[0] <= k2 <= interval[1]) if interval else abs(k2 - k1) > K_LAW_SHARE * abs(k1)
    if not outside:
        return None
    return {"runner_up": ranked[1], "k_chosen": k1, "k_runner_up": k2, "relative_difference": (k2 - k1) / k1}


def name_list(names: list[str]) -> str:
    """``"a < b < c"``: candidates in order of preference."""
    return " < ".join(names)


def _adequacy(name: str, row: Mapping[str, Any], best_law: str, chosen: str) -> tuple[bool, list[str]]:
    """Whether a candidate is inadequate, and why (module docstring)."""
    why: list[str] = []
    base = row.get("baselines") or {}
    constant = base.get("mse_constant")  # the diagnostics' baselines block
    if row["mse_test"] is not None and constant is not None and row["mse_test"] >= constant:
        why.append(f"does not beat a constant level on the test window (MSE {row['mse_test']:.3g} vs "
                   f"{constant:.3g})")
    held = row.get("held_out")
    if row.get("learned") and held is not None:
        if name != chosen and not held["better"]:
            why.append(f"its test-window MSE is not clearly below the best law's, '{best_law}' (gain "
                       f"{100 * held['gain']:.1f}%, paired z = {held['z']:.1f})")
    elif row.get("delta_bic") is not None and name != best_law and row["delta_bic"] > STRONG_SUPPORT:
        why.append(f"BIC {row['delta_bic']:.1f} above the chosen law '{best_law}'")
    if name == best_law and chosen != best_law:
        why.append(f"the learned coupling '{chosen}' predicts the test window better")
    if row.get("fit_ok") is False:
        why.append("its fit reports problems: " + "; ".join(row["fit_problems"]))
    return bool(why), why


def selection_table(report: Mapping[str, Any]) -> str:
    """The comparison as a plain-text table (one row per candidate) and the statement."""
    head = (f"{'candidate':<16}{'k':>10}{'leak':>10}{'P':>7}{'MSE train':>12}{'MSE test':>12}{'dBIC':>10}"
            "  verdict")
    lines = [head, "-" * len(head)]
    for name, r in report["rows"].items():
        def fmt(v: Any, spec: str) -> str:
            width = int(spec.split(".")[0])
            return format(v, spec) if isinstance(v, (int, float)) else "-".rjust(width)
        verdict = "chosen" if name == report["chosen"] else ("inadequate" if r["inadequate"] else "")
        lines.append(f"{name:<16}{fmt(r['k'], '10.4g')}{fmt(r['leak'], '10.3g')}{r['n_parameters']:>7d}"
                     f"{fmt(r['mse_train'], '12.3e')}{fmt(r['mse_test'], '12.3e')}"
                     f"{fmt(r.get('delta_bic'), '10.1f')}"
                     f"  {verdict}")
    for name, why in report["failed"].items():
        lines.append(f"{name:<16} failed: {why}")
    lines.append(report["statement"])
    if report.get("k_verdict"):
        lines.append(report["k_verdict"]["statement"])
    return "\n".join(lines)
