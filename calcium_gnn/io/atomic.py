"""Nothing lost: atomic writes of files and folders.

A file is written to a temporary name in the **same folder** as its target (so both live on the
same file system) and then moved onto the target with :func:`os.replace`, which is atomic on
POSIX and Windows: a reader, or a crash, sees either the old complete file or the new complete
file, never half of one. On any failure the temporary file is removed and the target is left as
it was.

Three entry points:

* :func:`atomic_write_bytes` / :func:`atomic_write_text` for content already in memory;
* :func:`atomic_path`, a context manager yielding a temporary path for writers that need a path
  (``torch.save``, ``tifffile.imwrite``, ``np.save``, ``fig.savefig``...);
* :func:`atomic_folder`, the same for a whole folder (a cache entry): the folder appears complete
  or not at all.

Every ``OSError`` becomes an :class:`calcium_gnn.errors.OutputError` naming the target.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from calcium_gnn.errors import OutputError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_folder", "new_file_mode"]


def new_file_mode() -> int:
    """Permissions of a newly created file under the process umask (``0o666 & ~umask``).

    ``tempfile.mkstemp`` creates private (``0o600``) files; the finished file gets these instead.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _folder_of(path: Path, *, make_parents: bool) -> Path:
    folder = path.parent if str(path.parent) else Path(".")
    if folder.exists() and not folder.is_dir():
        raise OutputError(path, f"cannot write: {folder} is not a folder")
    if make_parents:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(path, f"cannot create the folder {folder}: {exc.strerror or exc}") from None
    elif not folder.is_dir():
        raise OutputError(path, f"cannot write: folder {folder} does not exist")
    return folder


@contextlib.contextmanager
def atomic_path(
    path: str | Path, *, overwrite: bool = True, make_parents: bool = False, suffix: str | None = None
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit move it onto ``path``.

    Args:
        path: the target file.
        overwrite: replace an existing ``path`` (default True); False refuses it up front.
        make_parents: create the target's folder (and its parents) when missing (default False:
            a missing folder is an error).
        suffix: the temporary file's suffix (default ``path``'s own, so writers that pick a format
            from the name, e.g. ``fig.savefig`` or ``np.save``, see the right one).

    Yields:
        The temporary path (the file exists, empty, so the name is reserved).

    Raises:
        OutputError: naming ``path`` when the folder is missing / not a folder, the target exists
            and ``overwrite`` is False, or writing / moving fails. Exceptions raised by the body
            propagate unchanged (after the temporary file is removed).
    """
    path = Path(path)
    folder = _folder_of(path, make_parents=make_parents)
    if not overwrite and path.exists():
        raise OutputError(path, "already exists; refusing to overwrite it")
    tmp_suffix = path.suffix if suffix is None else suffix
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{tmp_suffix}", dir=folder)
    except OSError as exc:
        raise OutputError(path, f"cannot write in {folder}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(path, f"cannot write: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, content: bytes, **options: bool) -> Path:
    """Write ``content`` to ``path`` atomically; ``options`` as :func:`atomic_path`. Returns ``path``."""
    with atomic_path(path, **options) as tmp:
        tmp.write_bytes(content)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8", **options: bool) -> Path:
    """Write ``text`` to ``path`` atomically; ``options`` as :func:`atomic_path`. Returns ``path``."""
    return atomic_write_bytes(path, text.encode(encoding), **options)


@contextlib.contextmanager
def atomic_folder(path: str | Path, *, keep_existing: bool = True) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on a clean exit rename it to ``path``.

    Args:
        path: the target folder (its parent is created when missing).
        keep_existing: when ``path`` appeared meanwhile (another process filled the same entry),
            keep theirs and discard ours (default True); False replaces an existing *empty* target
            and raises otherwise.

    Yields:
        The temporary folder (empty).

    Raises:
        OutputError: naming ``path`` when the parent cannot be created or written, or the rename
            fails (other than losing a race with ``keep_existing``). Exceptions raised by the
            body propagate after the temporary folder is removed.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name[:24]}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise OutputError(path, f"cannot write in {parent}: {exc.strerror or exc}") from None
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as exc:
            if not (keep_existing and path.is_dir()):
                raise OutputError(path, f"cannot move the finished folder into place: "
                                  f"{exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
