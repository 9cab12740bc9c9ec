"""Time the synthetic culture: geometry + dynamics, movie rendering, and writing the files.

The reference for rendering is the straightforward per-frame loop (gather the dye response
through the label image, ``scipy.ndimage.gaussian_filter``, bleaching, exact Poisson shot noise and
Gaussian read noise per frame). It is timed on ``--reference-frames`` frames and compared per frame.

Usage::

    python benchmarks/bench_synthetic.py [--n-cells 108] [--size 512] [--n-frames 361] [--reference-frames 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from calcium_gnn.data.synthetic import make_culture
from calcium_gnn.data.synthetic_files import save_culture
from calcium_gnn.data.synthetic_imaging import bleaching, dye_response


def reference_render(culture, n_frames: int) -> np.ndarray:
    """The per-frame reference renderer (same model as ``render_movie``, exact Poisson everywhere)."""
    p = culture.params
    rng = np.random.default_rng(0)
    bleach = bleaching(culture.t, p["bleach_time"])
    levels = dye_response(culture.traces, p["f_min"], p["f_max"], p["k_d"])
    out = np.empty((n_frames,) + culture.labels.shape, dtype=np.uint16)
    for n in range(n_frames):
        lut = np.concatenate([[p["f_membrane"]], levels[:, n]])
        photons = ndimage.gaussian_filter(lut[culture.labels], p["blur_sigma"], mode="nearest") * bleach[n]
        counts = rng.poisson(photons) + p["read_noise"] * rng.standard_normal(photons.shape)
        out[n] = np.clip(np.rint(counts * p["gain"] + p["offset"]), 0, 65535)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cells", type=int, default=108)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--n-frames", type=int, default=361)
    parser.add_argument("--reference-frames", type=int, default=60)
    args = parser.parse_args()
    shape = dict(n_cells=args.n_cells, size=args.size, n_frames=args.n_frames)

    start = time.perf_counter()
    culture = make_culture(seed=0, **shape, render=False)
    traces_s = time.perf_counter() - start
    start = time.perf_counter()
    movie = culture.movie
    render_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        save_culture(culture, Path(tmp) / "culture")
        save_s = time.perf_counter() - start
    n_ref = min(args.reference_frames, args.n_frames)
    start = time.perf_counter()
    reference_render(culture, n_ref)
    reference_s = time.perf_counter() - start

    ours_per_frame = render_s / args.n_frames
    ref_per_frame = reference_s / n_ref
    print(f"culture: {culture.n_cells} cells, movie {movie.shape} {movie.dtype}")
    print(f"geometry + dynamics (RK4, {culture.params['substeps']} sub-steps/frame): {traces_s:8.2f} s")
    ours_ms, ref_ms = 1e3 * ours_per_frame, 1e3 * ref_per_frame
    print(f"render movie (ours):                        {render_s:8.2f} s  ({ours_ms:.1f} ms/frame)")
    print(f"write files (movie.tif, labels, truth):     {save_s:8.2f} s")
    print(f"total generation (traces + movie):          {traces_s + render_s:8.2f} s")
    print(f"reference per-frame renderer ({n_ref} frames): {reference_s:8.2f} s  ({ref_ms:.1f} ms/frame)")
    print(f"speed-up of rendering vs reference:         {ref_per_frame / ours_per_frame:8.2f} x")


if __name__ == "__main__":
    main()
