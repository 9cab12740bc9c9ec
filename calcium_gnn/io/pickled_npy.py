"""Pickled ``.npy`` files (object arrays: suite2p's ``stat.npy`` and ``ops.npy``), read without
running pickled code.

``np.load(path, allow_pickle=True)`` would run whatever a crafted file asks for. Here the pickle
after the ``.npy`` header is rebuilt by :class:`calcium_gnn.io.masks.SafeUnpickler` (builtin
containers, numpy arrays, dtypes and scalars only), extended with the inert ``datetime`` types
suite2p stores in ``ops["date_proc"]``. Plain (non-object) arrays are read with
``allow_pickle=False``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from calcium_gnn.errors import InputFileError
from calcium_gnn.io.masks import SafeUnpickler

__all__ = ["read_npy", "read_pickled_npy"]

_DATETIME_NAMES = frozenset({"datetime", "date", "time", "timedelta", "timezone"})


class _Unpickler(SafeUnpickler):
    """:class:`SafeUnpickler` plus ``datetime.datetime / date / time / timedelta / timezone``."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "datetime" and name in _DATETIME_NAMES:
            return pickle.Unpickler.find_class(self, module, name)
        return super().find_class(module, name)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise InputFileError(path, "file not found" if not path.exists() else "is not a file")
    if path.stat().st_size == 0:
        raise InputFileError(path, "file is empty (0 bytes)")


def read_npy(path: str | Path) -> np.ndarray:
    """A plain ``.npy`` array (no pickled objects).

    Raises:
        InputFileError: naming the file: missing, empty, not a ``.npy`` array, or an object array.
    """
    path = Path(path)
    _check_file(path)
    try:
        with open(path, "rb") as fh:
            np.lib.format.read_magic(fh)
    except Exception as exc:  # noqa: BLE001 - np.load would try to unpickle a non-.npy file
        raise InputFileError(path, f"not a readable .npy array ({_one_line(exc)})") from None
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - corrupt files raise many kinds of errors
        if "pickle" in str(exc).lower():
            raise InputFileError(path, "holds pickled objects, expected a numeric array") from None
        raise InputFileError(path, f"not a readable .npy array ({_one_line(exc)})") from None


def read_pickled_npy(path: str | Path) -> Any:
    """The content of a ``.npy`` file that may hold pickled objects, unpickled safely.

    Args:
        path: the file. Never modified.

    Returns:
        The array; a 0-d object array (``np.save`` of a dict) is unwrapped to its object.

    Raises:
        InputFileError: naming the file: missing, empty, corrupt, or pickling a class outside the
            allow-list (refused before anything is called).
    """
    path = Path(path)
    _check_file(path)
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            if dtype.hasobject:
                obj = _Unpickler(fh).load()
            else:
                obj = None
    except pickle.UnpicklingError as exc:
        raise InputFileError(path, f"unsafe or corrupt pickled data refused ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - corrupt files raise many kinds of errors
        raise InputFileError(path, f"not a readable .npy file ({_one_line(exc)})") from None
    if obj is None:
        return read_npy(path)
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.ndim == 0:
        return obj.item()
    return obj
