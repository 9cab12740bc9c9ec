"""Movie (TIFF) -> saved graph with the default pipeline (watershed backend), timed by step.

    python benchmarks/bench_movie_to_graph.py [--frames 361] [--size 512] [--cells 108]

The movie is the default synthetic culture (``make_culture``, uint16, with noise and hot pixels),
written to a temporary TIFF first (not timed). Timed: ``movie_to_graph_full(path)`` (read,
preprocess, reference, watershed, traces, graph, polygons) + ``save_graph``. Target: < 15 s for
361 x 512 x 512. Also prints the trace-extraction throughput inside the run (GB/s of the float32
movie it reads).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import tifffile

from calcium_gnn.data.synthetic import make_culture
from calcium_gnn.io.graph_files import save_graph
from calcium_gnn.pipeline import movie_to_graph_full

TARGET_SECONDS = 15.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=361)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--cells", type=int, default=108)
    args = parser.parse_args()

    culture = make_culture(n_frames=args.frames, size=args.size, n_cells=args.cells)
    with tempfile.TemporaryDirectory() as tmp:
        movie_path = Path(tmp) / "movie.tif"
        tifffile.imwrite(movie_path, culture.movie)
        start = time.perf_counter()
        build = movie_to_graph_full(movie_path, dt=culture.dt)
        save_start = time.perf_counter()
        save_graph(build.data, Path(tmp) / "graph.pt")
        total = time.perf_counter() - start
        build.timings["save"] = time.perf_counter() - save_start
    t, y, x = culture.movie.shape
    print(f"movie {(t, y, x)} uint16 ({culture.movie.nbytes / 1e6:.0f} MB), {build.data.x.shape[0]} cells, "
          f"{build.data.edge_index.shape[1] // 2} edges")
    for step, seconds in build.timings.items():
        print(f"  {step:<11s} {seconds:7.3f} s")
    float_gb = t * y * x * 4 / 1e9
    print(f"  traces throughput: {float_gb / build.timings['traces']:.2f} GB/s (float32 movie)")
    print(f"total TIFF -> saved graph: {total:.2f} s (target < {TARGET_SECONDS:.0f} s: "
          f"{'met' if total < TARGET_SECONDS else 'NOT met'}; ratio to target {total / TARGET_SECONDS:.2f})")


if __name__ == "__main__":
    main()
