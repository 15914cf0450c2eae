"""Atomic file writes: a temporary file in the destination's folder, then :func:`os.replace`.

A reader (or a run killed mid-write) sees the old file or the new one, never half of one. The
temporary file gets the permissions of any file the user writes (``mkstemp`` creates 0600) and
is removed if the write fails. ``on_write(path)`` runs before anything is written, e.g. to
register the file in a run directory's manifest (``train.rundir.register``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_bytes", "atomic_torch_save", "atomic_save_npy",
           "atomic_save_npz"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], Any], *,
                 on_write: Callable[[Path], Any] | None = None, fsync: bool = False) -> None:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file, which then replaces ``path``.

    Parameters
    ----------
    path:
        Destination; its folder is created if missing.
    write:
        Called with the temporary file's name (a ``str`` in ``path``'s folder).
    on_write:
        Called with ``path`` before anything is written (e.g. a run manifest's ``register``).
    fsync:
        Flush the temporary file to disk before the replace (for files other processes share).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if on_write is not None:
        on_write(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        write(tmp)
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike[str], text: str, *,
                      on_write: Callable[[Path], Any] | None = None) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), on_write=on_write)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *,
                       on_write: Callable[[Path], Any] | None = None) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), on_write=on_write)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str], *,
                      on_write: Callable[[Path], Any] | None = None) -> None:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`)."""
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp), on_write=on_write)


def atomic_save_npy(path: str | os.PathLike[str], array: Any, *, on_write: Callable[[Path], Any] | None = None,
                    fsync: bool = False) -> None:
    """``np.save(array, allow_pickle=False)`` to exactly ``path`` (no suffix added), atomically."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)

    atomic_write(path, write, on_write=on_write, fsync=fsync)


def atomic_save_npz(path: str | os.PathLike[str], arrays: Mapping[str, Any], *, compressed: bool = False,
                    on_write: Callable[[Path], Any] | None = None) -> None:
    """``np.savez`` (or ``savez_compressed``) of ``arrays`` to exactly ``path`` (no suffix added), atomically."""
    import numpy as np

    save = np.savez_compressed if compressed else np.savez

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            save(fh, **arrays)

    atomic_write(path, write, on_write=on_write)
