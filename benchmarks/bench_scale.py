"""Scale of the whole ``setup1_neural_ode`` run: time and peak memory per stage, 108 to 10,000 cells.

    .venv/bin/python benchmarks/bench_scale.py [--cells 108 1000 10000] [--device cpu|cuda] [--noise 0.05]

For each culture (``make_culture(seed=0, n_cells=C, size=...)`` with the built-in density, 361 frames,
5% observation noise, setup I, the experiment's training window unless ``--train-fraction`` says
otherwise) the stages of a run, in order, each timed and with its peak resident memory (RSS sampled
every 5 ms; on CUDA also the peak allocated GPU memory):

``culture`` (generation + true graph), ``crlsm`` (the paper's fit, the start), ``model`` (building
the module: graph, training window, CRLSM start), ``fit`` (Levenberg-Marquardt to convergence; above
``model.max_normal_parameters`` matrix-free variable projection, its eigenbasis included, which stops
after its degree-weighted stage when the border-noise correction follows),
``border_noise`` (errors-in-variables correction of ``k``; with variable projection in the weighted
metric, then the fit's own profile at the corrected ``k`` and the bootstrap replicates that give its
interval), ``pooling`` (random-effects feeds),
``intervals`` (Gauss-Newton intervals), ``evaluation`` (simulation of both windows, scores),
``figures`` (the run's PNGs). Printed: seconds, peak RSS, the ratio of each stage to CRLSM, the
whole run (everything but ``culture``) against the issue's targets, and the accuracy of ``k``.
A stage that does not finish within ``--stage-budget`` seconds is reported as such (the process is
stopped: a benchmark must end).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.evaluation.report import evaluate_fit
from calcium_gnn.models.neural_ode import EXACT_SOLVERS, OutputErrorODE
from calcium_gnn.physics.least_squares import fit_least_squares
from calcium_gnn.physics.setups import resolve_setup


def experiment_train_fraction() -> float:
    """``model.train_fraction`` of ``experiment=setup1_neural_ode`` as the command composes it, so that the
    benchmark fits on the frames the command fits on."""
    from hydra import compose, initialize_config_dir

    from calcium_gnn.train import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train.yaml", overrides=["experiment=setup1_neural_ode"])
    return float(cfg.model.train_fraction)

#: the issue's targets for the whole run on this 2-core machine: cells -> (seconds, GB)
TARGETS = {1000: (20.0, 1.5), 10000: (600.0, 12.0)}
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """Resident set size of this process in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """Peak RSS while the ``with`` block runs (a sampling thread)."""

    def __enter__(self) -> PeakRSS:
        self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


def stage(rows: list[dict[str, Any]], name: str, fn: Callable[[], Any], device: torch.device) -> Any:
    """Run one stage, record seconds and peak memory."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as mem:
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else math.nan
    rows.append({"stage": name, "seconds": seconds, "rss_gb": mem.peak / 1e9, "gpu_gb": gpu})
    print(f"    {name:13s} {seconds:8.2f} s  peak RSS {mem.peak / 1e9:6.2f} GB"
          + (f"  GPU {gpu:6.2f} GB" if device.type == "cuda" else ""), flush=True)
    return out


def run(
    n_cells: int, device: torch.device, noise: float, out_dir: Path, train_fraction: float,
    noise_sigma: float | None = None,
) -> None:
    size = int(round(512 * math.sqrt(n_cells / 108)))
    level = f"sd {noise_sigma:g}" if noise_sigma is not None else f"{noise:.0%} of the range"
    print(f"\n== {n_cells} cells ({size} x {size} px, 361 frames, noise {level}, training share "
          f"{train_fraction:.3g}) on {device}", flush=True)
    rows: list[dict[str, Any]] = []

    def culture() -> Any:
        c = make_culture(seed=0, n_cells=n_cells, size=size, render=False)
        spread = float(c.traces.max() - c.traces.min())
        fraction = noise if noise_sigma is None else noise_sigma / spread
        return c, truth_graph(c, noise=fraction, seed=0)

    culture_, data = stage(rows, "culture", culture, device)
    clean = data.truth_x.double()
    sigma = float((data.x.double() - clean).std())
    own = (clean.amax(dim=1) - clean.amin(dim=1))[~data.is_driver.bool()]
    print(f"    signal: traces span {float(clean.max() - clean.min()):.3g}, a modelled cell's own range "
          f"median {float(own.median()):.3g}; observation noise sd {sigma:.3g}", flush=True)
    setup = resolve_setup(data)
    print(f"    G = {setup.num_modelled} modelled, {int(setup.border.sum())} border cells", flush=True)
    crlsm = stage(rows, "crlsm", lambda: fit_least_squares(data, setup, solver="crlsm",
                                                           train_fraction=train_fraction), device)
    model = stage(rows, "model", lambda: OutputErrorODE(data=data, setup=setup, train_fraction=train_fraction)
                  .to(device), device)
    def fit() -> int:
        """What the experiment's trainer does: the exact solver to convergence (Levenberg-Marquardt, or
        variable projection where the normal equations are too large: model.max_normal_parameters), or
        20 steps of a gradient optimiser (2 epochs of 10)."""
        if model.optimizer_name in EXACT_SOLVERS:
            return model.fit_exact(max_iterations=30)
        model.initialise()
        optimizer = model.configure_optimizers()

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = model.loss_train()
            loss.backward()
            return loss

        for _ in range(2 * model.steps_per_epoch):
            optimizer.step(closure)
        return 2 * model.steps_per_epoch

    iterations = stage(rows, "fit", fit, device)
    k_fit = float(model.conv.k.detach())

    def border_noise() -> Any:
        model.problem.restore_unpooled()
        return model.correct_border_noise()

    correction = stage(rows, "border_noise", border_noise, device)
    stage(rows, "input_noise", model.measure_input_noise, device)
    stage(rows, "pooling", model.apply_gamma_prior, device)
    unavailable = model.problem.normal_equations_unavailable()
    with_k = unavailable is None or model.projection_schur() is not None
    intervals = stage(rows, "intervals", model.parameter_intervals if with_k else (lambda: None), device)
    if unavailable:
        print(f"    no feed intervals or pooling: {unavailable}", flush=True)
    if intervals is not None:
        lo, hi = intervals.k_interval
        print(f"    k {intervals.level:.0%} interval [{lo:.5f}, {hi:.5f}] "
              f"(holds the true k: {lo <= culture_.k <= hi})", flush=True)
    fitted = model.fitted_parameters()
    common = {"method_name": "neural_ode", "fit_seconds": 0.0, "model_results": None, "device": device,
              "train_fraction": train_fraction}
    stage(rows, "evaluation", lambda: evaluate_fit(data, setup, fitted, **common), device)
    run_dir = out_dir / f"run_{n_cells}"
    with_figures = stage(rows, "eval+figures", lambda: evaluate_fit(
        data, setup, fitted, out_dir=run_dir, labels=culture_.labels, **common), device)
    rows[-1]["stage"] = "figures"
    rows[-1]["seconds"] -= rows[-2]["seconds"]
    del with_figures

    by_name = {r["stage"]: r for r in rows}
    t_crlsm = by_name["crlsm"]["seconds"]
    whole = sum(r["seconds"] for r in rows if r["stage"] not in ("culture", "crlsm"))
    peak = max(r["rss_gb"] for r in rows if r["stage"] != "culture")
    later = [r for r in rows if r["stage"] not in ("culture", "crlsm")]
    print("    stage / CRLSM: " + ", ".join(f"{r['stage']} {r['seconds'] / t_crlsm:.0f}x" for r in later))
    k_true = culture_.k

    def err(k: float) -> str:
        return f"{abs(k - k_true) / k_true:.1%}"

    steps = f"{iterations} {model.optimizer_name} steps"
    profile = f"{correction.evaluations} profile fits" if correction is not None else "no correction"
    print(f"    k: CRLSM {crlsm.k:.5f} ({err(crlsm.k)} off), output error {k_fit:.5f} ({err(k_fit)}), "
          f"corrected {fitted.k:.5f} ({err(fitted.k)}); true {k_true:.5f}; {steps}; {profile}")
    line = (f"    whole run (model + fit + statistics + evaluation + figures): {whole:.1f} s, "
            f"peak RSS {peak:.2f} GB")
    if n_cells in TARGETS and device.type == "cpu":
        t_max, gb_max = TARGETS[n_cells]
        line += (f"; target < {t_max:.0f} s and < {gb_max:.1f} GB: "
                 f"{'met' if whole < t_max and peak < gb_max else 'NOT met'}")
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[108, 1000, 10000])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--noise", type=float, default=0.05,
                        help="observation noise sd as a fraction of the traces' whole span (truth_graph)")
    parser.add_argument("--noise-sigma", type=float, default=None,
                        help="observation noise sd in trace units instead (e.g. the 1,000-cell culture's "
                        "5 %%, 0.358, at 10,000 cells, whose span is set by a steady-state dome)")
    parser.add_argument("--train-fraction", type=float, default=None,
                        help="training share of the frames (default: the experiment's; the paper's: 0.5845)")
    parser.add_argument("--stage-budget", type=float, default=900.0,
                        help="seconds after which the benchmark stops (a stage that would run for hours)")
    args = parser.parse_args()
    train_fraction = experiment_train_fraction() if args.train_fraction is None else args.train_fraction
    device = torch.device(args.device)

    def give_up(*_: object) -> None:
        print(f"\n    STOPPED: the budget of {args.stage_budget:.0f} s per culture ran out in the stage "
              "above", flush=True)
        os._exit(3)

    signal.signal(signal.SIGALRM, give_up)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n_cells in args.cells:
            signal.alarm(int(args.stage_budget))
            run(n_cells, device, args.noise, Path(tmp), train_fraction, args.noise_sigma)
            signal.alarm(0)


if __name__ == "__main__":
    main()
