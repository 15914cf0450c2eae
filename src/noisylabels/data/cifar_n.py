"""Real human label noise: CIFAR-10N / CIFAR-100N (Wei et al., "Learning with Noisy Labels
Revisited: A Study Using Real-World Human Annotations", ICLR 2022).

The official label files hold, for the 50,000 training images in the official order of the
CIFAR python pickles (``data_batch_1`` ... ``data_batch_5``; CIFAR-100's ``train``), the
original labels and the crowd-sourced ones:

* ``CIFAR-10_human.pt``: ``clean_label``, ``aggre_label`` (majority vote, ~9% wrong),
  ``worse_label`` (~40%), ``random_label1`` / ``2`` / ``3`` (~17-18%);
* ``CIFAR-100_human.pt``: ``clean_label``, ``noisy_label`` (~40%).

Loading is safe: the ``.pt`` files are ``torch.save``\\ d dicts of numpy arrays, which
``torch.load(weights_only=True)`` refuses unless numpy's array reconstruction is allowlisted;
this module allowlists exactly numpy's array reconstruction for that one call
(:func:`noisylabels.io.safe_pickle.numpy_safe_globals`, the allowlist the CIFAR batches are
read with too), so no other callable can run. A ``.npz`` export with the same keys (``np.load(allow_pickle=False)``)
works too: ``CIFAR-10_human.npz``.

The labels are keyed to the images: with the pickle source ``x_train`` is already in the
official order; with the shared JPEG zip (``cifar10/train/<class>/<k>.jpg``, ``<k>`` the
rank of the image within its class in the official order) official index ``i`` is the file
``<class of i>/<rank of i among its class>.jpg``. Either way the file's ``clean_label`` must
agree with the images' classes, else a one-line error (a label file of another order or set).
``y_train_clean`` becomes the clean labels, so detection metrics measure the human noise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .base import RawDataset
from .registry import DATASETS, candidate_data_dirs
from ..io.safe_pickle import numpy_safe_globals

__all__ = ["CIFAR10N_LABELS", "CIFAR100N_LABELS", "load_human_labels", "apply_human_labels", "load_cifar10n",
           "load_cifar100n"]

CIFAR10N_LABELS = {"aggre": "aggre_label", "worse": "worse_label", "random1": "random_label1",
                   "random2": "random_label2", "random3": "random_label3", "clean": "clean_label"}
CIFAR100N_LABELS = {"noisy": "noisy_label", "clean": "clean_label"}


def load_human_labels(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a CIFAR-N label file (``.pt`` or ``.npz``) safely into ``{key: int64 array}``.

    Raises
    ------
    UserError
        Missing, unreadable or not a dict of 1-D label arrays (one line; nothing executed).
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"CIFAR-N label file {p} not found")
    if p.suffix.lower() == ".npz":
        from ..io import load_npz

        obj: Any = load_npz(p, what="CIFAR-N label file")
    else:
        from ..io import load_torch_file

        obj = load_torch_file(p, what="CIFAR-N label file", safe_globals=numpy_safe_globals(),
                              expected="CIFAR-N label file (.pt loaded safely: tensors and numpy arrays only; or .npz)")
    if not isinstance(obj, dict):
        raise UserError(f"CIFAR-N label file {p} must hold a dict of label arrays, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        arr = v.numpy() if hasattr(v, "numpy") else np.asarray(v)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise UserError(f"CIFAR-N label file {p}: {k!r} must be a 1-D integer array, got {arr.dtype} {arr.shape}")
        out[str(k)] = arr.astype(np.int64)
    return out


def _find_label_file(name: str, data_dir: Path | None, human_labels: str | os.PathLike[str] | None) -> Path:
    if human_labels is not None:
        p = Path(human_labels).expanduser()
        if not p.is_file() and data_dir is not None and (data_dir / p).is_file():
            p = data_dir / p
        if not p.is_file():
            raise UserError(f"CIFAR-N label file {human_labels} not found")
        return p
    tried = []
    for d in candidate_data_dirs(data_dir):
        base = d if d.is_dir() else d.parent
        for cand in (base / f"{name}.pt", base / f"{name}.npz", base / "cifar-n" / f"{name}.pt",
                     base / "CIFAR-N" / f"{name}.pt"):
            tried.append(str(cand))
            if cand.is_file():
                return cand
    raise UserError(f"{name}.pt (the CIFAR-N label file) not found; put it in the data folder or pass "
                    f"human_labels=PATH (looked in: {', '.join(tried[:4])}{', ...' if len(tried) > 4 else ''})")


def _official_positions(raw: RawDataset, clean: np.ndarray, where: str) -> np.ndarray:
    """Position in ``raw.x_train`` of each official training index (checks the classes)."""
    n = len(clean)
    if len(raw.y_train) != n:
        raise UserError(f"{where} has {n} labels but the training set has {len(raw.y_train)} images")
    if raw.paths_train is None:  # pickle / tarball: already in the official order
        bad = np.flatnonzero(raw.y_train != clean)
        if len(bad):
            raise UserError(f"{where}: clean_label disagrees with the images' classes at {len(bad)} of {n} "
                            f"indices (first {int(bad[0])}: {int(clean[bad[0]])} vs {int(raw.y_train[bad[0]])}); "
                            "not a label file of this data set's official order")
        return np.arange(n)
    key = {"/".join(p.split("/")[-2:]): i for i, p in enumerate(raw.paths_train)}
    rank = np.zeros(n, dtype=np.int64)
    seen = np.zeros(raw.num_classes, dtype=np.int64)
    for i, c in enumerate(clean):
        if not 0 <= c < raw.num_classes:
            raise UserError(f"{where}: clean_label[{i}] = {int(c)} is outside [0, {raw.num_classes})")
        rank[i] = seen[c]
        seen[c] += 1
    counts = np.bincount(raw.y_train, minlength=raw.num_classes)
    if not np.array_equal(seen, counts):
        raise UserError(f"{where}: clean_label has class counts {seen.tolist()} but the image folders "
                        f"{counts.tolist()}; not a label file of these images")
    out = np.empty(n, dtype=np.int64)
    for i, c in enumerate(clean):
        pos = key.get(f"{raw.classes[c]}/{rank[i]:04d}.jpg")
        if pos is None:
            raise UserError(f"{where}: official index {i} (class {raw.classes[c]}, rank {rank[i]}) has no "
                            f"image {raw.classes[c]}/{rank[i]:04d}.jpg")
        out[i] = pos
    return out


def apply_human_labels(raw: RawDataset, labels: dict[str, np.ndarray], *, key: str, where: str) -> RawDataset:
    """Replace ``raw.y_train`` by the label set ``key`` (official order), ``y_train_clean`` by
    ``clean_label``; returns a new record."""
    import dataclasses

    if "clean_label" not in labels:
        raise UserError(f"{where} has no 'clean_label' (keys: {', '.join(sorted(labels))})")
    if key not in labels:
        raise UserError(f"{where} has no {key!r} (keys: {', '.join(sorted(labels))})")
    clean, noisy = labels["clean_label"], labels[key]
    if len(noisy) != len(clean):
        raise UserError(f"{where}: {key} has {len(noisy)} entries but clean_label {len(clean)}")
    if noisy.size and (noisy.min() < 0 or noisy.max() >= raw.num_classes):
        raise UserError(f"{where}: {key} has labels outside [0, {raw.num_classes})")
    pos = _official_positions(raw, clean, where)
    y = raw.y_train.copy()
    y[pos] = noisy
    yc = raw.y_train.copy()
    yc[pos] = clean
    return dataclasses.replace(raw, y_train=y, y_train_clean=yc)


def _load(name: str, file: str, choices: dict[str, str], noisy_labels: str, loader, *, data_dir: Path | None,
          human_labels: str | os.PathLike[str] | None, **options: Any) -> RawDataset:
    if noisy_labels not in choices:
        raise UserError(f"{name}: unknown noisy_labels {noisy_labels!r}; valid: {', '.join(choices)}")
    label_file = _find_label_file(file, data_dir, human_labels)
    labels = load_human_labels(label_file)
    raw = loader(data_dir=data_dir, **options)
    out = apply_human_labels(raw, labels, key=choices[noisy_labels], where=str(label_file))
    out.name = name
    return out


@DATASETS.register("cifar10n", help="CIFAR-10 with CIFAR-10N human labels (noisy_labels=aggre|worse|random1..3)")
def load_cifar10n(*, data_dir: Path | None = None, cache_dir: Path | None = None, noisy_labels: str = "aggre",
                  human_labels: str | os.PathLike[str] | None = None, source: str = "auto",
                  workers: int | None = None) -> RawDataset:
    """CIFAR-10 images with the CIFAR-10N label set ``noisy_labels`` as training labels.

    Parameters
    ----------
    noisy_labels:
        ``aggre`` (default), ``worse``, ``random1``, ``random2``, ``random3`` or ``clean``.
    human_labels:
        The label file (default: ``CIFAR-10_human.pt`` / ``.npz`` in the data folder).
    source, workers, data_dir, cache_dir:
        As for ``cifar10`` (pickle, tarball or the JPEG zips).
    """
    from .cifar import load_cifar10

    return _load("cifar10n", "CIFAR-10_human", CIFAR10N_LABELS, noisy_labels, load_cifar10, data_dir=data_dir,
                 human_labels=human_labels, cache_dir=cache_dir, source=source, workers=workers)


@DATASETS.register("cifar100n", help="CIFAR-100 with CIFAR-100N human labels (noisy_labels=noisy|clean)")
def load_cifar100n(*, data_dir: Path | None = None, cache_dir: Path | None = None, noisy_labels: str = "noisy",
                   human_labels: str | os.PathLike[str] | None = None, source: str = "auto") -> RawDataset:
    """CIFAR-100 images (fine labels) with the CIFAR-100N label set as training labels.

    Parameters
    ----------
    noisy_labels:
        ``noisy`` (default) or ``clean``.
    human_labels:
        The label file (default: ``CIFAR-100_human.pt`` / ``.npz`` in the data folder).
    """
    from .cifar import load_cifar100

    return _load("cifar100n", "CIFAR-100_human", CIFAR100N_LABELS, noisy_labels, load_cifar100, data_dir=data_dir,
                 human_labels=human_labels, cache_dir=cache_dir, source=source)
