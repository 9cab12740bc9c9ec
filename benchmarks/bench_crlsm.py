"""Fast exact CRLSM solver vs the paper's reference, scipy ``lsq_linear(method="trf")`` (eq. 20).

Both solve the same stacked system ``min 1/2 ||A theta - b||^2 + lam/2 ||theta||^2`` over the box
``k in [1e-3, 0.1]``, ``gamma_i in [-3e-5, 0.1]`` (paper defaults, lam = 1e-3), with ``theta = [k,
gamma_1..gamma_G]`` (setup-I-like, eq. 3). The rows are a random regression with the paper's shape:
``S`` forward-Euler steps per cell (2100 = 211 frames x 10), drive ``a ~ N(0, 0.1)``, true ``k = 0.02``,
``gamma_i ~ U(-1e-4, 3e-3)`` (some below the lower bound, so the box is active), noise 1e-3.

Timings include building what each solver needs from the rows: the normal statistics for the fast
path, the sparse matrix for scipy. Prints both times, the speed-up, and the agreement
``||theta_fast - theta_scipy|| / ||theta_scipy||``.

    .venv/bin/python benchmarks/bench_crlsm.py [--sizes 108 1000 10000] [--steps 2100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from calcium_gnn.physics.ls_solvers import solve_fast, solve_scipy
from calcium_gnn.physics.ls_system import LSSystem, normal_stats

LAM, K_BOUNDS, GAMMA_BOUNDS = 1e-3, (1e-3, 0.1), (-3e-5, 0.1)


def random_system(n_cells: int, steps: int, h: float = 1.0, seed: int = 0) -> LSSystem:
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 0.1, (n_cells, steps))
    gamma = rng.uniform(-1e-4, 3e-3, n_cells)
    b = h * (0.02 * a + gamma[:, None]) + rng.normal(0.0, 1e-3, (n_cells, steps))
    idx = torch.arange(n_cells)
    return LSSystem(torch.from_numpy(a), torch.from_numpy(b), h, idx, n_cells, "per_cell", idx, n_cells, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[108, 1000, 10000])
    parser.add_argument("--steps", type=int, default=2100, help="Euler steps (rows) per cell")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the fast solve (best is kept)")
    args = parser.parse_args()
    print(f"CRLSM (eq. 20), lam={LAM}, k in {K_BOUNDS}, gamma in {GAMMA_BOUNDS}, {args.steps} rows per cell")
    print(f"{'cells':>7} {'rows':>10} {'fast (s)':>10} {'scipy (s)':>10} {'speed-up':>9} {'rel diff':>9} "
          f"{'k':>10} {'active':>6}")
    for n_cells in args.sizes:
        system = random_system(n_cells, args.steps)
        fast_times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fast = solve_fast(normal_stats(system), LAM, K_BOUNDS, GAMMA_BOUNDS)
            fast_times.append(time.perf_counter() - start)
        t_fast = min(fast_times)
        start = time.perf_counter()
        ref = solve_scipy(system, LAM, K_BOUNDS, GAMMA_BOUNDS)
        t_scipy = time.perf_counter() - start
        theta_f = torch.cat([fast.k.reshape(1), fast.gamma])
        theta_s = torch.cat([ref.k.reshape(1), ref.gamma])
        rel = float((theta_f - theta_s).norm() / theta_s.norm())
        active = int((fast.gamma_active != 0).sum()) + int(fast.k_active != 0)
        print(f"{n_cells:7d} {system.num_rows:10d} {t_fast:10.4f} {t_scipy:10.2f} {t_scipy / t_fast:8.0f}x "
              f"{rel:9.1e} {float(fast.k):10.7f} {active:6d}", flush=True)


if __name__ == "__main__":
    main()
