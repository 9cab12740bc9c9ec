"""What a person reads at the end of a run: a short console summary of results.json.

:func:`run_summary` turns the results (:mod:`calcium_gnn.evaluation.results`) into a few lines: the
fitted ``k`` with its interval (or why there is none), the spread of the feeds ``gamma_i``, the test
MSE against the two baselines of the diagnostics, the fit-quality groups, ``fit_ok`` with its
reasons, the truth when the culture has one, and where the files went.
"""

from __future__ import annotations

from pathlib import Path
from statistics import median
from typing import Any

#: a fit-quality group's name as printed
GROUP_WORDS = {
    "1_good": "good",
    "2_magnitude_misses_peaks": "magnitude ok, misses peaks",
    "3_peaks_wrong_magnitude": "peaks ok, wrong magnitude",
    "other": "other",
}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _k_line(results: dict[str, Any]) -> str:
    learned = results.get("learned_law")
    line = f"  k = {results['k']:.6g} 1/s" + (" (the layer's k; the coupling is the effective k below)"
                                                 if learned else "")
    interval = results.get("k_interval")
    if interval:
        level = results.get("interval_level", 0.9)
        line += f"   {100 * level:.0f}% interval [{interval[0]:.6g}, {interval[1]:.6g}]"
    elif results.get("intervals_withheld"):
        line += f"   (no interval: {results['intervals_withheld']})"
    elif results.get("intervals_unavailable"):
        line += f"   (no interval: {results['intervals_unavailable']})"
    truth = results.get("truth") or {}
    if truth.get("k") is not None and truth.get("k_rel_err") is not None:
        line += f"   truth {truth['k']:.6g} ({100 * truth['k_rel_err']:.1f}% off)"
    reference = (results.get("diagnostics") or {}).get("reference")
    if reference and "k" in reference:
        lo, hi = reference["k_interval"]
        law = reference.get("law", "linear")
        law_text = "" if law == "linear" else (
            f", {law} law: the data reject the linear law, whose fit gives k = {reference['linear_k']:.6g}"
        )
        line += (f"\n  reference (output-error fit of the same data{law_text}): k = {reference['k']:.6g} "
                 f"[{lo:.6g}, {hi:.6g}]")
    elif reference:
        line += f"\n  reference: none ({reference['unavailable']})"
    return line


def _gamma_line(results: dict[str, Any]) -> str:
    gamma = [float(v) for v in results["gamma"].values()]
    if results.get("gamma_mode") == "none" or not gamma:
        return "  gamma_i: none (eq. 1 without feed)"
    if results.get("gamma_mode") == "shared":
        line = f"  gamma (shared) = {gamma[0]:.4g}"
    else:
        line = (
            f"  gamma_i over {len(gamma)} cells: median {median(gamma):.4g}, "
            f"5-95% [{_quantile(gamma, 0.05):.4g}, {_quantile(gamma, 0.95):.4g}]"
        )
    truth = results.get("truth") or {}
    if truth.get("gamma_median_abs_err_rel") is not None:
        line += f"   truth: median error {100 * truth['gamma_median_abs_err_rel']:.1f}% of the mean"
    return line


def _mse_line(results: dict[str, Any]) -> str:
    baselines = (results.get("diagnostics") or {}).get("baselines")
    if results.get("mse_test") is None:
        return f"  MSE train {results['mse_train']:.4g} (no test window)"
    line = f"  test MSE {results['mse_test']:.4g}"
    window = (results.get("simulation") or {}).get("test_frames")
    if window:
        start, stop = window
        line += f" (last {stop - start} of {stop} frames, held out)"
    if baselines:
        parts = []
        for name, words in (("constant", "constant level"), ("uncoupled", "no coupling")):
            ratio = baselines.get(f"ratio_to_{name}")
            if ratio is not None:
                parts.append(f"{words} {baselines[f'mse_{name}']:.4g} (ratio {ratio:.3g})")
        if parts:
            line += "   vs " + ", ".join(parts)
    return line


def run_summary(results: dict[str, Any], results_path: str | Path | None = None) -> str:
    """The console summary of one run (module docstring); ``results`` as :func:`evaluate_fit` returns."""
    n_mod, n_border = len(results["modelled_cells"]), len(results["border_cells"])
    lines = [
        f"{results['method']} on {results['setup']}: {n_mod} modelled cells, {n_border} border cells, "
        f"fit {results['fit_seconds']:.1f} s",
        _k_line(results),
        _gamma_line(results),
        _mse_line(results),
    ]
    counts = results["quality_groups"]["counts"] if "counts" in results["quality_groups"] else {
        name: len(members) for name, members in results["quality_groups"]["groups"].items()
    }
    lines.append("  quality groups: " + "; ".join(f"{counts[g]} {GROUP_WORDS.get(g, g)}" for g in counts))
    diagnostics = results.get("diagnostics")
    if diagnostics is not None:
        if diagnostics["fit_ok"]:
            lines.append("  fit_ok: yes (no diagnostic flagged)")
        else:
            n = len(diagnostics["reasons"])
            lines.append(f"  fit_ok: NO ({n} problem(s); do not trust these numbers)")
            lines.extend(f"    - {reason}" for reason in diagnostics["reasons"])
            causes = diagnostics.get("likely_causes") or []
            if causes:
                lines.append("  likely cause(s):")
                lines.extend(f"    - {cause}" for cause in causes)
    law = results.get("law") or {}
    if law.get("name") not in (None, "linear"):
        extra = f", leak delta = {law['leak']:.4g} 1/s" if law.get("leak") is not None else ""
        if law.get("leak_interval"):
            lo, hi = law["leak_interval"]
            extra += f" [{lo:.4g}, {hi:.4g}]"
        lines.insert(1, f"  law: {law['name']}{extra}")
    versus = results.get("gnn_vs_linear") or {}
    if versus.get("mse_test_linear"):
        ratio = versus["mse_test_gnn"] / versus["mse_test_linear"]
        validation = (results.get("optimizer") or {}).get("validation") or {}
        kept, start = validation.get("kept_step"), validation.get("start", "the linear fit")
        verdict = ("the same: the validation window kept the linear start"
                   if kept == 0 and start == "the linear fit" else "better" if ratio < 1 else "NOT better")
        if kept == 0 and start != "the linear fit":
            verdict += f"; the validation window kept {start}"
        lines.append(f"  learned law vs the linear fit it started from: test MSE ratio {ratio:.3g} "
                     f"({verdict})")
    block = results.get("learned_law") or {}
    learned = block.get("summary")
    if learned:
        line = (f"  learned message: {learned['formula']}, explains {100 * learned['explained']:.1f}% "
                f"-> {learned['law']}; effective k {block['effective_k']:.4g}")
        if block.get("true_effective_k") is not None:
            line += f" (true {block['true_effective_k']:.4g})"
        lines.append(line)
    node = block.get("node_term")
    if node:
        line = (f"  node term: {node['formula']}, the line explains {100 * node['explained']:.1f}% -> "
                f"{node['law']}; leak rate {node['leak_rate']:.4g}/s")
        if node.get("true_leak_rate") is not None:
            line += f" (true {node['true_leak_rate']:.4g})"
        lines.append(line)
    comparison = (results.get("waves") or {}).get("comparison") or {}
    if comparison.get("n_both"):
        line = (f"  activation map, simulated vs observed: {comparison['n_both']} cells activated in both, "
                f"{100 * comparison['share_within']:.0f}% within one frame")
        if comparison.get("share_within_noise") is not None:
            line += f", {100 * comparison['share_within_noise']:.0f}% within the observed times' noise"
        lines.append(line)
    if results_path is not None:
        lines.append(f"results: {results_path}")
        figures = results.get("figure_paths") or []
        if figures:
            lines.append(f"figures: {len(figures)} PNG in {Path(figures[0]).parent}")
    return "\n".join(lines)
