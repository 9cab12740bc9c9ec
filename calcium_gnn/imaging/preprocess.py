"""Preprocessing a calcium movie (paper sec. 3.1): hot pixels, log transform, IQR normalisation.

The three steps, each switchable:

1. hot-pixel removal by a median filter of size 3 (paper ref. [21]): per frame over a 3 x 3
   window (``footprint="2d"``, default) or over a 3 x 3 x 3 window in (T, Y, X) (``"3d"``);
   borders are mirrored (``scipy.ndimage`` mode ``"reflect"``: ``d c b a | a b c d``);
2. ``log(x + epsilon)`` with ``epsilon = 1``;
3. IQR normalisation, paper eq. (23)::

       normalised = (x - (q1 - f IQR)) / ((q3 + f IQR) - (q1 - f IQR)),   IQR = q3 - q1,   f = 2

   with the quartiles ``q1``, ``q3`` of the WHOLE movie after steps 1-2.

Everything runs ``chunk_frames`` frames at a time; the input is never modified. Two forms:

* :func:`preprocess` writes the whole float32 (T, Y, X) result (a fresh array, or ``out=``): one
  pass, memory 2x a uint16 movie;
* :func:`preprocess_lazy` runs only the statistics pass (the quartiles of eq. 23) and returns a
  :class:`PreprocessedMovie` that recomputes any chunk of frames on demand, bit for bit what
  :func:`preprocess` writes, so the preprocessed movie is never held in memory (the movie ->
  graph pipeline streams through it: memory bounded by a chunk, not by the movie).

The quartiles are exact order statistics, counted from integer values or computed by streaming
passes over the chunks (:func:`movie_quantiles`), so memory stays bounded by a chunk.

Speed: the size-3 2-D median uses ``cv2.medianBlur`` on mirrored-padded frames when OpenCV is
importable, else a column-sort network in numpy; both equal
``scipy.ndimage.median_filter(size=(1, 3, 3))`` exactly and are ~10-100x faster (see
``benchmarks/bench_preprocess.py``). Other sizes and the 3-D footprint use ``scipy.ndimage``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from tqdm.auto import tqdm

from calcium_gnn.errors import ConfigError, MovieError
from calcium_gnn.io.movie import iter_frame_chunks, release_pages

Footprint = Literal["2d", "3d"]

try:  # optional speed-up: OpenCV comes with Cellpose
    import cv2 as _cv2
except ImportError:  # pragma: no cover - depends on the environment
    _cv2 = None


# --------------------------------------------------------------------------------------------- median
def _med3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Element-wise median of three arrays: ``max(min(a, b), min(max(a, b), c))``."""
    return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))


def median3x3(frames: np.ndarray) -> np.ndarray:
    """Exact 3 x 3 median of each frame, mirrored borders (scipy ``mode="reflect"``).

    Sort the three pixels of every vertical triple (lo <= mid <= hi); the median of a 3 x 3 window
    over columns a, b, c is then ``med3(max(lo_a, lo_b, lo_c), med3(mid_a, mid_b, mid_c),
    min(hi_a, hi_b, hi_c))``. The vertical sorts are shared by three neighbouring windows.

    When OpenCV is importable (a Cellpose dependency) and the dtype is uint8, uint16 or float32,
    ``cv2.medianBlur`` on the mirrored-padded frame computes the same numbers several times faster.

    Args:
        frames: (T, Y, X) array, any real dtype.

    Returns:
        (T, Y, X) array of the same dtype.
    """
    if _cv2 is not None and frames.dtype in (np.uint8, np.uint16, np.float32):
        out = np.empty(frames.shape, dtype=frames.dtype)
        for i, frame in enumerate(frames):
            padded = np.pad(frame, 1, mode="symmetric")
            out[i] = _cv2.medianBlur(padded, 3)[1:-1, 1:-1]
        return out
    return _median3x3_numpy(frames)


def _median3x3_numpy(frames: np.ndarray) -> np.ndarray:
    """The column-sort network of :func:`median3x3` in numpy (any dtype)."""
    p = np.pad(frames, ((0, 0), (1, 1), (1, 1)), mode="symmetric")
    up, centre, down = p[:, :-2], p[:, 1:-1], p[:, 2:]
    lo = np.minimum(up, centre)
    hi = np.maximum(up, centre)
    mid = np.minimum(hi, down)
    hi = np.maximum(hi, down)
    lo, mid = np.minimum(lo, mid), np.maximum(lo, mid)
    max_lo = np.maximum(np.maximum(lo[:, :, :-2], lo[:, :, 1:-1]), lo[:, :, 2:])
    min_hi = np.minimum(np.minimum(hi[:, :, :-2], hi[:, :, 1:-1]), hi[:, :, 2:])
    med_mid = _med3(mid[:, :, :-2], mid[:, :, 1:-1], mid[:, :, 2:])
    return _med3(max_lo, med_mid, min_hi)


def _chunks(n: int, chunk_frames: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, chunk_frames):
        yield start, min(start + chunk_frames, n)


def _as_filter_dtype(block: np.ndarray) -> np.ndarray:
    # median commutes with the monotone float64 -> float32 rounding, so floats are filtered in float32
    return block.astype(np.float32) if block.dtype.kind == "f" and block.dtype != np.float32 else block


def remove_hot_pixels(
    frames: np.ndarray,
    *,
    size: int = 3,
    footprint: Footprint = "2d",
    chunk_frames: int = 16,
    progress: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Median filter against hot pixels (paper sec. 3.1, size 3).

    Args:
        frames: (T, Y, X) movie (array or memmap); not modified.
        size: window width in pixels (odd, >= 1; 1 copies the movie).
        footprint: ``"2d"`` filters each frame over size x size; ``"3d"`` over size^3 in (T, Y, X)
            (frames are read with a halo of ``size // 2`` neighbours, so chunks join exactly).
        chunk_frames: frames per chunk.
        progress: show a tqdm bar.
        out: optional float32 (T, Y, X) array to write into.

    Returns:
        (T, Y, X) float32.
    """
    _check_chunk(chunk_frames)
    if size < 1 or size % 2 == 0:
        raise ConfigError("hot_pixel_size", f"must be an odd integer >= 1, got {size!r}")
    if footprint not in ("2d", "3d"):
        raise ConfigError("hot_pixel_footprint", f"must be '2d' or '3d', got {footprint!r}")
    out = _output(frames, out)
    n = frames.shape[0]
    for start, stop in tqdm(list(_chunks(n, chunk_frames)), desc="hot pixels", disable=not progress):
        out[start:stop] = _filtered_chunk(frames, start, stop, size, footprint)
    return out


def _filtered_chunk(frames: np.ndarray, start: int, stop: int, size: int, footprint: str) -> np.ndarray:
    """Frames ``start:stop`` median-filtered (read with the 3-D footprint's halo of ``size // 2``
    frames), in the filter dtype (:func:`_as_filter_dtype`); always a fresh array, and the pages of
    a memory-mapped input are released once read (:func:`calcium_gnn.io.movie.release_pages`)."""
    n = frames.shape[0]
    halo = size // 2 if footprint == "3d" else 0
    lo, hi = max(start - halo, 0), min(stop + halo, n)
    view = frames[lo:hi]
    block = np.asarray(view)
    filtered = _median(_as_filter_dtype(block), size, footprint)[start - lo : start - lo + (stop - start)]
    if np.may_share_memory(filtered, block):  # size 1: no filter ran
        filtered = filtered.copy()
    release_pages(view)
    return filtered


# -------------------------------------------------------------------------------------- log / IQR
def log_transform(
    frames: np.ndarray,
    *,
    epsilon: float = 1.0,
    chunk_frames: int = 16,
    source: str | Path = "movie",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``log(x + epsilon)`` (paper sec. 3.1, epsilon = 1), chunked, into float32 (T, Y, X).

    Raises:
        MovieError: naming ``source`` when some ``x + epsilon <= 0`` (the log is undefined).
    """
    _check_chunk(chunk_frames)
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ConfigError("epsilon", f"must be a positive number, got {epsilon!r}")
    out = _output(frames, out)
    for start, stop in _chunks(frames.shape[0], chunk_frames):
        _log_block(frames, out, start, stop, epsilon, source)
    return out


def _log_block(src: np.ndarray, out: np.ndarray, start: int, stop: int, epsilon: float, source) -> None:
    block = out[start:stop]
    if src is not out:
        block[...] = src[start:stop]
    _log_inplace(block, start, epsilon, source)


def _log_inplace(block: np.ndarray, start: int, epsilon: float, source) -> None:
    """``block <- log(block + epsilon)`` for float32 frames ``start:start + len(block)``."""
    block += np.float32(epsilon)
    _check_log_domain(float(block.min()), start, start + block.shape[0], source)
    np.log(block, out=block)


def _check_log_domain(low: float, start: int, stop: int, source) -> None:
    """Refuse ``min(x) + epsilon = low <= 0`` in frames ``start:stop`` (the log is undefined)."""
    if low <= 0:
        raise MovieError(source, f"log(x + epsilon) undefined: min(x) + epsilon = {low:g} <= 0 "
                                 f"(frames {start}..{stop - 1}); raise epsilon or fix the offset")


def iqr_bounds(q1: float, q3: float, *, factor: float = 2.0) -> tuple[float, float]:
    """The bounds of eq. (23): ``(q1 - f IQR, q3 + f IQR)`` with ``IQR = q3 - q1``."""
    iqr = q3 - q1
    return q1 - factor * iqr, q3 + factor * iqr


def iqr_normalise(
    frames: np.ndarray,
    *,
    q1: float | None = None,
    q3: float | None = None,
    factor: float = 2.0,
    chunk_frames: int = 16,
    source: str | Path = "movie",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """IQR normalisation, paper eq. (23): ``(x - (q1 - f IQR)) / ((q3 + f IQR) - (q1 - f IQR))``.

    Args:
        frames: (T, Y, X) movie; not modified (unless it is ``out``).
        q1, q3: the quartiles; computed over the whole movie by :func:`movie_quantiles` if None.
        factor: f, the IQR multiple (2 in the paper).
        out: optional float32 (T, Y, X) array to write into (may be ``frames`` itself if float32).

    Returns:
        (T, Y, X) float32; the data between the quartiles maps into [f/(1+2f), (1+f)/(1+2f)].

    Raises:
        MovieError: naming ``source`` when the IQR is 0 (half the pixels share one value).
    """
    _check_chunk(chunk_frames)
    if not (math.isfinite(factor) and factor >= 0):
        raise ConfigError("iqr_factor", f"must be a number >= 0, got {factor!r}")
    if q1 is None or q3 is None:
        q1, q3 = (float(v) for v in movie_quantiles(frames, (0.25, 0.75), chunk_frames=chunk_frames))
    lo, hi = _checked_bounds(q1, q3, factor, source)
    out = out if out is not None and out is frames else _output(frames, out)
    for start, stop in _chunks(frames.shape[0], chunk_frames):
        block = out[start:stop]
        if out is not frames:
            block[...] = frames[start:stop]
        _normalise_inplace(block, lo, hi)
    return out


def _checked_bounds(q1: float, q3: float, factor: float, source) -> tuple[float, float]:
    """:func:`iqr_bounds`, refusing IQR = 0 (naming ``source``)."""
    lo, hi = iqr_bounds(q1, q3, factor=factor)
    if not hi > lo:
        raise MovieError(source, f"IQR normalisation impossible: q1 = q3 = {q1:g} (IQR is 0)")
    return lo, hi


def _normalise_inplace(block: np.ndarray, lo: float, hi: float) -> None:
    """Eq. (23) in place on a float32 block: ``(x - lo) / (hi - lo)``, computed in float32."""
    block -= np.float32(lo)
    block *= np.float32(1.0 / (hi - lo))


# ------------------------------------------------------------------------------ streaming quantiles
def movie_quantiles(
    frames: np.ndarray,
    quantiles: Sequence[float] = (0.25, 0.75),
    *,
    chunk_frames: int = 16,
    bins: int = 4096,
    max_collect: int = 1 << 21,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Exact quantiles of all pixels of a movie, streaming over frame chunks (bounded memory).

    Gives what ``np.quantile(frames, quantiles)`` (linear interpolation between the order
    statistics ``x_(k)``, ``x_(k+1)`` with ``h = (n - 1) q``, ``k = floor(h)``) gives, without
    holding the movie in memory:

    1. one pass for the min and max (skipped when ``value_range`` is given);
    2. histogram passes: the range of each wanted rank is cut into ``bins`` equal bins, and
       the bin holding the rank becomes the new range, until it holds at most ``max_collect``
       values (one pass usually suffices: a bin holds ~n / bins values);
    3. a collect pass: the values of that bin are gathered and the rank picked by partition.

    Each pass reads the movie once; a 361 x 512 x 512 movie takes about 3 passes.

    Args:
        frames: (T, Y, X) finite real array or memmap.
        quantiles: q values in [0, 1].
        chunk_frames: frames per chunk.
        bins: bins per histogram pass.
        max_collect: largest bin whose values are gathered in memory.
        value_range: (min, max) of the data if already known.

    Returns:
        (len(quantiles),) float64.
    """
    _check_chunk(chunk_frames)
    qs = np.asarray(quantiles, dtype=np.float64)
    if qs.ndim != 1 or not np.all((qs >= 0) & (qs <= 1)):
        raise ConfigError("quantiles", f"must be numbers in [0, 1], got {quantiles!r}")
    n = int(np.prod(frames.shape))
    if n == 0:
        raise ConfigError("quantiles", "cannot take quantiles of an empty movie")
    if value_range is None:
        lo, hi = math.inf, -math.inf
        for _, _, block in iter_frame_chunks(frames, chunk_frames):
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    else:
        lo, hi = float(value_range[0]), float(value_range[1])
    h = (n - 1) * qs
    k0 = np.floor(h).astype(np.int64)
    k1 = np.minimum(k0 + 1, n - 1)
    ranks = sorted(set(k0.tolist()) | set(k1.tolist()))
    values = _order_statistics(frames, ranks, lo, hi, n, chunk_frames, bins, max_collect)
    a = np.array([values[k] for k in k0.tolist()])
    b = np.array([values[k] for k in k1.tolist()])
    return a + (h - k0) * (b - a)


class _Rank:
    """Search state of one order statistic ``x_(rank)``: it lies in the value range [lo, hi]."""

    def __init__(self, rank: int, lo: float, hi: float, n: int) -> None:
        self.rank, self.lo, self.hi = rank, lo, hi
        self.below = 0  # how many values are < lo
        self.count = n  # how many values are in the range
        self.hi_closed = True  # the range is [lo, hi] (else [lo, hi))
        self.full = True  # the range holds every value (no masking needed)
        self.value: float | None = lo if lo == hi else None


def _in_range(flat: np.ndarray, s: _Rank) -> np.ndarray:
    if s.full:
        return flat
    upper = flat <= s.hi if s.hi_closed else flat < s.hi
    return flat[(flat >= s.lo) & upper]


def _histogram(inside: np.ndarray, s: _Rank, edges: np.ndarray, bins: int) -> np.ndarray:
    """Counts of ``inside`` in the bins ``edges[b] <= x < edges[b + 1]`` (last bin closed).

    The full first range has data values as ends, so float32 data can be binned in float32
    (rounding moves a value by less than one bin, which the two fixes undo); narrower ranges
    are binned in float64.
    """
    if not s.full:
        inside = inside.astype(np.float64)
    scale = bins / (s.hi - s.lo)
    idx = ((inside - inside.dtype.type(s.lo)) * inside.dtype.type(scale)).astype(np.int64)
    np.clip(idx, 0, bins - 1, out=idx)
    idx -= inside < edges[idx]  # rounding may put x one bin off: fix to exact membership
    idx += (inside >= edges[idx + 1]) & (idx < bins - 1)
    return np.bincount(idx, minlength=bins)


def _order_statistics(frames, ranks, lo, hi, n, chunk_frames, bins, max_collect) -> dict[int, float]:
    states = [_Rank(k, lo, hi, n) for k in ranks]
    while True:
        pending = [s for s in states if s.value is None]
        if not pending:
            break
        groups: dict[tuple, list[_Rank]] = {}
        for s in pending:  # ranks sharing a range share the pass's work
            groups.setdefault((s.lo, s.hi, s.hi_closed, s.full, s.count <= max_collect), []).append(s)
        edges = {key: np.linspace(key[0], key[1], bins + 1) for key in groups if not key[4]}
        hists = {key: np.zeros(bins, dtype=np.int64) for key in edges}
        gathered: dict[tuple, list[np.ndarray]] = {key: [] for key in groups if key[4]}
        seen = {key: [math.inf, -math.inf] for key in groups}
        for _, _, flat in iter_frame_chunks(frames, chunk_frames):
            flat = (flat if flat.dtype.kind == "f" else flat.astype(np.float64)).ravel()
            for key, members in groups.items():
                inside = _in_range(flat, members[0])
                if inside.size:
                    seen[key][0] = min(seen[key][0], float(inside.min()))
                    seen[key][1] = max(seen[key][1], float(inside.max()))
                if key in gathered:
                    gathered[key].append(inside)
                else:
                    hists[key] += _histogram(inside, members[0], edges[key], bins)
        for key, members in groups.items():
            if seen[key][0] == seen[key][1]:  # every value in the range is the same
                for s in members:
                    s.value = seen[key][0]
            elif key in gathered:
                values = np.concatenate(gathered[key])
                picks = sorted({s.rank - s.below for s in members})
                part = np.partition(values, picks)
                for s in members:
                    s.value = float(part[s.rank - s.below])
            else:
                for s in members:
                    _narrow(s, hists[key], edges[key], bins)
    return {s.rank: float(s.value) for s in states}  # type: ignore[arg-type]


def _narrow(s: _Rank, hist: np.ndarray, edges: np.ndarray, bins: int) -> None:
    """Move the range of ``s`` to the histogram bin holding its rank."""
    cum = s.below + np.cumsum(hist)
    b = int(np.searchsorted(cum, s.rank, side="right"))
    new_lo, new_hi = float(edges[b]), float(edges[b + 1])
    closed = s.hi_closed and b == bins - 1
    if (new_lo, new_hi, closed) == (s.lo, s.hi, s.hi_closed):
        s.count = 0  # floating point cannot split the range further: gather it next pass
        return
    s.below = int(cum[b - 1]) if b > 0 else s.below
    s.count = int(hist[b])
    s.lo, s.hi, s.hi_closed, s.full = new_lo, new_hi, closed, False
    if not closed and np.nextafter(new_lo, math.inf) >= new_hi:
        s.value = new_lo  # [lo, hi) holds one representable value


# --------------------------------------------------------------------------------------- pipeline
def bleaching_trend(
    frames: np.ndarray, *, dark_level: float = 0.0, chunk_frames: int = 32, source: str | Path = "movie"
) -> np.ndarray:
    """Relative photobleaching trend ``b(t)`` of a movie, ``b(0) = 1`` (not in the paper).

    Photobleaching dims the dye exponentially over the recording; over an hour a few per cent can
    exceed the calcium signal of quiet cells. The trend is a single exponential fitted by least
    squares to the log of the frame means above the camera's dark level:
    ``log(mean_t - d) = log a + r t`` (``t`` in frames), ``b(t) = exp(min(r, 0) t)`` (a rising
    trend is not bleaching and is left alone). Correcting a frame is ``d + (F - d) / b(t)``.

    Args:
        frames: (T, Y, X) movie; never modified.
        dark_level: the camera's dark (offset) level ``d``, in the movie's units.
        chunk_frames: frames read at a time.
        source: the movie's path, named in errors.

    Returns:
        (T,) float64 trend with ``b(0) = 1``.

    Raises:
        MovieError: a frame mean at or below ``dark_level`` (no signal to fit).
    """
    _check_chunk(chunk_frames)
    n = frames.shape[0]
    means = np.empty(n)
    for start, _, block in iter_frame_chunks(frames, chunk_frames):
        for i, frame in enumerate(block):  # one float64 frame at a time (same sums as the whole chunk)
            means[start + i] = frame.mean(dtype=np.float64)
    above = means - float(dark_level)
    if not (above > 0).all():
        bad = int(np.argmax(above <= 0))
        raise MovieError(source, f"frame {bad} has mean {means[bad]:.4g} <= dark_level {dark_level}: "
                         "cannot fit a photobleaching trend (set preprocessing.dark_level or "
                         "preprocessing.bleach_correction=false)")
    t = np.arange(n, dtype=np.float64)
    rate = np.polyfit(t, np.log(above), 1)[0] if n > 1 else 0.0
    return np.exp(min(rate, 0.0) * t)


def preprocess(
    frames: np.ndarray,
    *,
    hot_pixels: bool = True,
    hot_pixel_size: int = 3,
    hot_pixel_footprint: Footprint = "2d",
    bleach_correction: bool = False,
    dark_level: float = 0.0,
    log: bool = True,
    epsilon: float = 1.0,
    normalise: bool = True,
    iqr_factor: float = 2.0,
    chunk_frames: int = 16,
    progress: bool = True,
    source: str | Path = "movie",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The paper's preprocessing (sec. 3.1): median filter, ``log(x + eps)``, IQR eq. (23).

    One fused pass filters each chunk, takes its log into ``out`` and, for 8/16-bit integer
    movies, counts the filtered integer values; the quartiles of the log data are then exact
    order statistics read off those counts (``log`` is monotone, so the k-th smallest log value
    is the log of the k-th smallest filtered value), with the same linear interpolation as
    ``np.quantile``. Other dtypes use :func:`movie_quantiles` (streaming passes over ``out``).
    A second pass applies eq. (23) in place.

    Args:
        frames: (T, Y, X) movie (array or read-only memmap); never modified.
        hot_pixels: apply the median filter (size ``hot_pixel_size``, ``hot_pixel_footprint``;
            see :func:`remove_hot_pixels`).
        bleach_correction: divide out the photobleaching trend (:func:`bleaching_trend`, with
            ``dark_level``) after the median filter; not in the paper.
        log: apply ``log(x + epsilon)``.
        normalise: apply eq. (23) with the quartiles of the whole movie after the previous steps
            and ``f = iqr_factor``.
        chunk_frames: frames per chunk (memory ~ a few chunk copies besides ``out``).
        progress: show a tqdm bar.
        source: the movie's path, named in errors.
        out: optional float32 (T, Y, X) array (e.g. a writable ``np.memmap``) to write into.

    Returns:
        (T, Y, X) float32 (``out`` when given).

    Raises:
        MovieError: naming ``source``: not (T, Y, X), ``x + epsilon <= 0`` somewhere, or IQR = 0.
        ConfigError: an option out of range.
    """
    _check_options(frames, chunk_frames, hot_pixel_size, hot_pixel_footprint, log, epsilon, source)
    out = _output(frames, out)
    n = frames.shape[0]
    trend = (bleaching_trend(frames, dark_level=dark_level, chunk_frames=chunk_frames, source=source)
             if bleach_correction else None)
    counting = normalise and trend is None and frames.dtype.kind in "ui" and frames.dtype.itemsize <= 2
    offset = -int(np.iinfo(frames.dtype).min) if counting else 0
    counts = np.zeros(1 << (8 * frames.dtype.itemsize), dtype=np.int64) if counting else None
    size = hot_pixel_size if hot_pixels else 1
    lo, hi = math.inf, -math.inf
    for start, stop in tqdm(list(_chunks(n, chunk_frames)), desc="preprocess", disable=not progress):
        filtered = _filtered_chunk(frames, start, stop, size, hot_pixel_footprint)
        if counts is not None:
            values = filtered.ravel().astype(np.int64) + offset if offset else filtered.ravel()
            counts += np.bincount(values, minlength=counts.size)
        if trend is not None:
            filtered = dark_level + (filtered - dark_level) / trend[start:stop, None, None]
        out[start:stop] = filtered
        if log:
            _log_block(out, out, start, stop, epsilon, source)
        if normalise:
            lo, hi = min(lo, float(out[start:stop].min())), max(hi, float(out[start:stop].max()))
    if normalise:
        if counts is not None:
            q1, q3 = _quartiles_from_counts(counts, offset, frames.dtype, log, epsilon)
        else:
            q1, q3 = (float(v) for v in movie_quantiles(out, (0.25, 0.75), chunk_frames=chunk_frames,
                                                          value_range=(lo, hi)))
        iqr_normalise(out, q1=q1, q3=q3, factor=iqr_factor, chunk_frames=chunk_frames, source=source, out=out)
    return out


def _check_options(frames, chunk_frames: int, hot_pixel_size: int, hot_pixel_footprint: str, log: bool,
                   epsilon: float, source) -> None:
    _check_chunk(chunk_frames)
    if frames.ndim != 3:
        raise MovieError(source, f"expected a movie (T, Y, X), got shape {frames.shape}")
    if hot_pixel_size < 1 or hot_pixel_size % 2 == 0:
        raise ConfigError("hot_pixel_size", f"must be an odd integer >= 1, got {hot_pixel_size!r}")
    if hot_pixel_footprint not in ("2d", "3d"):
        raise ConfigError("hot_pixel_footprint", f"must be '2d' or '3d', got {hot_pixel_footprint!r}")
    if log and not (math.isfinite(epsilon) and epsilon > 0):
        raise ConfigError("epsilon", f"must be a positive number, got {epsilon!r}")


class PreprocessedMovie:
    """The preprocessed movie (T, Y, X) float32, computed chunk by chunk when it is sliced.

    ``movie[a:b]`` (step 1) returns frames ``a..b-1`` as a fresh (b - a, Y, X) float32 array and
    ``movie[i]`` one (Y, X) frame, each equal bit for bit to what :func:`preprocess` writes for
    them: median filter (with the 3-D footprint's halo), photobleaching correction, float32,
    ``log(x + epsilon)``, then eq. (23) with the bounds of the whole movie when ``bounds`` is set.
    Nothing is cached: memory is that of the chunk asked for. ``np.asarray(movie)`` materialises
    the whole movie. Made by :func:`preprocess_lazy`.

    Attributes:
        frames: the (T, Y, X) input movie (array or read-only memmap); never modified.
        shape: (T, Y, X); ``ndim`` = 3; ``dtype`` = float32.
        bounds: ``(q1 - f IQR, q3 + f IQR)`` of eq. (23), or None when not normalised.
        quartiles: ``(q1, q3)`` of the movie after the steps before eq. (23), or None.
    """

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(
        self,
        frames: np.ndarray,
        *,
        size: int = 3,
        footprint: Footprint = "2d",
        trend: np.ndarray | None = None,
        dark_level: float = 0.0,
        log: bool = True,
        epsilon: float = 1.0,
        bounds: tuple[float, float] | None = None,
        quartiles: tuple[float, float] | None = None,
        source: str | Path = "movie",
    ) -> None:
        self.frames = frames
        self.shape = tuple(int(v) for v in frames.shape)
        self.size, self.footprint, self.trend, self.dark_level = size, footprint, trend, dark_level
        self.log, self.epsilon, self.source = log, epsilon, source
        self.bounds, self.quartiles = bounds, quartiles

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"PreprocessedMovie(shape={self.shape}, bounds={self.bounds}, source={str(self.source)!r})"

    def __getitem__(self, index: int | slice) -> np.ndarray:
        n = self.shape[0]
        if isinstance(index, int | np.integer):
            i = int(index) + n if index < 0 else int(index)
            if not 0 <= i < n:
                raise IndexError(f"frame {index} is outside the movie's {n} frames")
            return self.chunk(i, i + 1)[0]
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step != 1:
                raise IndexError("a PreprocessedMovie is sliced with step 1 only")
            return self.chunk(start, max(start, stop))
        raise TypeError(f"a PreprocessedMovie takes an int or a slice, got {type(index).__name__}")

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        out = np.empty(self.shape, dtype=np.float32)
        for start, stop in _chunks(self.shape[0], 16):
            out[start:stop] = self.chunk(start, stop)
        return out if dtype is None else out.astype(dtype, copy=False)

    def chunk(self, start: int, stop: int, *, normalise: bool = True) -> np.ndarray:
        """Frames ``start:stop`` (0 <= start <= stop <= T) as a fresh (stop - start, Y, X) float32
        array; ``normalise=False`` stops before eq. (23)."""
        if start == stop:
            return np.empty((0, *self.shape[1:]), dtype=np.float32)
        filtered = _filtered_chunk(self.frames, start, stop, self.size, self.footprint)
        if self.trend is not None:
            d = self.dark_level
            filtered = d + (filtered - d) / self.trend[start:stop, None, None]
        block = filtered.astype(np.float32, copy=False)  # a fresh array: may be changed in place
        if self.log:
            _log_inplace(block, start, self.epsilon, self.source)
        if normalise and self.bounds is not None:
            _normalise_inplace(block, *self.bounds)
        return block


class _BeforeNormalisation:
    """The (T, Y, X) view of a :class:`PreprocessedMovie` before eq. (23), for :func:`movie_quantiles`."""

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(self, movie: PreprocessedMovie) -> None:
        self.movie, self.shape = movie, movie.shape

    def __getitem__(self, index: slice) -> np.ndarray:
        start, stop, _ = index.indices(self.shape[0])
        return self.movie.chunk(start, max(start, stop), normalise=False)


def preprocess_lazy(
    frames: np.ndarray,
    *,
    hot_pixels: bool = True,
    hot_pixel_size: int = 3,
    hot_pixel_footprint: Footprint = "2d",
    bleach_correction: bool = False,
    dark_level: float = 0.0,
    log: bool = True,
    epsilon: float = 1.0,
    normalise: bool = True,
    iqr_factor: float = 2.0,
    chunk_frames: int = 16,
    progress: bool = True,
    source: str | Path = "movie",
) -> PreprocessedMovie:
    """:func:`preprocess` without holding its result: the statistics pass only, then a
    :class:`PreprocessedMovie` that computes any chunk on demand (equal bit for bit to
    ``preprocess(frames, ...)`` with the same options).

    The statistics pass reads the movie once (``chunk_frames`` frames at a time): for 8/16-bit
    integer movies it median-filters each chunk and counts its integer values, and the quartiles
    of eq. (23) are read off the counts (as in :func:`preprocess`); other dtypes, or with
    ``bleach_correction``, take the log of each chunk for its min / max, then
    :func:`movie_quantiles` recomputes the chunks for its (usually 2-3) histogram passes. With
    ``bleach_correction`` one more pass fits the trend first; with ``normalise=False`` there is
    no pass at all. Memory: a few copies of one chunk, never the movie.

    Args:
        frames: (T, Y, X) movie (array or read-only memmap); never modified.
        hot_pixels, hot_pixel_size, hot_pixel_footprint, bleach_correction, dark_level, log,
            epsilon, normalise, iqr_factor, progress, source: as :func:`preprocess`.
        chunk_frames: frames per chunk of the statistics pass.

    Returns:
        The :class:`PreprocessedMovie` (T, Y, X) float32.

    Raises:
        MovieError: naming ``source``: not (T, Y, X), ``x + epsilon <= 0`` somewhere (found by the
            statistics pass of an integer movie, else when the chunk is computed), or IQR = 0.
        ConfigError: an option out of range.
    """
    _check_options(frames, chunk_frames, hot_pixel_size, hot_pixel_footprint, log, epsilon, source)
    if normalise and not (math.isfinite(iqr_factor) and iqr_factor >= 0):
        raise ConfigError("iqr_factor", f"must be a number >= 0, got {iqr_factor!r}")
    n = frames.shape[0]
    trend = (bleaching_trend(frames, dark_level=dark_level, chunk_frames=chunk_frames, source=source)
             if bleach_correction else None)
    size = hot_pixel_size if hot_pixels else 1
    movie = PreprocessedMovie(frames, size=size, footprint=hot_pixel_footprint, trend=trend,
                              dark_level=dark_level, log=log, epsilon=epsilon, source=source)
    if not normalise:
        return movie
    chunks = tqdm(list(_chunks(n, chunk_frames)), desc="preprocess (statistics)", disable=not progress)
    if trend is None and frames.dtype.kind in "ui" and frames.dtype.itemsize <= 2:
        offset = -int(np.iinfo(frames.dtype).min)
        counts = np.zeros(1 << (8 * frames.dtype.itemsize), dtype=np.int64)
        for start, stop in chunks:
            filtered = _filtered_chunk(frames, start, stop, size, hot_pixel_footprint)
            for frame in filtered:  # one frame's int64 indices at a time
                values = frame.ravel().astype(np.int64) + offset if offset else frame.ravel()
                counts += np.bincount(values, minlength=counts.size)
            if log:  # what the log step of the chunk would find: min(float32(x)) + epsilon
                low = np.float32(filtered.min()) + np.float32(epsilon)
                _check_log_domain(float(low), start, stop, source)
        q1, q3 = _quartiles_from_counts(counts, offset, frames.dtype, log, epsilon)
    else:
        lo, hi = math.inf, -math.inf
        before = _BeforeNormalisation(movie)
        for start, stop in chunks:
            block = before[start:stop]
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
        q1, q3 = (float(v) for v in movie_quantiles(before, (0.25, 0.75), chunk_frames=chunk_frames,
                                                      value_range=(lo, hi)))
    movie.bounds = _checked_bounds(q1, q3, iqr_factor, source)
    movie.quartiles = (q1, q3)
    return movie


def _median(block: np.ndarray, size: int, footprint: str) -> np.ndarray:
    if size == 1:
        return block
    if footprint == "2d" and size == 3:
        return median3x3(block)
    if footprint == "2d":
        return ndi.median_filter(block, size=(1, size, size), mode="reflect")
    return ndi.median_filter(block, size=size, mode="reflect")


def _quartiles_from_counts(counts: np.ndarray, offset: int, dtype: np.dtype, log: bool,
                           epsilon: float) -> tuple[float, float]:
    """q1, q3 of the (log-transformed) movie from the counts of its integer values."""
    n = int(counts.sum())
    cum = np.cumsum(counts)
    h = (n - 1) * np.array([0.25, 0.75])
    k0 = np.floor(h).astype(np.int64)
    k1 = np.minimum(k0 + 1, n - 1)
    # the value of rank k is the first integer whose cumulative count exceeds k
    raw = np.searchsorted(cum, np.concatenate([k0, k1]), side="right") - offset
    values = raw.astype(dtype).astype(np.float32)  # exactly what the chunks hold before the log
    if log:
        values += np.float32(epsilon)
        values = np.log(values)
    a, b = values[:2].astype(np.float64), values[2:].astype(np.float64)
    q = a + (h - k0) * (b - a)
    return float(q[0]), float(q[1])


# ---------------------------------------------------------------------------------------- helpers
def _check_chunk(chunk_frames: int) -> None:
    if not isinstance(chunk_frames, int) or chunk_frames < 1:
        raise ConfigError("chunk_frames", f"must be an integer >= 1, got {chunk_frames!r}")


def _output(frames: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return np.empty(frames.shape, dtype=np.float32)
    if out.shape != frames.shape or out.dtype != np.float32:
        raise ConfigError("out", f"must be float32 of shape {frames.shape}, got {out.dtype} {out.shape}")
    if np.may_share_memory(out, frames):
        raise ConfigError("out", "must not share memory with the input movie (the input is never modified)")
    return out
