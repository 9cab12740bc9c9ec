"""Coverage of the 90% Gauss-Newton intervals of the output-error fit over synthetic cultures.

For every seed a culture ``make_culture(seed=s)`` (108 cells, 361 frames, setup I) is observed with
noise ``noise * dynamic range`` (``truth_graph(..., seed=1000 + s)``), fitted by
:class:`calcium_gnn.models.neural_ode.OutputErrorODE` (CRLSM start, Levenberg-Marquardt), and its
``level`` intervals for ``k`` and every modelled ``gamma_i`` are checked against the truth.

    .venv/bin/python benchmarks/coverage_neural_ode.py --seeds 20 --noise 0.01 0.05

Prints per-seed lines and, per noise level, the coverage of k (fraction of seeds) and of gamma_i
(fraction of all modelled cells over all seeds), plus the median relative errors. Target: 80-98%.
"""

from __future__ import annotations

import argparse
import time

import torch

from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.models.neural_ode import OutputErrorODE
from calcium_gnn.physics.setups import resolve_setup


def fit(data, max_iterations: int = 30) -> OutputErrorODE:
    model = OutputErrorODE(data=data, setup=resolve_setup(data))
    model.initialise()
    with torch.no_grad():
        for _ in range(max_iterations):
            model.levenberg_marquardt_step()
            if bool(model.converged):
                break
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.01, 0.05])
    parser.add_argument("--level", type=float, default=0.9)
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}; level {args.level}; seeds {args.seeds}")
    for noise in args.noise:
        k_hits, g_hits, g_total, k_errs, g_errs, seconds = 0, 0, 0, [], [], []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            culture = make_culture(seed=seed, render=False)
            data = truth_graph(culture, noise=noise, seed=1000 + seed)
            start = time.perf_counter()
            model = fit(data)
            iv = model.parameter_intervals(args.level)
            seconds.append(time.perf_counter() - start)
            truth_gamma = torch.as_tensor(culture.gamma, dtype=torch.float64)
            k_ok, g_ok = iv.covers(culture.k, truth_gamma)
            cells = model.modelled
            k_hits += int(k_ok)
            g_hits += int(g_ok[cells].sum())
            g_total += int(cells.sum())
            k_errs.append(abs(iv.k - culture.k) / culture.k)
            g_err = (iv.gamma[cells] - truth_gamma[cells]).abs().median() / truth_gamma[cells].mean()
            g_errs.append(float(g_err))
            print(
                f"noise {noise:.2f} seed {seed:3d}: k {iv.k:.5f} "
                f"[{iv.k_interval[0]:.5f}, {iv.k_interval[1]:.5f}] "
                f"covered {k_ok}; gamma covered {int(g_ok[cells].sum())}/{int(cells.sum())}; "
                f"rho {iv.rho:.3f}; {seconds[-1]:.1f} s",
                flush=True,
            )
        n = args.seeds
        print(
            f"== noise {noise:.2f}: coverage of {args.level:.0%} intervals: "
            f"k {k_hits}/{n} = {k_hits / n:.1%}, "
            f"gamma_i {g_hits}/{g_total} = {g_hits / g_total:.1%}; median |k err| "
            f"{float(torch.tensor(k_errs).median()):.2%}, median gamma medAE/mean "
            f"{float(torch.tensor(g_errs).median()):.1%}; median fit+interval time "
            f"{float(torch.tensor(seconds).median()):.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
