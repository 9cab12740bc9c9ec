"""Where the learned coupling's fit (``experiment=setup1_gnn_ode``) spends its time.

    .venv/bin/python benchmarks/bench_gnn_ode.py [--noise 0.05] [--evaluations 5] [--full]

On the built-in culture (``make_culture(seed=0)``: 108 cells, 361 frames, setup I, 1 torch thread as
``configs/model/gnn_ode.yaml`` sets):

1. **one loss evaluation** (the output-error loss through the RK4 simulation of the training window and
   its gradient), split into forward and backward, averaged over ``--evaluations``; with ``phi(0)``
   computed once per simulation (:meth:`calcium_gnn.nn.coupling.CouplingConv.simulation`, now) and at
   every RK4 stage (before): the ratio;
2. the **stages**: RK4 stages per simulation and the time per stage;
3. with ``--full``, the **whole fit** as the experiment runs it (Lightning, 2 epochs of 5 L-BFGS steps
   of up to 20 iterations after the linear start by Levenberg-Marquardt), once with every step
   (``stop_tolerance=0``, before) and once stopping at the first step that lowers the best loss by less
   than 1e-4 of it (now): loss evaluations, time, the loss and ``k`` after each step and the
   test-window MSE against the clean traces, next to the linear law's.
"""

from __future__ import annotations

import argparse
import inspect
import time
from contextlib import contextmanager

import lightning as L
import torch

from calcium_gnn.data.datamodule import CellGraphDataModule
from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.models.gnn_ode import GNNODEModule
from calcium_gnn.nn.consensus import ConsensusConv
from calcium_gnn.nn.coupling import CouplingConv

#: the model's default (configs/model/gnn_ode.yaml sets the same)
STOP_TOLERANCE = inspect.signature(GNNODEModule).parameters["stop_tolerance"].default


@contextmanager
def phi_zero_at_every_stage():
    """The former path: ``phi(0, u~, l~)`` recomputed at every stage (no simulation scope)."""
    scoped = CouplingConv.simulation
    CouplingConv.simulation = ConsensusConv.simulation
    try:
        yield
    finally:
        CouplingConv.simulation = scoped


def evaluation_times(model: GNNODEModule, n: int) -> tuple[float, float]:
    """Mean forward and backward seconds of one loss evaluation."""
    fwd = bwd = 0.0
    for _ in range(n + 1):
        model.zero_grad()
        t0 = time.perf_counter()
        loss = model.loss_train()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        if _ > 0:  # the first one warms up
            fwd, bwd = fwd + t1 - t0, bwd + t2 - t1
    return fwd / n, bwd / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--evaluations", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="also run the whole fit")
    args = parser.parse_args()
    torch.set_num_threads(1)
    culture = make_culture(seed=0, render=False)
    data = truth_graph(culture, noise=args.noise, seed=0)
    model = GNNODEModule(data=data)
    start = time.perf_counter()
    model.initialise()
    linear_seconds = time.perf_counter() - start
    p = model.problem
    stages = 4 * p.substeps * (p.x_train.shape[1] - 1)
    print(f"torch {torch.__version__}, 1 thread; {data.num_nodes} cells, {data.edge_index.shape[1]} edges, "
          f"{p.x_train.shape[1]} training frames, {p.substeps} RK4 steps per frame: {stages} stages per "
          f"simulation; linear start (Levenberg-Marquardt) {linear_seconds:.2f} s")
    fwd, bwd = evaluation_times(model, args.evaluations)
    with phi_zero_at_every_stage():
        fwd0, bwd0 = evaluation_times(model, args.evaluations)
    now, before = fwd + bwd, fwd0 + bwd0
    print(f"one loss evaluation: {now:.3f} s (forward {fwd:.3f}, backward {bwd:.3f}); "
          f"{1e3 * now / stages:.3f} ms per stage")
    print(f"  phi(0) at every stage (before): {before:.3f} s (forward {fwd0:.3f}, backward {bwd0:.3f}); "
          f"now / before = {now / before:.2f} ({before / now:.2f}x faster)")
    print(f"  one evaluation / the whole linear start: {now / linear_seconds:.2f}")
    if not args.full:
        return
    runs = {}
    for label, tolerance in (("every step (stop_tolerance 0, before)", 0.0),
                             (f"stop_tolerance {STOP_TOLERANCE:g} (now)", STOP_TOLERANCE)):
        model = GNNODEModule(data=data, stop_tolerance=tolerance, num_threads=1)
        trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        start = time.perf_counter()
        batches = CellGraphDataModule(data.clone(), steps_per_epoch=model.steps_per_epoch)
        trainer.fit(model, datamodule=batches)
        seconds = time.perf_counter() - start
        runs[label] = seconds
        print(f"\nwhole fit, {label}: {seconds:.1f} s (linear start included), "
              f"{model.fit_log[-1]['evaluations']} loss evaluations in {len(model.fit_log)} L-BFGS steps; "
              f"k {float(model.conv.k):.6f} (true {culture.k}, "
              f"{abs(float(model.conv.k) / culture.k - 1):.1%} off)")
        for i, entry in enumerate(model.fit_log):
            print(f"  step {i + 1:2d}: {int(entry['evaluations']):4d} evaluations, best loss "
                  f"{entry['best_loss']:.8e}, k {entry['k']:.6f}")
        if model.stopped_early:
            print(f"  stopped: {model.stopped_early}")
        cmp = model.compare_with_linear(data)
        print(f"  test-window MSE against the clean traces: GNN {cmp['mse_test_clean_gnn']:.4e}, linear law "
              f"{cmp['mse_test_clean_linear']:.4e}")
    before, now = runs.values()
    print(f"\nwhole fit now / before = {now / before:.3f} ({before / now:.1f}x faster)")

if __name__ == "__main__":
    main()
