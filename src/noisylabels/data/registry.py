"""Dataset registry: ``create_dataset(name, ...)`` and where data files are looked for.

Loaders register themselves with ``@DATASETS.register("name")``. Each loader is
called as ``loader(data_dir=..., cache_dir=..., **options)`` and returns a
:class:`~noisylabels.data.base.RawDataset`.

Where data files are looked for when ``data_dir`` is not given
(:func:`candidate_data_dirs`):

1. ``$NOISYLABELS_DATA_DIR`` when set (and then only there);
2. otherwise, in this order, the first of these that holds the files the
   loader needs: ``./data``, ``../shared/data`` (both relative to the current
   directory), and ``../shared/data`` beside the repository this package was
   loaded from.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import UserError
from ..registry import Registry, call_with_options
from .base import RawDataset

__all__ = [
    "DATASETS",
    "create_dataset",
    "list_datasets",
    "candidate_data_dirs",
    "locate_data",
    "resolve_path",
]

DATASETS: Registry[Callable[..., RawDataset]] = Registry("dataset")

T = TypeVar("T")


def _ensure_loaders() -> None:
    # The loaders register on import; ``noisylabels.data`` imports them, but a
    # caller may import this module on its own.
    from . import cifar, cifar_n, clothing1m, digits, imagefolder, mnist  # noqa: F401


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    _ensure_loaders()
    return DATASETS.names()


def create_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> RawDataset:
    """Load a registered dataset into memory.

    Parameters
    ----------
    name:
        A name from :func:`list_datasets` (case-insensitive).
    data_dir:
        Folder (or, for some loaders, a single file) holding the data. ``None``
        searches the default places (see :func:`candidate_data_dirs`).
    cache_dir:
        Where decoded images are cached (see :mod:`noisylabels.data.cache`);
        ``None`` uses ``$NOISYLABELS_CACHE`` or ``~/.cache/noisylabels``.
    **options:
        Loader options (e.g. ``test_fraction``, ``labels_csv``); an unknown
        option raises :class:`UserError` listing the valid ones.

    Returns
    -------
    RawDataset
        Decoded uint8 NHWC images and int64 labels.

    Raises
    ------
    UserError
        Unknown name or option, data files not found (the message says where
        it looked), or corrupt files.
    """
    _ensure_loaders()
    fn = DATASETS.get(name)
    dd = None if data_dir is None else Path(data_dir).expanduser()
    cd = None if cache_dir is None else Path(cache_dir).expanduser()
    return call_with_options("dataset", str(name).lower(), fn, data_dir=dd, cache_dir=cd, **options)


def _repo_shared_data() -> Path | None:
    """``../shared/data`` beside the repository holding this source file, if any."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() or (parent / ".git").exists():
            cand = parent.parent / "shared" / "data"
            return cand if cand.is_dir() else None
    return None


def candidate_data_dirs(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The places searched for data files, most preferred first.

    Parameters
    ----------
    data_dir:
        An explicit folder or file. When given it is the only candidate.

    Returns
    -------
    list of pathlib.Path
        ``[data_dir]``; or ``[$NOISYLABELS_DATA_DIR]`` when that variable is
        set; or ``./data``, ``../shared/data`` (relative to the current
        directory) and ``../shared/data`` beside the repository (duplicates
        removed). The paths need not exist.
    """
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    env = os.environ.get("NOISYLABELS_DATA_DIR")
    if env:
        return [Path(env).expanduser()]
    cands = [Path.cwd() / "data", Path.cwd().parent / "shared" / "data"]
    repo = _repo_shared_data()
    if repo is not None:
        cands.append(repo)
    out: list[Path] = []
    seen: set[str] = set()
    for c in cands:
        key = os.path.realpath(c)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def locate_data(data_dir: Path | None, finder: Callable[[Path], T | None], *, what: str) -> T:
    """Return ``finder(d)`` for the first candidate place ``d`` where it finds something.

    Parameters
    ----------
    data_dir:
        The user's ``data_dir`` (or ``None`` for the default places).
    finder:
        Called with each existing candidate (a folder, or a file when the user
        named one); returns ``None`` when the needed files are not there.
    what:
        Description of the needed files for the error message.

    Raises
    ------
    UserError
        When an explicit ``data_dir`` does not exist or nothing was found; the
        message lists every place searched.
    """
    cands = candidate_data_dirs(data_dir)
    if data_dir is not None and not cands[0].exists():
        raise UserError(f"data_dir {cands[0]} does not exist")
    env = os.environ.get("NOISYLABELS_DATA_DIR")
    if data_dir is None and env and not cands[0].exists():
        raise UserError(f"$NOISYLABELS_DATA_DIR={env} does not exist")
    for cand in cands:
        if cand.exists():
            found = finder(cand)
            if found is not None:
                return found
    hint = "" if data_dir is not None else " (pass data_dir= or set $NOISYLABELS_DATA_DIR)"
    raise UserError(f"could not find {what}; looked in: {', '.join(map(str, cands))}{hint}")


def resolve_path(path: str | os.PathLike[str], data_dir: Path | None, *, what: str) -> Path:
    """Resolve a user-given file or folder: as given, else relative to ``data_dir``.

    Raises
    ------
    UserError
        When neither exists; the message names both places.
    """
    p = Path(path).expanduser()
    if p.exists():
        return p
    tried = [str(p)]
    if data_dir is not None and not p.is_absolute():
        q = data_dir / p
        if q.exists():
            return q
        tried.append(str(q))
    raise UserError(f"{what} {str(path)!r} not found (tried {', '.join(tried)})")
