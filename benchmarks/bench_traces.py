"""Trace extraction speed: one sparse product per chunk vs a per-cell ``scipy.ndimage.mean`` loop.

    python benchmarks/bench_traces.py [--frames 361] [--size 512] [--cells 300] [--ref-frames 8]

Movie: float32 (T, Y, X) noise; labels: a Voronoi-like tiling of ``--cells`` cells. Prints the
throughput of :func:`calcium_gnn.graphs.traces.extract_traces` (GB/s of movie data, best of
``--repeat``), the time of the reference loop (``scipy.ndimage.mean(frame, labels, cell_id)`` for each
cell in each frame, timed on ``--ref-frames`` frames and scaled linearly to all frames, since its cost
per frame is constant), of the one-call-per-frame ``ndimage.mean(frame, labels, ids)``, and the ratios.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage
from skimage.segmentation import expand_labels

from calcium_gnn.graphs.traces import extract_traces


def tiling(size: int, cells: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    seeds = np.zeros((size, size), dtype=np.int32)
    seeds[rng.integers(0, size, cells), rng.integers(0, size, cells)] = np.arange(1, cells + 1)
    return expand_labels(seeds, distance=size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=361)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--cells", type=int, default=300)
    parser.add_argument("--ref-frames", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    labels = tiling(args.size, args.cells)
    ids = np.unique(labels[labels > 0])
    movie = np.random.default_rng(1).random((args.frames, args.size, args.size), dtype=np.float32)
    gigabytes = movie.nbytes / 1e9

    best = best_cpu = np.inf
    for _ in range(args.repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        traces = extract_traces(movie, labels)
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)

    n_ref = min(args.ref_frames, args.frames)
    start = time.perf_counter()
    loop = np.array([[ndimage.mean(movie[t], labels, int(c)) for t in range(n_ref)] for c in ids])
    loop_time = (time.perf_counter() - start) * args.frames / n_ref
    start = time.perf_counter()
    per_frame = np.stack([ndimage.mean(movie[t], labels, ids) for t in range(args.frames)], axis=1)
    per_frame_time = time.perf_counter() - start

    np.testing.assert_allclose(traces[:, :n_ref], loop, rtol=1e-4)
    np.testing.assert_allclose(traces, per_frame, rtol=1e-4)
    print(f"movie {movie.shape} float32 = {gigabytes:.3f} GB, {ids.size} cells")
    print(f"extract_traces (sparse CSR, chunks of 16):   {best:8.3f} s  {gigabytes / best:6.2f} GB/s wall "
          f"({best_cpu:.3f} s CPU: {gigabytes / best_cpu:.2f} GB/s; wall > CPU when the cores are shared)")
    print(f"per-cell ndimage.mean loop (scaled from {n_ref} frames): {loop_time:8.1f} s  "
          f"ratio {loop_time / best:8.0f}x")
    print(f"ndimage.mean(frame, labels, ids) per frame: {per_frame_time:8.3f} s  "
          f"ratio {per_frame_time / best:8.1f}x")


if __name__ == "__main__":
    main()
