"""Reading calcium-imaging movies: TIFF / OME-TIFF stacks, ``.npy`` arrays, folders of frames.

A movie is a stack of frames ``(T, Y, X)``. The paper's movie has T = 361 frames taken every
``dt = 10 s`` (paper sec. 3.1). :func:`read_movie` returns a :class:`Movie` whose ``frames`` may be a
read-only memory map of the user's file (never modified), together with the frame interval and
the pixel size, each recorded with where it came from (``"metadata"``, ``"config"`` or
``"default"``).

Streaming: every pass over a movie reads it ``chunk_frames`` frames at a time through
:func:`iter_frame_chunks`, which hands back the pages of a memory-mapped chunk to the OS once the
chunk is done (:func:`release_pages`). Without that, every page of a mapped file that has been read
stays in the process's resident memory until the mapping closes, so one pass over an 8 GB movie
would hold 8 GB; with it, a pass holds about one chunk.

Where ``dt`` and ``pixel_size`` come from, in order of precedence:

1. the file's metadata: ImageJ ``finterval`` (with ``tunit``) and the TIFF X resolution when
   ImageJ's ``unit`` is a length unit (micron, nm, mm); OME ``TimeIncrement`` and
   ``PhysicalSizeX`` (with their units);
2. the keyword arguments ``dt`` / ``pixel_size`` (from the config);
3. the defaults: ``dt = 10 s`` (the paper) and ``pixel_size = NaN`` (unknown).

Plain TIFF resolution tags outside ImageJ files are ignored: they usually carry a print DPI,
not a microscope calibration.
"""

from __future__ import annotations

import logging
import math
import mmap as _mmap_module
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from calcium_gnn.errors import ConfigError, MovieError

DEFAULT_DT = 10.0
"""Frame interval in seconds when neither the file nor the config gives one (paper sec. 3.1)."""

#: The largest magnitude a movie value may have: every later step computes in float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)

TIFF_SUFFIXES = (".tif", ".tiff")
NPY_SUFFIXES = (".npy",)

Source = Literal["metadata", "config", "default"]

# seconds per unit of time, and micrometres per unit of length, for metadata conversion
_TIME_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "msec": 1e-3,
               "min": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0, "hour": 3600.0, "hours": 3600.0}
_LENGTH_UNITS = {"um": 1.0, "\u00b5m": 1.0, "\u03bcm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
                 "micrometre": 1.0, "nm": 1e-3, "mm": 1e3}


@dataclass(frozen=True)
class Movie:
    """A calcium-imaging movie and its calibration.

    Attributes:
        frames: (T, Y, X) array-like (an ``np.ndarray`` or a read-only ``np.memmap``); never modified.
        dt: frame interval in seconds.
        pixel_size: micrometres per pixel, or NaN when unknown.
        dt_source: where ``dt`` came from: ``"metadata"``, ``"config"`` or ``"default"``.
        pixel_size_source: where ``pixel_size`` came from (same values).
        path: the file or folder it was read from, or ``None`` for an in-memory array.
    """

    frames: np.ndarray
    dt: float
    pixel_size: float
    dt_source: Source
    pixel_size_source: Source
    path: Path | None = None

    @property
    def n_frames(self) -> int:
        """T, the number of frames."""
        return int(self.frames.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(Y, X), the shape of one frame."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def times(self) -> np.ndarray:
        """(T,) float64 frame times in seconds, ``t_n = n * dt``."""
        return np.arange(self.n_frames, dtype=np.float64) * self.dt


def read_movie(
    source: str | Path | np.ndarray,
    *,
    dt: float | None = None,
    pixel_size: float | None = None,
    z_projection: Literal["max", "mean"] | None = None,
    mmap: bool = True,
    chunk_frames: int = 32,
) -> Movie:
    """Read a movie ``(T, Y, X)`` from a file, a folder of frames, or an array.

    Args:
        source: a TIFF / OME-TIFF stack (``.tif``/``.tiff``), a ``.npy`` array, a folder of
            single-frame TIFFs (sorted naturally: ``f2`` before ``f10``), or an ndarray.
        dt: frame interval in seconds, used when the file's metadata has none (config key ``dt``).
        pixel_size: micrometres per pixel, used when the metadata has none (``pixel_size``).
        z_projection: ``"max"`` or ``"mean"`` to project a 4-D ``(T, Z, Y, X)`` stack over Z
            (chunk by chunk); ``None`` refuses 4-D stacks.
        mmap: memory-map uncompressed contiguous TIFFs and ``.npy`` files (read-only) instead of
            loading them; compressed or tiled TIFFs are always read into memory.
        chunk_frames: frames per chunk for the finite / constant checks and for Z projection
            (fewer when a chunk would exceed :data:`SCAN_BYTES`; memory-mapped pages are released
            after each chunk, so the checks hold one chunk, not the movie).

    Returns:
        The :class:`Movie`.

    Raises:
        MovieError: naming the file, for a missing, empty, truncated, corrupt or unsupported file,
            wrong axes, fewer than 2 frames, NaN/Inf values (naming the first bad frame), values
            beyond the float32 range, or a constant movie. Negative values are legal (offset-
            subtracted data); the log step of preprocessing refuses ``x + epsilon <= 0``.
        ConfigError: for a non-positive ``dt`` / ``pixel_size`` or an unknown ``z_projection``.
    """
    if dt is not None and not (math.isfinite(dt) and dt > 0):
        raise ConfigError("dt", f"frame interval must be a positive number of seconds, got {dt!r}")
    if pixel_size is not None and not (math.isfinite(pixel_size) and pixel_size > 0):
        raise ConfigError("pixel_size", f"must be a positive number of micrometres, got {pixel_size!r}")
    if z_projection not in (None, "max", "mean"):
        raise ConfigError("z_projection", f"must be 'max', 'mean' or None, got {z_projection!r}")
    if chunk_frames < 1:
        raise ConfigError("chunk_frames", f"must be >= 1, got {chunk_frames!r}")

    if isinstance(source, np.ndarray):
        culprit: str | Path = "<array>"
        array, axes, meta = source, None, {}
        path = None
    else:
        path = Path(source)
        culprit = path
        array, axes, meta = _read_path(path, mmap=mmap)

    frames = _to_tyx(array, axes, culprit, z_projection, chunk_frames)
    _check_values(frames, culprit, chunk_frames)

    dt_value, dt_source = _pick(meta.get("dt"), dt, DEFAULT_DT)
    px_value, px_source = _pick(meta.get("pixel_size"), pixel_size, math.nan)
    return Movie(frames, float(dt_value), float(px_value), dt_source, px_source, path)


def _pick(from_metadata: float | None, from_config: float | None, default: float) -> tuple[float, Source]:
    if from_metadata is not None:
        return from_metadata, "metadata"
    if from_config is not None:
        return from_config, "config"
    return default, "default"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    first = first[:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _read_path(path: Path, *, mmap: bool) -> tuple[np.ndarray, str | None, dict[str, float]]:
    if not path.exists():
        raise MovieError(path, "file not found")
    if path.is_dir():
        return _read_folder(path)
    if path.stat().st_size == 0:
        raise MovieError(path, "file is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix in NPY_SUFFIXES:
        return _read_npy(path, mmap=mmap), None, {}
    if suffix in TIFF_SUFFIXES:
        return _read_tiff(path, mmap=mmap)
    raise MovieError(
        path, f"unsupported file type '{path.suffix}': expected .tif, .tiff, .npy or a folder of TIFF frames"
    )


def _read_npy(path: Path, *, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "python objects" in str(exc).lower():  # np.load / its memmap
            problem = "holds pickled objects, not a numeric array (refused for safety)"
            raise MovieError(path, problem) from None
        raise MovieError(path, f"not a readable .npy array ({_one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - corrupt files raise many kinds of errors
        raise MovieError(path, f"not a readable .npy array ({_one_line(exc)})") from None


class TiffProblems(logging.Handler):
    """Collects what ``tifffile`` logs while a file is read, instead of printing it.

    ``tifffile`` reads damaged files leniently: a truncated stack loses the IFDs of its last pages and
    comes back as a shorter (often single-page) series, with only a log line ("invalid page offset",
    "ImageJ series metadata invalid or corrupted file"). Used as a context manager around a read,
    this handler keeps those lines (``problems``) so the caller can refuse the file with one clear
    error rather than return a wrong movie.
    """

    #: words of tifffile's log lines that mean the file is damaged (not merely unusual)
    MARKERS = ("invalid", "corrupt", "failed", "raised", "truncated")

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.problems: list[str] = []
        self._logger = logging.getLogger("tifffile")
        self._propagate = True

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().strip().splitlines()
        line = re.sub(r"^<[^>]*>\s*", "", text[0])[:200] if text else ""  # drop tifffile's "<TiffPages @8>"
        if any(marker in line.lower() for marker in self.MARKERS):
            self.problems.append(line)

    def __enter__(self) -> TiffProblems:
        self._propagate = self._logger.propagate
        self._logger.addHandler(self)
        self._logger.propagate = False
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.propagate = self._propagate


def _check_tiff_complete(tif: Any, series: Any, path: Path, problems: TiffProblems) -> None:
    """Refuse a truncated or damaged TIFF: a broken chain of pages (``len(tif.pages)`` walks every
    IFD) or image data that extends past the end of the file."""
    n_pages = len(tif.pages)
    if problems.problems:
        raise MovieError(path, f"truncated or corrupt TIFF ({problems.problems[0]})")
    size = path.stat().st_size
    if series.dataoffset is not None:
        end = int(series.dataoffset) + int(series.nbytes)
    else:
        end = 0
        for page in series.pages:
            if page is not None and page.dataoffsets:
                end = max(end, max(int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts,
                                                                       strict=True)))
    if end > size:
        raise MovieError(path, f"truncated TIFF: its {n_pages} page(s) need {end} bytes, the file has {size}")


def _read_tiff(path: Path, *, mmap: bool) -> tuple[np.ndarray, str | None, dict[str, float]]:
    import tifffile

    try:
        with TiffProblems() as problems, tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            _check_tiff_complete(tif, series, path, problems)
            meta = _tiff_metadata(tif)
            data = None
            if mmap:
                try:
                    data = tifffile.memmap(path, mode="r")
                except Exception:  # noqa: BLE001 - compressed / non-contiguous: read instead
                    data = None
                if data is not None and data.shape != tuple(series.shape):
                    data = data.reshape(series.shape) if data.size == math.prod(series.shape) else None
            if data is None:
                data = series.asarray()
            if problems.problems:
                raise MovieError(path, f"truncated or corrupt TIFF ({problems.problems[0]})")
    except MovieError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds of errors on bad files
        raise MovieError(path, f"not a readable TIFF ({_one_line(exc)})") from None
    return data, axes, meta


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _read_folder(path: Path) -> tuple[np.ndarray, str | None, dict[str, float]]:
    import tifffile

    files = sorted(
        (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES),
        key=lambda p: _natural_key(p.name),
    )
    if not files:
        raise MovieError(path, "folder holds no .tif/.tiff frames")
    frames = []
    meta: dict[str, float] = {}
    for i, file in enumerate(files):
        if file.stat().st_size == 0:
            raise MovieError(file, "file is empty (0 bytes)")
        try:
            with tifffile.TiffFile(file) as tif:
                if i == 0:
                    meta = _tiff_metadata(tif)
                frame = np.squeeze(tif.series[0].asarray())
        except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds of errors on bad files
            raise MovieError(file, f"not a readable TIFF ({_one_line(exc)})") from None
        if frame.ndim != 2:
            raise MovieError(file, f"expected one 2-D frame per file in a folder, got shape {frame.shape}")
        if frames and frame.shape != frames[0].shape:
            raise MovieError(file, f"frame shape {frame.shape} differs from the first's {frames[0].shape}")
        frames.append(frame)
    return np.stack(frames), "TYX", meta


def _tiff_metadata(tif: Any) -> dict[str, float]:
    """dt (s) and pixel size (um) from ImageJ or OME metadata, when present and meaningful."""
    meta: dict[str, float] = {}
    ij = tif.imagej_metadata or {}
    if ij:
        finterval = ij.get("finterval")
        scale = _TIME_UNITS.get(str(ij.get("tunit", "s")).strip().lower())
        if finterval is not None and scale is not None and _positive(finterval):
            meta["dt"] = float(finterval) * scale
        unit = _LENGTH_UNITS.get(str(ij.get("unit", "")).strip().lower().replace("\\u00b5", "\u00b5"))
        if unit is not None:
            xres = tif.pages[0].tags.get("XResolution")
            if xres is not None:
                num, den = xres.value
                if num > 0 and den > 0:
                    meta["pixel_size"] = float(den) / float(num) * unit
    if tif.is_ome and tif.ome_metadata:
        meta.update({k: v for k, v in _ome_metadata(tif.ome_metadata).items() if k not in meta})
    return meta


def _ome_metadata(xml: str) -> dict[str, float]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return {}
    meta: dict[str, float] = {}
    readers: list[tuple[str, str, str, dict[str, float], str, Callable[[float], bool]]] = [
        ("dt", "TimeIncrement", "TimeIncrementUnit", _TIME_UNITS, "s", _positive),
        ("pixel_size", "PhysicalSizeX", "PhysicalSizeXUnit", _LENGTH_UNITS, "µm", _positive),
    ]
    for key, attr, unit_attr, units, default_unit, ok in readers:
        value = pixels.get(attr)
        scale = units.get(pixels.get(unit_attr, default_unit).strip().lower())
        if value is not None and scale is not None:
            try:
                number = float(value)
            except ValueError:
                continue
            if ok(number):
                meta[key] = number * scale
    return meta


def _positive(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number > 0


def _to_tyx(
    array: np.ndarray,
    axes: str | None,
    culprit: str | Path,
    z_projection: str | None,
    chunk_frames: int,
) -> np.ndarray:
    """Bring ``array`` to (T, Y, X), projecting Z when asked; ``axes`` from tifffile or None."""
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "uifb":
        kind = getattr(array, "dtype", type(array))
        raise MovieError(culprit, f"expected a numeric image array, got {kind}")
    if array.dtype.kind == "b":
        raise MovieError(culprit, "expected intensities, got a boolean array")
    if axes is None or len(axes) != array.ndim:
        axes = {2: "YX", 3: "TYX", 4: "TZYX"}.get(array.ndim, "Q" * array.ndim)
    axes = axes.upper()
    # drop singleton axes other than T, Y and X (an ImageJ 'TZCYX' with Z = C = 1, say)
    keep = [i for i, a in enumerate(axes) if a in "TYX" or array.shape[i] != 1]
    if len(keep) != array.ndim:
        squeezed = [i for i in range(array.ndim) if i not in keep]
        array = array.squeeze(axis=tuple(squeezed))
        axes = "".join(axes[i] for i in keep)
    channel_axes = [a for a in axes if a in "CS"]
    if channel_axes:
        raise MovieError(culprit, f"multi-channel image (axes {axes}, shape {array.shape}); save one channel")
    if array.ndim == 2:
        raise MovieError(culprit, f"a single 2-D image of shape {array.shape}, expected a movie (T, Y, X)")
    if array.ndim == 3:
        if "Z" in axes and "T" not in axes:
            raise MovieError(culprit, f"a z-stack (Z, Y, X) {array.shape} with no time axis; need (T, Y, X)")
        frames = array
    elif array.ndim == 4:
        if "T" in axes and "Z" in axes:
            array = np.moveaxis(array, (axes.index("T"), axes.index("Z")), (0, 1))
        if z_projection is None:
            raise MovieError(
                culprit,
                f"a 4-D stack (T, Z, Y, X) {array.shape}; pass z_projection='max' or 'mean' to project Z",
            )
        frames = _project_z(array, z_projection, chunk_frames)
    else:
        raise MovieError(culprit, f"expected a movie (T, Y, X), got a {array.ndim}-D array {array.shape}")
    if frames.shape[0] < 2:
        raise MovieError(culprit, f"a movie needs at least 2 frames, got {frames.shape[0]}")
    if frames.shape[1] < 2 or frames.shape[2] < 2:
        raise MovieError(culprit, f"frames of shape {frames.shape[1:]} are too small to hold cells")
    return frames


def _project_z(array: np.ndarray, how: str, chunk_frames: int) -> np.ndarray:
    """(T, Z, Y, X) -> (T, Y, X) by max (keeps dtype) or mean (float32), ``chunk_frames`` at a time."""
    n = array.shape[0]
    dtype = array.dtype if how == "max" else np.float32
    out = np.empty((n, array.shape[2], array.shape[3]), dtype=dtype)
    for start, stop, block in iter_frame_chunks(array, chunk_frames):
        if how == "max":
            out[start:stop] = block.max(axis=1)
        else:
            out[start:stop] = block.mean(axis=1, dtype=np.float64)
    return out


#: The most bytes of a movie the reader's chunked scans hold at once (whatever ``chunk_frames``).
SCAN_BYTES = 1 << 25


def _bounded_chunk(frames: np.ndarray, chunk_frames: int) -> int:
    """``chunk_frames``, or fewer frames when they would exceed :data:`SCAN_BYTES`."""
    frame_bytes = max(int(np.prod(frames.shape[1:])) * frames.dtype.itemsize, 1)
    return max(1, min(chunk_frames, SCAN_BYTES // frame_bytes))


def _check_values(frames: np.ndarray, culprit: str | Path, chunk_frames: int) -> None:
    """Chunked scan: no NaN/Inf (naming the first bad frame), not constant, and within float32.

    Negative values are accepted (offset-subtracted cameras record them); ``log(x + epsilon)`` in
    preprocessing then needs ``x > -epsilon`` and says so naming the movie when it is not.
    """
    lo, hi = math.inf, -math.inf
    is_float = frames.dtype.kind == "f"
    for start, _, block in iter_frame_chunks(frames, _bounded_chunk(frames, chunk_frames)):
        if is_float:
            finite = np.isfinite(block).all(axis=(1, 2))
            if not finite.all():
                bad = start + int(np.argmin(finite))
                raise MovieError(culprit, f"frame {bad} holds NaN or Inf values")
        lo = min(lo, float(block.min()))
        hi = max(hi, float(block.max()))

    if lo == hi:
        raise MovieError(culprit, f"the movie is constant (every pixel of every frame is {lo:g})")
    if max(abs(lo), abs(hi)) > FLOAT32_MAX:
        raise MovieError(culprit, f"values up to {max(abs(lo), abs(hi)):.3g} exceed the float32 range "
                         f"(+-{FLOAT32_MAX:.3g}) the pipeline computes in; rescale the movie")


# ------------------------------------------------------------------------------------------ streaming
def iter_frame_chunks(
    frames: Any, chunk_frames: int, start: int = 0, stop: int | None = None
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(a, b, frames[a:b])`` for consecutive chunks of at most ``chunk_frames`` frames.

    Each block is ``np.asarray(frames[a:b])``: a view for an array or memmap (no copy), the computed
    chunk for an array-like that computes its frames (e.g.
    :class:`calcium_gnn.imaging.preprocess.PreprocessedMovie`). When the caller asks for the next
    chunk, the pages of a memory-mapped block are released (:func:`release_pages`), so a pass over
    a mapped movie holds about one chunk of it in resident memory. A block kept past its step stays
    valid (its pages are read back from the file on access).

    Args:
        frames: (T, ...) array, read-only memmap, or array-like with ``shape`` and slicing on axis 0.
        chunk_frames: frames per chunk (>= 1).
        start, stop: the frame range (default: all frames).

    Yields:
        ``(a, b, block)`` with ``block`` of shape ``(b - a, ...)``.
    """
    if chunk_frames < 1:
        raise ConfigError("chunk_frames", f"must be >= 1, got {chunk_frames!r}")
    stop = int(frames.shape[0]) if stop is None else stop
    for a in range(start, stop, chunk_frames):
        b = min(a + chunk_frames, stop)
        view = frames[a:b]  # an np.memmap view keeps the map that release_pages needs
        yield a, b, np.asarray(view)
        release_pages(view)


def release_pages(array: np.ndarray) -> None:
    """Hand the resident pages under a read-only memory-mapped ``array`` back to the OS.

    ``madvise(MADV_DONTNEED)`` on the byte range the array spans (widened to whole pages): the
    pages leave this process's resident set (its RSS) but stay in the OS page cache, and a later
    access reads them back from the file, so the array's values never change. Does nothing for an
    array not backed by a read-only ``np.memmap`` (a writable or copy-on-write map could lose
    writes) or where ``madvise`` is unavailable.

    Args:
        array: any array; only a read-only ``np.memmap`` (or a view of one) is affected.
    """
    mm = getattr(array, "_mmap", None)
    advise = getattr(_mmap_module, "MADV_DONTNEED", None)
    if mm is None or advise is None or not hasattr(mm, "madvise") or array.flags.writeable or array.size == 0:
        return
    try:
        base = np.frombuffer(mm, dtype=np.uint8).ctypes.data  # the mapping's first address
        low, high = _byte_bounds(array)
        begin = low - base
        begin -= begin % _mmap_module.PAGESIZE
        end = min(high - base, len(mm))
        if 0 <= begin < end:
            mm.madvise(advise, begin, end - begin)
    except (OSError, ValueError, TypeError, BufferError):  # pragma: no cover - platform dependent
        return


def _byte_bounds(array: np.ndarray) -> tuple[int, int]:
    """(first, one past last) address of the memory an array spans (any strides)."""
    low = high = int(array.ctypes.data)
    for n, stride in zip(array.shape, array.strides, strict=True):
        if stride < 0:
            low += stride * (n - 1)
        else:
            high += stride * (n - 1)
    return low, high + array.itemsize
