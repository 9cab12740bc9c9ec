"""Benchmark: reading + preprocessing a calcium movie (paper sec. 3.1), ours vs the plain reference.

Reference ("naive"): ``scipy.ndimage.median_filter`` frame by frame, ``np.log(x + 1)`` on the whole
float32 movie, ``np.quantile`` over the whole movie, eq. (23). Ours: ``calcium_gnn.imaging.preprocess``
(3 x 3 median by cv2.medianBlur on mirrored frames, or a numpy sorting network, fused with the log and
an exact integer-count quartile, chunked).
Both produce the same result (checked here, max abs difference printed).

Usage: python benchmarks/bench_preprocess.py [--frames 361] [--size 512] [--repeat 1]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi
from timing import best_of

from calcium_gnn.imaging.preprocess import _median3x3_numpy, median3x3, preprocess
from calcium_gnn.imaging.reference import reference_image
from calcium_gnn.io.movie import read_movie


def make_movie(frames: int, size: int, seed: int = 0) -> np.ndarray:
    """A uint16 movie with cell-like structure, shot noise and a few hot pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    pattern = 800 + 400 * np.sin(yy / 9.0) * np.cos(xx / 11.0)
    gain = 1 + 0.2 * np.sin(np.arange(frames) / 20.0)
    movie = rng.poisson(pattern[None] * gain[:, None, None]).astype(np.uint16)
    hot = rng.integers(0, size, (frames, 2, 2))
    for t in range(frames):
        movie[t, hot[t, :, 0], hot[t, :, 1]] = 60000
    return movie


def naive(movie: np.ndarray) -> np.ndarray:
    med = np.stack([ndi.median_filter(f, size=3) for f in movie]).astype(np.float32)
    lg = np.log(med + np.float32(1))
    q1, q3 = np.quantile(lg, (0.25, 0.75))
    lo, hi = q1 - 2 * (q3 - q1), q3 + 2 * (q3 - q1)
    return ((lg - lo) / (hi - lo)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=361)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    movie = make_movie(args.frames, args.size)
    print(f"movie: {movie.shape} {movie.dtype} ({movie.nbytes / 2**20:.0f} MiB)")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "movie.tif"
        tifffile.imwrite(path, movie)
        t_read, m = best_of(lambda: read_movie(path), args.repeat)
        t_ref, _ = best_of(lambda: reference_image(m.frames, "mean"), args.repeat)
        print(f"read_movie (memmap + finite/constant scan): {t_read:7.2f} s")
        print(f"reference_image mean:                       {t_ref:7.2f} s")

        t_med, _ = best_of(lambda: median3x3(movie[:32]), args.repeat)
        t_np, _ = best_of(lambda: _median3x3_numpy(movie[:32]), args.repeat)
        t_med_sp, _ = best_of(lambda: ndi.median_filter(movie[:32], size=(1, 3, 3)), args.repeat)
        print(f"3x3 median, 32 frames: scipy {t_med_sp:.3f} s; numpy network {t_np:.3f} s "
              f"(x{t_med_sp / t_np:.1f}); median3x3 as used (cv2 if importable) {t_med:.3f} s "
              f"(x{t_med_sp / t_med:.1f})")

        t_ours, ours = best_of(lambda: preprocess(m.frames, progress=False), args.repeat)
        t_naive, ref = best_of(lambda: naive(movie), args.repeat)
        print(f"preprocess (ours):  {t_ours:7.2f} s")
        print(f"preprocess (naive): {t_naive:7.2f} s")
        print(f"speed-up: x{t_naive / t_ours:.2f}   max |ours - naive| = {np.abs(ours - ref).max():.2e}")
        print(f"read + preprocess + mean reference: {t_read + t_ours + t_ref:.2f} s")


if __name__ == "__main__":
    main()
