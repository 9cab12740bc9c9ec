"""The movie -> graph pipeline streams: its peak memory follows the chunk budget, not the movie."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from calcium_gnn.errors import ConfigError
from calcium_gnn.pipeline import chunk_frames_for_budget, movie_to_graph_full, resolve_options

ROOT = Path(__file__).resolve().parents[2]

#: Bytes per frame pixel the pipeline holds besides the chunks in flight (frame-sized images: the
#: reference and its float64 accumulators, the watershed's arrays, the label image, the averaging
#: matrix). Measured at 1024 x 1024 with a 64 MB budget: the run peaks 181 MB above its baseline
#: (about 110 B/px on top of the budget; 146 MB before preset=auto's trial segmentations); the code
#: before streaming went 1.31 GB above.
FRAME_OVERHEAD = 200

RUNNER = """
import gc, json, sys
import numpy as np
from calcium_gnn.pipeline import movie_to_graph_full

def status(key):  # bytes, from /proc/self/status
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(key + ":")) * 1024

path, warm_up, budget, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
options = {} if budget == "absent" else {"memory_budget_mb": budget}  # "absent": code without the option
movie_to_graph_full(warm_up, min_area=100, **options)  # every lazy import and cache, on a tiny movie
gc.collect()
try:  # reset the peak (VmHWM) to the resident memory now; if not allowed, the peak counts the imports too
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    reset = True
except OSError:
    reset = False
base = status("VmRSS")
build = movie_to_graph_full(path, chunk_frames=16, **options)
# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's peak (the memory it was spawned from)
peak = status("VmHWM")
np.savez(out, x=build.data.x.numpy(), edge_index=build.data.edge_index.numpy(), labels=build.labels,
         reference=build.reference)
print(json.dumps({"reset": reset, "baseline": base, "peak": peak}))
"""


def _write_grid_movie(path: Path, n_frames: int, size: int, cell: int = 32) -> None:
    """A (T, size, size) uint16 ImageJ TIFF of square cells with 3 px dark membranes, each cell's
    brightness oscillating at its own rate; written frame by frame (never held in memory)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    per_row = size // cell
    labels = (yy // cell) * per_row + xx // cell
    membrane = (yy % cell < 3) | (xx % cell < 3)
    n = per_row * per_row
    base, amp, rate = rng.uniform(900, 1500, n), rng.uniform(0.05, 0.3, n), rng.uniform(0.02, 0.2, n)

    def frames():
        frame = np.empty((size, size), dtype=np.uint16)
        for t in range(n_frames):
            np.take((base * (1 + amp * np.sin(rate * t))).astype(np.uint16), labels, out=frame)
            frame[membrane] = 300
            yield frame

    tifffile.imwrite(path, frames(), shape=(n_frames, size, size), dtype=np.uint16, imagej=True,
                     metadata={"axes": "TYX", "finterval": 10.0})


def _run_measured(path: Path, warm_up: Path, budget: float | None | str, out: Path) -> dict:
    """Peak RSS (``VmHWM``) of ``movie_to_graph_full(path)`` in a fresh process, and its resident
    memory before (after a run on the small ``warm_up`` movie, the peak reset to it), in bytes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(path), str(warm_up), json.dumps(budget), str(out)]
    done = subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc (Linux)")
def test_peak_memory_follows_the_chunk_budget_not_the_movie(tmp_path: Path) -> None:
    """160 x 1024 x 1024 uint16 (335 MB file, 670 MB as float32): with a 64 MB budget the run
    holds the budget plus a few frame-sized images, and builds the same graph as 16-frame chunks
    with no budget. (The code before streaming went 1.31 GB above its baseline on this movie.)"""
    t, size, budget_mb = 160, 1024, 64.0
    path, warm_up = tmp_path / "movie.tif", tmp_path / "small.tif"
    _write_grid_movie(path, t, size)
    _write_grid_movie(warm_up, 5, 128)
    file_bytes = path.stat().st_size
    assert chunk_frames_for_budget((size, size), np.uint16, budget_mb) == 5

    measured = _run_measured(path, warm_up, budget_mb, tmp_path / "budget.npz")
    above = measured["peak"] - measured["baseline"]
    bound = budget_mb * 1e6 + FRAME_OVERHEAD * size * size  # 274 MB: no term grows with the frame count
    print(f"file {file_bytes / 1e6:.0f} MB, peak {measured['peak'] / 1e6:.0f} MB, above the baseline "
          f"{above / 1e6:.0f} MB (bound {bound / 1e6:.0f} MB)")
    assert above < bound, (above, bound)
    assert above < 0.7 * file_bytes  # the movie itself (and its float32 copy) was never held

    streamed = np.load(tmp_path / "budget.npz")
    whole = movie_to_graph_full(path, memory_budget_mb=None, chunk_frames=16)
    assert whole.data.x.shape == (size // 32 * (size // 32), t)
    np.testing.assert_array_equal(streamed["reference"], whole.reference)
    np.testing.assert_array_equal(streamed["labels"], whole.labels)
    np.testing.assert_array_equal(streamed["edge_index"], whole.data.edge_index.numpy())
    np.testing.assert_array_equal(streamed["x"], whole.data.x.numpy())


def test_chunk_frames_for_budget_by_hand() -> None:
    # 1000 x 1000 uint16: (2 * 2 + 8) B/px = 12 MB a frame
    assert chunk_frames_for_budget((1000, 1000), np.uint16, 60.0) == 5
    assert chunk_frames_for_budget((1000, 1000), np.uint16, 60.0, bleach_correction=True) == 3  # 20 MB
    assert chunk_frames_for_budget((1000, 1000), np.float64, 60.0) == 2  # 24 MB
    assert chunk_frames_for_budget((1000, 1000), np.uint16, 1.0) == 1  # never less than one frame
    assert chunk_frames_for_budget((100, 100), np.uint16, 1024.0, max_frames=16) == 16
    assert chunk_frames_for_budget((4000, 4000), np.uint16, None, max_frames=16) == 16


def test_memory_budget_option_is_checked() -> None:
    assert resolve_options({})["memory_budget_mb"] == 1024
    assert resolve_options({"memory_budget_mb": None})["memory_budget_mb"] is None
    for bad in (0, -5, float("nan"), "1 GB", True):
        with pytest.raises(ConfigError, match="^memory_budget_mb: "):
            resolve_options({"memory_budget_mb": bad})


def test_small_budget_gives_the_same_graph(tmp_path: Path) -> None:
    """One-frame chunks and the default chunks: same labels, edges and traces (bit for bit)."""
    path = tmp_path / "movie.tif"
    _write_grid_movie(path, 23, 128)
    small = movie_to_graph_full(path, memory_budget_mb=1e-3, min_area=100)
    default = movie_to_graph_full(path, min_area=100)
    assert default.data.x.shape == (16, 23)
    np.testing.assert_array_equal(small.reference, default.reference)
    np.testing.assert_array_equal(small.labels, default.labels)
    np.testing.assert_array_equal(small.data.edge_index.numpy(), default.data.edge_index.numpy())
    np.testing.assert_array_equal(small.data.x.numpy(), default.data.x.numpy())
