"""Writing files so that a crash never leaves half of one, and checking a folder is writable."""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Iterator, Optional

from ..errors import TrainingError


def fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable where the OS allows (silently skipped elsewhere)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str, tmp: Optional[str] = None) -> Iterator[str]:
    """A temporary name next to ``path`` (``tmp``, else a fresh one) for writers that want a file
    name (``paddle.save``, ``faiss.write_index``): fsynced and renamed onto ``path`` on a clean
    exit, removed on an error."""
    directory = os.path.dirname(os.path.abspath(path))
    if tmp is None:
        name = os.path.basename(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_dir(directory)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", encoding: Optional[str] = None) -> Iterator[Any]:
    """``open(path, mode)`` ("w" or "wb") through :func:`atomic_path`: readers see the old file or
    the complete new one, never a torn one; on an error ``path`` is left as it was."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as f:
        yield f


def atomic_save(obj: Any, path: str) -> None:
    """``paddle.save(obj, path)`` through a temporary file in the same folder and ``os.replace``."""
    import paddle

    with atomic_path(path) as tmp:
        paddle.save(obj, tmp)


def ensure_writable_dir(path: str, what: str) -> str:
    """Create ``path`` if needed and prove a file can be written there, so that a read-only or
    full disk is a ``TrainingError`` naming ``what`` (e.g. "Global.output_dir") before any work."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_test", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise TrainingError(f"{what} {path!r} is not writable: {err}") from err
    return path
