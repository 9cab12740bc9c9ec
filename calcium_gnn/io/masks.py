"""Reading label images (masks) the user already has.

A label image is a (Y, X) integer array: 0 is background, each cell is a distinct positive
integer. Accepted files:

- TIFF (``.tif``/``.tiff``) holding one 2-D integer image;
- ``.npy`` holding a 2-D integer array (read with ``allow_pickle=False``);
- a Cellpose GUI ``*_seg.npy`` file: a pickled dict whose ``"masks"`` entry is the label image.
  It is unpickled by :class:`SafeUnpickler`, which only rebuilds builtin containers and numpy
  arrays / dtypes / scalars (an allow-list in ``find_class``), so a crafted file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from calcium_gnn.errors import MasksError

LABEL_SUFFIXES = (".tif", ".tiff", ".npy")

# (module, name) pairs the Cellpose ``_seg.npy`` unpickler may rebuild; nothing else is allowed.
_NUMPY_MODULES = ("numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                  "numpy._core.numeric", "numpy.dtypes")
_NUMPY_NAMES = frozenset({"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"})
_BUILTIN_NAMES = frozenset({"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex",
                            "str", "bytes", "bytearray", "bool", "slice", "range"})


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only builtin containers and numpy arrays, dtypes and scalars.

    Any other global (``os.system``, ``subprocess.Popen``, ``builtins.eval``...) is refused with
    ``pickle.UnpicklingError`` before it can be called.
    """

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _BUILTIN_NAMES:
            return super().find_class(module, name)
        if module == "collections" and name == "OrderedDict":
            return super().find_class(module, name)
        if (module in _NUMPY_MODULES and name in _NUMPY_NAMES) or (
            module == "numpy.dtypes" and name.endswith("DType")
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load '{module}.{name}'")


def read_labels(path: str | Path) -> np.ndarray:
    """Read a label image (Y, X) from a TIFF, ``.npy`` or Cellpose ``*_seg.npy`` file.

    Args:
        path: the file. Never modified.

    Returns:
        (Y, X) int32 label image, values as in the file (0 = background, cells >= 1).

    Raises:
        MasksError: naming the file: missing, empty, unreadable, unsupported type, not a label
            image (float or negative values, not 2-D) or holding no cells.
    """
    path = Path(path)
    if not path.exists():
        raise MasksError(path, "file not found")
    if path.is_dir():
        raise MasksError(path, "is a folder, expected a label image file")
    if path.stat().st_size == 0:
        raise MasksError(path, "file is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix not in LABEL_SUFFIXES:
        raise MasksError(path, f"unsupported file type '{path.suffix}': expected .tif, .tiff or .npy")
    raw = _read_tiff(path) if suffix in (".tif", ".tiff") else _read_npy(path)
    return as_label_image(raw, path)


def as_label_image(raw: Any, source: str | Path) -> np.ndarray:
    """Check that ``raw`` is a label image and return it as (Y, X) int32.

    Raises:
        MasksError: naming ``source`` when ``raw`` is not 2-D, not integer, negative, too large
            for int32, or has no cells.
    """
    labels = np.asarray(raw)
    if labels.ndim > 2:
        labels = np.squeeze(labels)
    if labels.ndim != 2:
        raise MasksError(source, f"not a label image: expected 2-D (Y, X), got shape {labels.shape}")
    if labels.dtype.kind == "b":
        raise MasksError(source, "not a label image: a binary mask; give each cell its own integer")
    if labels.dtype.kind not in "ui":
        raise MasksError(source, f"not a label image: {labels.dtype} values, expected integers")
    if labels.size and int(labels.min()) < 0:
        raise MasksError(source, f"not a label image: negative value {int(labels.min())}")
    if labels.size and int(labels.max()) > np.iinfo(np.int32).max:
        raise MasksError(source, f"not a label image: value {int(labels.max())} exceeds int32")
    if not labels.size or int(labels.max()) == 0:
        raise MasksError(source, "empty label image: no cells (all pixels are 0)")
    return labels.astype(np.int32, copy=True)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    from calcium_gnn.io.movie import TiffProblems

    try:
        with TiffProblems() as problems, tifffile.TiffFile(path) as tif:
            labels = tif.series[0].asarray()
            len(tif.pages)  # walks every IFD: a broken chain is logged as a problem
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds of errors on bad files
        raise MasksError(path, f"not a readable TIFF ({_one_line(exc)})") from None
    if problems.problems:
        raise MasksError(path, f"truncated or corrupt TIFF ({problems.problems[0]})")
    return labels


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" not in str(exc).lower():
            raise MasksError(path, f"not a readable .npy array ({_one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - corrupt files raise many kinds of errors
        raise MasksError(path, f"not a readable .npy array ({_one_line(exc)})") from None
    return _read_seg_npy(path)


def _read_seg_npy(path: Path) -> np.ndarray:
    """The ``"masks"`` entry of a Cellpose ``*_seg.npy`` (a pickled dict), unpickled safely."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                np.lib.format.read_array_header_1_0(fh)
            else:
                np.lib.format.read_array_header_2_0(fh)
            obj = SafeUnpickler(fh).load()
    except pickle.UnpicklingError as exc:
        raise MasksError(path, f"unsafe or corrupt pickled data refused ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - corrupt files raise many kinds of errors
        raise MasksError(path, f"not a readable Cellpose _seg.npy file ({_one_line(exc)})") from None
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.ndim == 0:
        obj = obj.item()
    if not isinstance(obj, dict) or "masks" not in obj:
        raise MasksError(path, "pickled .npy without a 'masks' entry: not a Cellpose _seg.npy file")
    return np.asarray(obj["masks"])
