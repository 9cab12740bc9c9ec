"""Peak memory and wall time of the movie -> graph pipeline on a large uint16 ImageJ TIFF.

    python benchmarks/bench_movie_memory.py [--frames 1000] [--size 2048] [--budget-mb 1024]
                                            [--path movie.tif] [--keep]

Writes a T x size x size uint16 ImageJ TIFF page by page (never held in memory; default
1000 x 2048 x 2048 = 8.4 GB) into a temporary folder (or ``--path``), then runs what
``scripts/build_graph.py`` runs (``movie_to_graph_full`` with the default options + ``write_outputs``)
in a fresh Python process and prints its wall time, its peak resident memory (``VmHWM``: the
process's high-water mark, imports included), the peak above the resident memory after the imports,
and their ratios to the file size (Linux: reads ``/proc/self/status``). The movie is deleted
afterwards unless ``--keep``. Target (the issue): 1000 x 2048 x 2048 in < 3 min with a peak < 3 GB.

The synthetic movie is a confluent culture: a Voronoi tiling of cells (seeds on a jittered grid,
``--cell`` px apart) with dark membranes, each cell's brightness oscillating at its own rate, plus
one of four uniform noise frames and a few hot pixels. Generation is streamed: one base frame and a
per-frame lookup table of cell brightnesses.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 180.0
TARGET_PEAK_GB = 3.0


def voronoi_labels(size: int, cell: int, seed: int = 0) -> np.ndarray:
    """(size, size) int32 Voronoi labels 1..N of seeds on a jittered grid ``cell`` px apart."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    g = np.arange(cell / 2, size, cell)
    sy, sx = np.meshgrid(g, g, indexing="ij")
    seeds = np.stack([sy.ravel(), sx.ravel()], axis=1) + rng.uniform(-cell / 4, cell / 4, (sy.size, 2))
    tree = cKDTree(seeds)
    labels = np.empty((size, size), dtype=np.int32)
    xx = np.arange(size, dtype=np.float64)
    for y0 in range(0, size, 256):  # row blocks keep the query's memory small
        yy = np.arange(y0, min(y0 + 256, size), dtype=np.float64)
        pts = np.stack(np.meshgrid(yy, xx, indexing="ij"), axis=-1).reshape(-1, 2)
        labels[y0 : y0 + yy.size] = tree.query(pts)[1].reshape(yy.size, size) + 1
    return labels


def synthetic_frames(n_frames: int, size: int, cell: int = 32, seed: int = 0):
    """Yield ``n_frames`` uint16 (size, size) frames of a culture of Voronoi cells (module docstring)."""
    rng = np.random.default_rng(seed)
    labels = voronoi_labels(size, cell, seed)
    membrane = np.zeros(labels.shape, dtype=bool)  # 2-3 px wide, so the 3 x 3 median keeps it
    for shift in (1, 2):
        membrane[shift:] |= labels[shift:] != labels[:-shift]
        membrane[:, shift:] |= labels[:, shift:] != labels[:, :-shift]
    n = int(labels.max())
    base = rng.uniform(900, 1500, n + 1)
    amp = rng.uniform(0.05, 0.3, n + 1)
    rate = rng.uniform(0.02, 0.2, n + 1)
    phase = rng.uniform(0, 2 * np.pi, n + 1)
    noise = [rng.integers(0, 60, labels.shape, dtype=np.uint16) for _ in range(4)]
    frame = np.empty(labels.shape, dtype=np.uint16)
    for t in range(n_frames):
        lut = (base * (1 + amp * np.sin(rate * t + phase))).astype(np.uint16)
        np.take(lut, labels, out=frame)
        frame[membrane] = 300
        frame += noise[t % 4]
        hot = rng.integers(0, size, (3, 2))
        frame[hot[:, 0], hot[:, 1]] = 60000
        yield frame


def write_movie(path: Path, n_frames: int, size: int, *, cell: int = 32, dt: float = 10.0) -> Path:
    """Write the synthetic movie as an uncompressed ImageJ TIFF (T, Y, X) uint16, frame by frame.

    Past 4 GB tifffile writes ImageJ's large-file layout (one IFD, contiguous data; its warning
    "truncating ImageJ file" is silenced): ImageJ and ``read_movie`` read all frames back."""
    import tifffile

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*truncating ImageJ file")
        tifffile.imwrite(path, synthetic_frames(n_frames, size, cell), shape=(n_frames, size, size),
                         dtype=np.uint16, imagej=True, metadata={"axes": "TYX", "finterval": dt})
    return path


RUNNER = """
import json, sys, time
from calcium_gnn.pipeline import movie_to_graph_full, write_outputs
import calcium_gnn.imaging.segmentation, calcium_gnn.graphs.plots, calcium_gnn.io.graph_files  # noqa

def status(key):  # bytes, from /proc/self/status
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(key + ":")) * 1024

base = status("VmRSS")  # the resident memory after the imports
movie, out, budget = sys.argv[1], sys.argv[2], sys.argv[3]
opts = {} if budget == "default" else {"memory_budget_mb": float(budget)}
start = time.perf_counter()
build = movie_to_graph_full(movie, **opts)
built = time.perf_counter()
write_outputs(build, out)
done = time.perf_counter()
# the whole process's peak, imports included (what /usr/bin/time reports); VmHWM, not ru_maxrss,
# which in a child process starts at its parent's peak
peak = status("VmHWM")
print(json.dumps({"baseline": base, "peak": peak, "build_s": built - start, "total_s": done - start,
                  "cells": int(build.data.x.shape[0]), "edges": int(build.data.edge_index.shape[1] // 2),
                  "timings": build.timings}))
"""


def measure(movie: Path, out: Path, budget: str = "default") -> dict:
    """Run the pipeline on ``movie`` in a fresh process; its peak RSS, baseline and timings."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", RUNNER, str(movie), str(out), budget], capture_output=True,
                          text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"pipeline failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--cell", type=int, default=32, help="distance between cell seeds (px)")
    parser.add_argument("--budget-mb", default="default",
                        help="the memory_budget_mb option (default: the pipeline's default)")
    parser.add_argument("--path", type=Path, default=None,
                        help="where to write the movie (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the movie (reused when --path exists)")
    args = parser.parse_args()

    need = args.frames * args.size * args.size * 2
    tmp = Path(tempfile.mkdtemp(prefix="bench_movie_memory_"))
    movie = args.path or tmp / "movie.tif"
    free = shutil.disk_usage(movie.parent).free
    try:
        if not movie.exists():
            if free < need * 1.1:
                raise SystemExit(f"need {need / 1e9:.1f} GB free in {movie.parent}, have {free / 1e9:.1f} GB")
            start = time.perf_counter()
            write_movie(movie, args.frames, args.size, cell=args.cell)
            seconds = time.perf_counter() - start
            print(f"wrote {movie} ({movie.stat().st_size / 1e9:.2f} GB) in {seconds:.1f} s")
        size = movie.stat().st_size
        r = measure(movie, tmp / "out", args.budget_mb)
    finally:
        if not args.keep and movie.exists():
            movie.unlink()
        shutil.rmtree(tmp, ignore_errors=True)
    gb = 1e9
    above = r["peak"] - r["baseline"]
    print(f"movie {args.frames} x {args.size} x {args.size} uint16 ({size / gb:.2f} GB), {r['cells']} cells, "
          f"{r['edges']} edges, memory_budget_mb={args.budget_mb}")
    for step, seconds in r["timings"].items():
        print(f"  {step:<11s} {seconds:7.2f} s")
    print(f"wall: build {r['build_s']:.1f} s, build + write outputs {r['total_s']:.1f} s "
          f"(target < {TARGET_SECONDS:.0f} s: {'met' if r['total_s'] < TARGET_SECONDS else 'NOT met'})")
    met = "met" if r["peak"] < TARGET_PEAK_GB * gb else "NOT met"
    print(f"peak RSS {r['peak'] / gb:.2f} GB (ratio to file {r['peak'] / size:.2f}; "
          f"target < {TARGET_PEAK_GB:.0f} GB: {met}); resident after imports {r['baseline'] / gb:.2f} GB; "
          f"above it {above / gb:.2f} GB (ratio to file {above / size:.2f})")


if __name__ == "__main__":
    main()
