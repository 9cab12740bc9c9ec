"""Convergence of the paper's CRLSM on a noise-free synthetic culture (setup I, eq. 3).

The regression uses forward Euler (eq. 5) on linearly interpolated frames. With interpolation
factor f, each frame interval contributes f rows with the same increment and a drive varying
linearly, so as f grows the fit tends to the trapezoidal rule on the frames: the error in k falls
from first order (f = 1) to a plateau set by the frame interval dt (second order in dt). The script
prints the relative error of k and the mean absolute error of gamma per factor, and, with
``--dts``, per frame interval (same hour of culture, finer frames).

    .venv/bin/python benchmarks/crlsm_convergence.py [--factors 1 2 5 10 20 50] [--dts 10 5 2.5]
"""

from __future__ import annotations

import argparse
import time

import torch

from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.physics.least_squares import fit_least_squares
from calcium_gnn.physics.parameters import truth_errors
from calcium_gnn.physics.setups import resolve_setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 5, 10, 20, 50])
    parser.add_argument("--dts", type=float, nargs="+", default=[10.0, 5.0, 2.5])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-cells", type=int, default=108)
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of culture")
    parser.add_argument("--scipy-check", action="store_true", help="also solve with scipy (slow)")
    args = parser.parse_args()
    print(f"noise-free synthetic culture, {args.n_cells} cells, {args.duration:.0f} s, setup I, CRLSM")
    print(f"{'dt (s)':>7} {'factor':>6} {'h (s)':>7} {'k fit':>10} {'k true':>10} {'k rel err':>10} "
          f"{'gamma MAE':>10} {'time (s)':>8}")
    for dt in args.dts:
        n_frames = int(round(args.duration / dt)) + 1
        culture = make_culture(seed=args.seed, n_cells=args.n_cells, n_frames=n_frames, dt=dt, render=False)
        data = truth_graph(culture, noise=0.0, dtype=torch.float64)
        setup = resolve_setup(data)
        for factor in args.factors:
            start = time.perf_counter()
            fitted = fit_least_squares(data, setup, interpolation_factor=factor)
            elapsed = time.perf_counter() - start
            err = truth_errors(fitted, data, setup.modelled)
            k_true = float(data.truth_k) * fitted.edge_weight_scale / float(data.truth_edge_weight_scale)
            print(f"{dt:7.2f} {factor:6d} {dt / factor:7.3f} {fitted.k:10.6f} {k_true:10.6f} "
                  f"{err['fit/k_rel_err']:10.2e} {err['fit/gamma_mae']:10.2e} {elapsed:8.3f}")
            if args.scipy_check:
                ref = fit_least_squares(data, setup, interpolation_factor=factor, backend="scipy")
                rel = abs(ref.k - fitted.k) / ref.k
                print(f"{'':>15} scipy k = {ref.k:.10f}, |k_fast - k_scipy|/k = {rel:.1e}")


if __name__ == "__main__":
    main()
