"""The border-noise correction's search for ``k``: successive parabolas stopped at a twentieth of a standard
error (this release) vs Brent to 1e-4 in ``log k`` (the previous release's search, the reference).

Both minimise the same noise-normalised profile loss ``R(k)`` (``physics/border_noise.py``) from the same
Levenberg-Marquardt optimum, on ``make_culture(seed=s, n_cells=C, ...)`` at 5 % noise (setup I, the
experiment's 90 % training window). Each point of either search is one profile fit. Printed per culture:
profile fits, seconds, the corrected ``k`` of each and their gap in standard errors of ``log k`` (from
the Gauss-Newton interval of the uncorrected fit), and the speed-up.

    .venv/bin/python benchmarks/bench_border_noise_search.py [--cells 108 300 1000] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import math
import time

from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.models.neural_ode import OutputErrorODE
from calcium_gnn.physics.border_noise import SE_FRACTION, correct_border_noise
from calcium_gnn.physics.setups import resolve_setup

TRAIN_FRACTION = 0.9  # experiment=setup1_neural_ode's window
Z90 = 1.6448536269514722


def timed_correction(model: OutputErrorODE, se_fraction: float | None) -> tuple[float, float, int]:
    """``(seconds, corrected k, profile fits)`` of one search from the fit's optimum (left unchanged)."""
    theta = model.problem.theta().clone()
    start = time.perf_counter()
    result = correct_border_noise(model.problem, model.border_noise_probes, model.border_noise_seed,
                                  se_fraction=se_fraction)
    seconds = time.perf_counter() - start
    model.problem.set_theta(theta)
    return seconds, result.k, result.evaluations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[108, 300, 1000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--noise", type=float, default=0.05)
    args = parser.parse_args()
    total_new = total_ref = 0.0
    for n_cells in args.cells:
        size = int(round(512 * math.sqrt(n_cells / 108)))
        for seed in args.seeds:
            culture = make_culture(seed=seed, n_cells=n_cells, size=size, render=False)
            data = truth_graph(culture, noise=args.noise, seed=seed)
            model = OutputErrorODE(data=data, setup=resolve_setup(data), train_fraction=TRAIN_FRACTION)
            model.fit_exact(max_iterations=30)
            model.problem.restore_unpooled()
            t_new, k_new, n_new = timed_correction(model, SE_FRACTION)
            t_ref, k_ref, n_ref = timed_correction(model, None)
            lo, hi = model.parameter_intervals().k_interval
            se_log_k = math.log(hi / lo) / (2 * Z90)
            gap = abs(math.log(k_new / k_ref)) / se_log_k
            total_new, total_ref = total_new + t_new, total_ref + t_ref
            err_new, err_ref = abs(k_new / culture.k - 1), abs(k_ref / culture.k - 1)
            print(f"{n_cells:5d} cells seed {seed}: parabolas {n_new:2d} fits {t_new:6.2f} s, k {k_new:.5f} "
                  f"({err_new:.1%} off) | Brent {n_ref:2d} fits {t_ref:6.2f} s, k {k_ref:.5f} "
                  f"({err_ref:.1%}) | gap {gap:.2f} se of log k | {t_ref / t_new:.1f}x", flush=True)
    print(f"all: parabolas {total_new:.1f} s, Brent {total_ref:.1f} s: {total_ref / total_new:.1f}x")


if __name__ == "__main__":
    main()
