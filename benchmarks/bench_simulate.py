"""Forward simulation speed: interval propagators vs one ConsensusConv call per Runge-Kutta stage.

    python benchmarks/bench_simulate.py [--cells 108] [--frames 361] [--substeps 10] [--ref-frames 40]

Graph: the Delaunay triangulation of ``--cells`` random centroids (about 6 neighbours per cell),
random weights, 80 % of the cells modelled; traces: float64 noise, frames every 10 s. Prints the time
of :func:`calcium_gnn.physics.simulate.simulate_consensus` (best of ``--repeat``), with and without a
backward pass through ``k`` and ``gamma``, and of the reference: the same RK4 scheme stepped in Python
with one :class:`~calcium_gnn.nn.consensus.ConsensusConv` call per stage (timed on ``--ref-frames``
frames and scaled linearly to all frames, its cost per frame being constant), their ratio, and the
largest difference between the two simulations on the reference frames. ``--threads`` defaults to 1:
on a shared, loaded machine several intra-op threads oversubscribe the cores and slow small matrix
products down by an order of magnitude.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.spatial import Delaunay

from calcium_gnn.nn.consensus import ConsensusConv
from calcium_gnn.physics.simulate import simulate_consensus
from calcium_gnn.physics.steps import rk4_step


def delaunay_graph(cells: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    tri = Delaunay(rng.random((cells, 2)))
    pairs = {(int(a), int(b)) for simplex in tri.simplices for a in simplex for b in simplex if a != b}
    edge_index = torch.tensor(sorted(pairs)).t().contiguous()
    w = torch.tensor(rng.uniform(0.5, 1.5, edge_index.shape[1]))
    w = 0.5 * (w + w[torch.argsort(edge_index[1] * cells + edge_index[0])])  # symmetric weights
    return edge_index, w


def reference(x, t, edge_index, w, modelled, k, gamma, substeps):
    """RK4 stepped in Python, one ConsensusConv call per stage (what the propagators replace)."""
    conv = ConsensusConv(x.shape[0])
    mask = modelled.reshape(-1, 1)
    k_t = torch.tensor(k, dtype=x.dtype)
    y, out = x[:, :1].clone(), [x[:, :1]]
    for n in range(x.shape[1] - 1):
        delta = t[n + 1] - t[n]
        h = delta / substeps

        def f(state, tau, n=n, delta=delta):
            x_now = x[:, n : n + 1] + (tau / delta) * (x[:, n + 1 : n + 2] - x[:, n : n + 1])
            d = conv(state, x_now, edge_index, w, modelled, k=k_t, gamma=gamma)
            return torch.where(mask, d, torch.zeros_like(d))

        for s in range(substeps):
            y = rk4_step(f, y, s * h, h)
        out.append(y)
    return torch.where(mask, torch.cat(out, dim=1), x)


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=108)
    parser.add_argument("--frames", type=int, default=361)
    parser.add_argument("--substeps", type=int, default=10)
    parser.add_argument("--ref-frames", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    edge_index, w = delaunay_graph(args.cells)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(args.cells, args.frames, generator=g, dtype=torch.float64)
    t = torch.arange(args.frames, dtype=torch.float64) * 10.0
    modelled = torch.rand(args.cells, generator=g) < 0.8
    gamma = torch.full((args.cells,), 1e-3, dtype=torch.float64)
    k = 0.02

    def forward():
        return simulate_consensus(x, t, edge_index, w, modelled, k, gamma, substeps=args.substeps)

    def forward_backward():
        k_t = torch.tensor(k, dtype=torch.float64, requires_grad=True)
        g_t = gamma.clone().requires_grad_(True)
        y = simulate_consensus(x, t, edge_index, w, modelled, k_t, g_t, substeps=args.substeps)
        y.square().sum().backward()

    forward()  # warm-up
    t_fwd = best_of(args.repeat, forward)
    t_bwd = best_of(args.repeat, forward_backward)
    m = min(args.ref_frames, args.frames)
    start = time.perf_counter()
    ref = reference(x[:, :m], t[:m], edge_index, w, modelled, k, gamma, args.substeps)
    t_ref = (time.perf_counter() - start) * (args.frames - 1) / max(m - 1, 1)
    ours = simulate_consensus(x[:, :m], t[:m], edge_index, w, modelled, k, gamma, substeps=args.substeps)
    diff = float((ours - ref).abs().max())

    print(f"cells={args.cells} (modelled {int(modelled.sum())}), edges={edge_index.shape[1]}, "
          f"frames={args.frames}, substeps={args.substeps}, rk4, float64, threads={torch.get_num_threads()}")
    print(f"simulate_consensus forward         : {t_fwd * 1e3:9.1f} ms")
    print(f"simulate_consensus forward+backward: {t_bwd * 1e3:9.1f} ms")
    print(f"reference, 1 conv call per stage   : {t_ref * 1e3:9.1f} ms (timed on {m} frames, scaled)")
    print(f"speed-up (forward)                 : {t_ref / t_fwd:9.1f} x")
    print(f"max |difference| on {m} frames      : {diff:.2e}")


if __name__ == "__main__":
    main()
