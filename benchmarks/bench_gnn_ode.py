"""Where the learned coupling's fit (``experiment=setup1_gnn_ode``) spends its time.

    .venv/bin/python benchmarks/bench_gnn_ode.py [--noise 0.05] [--evaluations 5] [--full]

On the built-in culture (``make_culture(seed=0)``: 108 cells, 361 frames, setup I, 1 torch thread as
``configs/model/gnn_ode.yaml`` sets):

1. **one loss evaluation** (the output-error loss through the RK4 simulation of the training window and
   its gradient), split into forward and backward, averaged over ``--evaluations``: with the training
   window as one simulation (``shooting_segments=1``, before) and as the default number of shooting
   windows integrated together (now), and with ``phi(0)`` computed at every RK4 stage (the path before
   :meth:`calcium_gnn.nn.coupling.CouplingConv.simulation`): the ratios;
2. the **stages**: sequential RK4 stages per simulation (``substeps`` from the stiffness) and the time
   per stage;
3. with ``--full``, the **whole fit** as the experiment runs it (Lightning, up to 2 epochs of 5 L-BFGS
   steps of up to 20 iterations after the linear start by Levenberg-Marquardt, stopping at the first
   step that lowers the best loss by less than 1e-4 of it), with one simulation (before) and with the
   shooting windows (now): loss evaluations, time, the loss and ``k`` after each step, the effective
   ``k`` of the learned message and the test-window MSE against the clean traces, next to the linear
   law's.
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

#: the model's defaults (configs/model/gnn_ode.yaml sets the same)
SHOOTING = inspect.signature(GNNODEModule).parameters["shooting_segments"].default


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
    single = GNNODEModule(data=data, shooting_segments=1)
    start = time.perf_counter()
    single.initialise()
    linear_seconds = time.perf_counter() - start
    p = single.problem
    stages = 4 * p.substeps * (single.n_fit - 1)
    print(f"torch {torch.__version__}, 1 thread; {data.num_nodes} cells, {data.edge_index.shape[1]} edges, "
          f"{p.x_train.shape[1]} training frames ({single.n_fit} fitted, the rest validate), "
          f"{p.substeps} RK4 step(s) per frame (from the stiffness): "
          f"{stages} stages per simulation; linear start (Levenberg-Marquardt) {linear_seconds:.2f} s")
    fwd, bwd = evaluation_times(single, args.evaluations)
    with phi_zero_at_every_stage():
        fwd0, bwd0 = evaluation_times(single, args.evaluations)
    shooting = GNNODEModule(data=data)
    shooting.initialise()
    fwd_s, bwd_s = evaluation_times(shooting, args.evaluations)
    one, before, now = fwd + bwd, fwd0 + bwd0, fwd_s + bwd_s
    window = shooting.n_fit - shooting.segment_frames[-1] - 1
    print(f"one loss evaluation, one simulation: {one:.3f} s (forward {fwd:.3f}, backward {bwd:.3f}); "
          f"{1e3 * one / stages:.3f} ms per stage")
    print(f"  phi(0) at every stage: {before:.3f} s; {before / one:.2f}x slower")
    print(f"  {len(shooting.segment_frames)} shooting windows of {window} intervals: {now:.3f} s (forward "
          f"{fwd_s:.3f}, backward {bwd_s:.3f}); {one / now:.2f}x faster than one simulation")
    print(f"  one evaluation (shooting) / the whole linear start: {now / linear_seconds:.2f}")
    if not args.full:
        return
    runs = {}
    for label, segments in (("one simulation (shooting_segments 1, before)", 1),
                            (f"{SHOOTING} shooting windows (now)", SHOOTING)):
        model = GNNODEModule(data=data, shooting_segments=segments, num_threads=1)
        trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        start = time.perf_counter()
        batches = CellGraphDataModule(data.clone(), steps_per_epoch=model.steps_per_epoch)
        trainer.fit(model, datamodule=batches)
        seconds = time.perf_counter() - start
        runs[label] = seconds
        k = float(model.conv.k.detach())
        effective = model.learned_law(data).as_results()["effective_k"]
        print(f"\nwhole fit, {label}: {seconds:.1f} s (linear start included), "
              f"{model.fit_log[-1]['evaluations']} loss evaluations in {len(model.fit_log)} L-BFGS steps; "
              f"layer k {k:.6f}, effective k of the learned message {effective:.6f} (true {culture.k}, "
              f"{abs(effective / culture.k - 1):.1%} off)")
        for i, entry in enumerate(model.fit_log):
            print(f"  step {i + 1:2d}: {int(entry['evaluations']):4d} evaluations, best loss "
                  f"{entry['best_loss']:.8e}, k {entry['k']:.6f}")
        if model.stopped_early:
            print(f"  stopped: {model.stopped_early}")
        cmp = model.compare_with_linear(data)
        gnn, linear = cmp["mse_test_clean_gnn"], cmp["mse_test_clean_linear"]
        print(f"  test-window MSE against the clean traces: GNN {gnn:.4e}, linear law {linear:.4e} "
              f"(ratio {gnn / linear:.3f})")
    before, now = runs.values()
    print(f"\nwhole fit now / before = {now / before:.3f} ({before / now:.1f}x faster)")


if __name__ == "__main__":
    main()
