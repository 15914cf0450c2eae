"""Train / validation / meta index splits of the training pool.

* ``meta``: a small class-balanced set, drawn first, for methods that assume a
  trusted subset (e.g. Meta-Weight-Net, Shu et al. 2019; L2RW, Ren et al. 2018).
* ``val``: a stratified random ``val_fraction`` of what remains.
* ``train``: everything else.

All three are drawn from ``numpy.random.default_rng(seed)`` and returned as
sorted, disjoint int64 index arrays that together cover the pool.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..io import atomic_save_npz
from .base import stratified_take, validate_labels

__all__ = ["make_splits", "save_splits", "load_splits", "SPLIT_NAMES"]

SPLIT_NAMES = ("train", "val", "meta")


def _meta_quota(counts: np.ndarray, meta_size: int, rng: np.random.Generator) -> np.ndarray:
    k = len(counts)
    quota = np.full(k, meta_size // k, dtype=np.int64)
    rem = meta_size % k
    if rem:
        quota[rng.permutation(k)[:rem]] += 1
    quota = np.minimum(quota, counts)
    short = meta_size - int(quota.sum())
    while short > 0:  # classes lacking samples: fill from the others, one per class per round
        spare = np.flatnonzero(counts > quota)
        spare = spare[rng.permutation(len(spare))][:short]
        quota[spare] += 1
        short -= len(spare)
    return quota


def make_splits(
    y_clean: np.ndarray,
    *,
    val_fraction: float = 0.1,
    meta_size: int = 0,
    seed: int,
    num_classes: int,
    meta: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Split the training pool into disjoint ``train``, ``val`` and ``meta`` index sets.

    Parameters
    ----------
    y_clean:
        Labels of the pool used for balancing and stratification (the clean
        labels when known), int ``(N,)``.
    val_fraction:
        Fraction of the pool left after ``meta`` that goes to ``val``, in ``[0, 1)``.
    meta_size:
        Size of the class-balanced meta set: ``meta_size // K`` per class, the
        remainder spread over randomly chosen classes; a class with too few
        samples gives all it has and the others make up the difference.
    seed:
        Seed of ``numpy.random.default_rng``; the same seed gives the same splits.
    num_classes:
        Number of classes ``K``.
    meta:
        Given meta indices (e.g. the user's verified samples, ``data.options.trusted_csv``)
        instead of a drawn meta set; ``meta_size`` is then ignored.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"train", "val", "meta"}`` sorted int64 indices into the pool.

    Raises
    ------
    UserError
        ``val_fraction`` outside ``[0, 1)``, negative ``meta_size``, labels out
        of range, or splits leaving fewer than ``K`` training samples.
    """
    y = validate_labels(y_clean, num_classes, "y_clean")
    n = len(y)
    if not 0.0 <= float(val_fraction) < 1.0:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if int(meta_size) != meta_size or meta_size < 0:
        raise UserError(f"meta_size must be a non-negative integer, got {meta_size!r}")
    meta_size = int(meta_size) if meta is None else len(meta)
    if meta_size > max(n - num_classes, 0):
        raise UserError(
            f"meta_size={meta_size} too large for {n} samples: at least {num_classes} must stay for training"
        )
    rng = np.random.default_rng(seed)
    counts = np.bincount(y, minlength=num_classes)
    meta_parts = [] if meta is None else [np.unique(np.asarray(meta, dtype=np.int64))]
    if meta_size and meta is None:
        quota = _meta_quota(counts, meta_size, rng)
        for c in range(num_classes):
            if quota[c]:
                members = np.flatnonzero(y == c)
                meta_parts.append(rng.permutation(members)[: quota[c]])
    meta = np.sort(np.concatenate(meta_parts)).astype(np.int64) if meta_parts else np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), meta, assume_unique=True)
    val = rest[stratified_take(y[rest], fraction=float(val_fraction), rng=rng)]
    train = np.setdiff1d(rest, val, assume_unique=True)
    if len(train) < num_classes:
        raise UserError(
            f"meta_size={meta_size} and val_fraction={val_fraction} leave {len(train)} training samples "
            f"of {n}; need at least {num_classes}"
        )
    splits = {"train": train.astype(np.int64), "val": np.sort(val).astype(np.int64), "meta": meta}
    allidx = np.concatenate(list(splits.values()))
    assert len(allidx) == n and len(np.unique(allidx)) == n, "splits must be disjoint and cover the pool"
    return splits


def save_splits(path: str | os.PathLike[str], splits: dict[str, np.ndarray]) -> None:
    """Save split index arrays to an ``.npz`` file (written atomically).

    Parameters
    ----------
    path:
        Destination (written exactly there, no suffix added).
    splits:
        ``{name: int index array}``, e.g. from :func:`make_splits`.
    """
    atomic_save_npz(path, {k: np.asarray(v, dtype=np.int64) for k, v in splits.items()})


def load_splits(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load split index arrays saved by :func:`save_splits`.

    Raises
    ------
    UserError
        Missing or unreadable file.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"splits file {p} not found")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: np.asarray(z[k], dtype=np.int64) for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"cannot read splits file {p}: {err}") from None
