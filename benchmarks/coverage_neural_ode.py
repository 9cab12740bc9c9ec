"""Coverage of the 90% intervals of the output-error fit over synthetic cultures, and the feed error
against its information limit.

For every seed a culture ``make_culture(seed=s)`` (108 cells, 361 frames, setup I) is observed with
noise ``noise * dynamic range`` (``truth_graph(..., seed=1000 + s)``), fitted by
:class:`calcium_gnn.models.neural_ode.OutputErrorODE` (CRLSM start, Levenberg-Marquardt, then
``finish_fit``: the border-noise correction of ``k`` and the pooling of the feeds), and its
``level`` intervals for ``k`` and every modelled ``gamma_i`` are checked against the truth, for the
per-cell feeds (``gamma_prior=none``) and for the random-effects pooled feeds (the default).

    .venv/bin/python benchmarks/coverage_neural_ode.py --seeds 20 --noise 0.01 0.05

Per seed and per noise level it prints: the coverage of k (fraction of seeds) and of gamma_i (fraction
of all modelled cells over all seeds), the median |gamma_i error| / mean true gamma of both estimates,
and the **information limit**: the median absolute error that an unbiased per-cell estimator with the
Cramér-Rao standard errors ``sqrt(diag(sigma^2 (J^T J)^-1))`` would have (``nuisance fitted``: k and
y0 estimated too; ``k, y0 known``: the feeds alone, a bound no per-cell method can beat).
Target: coverage 80-98%.
"""

from __future__ import annotations

import argparse
import statistics
import time
from statistics import NormalDist

import torch

from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.inference.output_error import laplace
from calcium_gnn.models.neural_ode import OutputErrorODE
from calcium_gnn.physics.setups import resolve_setup


def fit(data, max_iterations: int = 30) -> OutputErrorODE:
    model = OutputErrorODE(data=data, setup=resolve_setup(data))
    model.fit_exact(max_iterations)
    model.finish_fit()
    return model


def median_abs_error(se: torch.Tensor) -> float:
    """Median of |e| over cells when e_i ~ N(0, se_i^2) independently (bisection on the mixture CDF)."""
    phi = NormalDist().cdf
    lo, hi = 0.0, float(se.max()) * 4
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if statistics.fmean(2 * phi(mid / float(s)) - 1 for s in se) < 0.5:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def information_limit(model: OutputErrorODE) -> tuple[float, float]:
    """Median abs feed error of an efficient unbiased estimator: (nuisance fitted, k and y0 known)."""
    theta, gn = laplace(model.problem, model.autocorrelation_correction)
    with torch.no_grad():
        jac = torch.func.jacfwd(lambda th: model.problem.residuals_theta(th).reshape(-1))(theta)
    feeds = model.problem.feed_positions
    j_g = jac[:, feeds]
    known = (gn.sigma2 * gn.inflation * torch.linalg.inv(j_g.T @ j_g)).diagonal().sqrt()
    return median_abs_error(gn.se[feeds]), median_abs_error(known)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.01, 0.05])
    parser.add_argument("--level", type=float, default=0.9)
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}; level {args.level}; seeds {args.seeds}")
    for noise in args.noise:
        k_hits, k_errs, k_raw_errs, seconds = 0, [], [], []
        hits = {"per-cell": 0, "pooled": 0}
        errs: dict[str, list[float]] = {"per-cell": [], "pooled": [], "limit": [], "limit_known": []}
        g_total = 0
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            culture = make_culture(seed=seed, render=False)
            data = truth_graph(culture, noise=noise, seed=1000 + seed)
            start = time.perf_counter()
            model = fit(data)
            intervals = {
                "pooled": model.parameter_intervals(args.level),
                "per-cell": model.parameter_intervals(args.level, pool=False),
            }
            seconds.append(time.perf_counter() - start)
            truth_gamma = torch.as_tensor(culture.gamma, dtype=torch.float64)
            cells = model.modelled
            scale = float(truth_gamma[cells].mean())
            covered = {}
            for name, iv in intervals.items():
                k_ok, g_ok = iv.covers(culture.k, truth_gamma)
                covered[name] = int(g_ok[cells].sum())
                hits[name] += covered[name]
                errs[name].append(float((iv.gamma[cells] - truth_gamma[cells]).abs().median()) / scale)
            limit, limit_known = information_limit(model)
            errs["limit"].append(limit / scale)
            errs["limit_known"].append(limit_known / scale)
            iv = intervals["pooled"]
            k_ok = iv.k_interval[0] <= culture.k <= iv.k_interval[1]
            k_hits += int(k_ok)
            g_total += int(cells.sum())
            k_errs.append(abs(iv.k - culture.k) / culture.k)
            correction = model.border_correction
            k_raw = correction.k_uncorrected if correction is not None else iv.k
            k_raw_errs.append(abs(k_raw - culture.k) / culture.k)
            print(
                f"noise {noise:.2f} seed {seed:3d}: k {iv.k:.5f} (uncorrected {k_raw:.5f}) "
                f"[{iv.k_interval[0]:.5f}, "
                f"{iv.k_interval[1]:.5f}] covered {k_ok}; gamma covered pooled {covered['pooled']}, "
                f"per-cell {covered['per-cell']} of {int(cells.sum())}; gamma medAE/mean pooled "
                f"{errs['pooled'][-1]:.1%}, per-cell {errs['per-cell'][-1]:.1%}, information limit "
                f"{errs['limit'][-1]:.1%} (k, y0 known {errs['limit_known'][-1]:.1%}); {seconds[-1]:.1f} s",
                flush=True,
            )
        n = args.seeds
        med = {name: statistics.median(v) for name, v in errs.items()}
        print(
            f"== noise {noise:.2f}: coverage of {args.level:.0%} intervals: "
            f"k {k_hits}/{n} = {k_hits / n:.1%}, "
            f"gamma_i pooled {hits['pooled']}/{g_total} = {hits['pooled'] / g_total:.1%}, per-cell "
            f"{hits['per-cell']}/{g_total} = {hits['per-cell'] / g_total:.1%}; median |k err| "
            f"{statistics.median(k_errs):.2%} (without the border-noise correction "
            f"{statistics.median(k_raw_errs):.2%}, worst {max(k_errs):.2%} vs {max(k_raw_errs):.2%}); "
            f"median gamma medAE/mean: pooled {med['pooled']:.1%}, "
            f"per-cell {med['per-cell']:.1%}, information limit of a per-cell estimate {med['limit']:.1%} "
            f"(k, y0 known {med['limit_known']:.1%}); ratio per-cell / pooled "
            f"{med['per-cell'] / med['pooled']:.2f}x; "
            f"median fit+interval time {statistics.median(seconds):.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
