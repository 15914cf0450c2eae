"""On-disk cache of decoded images as ``.npy`` files.

Decoding 50,000 JPEGs takes several seconds; the decoded uint8 array is saved
once under the cache directory and memory-mapped back on the next load.

* Location: the ``cache_dir`` option, else ``$NOISYLABELS_CACHE``, else
  ``~/.cache/noisylabels``.
* Key: a hash of the loader name, the source's absolute path, size and
  modification time (for a folder: of every listed file), and the options that
  change the decoded pixels (see :func:`cache_key`). Changing the source file
  therefore invalidates its entry.
* Writes go to a temporary file in the same folder, then :func:`os.replace`, so
  an interrupted run never leaves a half-written entry; an entry that cannot be
  read back (or has the wrong shape) is rebuilt.
* Caching is best effort: a cache folder that cannot be written is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_save_npy

__all__ = [
    "CACHE_VERSION",
    "default_cache_dir",
    "resolve_cache_dir",
    "file_fingerprint",
    "cache_key",
    "load_array",
    "save_array",
    "cached_array",
]

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$NOISYLABELS_CACHE`` if set, else ``~/.cache/noisylabels``."""
    env = os.environ.get("NOISYLABELS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "noisylabels"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The cache folder to use: ``cache_dir`` or :func:`default_cache_dir`."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def file_fingerprint(path: str | os.PathLike[str]) -> list[Any]:
    """``[absolute path, size, mtime_ns]`` of a file, the part of a cache key naming a source."""
    p = Path(path).resolve()
    st = p.stat()
    return [str(p), int(st.st_size), int(st.st_mtime_ns)]


def cache_key(loader: str, **parts: Any) -> str:
    """Hash a loader name and JSON-serialisable key parts into a hex digest.

    Parameters
    ----------
    loader:
        Loader name, e.g. ``"imagefolder"``.
    **parts:
        Everything that determines the decoded array: the source fingerprint
        (:func:`file_fingerprint`), the split, the file list, and options that
        change pixels such as ``image_size``.

    Returns
    -------
    str
        A 32-character hex key.
    """
    blob = json.dumps({"v": CACHE_VERSION, "loader": loader, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def load_array(path: str | os.PathLike[str]) -> np.ndarray | None:
    """Read a cached array (memory-mapped, then copied), or ``None`` if missing or unreadable."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        mm = np.load(p, mmap_mode="r", allow_pickle=False)
        return np.array(mm, copy=True)
    except (OSError, ValueError, EOFError):
        return None


def save_array(path: str | os.PathLike[str], array: np.ndarray) -> bool:
    """Write ``array`` to ``path`` atomically (temporary file + :func:`os.replace`).

    Returns
    -------
    bool
        ``False`` when the folder could not be written (the cache is then skipped).
    """
    try:  # fsync: other processes read the cache
        atomic_save_npy(path, np.ascontiguousarray(array), fsync=True)
        return True
    except OSError:
        return False


def cached_array(
    build: Callable[[], np.ndarray],
    *,
    key: str,
    cache_dir: str | os.PathLike[str] | None,
    name: str,
    expect_len: int | None = None,
    enabled: bool = True,
) -> np.ndarray:
    """Return the cached array for ``key``, building and saving it when absent.

    Parameters
    ----------
    build:
        Produces the array when the cache has no valid entry.
    key:
        From :func:`cache_key`.
    cache_dir:
        Cache folder (``None``: :func:`default_cache_dir`).
    name:
        Readable file-name stem, e.g. ``"imagefolder-train"``.
    expect_len:
        When given, an entry with another first dimension counts as corrupt.
    enabled:
        ``False`` bypasses the cache entirely.

    Returns
    -------
    numpy.ndarray
        The (loaded or freshly built) array.
    """
    if not enabled:
        return build()
    path = resolve_cache_dir(cache_dir) / f"{name}-{key}.npy"
    arr = load_array(path)
    if arr is not None and (expect_len is None or (arr.ndim >= 1 and arr.shape[0] == expect_len)):
        return arr
    arr = build()
    save_array(path, arr)
    return arr
