"""Output-error fit (model=neural_ode) against the paper's CRLSM on the default synthetic culture.

    .venv/bin/python benchmarks/bench_neural_ode.py [--noise 0.01 0.05] [--scale] [--gnn]

For each observation-noise level (culture ``make_culture(seed=0)``: 108 cells, 361 frames, setup I):
fit time, relative error of ``k``, median |gamma_i error| / mean true gamma (per-cell feeds, and pooled
as random effects, the default ``gamma_prior``), and the test-window MSE
of the simulated traces against the *clean* traces, next to the same MSE for the true parameters
(every simulation: RK4, 10 sub-steps, y0 = first observed frame, border cells from the noisy data).
Printed ratios: k error CRLSM / output error, fit time output error / CRLSM, MSE fit / MSE truth.
``--scale`` fits 108 and 1,000 cells by Levenberg-Marquardt with the modal normal equations
(:mod:`calcium_gnn.physics.modal`) and with the dense Jacobian (where it fits: P <= 600), and by
L-BFGS until it reaches the same loss (or ``--lbfgs-budget`` seconds). ``--gnn`` also trains the
learned coupling (model=gnn_ode) from the linear fit and compares the test-window MSEs.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.models.gnn_ode import GNNODEModule
from calcium_gnn.models.neural_ode import OutputErrorODE
from calcium_gnn.physics.edge_weights import edge_weights
from calcium_gnn.physics.interpolation import time_split
from calcium_gnn.physics.least_squares import fit_least_squares
from calcium_gnn.physics.setups import resolve_setup
from calcium_gnn.physics.simulate import simulate_consensus


def test_mse_clean(data, setup, k: float, gamma: torch.Tensor) -> float:
    """Test-window MSE of the simulation (k, gamma) against the clean traces, modelled cells."""
    w, _ = edge_weights(data.edge_attr.double())
    x = data.x.double()
    y = simulate_consensus(
        x, data.t.double(), data.edge_index, w, setup.modelled, k, gamma.double(), substeps=10
    )
    _, test = time_split(x.shape[1])
    m = setup.modelled
    return float((y[m][:, test] - data.truth_x.double()[m][:, test]).pow(2).mean())


def scores(data, setup, k: float, gamma: torch.Tensor) -> tuple[float, float]:
    truth = torch.as_tensor(data.truth_gamma, dtype=torch.float64)[setup.modelled]
    k_err = abs(k - data.truth_k) / data.truth_k
    g_err = float((gamma.double()[setup.modelled] - truth).abs().median() / truth.mean())
    return k_err, g_err


def fit_output_error(data, setup, **kwargs) -> tuple[OutputErrorODE, float, int]:
    start = time.perf_counter()
    model = OutputErrorODE(data=data, setup=setup, **kwargs)
    iterations = model.fit_exact(max_iterations=30)
    model.finish_fit()  # what a Lightning fit does when it ends: border-noise correction, pooling
    return model, time.perf_counter() - start, iterations


def run_noise(noise: float, gnn: bool) -> None:
    culture = make_culture(seed=0, render=False)
    data = truth_graph(culture, noise=noise, seed=1)
    setup = resolve_setup(data)
    truth_gamma = torch.nan_to_num(torch.as_tensor(data.truth_gamma, dtype=torch.float64))
    mse_truth = test_mse_clean(data, setup, data.truth_k, truth_gamma)
    start = time.perf_counter()
    crlsm = fit_least_squares(data, setup, solver="crlsm")
    t_crlsm = time.perf_counter() - start
    k_c, g_c = scores(data, setup, crlsm.k, crlsm.gamma)
    mse_c = test_mse_clean(data, setup, crlsm.k, crlsm.gamma)
    print(
        f"\n== noise {noise:.0%} (sigma = {noise:.2f} x dynamic range); "
        f"G = {setup.num_modelled} modelled cells"
    )
    print(f"true parameters        : test MSE vs clean {mse_truth:.3e}")
    print(
        f"CRLSM (paper, eq. 20)  : {t_crlsm:6.2f} s  k {crlsm.k:.5f} (err {k_c:6.1%})  gamma medAE/mean "
        f"{g_c:6.1%}  test MSE {mse_c:.3e} ({mse_c / mse_truth:.2f}x truth)"
    )
    results = {}
    variants = (
        ("output error, per-cell", {"gamma_prior": "none"}),
        ("output error (pooled)", {}),
        ("pooled, border MA3", {"border_smoothing": 3}),
    )
    for label, kwargs in variants:
        model, seconds, iters = fit_output_error(data, setup, **kwargs)
        fitted = model.fitted_parameters()
        k_o, g_o = scores(data, setup, fitted.k, fitted.gamma)
        mse_o = test_mse_clean(data, setup, fitted.k, fitted.gamma)
        results[label] = (model, k_o, seconds)
        print(
            f"{label:23s}: {seconds:6.2f} s  k {fitted.k:.5f} (err {k_o:6.1%})  gamma medAE/mean {g_o:6.1%}  "
            f"test MSE {mse_o:.3e} ({mse_o / mse_truth:.2f}x truth)  [{iters} LM iterations]"
        )
    model, k_o, t_oe = results["output error (pooled)"]
    start = time.perf_counter()
    iv = model.parameter_intervals(0.9)
    print(
        f"90% interval of k: [{iv.k_interval[0]:.5f}, {iv.k_interval[1]:.5f}] "
        f"({time.perf_counter() - start:.2f} s; "
        f"residual lag-1 autocorrelation {iv.rho:.3f})"
    )
    print(
        f"ratios: k error CRLSM / output error = {k_c / max(k_o, 1e-12):.1f}x; "
        f"fit time output error / CRLSM = {t_oe / t_crlsm:.1f}x"
    )
    if gnn:
        torch.set_num_threads(1)
        start = time.perf_counter()
        g = GNNODEModule(data=data, setup=setup, substeps=1)
        g.initialise()
        opt = g.configure_optimizers()

        def closure():
            opt.zero_grad()
            loss = g.loss_train()
            loss.backward()
            return loss

        for _ in range(3):
            opt.step(closure)
        cmp = g.compare_with_linear(data)
        print(
            f"GNN ODE (3 L-BFGS steps, {time.perf_counter() - start:.0f} s): test MSE vs clean gnn "
            f"{cmp['mse_test_clean_gnn']:.3e} vs linear {cmp['mse_test_clean_linear']:.3e}; vs data gnn "
            f"{cmp['mse_test_gnn']:.4e} vs linear {cmp['mse_test_linear']:.4e}; beats linear: "
            f"{cmp['gnn_beats_linear']}"
        )


def _lm_fit(model: OutputErrorODE, max_iterations: int = 100) -> tuple[float, int]:
    """Levenberg-Marquardt to convergence from CRLSM; (seconds, iterations)."""
    start = time.perf_counter()
    iterations = model.fit_exact(max_iterations)
    return time.perf_counter() - start, iterations


def time_scaling(n_cells: int, size: int, lbfgs_budget: float) -> None:
    """Gauss-Newton with the modal normal equations vs L-BFGS to the same loss (and, where the dense
    Jacobian fits in memory, the dense Gauss-Newton) at ``n_cells`` cells, 5% noise."""
    start = time.perf_counter()
    culture = make_culture(seed=0, n_cells=n_cells, size=size, render=False)
    data = truth_graph(culture, noise=0.05, seed=1)
    setup = resolve_setup(data)
    print(
        f"\n{n_cells} cells (G = {setup.num_modelled}): culture {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    rows = {}
    for jacobian in ("modal", "dense"):
        model = OutputErrorODE(data=data, setup=setup, jacobian=jacobian, max_jacobian_parameters=600)
        if model.optimizer_name != "gauss_newton":
            n_parameters = model.problem.n_parameters
            gigabytes = n_parameters * model.problem.n_residuals * 8 / 1e9
            print(
                f"  Gauss-Newton, {jacobian:5s} J^T J: not formed (P = {n_parameters} > 600: the "
                f"Jacobian would take {gigabytes:.1f} GB)"
            )
            continue
        seconds, iterations = _lm_fit(model)
        loss = float(model.loss_train())
        k_err = abs(float(model.conv.k.detach()) - culture.k) / culture.k
        rows[jacobian] = (seconds, loss)
        print(
            f"  Gauss-Newton, {jacobian:5s} J^T J: {seconds:6.1f} s, {iterations} iterations, "
            f"loss {loss:.7f}, k err {k_err:.1%}",
            flush=True,
        )
        if jacobian == "modal":
            start = time.perf_counter()
            model.finish_fit()
            k_fixed = abs(float(model.conv.k.detach()) - culture.k) / culture.k
            print(
                f"  + finish_fit (border-noise correction, pooling): {time.perf_counter() - start:.1f} s, "
                f"k err {k_err:.1%} -> {k_fixed:.1%} ({model.border_correction.evaluations} profile fits)",
                flush=True,
            )
    if "modal" in rows and "dense" in rows:
        print(f"  ratio dense / modal fit time: {rows['dense'][0] / rows['modal'][0]:.1f}x")
    target = rows["modal"][1]
    model = OutputErrorODE(data=data, setup=setup, optimizer="lbfgs")
    model.initialise()
    opt = model.configure_optimizers()

    def closure():
        opt.zero_grad()
        loss = model.loss_train()
        loss.backward()
        return loss

    start = time.perf_counter()
    steps, loss = 0, float("inf")
    while time.perf_counter() - start < lbfgs_budget:
        opt.step(closure)
        steps += 1
        loss = float(model.loss_train())
        if loss <= target * (1 + 1e-6):
            break
    seconds = time.perf_counter() - start
    k_err = abs(float(model.conv.k.detach()) - culture.k) / culture.k
    reached = "reached" if loss <= target * (1 + 1e-6) else f"not reached within {lbfgs_budget:.0f} s"
    print(
        f"  L-BFGS ({steps} steps of 20 iterations): {seconds:6.1f} s, loss {loss:.7f} "
        f"(modal GN loss {reached}), "
        f"k err {k_err:.1%}; ratio L-BFGS / modal Gauss-Newton time >= {seconds / rows['modal'][0]:.1f}x",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.01, 0.05])
    parser.add_argument("--scale", action="store_true")
    parser.add_argument("--lbfgs-budget", type=float, default=300.0)
    parser.add_argument("--gnn", action="store_true")
    args = parser.parse_args()
    print(
        f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f} "
        f"(2 cores shared with other engineers)"
    )
    for noise in args.noise:
        run_noise(noise, args.gnn)
    if args.scale:
        print("\n== scaling (5% noise): Levenberg-Marquardt from CRLSM to convergence")
        time_scaling(108, 512, args.lbfgs_budget)
        time_scaling(1000, 1600, args.lbfgs_budget)


if __name__ == "__main__":
    main()
