"""MNIST and Fashion-MNIST from IDX files (gzipped or not).

IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a big-endian
header ``0x00 0x00 <dtype> <ndim>``, ``ndim`` int32 sizes, then the data.
Images are ``0x00000803`` (uint8, 3 dims), labels ``0x00000801`` (uint8, 1 dim).
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import RawDataset, split_off_test, validate_labels
from .registry import DATASETS, locate_data, resolve_path

__all__ = [
    "MNIST_CLASSES",
    "FASHION_MNIST_CLASSES",
    "read_idx",
    "find_idx_pairs",
    "load_mnist",
    "load_fashion_mnist",
]

MNIST_CLASSES = [str(k) for k in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

_IMAGES_RE = re.compile(r"images.*idx3", re.IGNORECASE)
_LABELS_RE = re.compile(r"labels.*idx1", re.IGNORECASE)


def read_idx(path: str | os.PathLike[str], *, ndim: int) -> np.ndarray:
    """Read one uint8 IDX file (``.gz`` or plain) and check its header and size.

    Parameters
    ----------
    path:
        The file.
    ndim:
        Expected number of dimensions (3 for images, 1 for labels).

    Returns
    -------
    numpy.ndarray
        uint8 array of the shape stored in the header.

    Raises
    ------
    UserError
        Unreadable, corrupt, truncated or wrong-kind file (the message names it).
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(p, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"cannot read IDX file {p}: {err}") from None
    if len(data) < 4:
        raise UserError(f"IDX file {p} is truncated ({len(data)} bytes)")
    zero, dtype_code, nd = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or nd != ndim:
        raise UserError(
            f"{p} is not a uint8 IDX file with {ndim} dimension(s) "
            f"(magic {data[:4].hex()}, expected 0000080{ndim})"
        )
    header = 4 + 4 * nd
    if len(data) < header:
        raise UserError(f"IDX file {p} is truncated (header incomplete)")
    dims = struct.unpack(f">{nd}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise UserError(f"IDX file {p} is {state}: header {dims} needs {expected} bytes, found {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _role(prefix: str) -> str:
    low = prefix.lower()
    if low.startswith("train"):
        return "train"
    if low.startswith("t10k") or "test" in low:
        return "test"
    return "other"


def find_idx_pairs(folder: Path) -> dict[Path, dict[str, tuple[Path, Path]]]:
    """Find IDX image/label pairs under ``folder`` (recursively).

    Files named ``*images*idx3*`` are paired with the ``*labels*idx1*`` file of
    the same folder and the same name prefix (``train-``, ``t10k-``).

    Returns
    -------
    dict
        ``{directory: {role: (images, labels)}}`` where role is ``"train"``,
        ``"test"`` or ``"other:<prefix>"``.
    """
    out: dict[Path, dict[str, tuple[Path, Path]]] = {}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and "idx" in p.name.lower())
    by_dir: dict[Path, list[Path]] = {}
    for f in files:
        by_dir.setdefault(f.parent, []).append(f)
    for d, fs in by_dir.items():
        labels = {}
        for f in fs:
            m = _LABELS_RE.search(f.name)
            if m:
                labels.setdefault(f.name[: f.name.lower().index("labels")], f)
        for f in fs:
            m = _IMAGES_RE.search(f.name)
            if not m:
                continue
            prefix = f.name[: f.name.lower().index("images")]
            if prefix in labels:
                role = _role(prefix)
                role = role if role != "other" else f"other:{prefix}"
                out.setdefault(d, {}).setdefault(role, (f, labels[prefix]))
    return out


def _pick_group(root: Path, fashion: bool, explicit: bool) -> dict[str, tuple[Path, Path]] | None:
    groups = find_idx_pairs(root) if root.is_dir() else {}
    if not groups:
        return None
    if explicit and root in groups and len(groups) == 1:
        return groups[root]

    def keep(d: Path) -> bool:
        rel = (root.name + "/" + str(d.relative_to(root))).lower()
        return ("fashion" in rel) == fashion

    cands = [d for d in groups if keep(d)]
    if not cands and explicit and len(groups) == 1:
        cands = list(groups)
    if not cands:
        return None
    cands.sort(key=lambda d: ("train" not in groups[d] or "test" not in groups[d], len(d.parts), str(d)))
    return groups[cands[0]]


def _load_idx_dataset(
    name: str,
    classes: list[str],
    *,
    data_dir: Path | None,
    images: str | os.PathLike[str] | None,
    labels: str | os.PathLike[str] | None,
    test_images: str | os.PathLike[str] | None,
    test_labels: str | os.PathLike[str] | None,
    test_fraction: float,
) -> RawDataset:
    if (images is None) != (labels is None) or (test_images is None) != (test_labels is None):
        raise UserError(f"{name}: give images= and labels= together (and test_images= with test_labels=)")
    if test_images is not None and images is None:
        raise UserError(f"{name}: test_images= needs images= and labels= for the training pool")
    if images is not None:
        group = {"train": (resolve_path(images, data_dir, what="images file"),
                           resolve_path(labels, data_dir, what="labels file"))}  # type: ignore[arg-type]
        if test_images is not None:
            group["test"] = (resolve_path(test_images, data_dir, what="test images file"),
                             resolve_path(test_labels, data_dir, what="test labels file"))  # type: ignore[arg-type]
    else:
        fashion = name == "fashion-mnist"
        group = locate_data(
            data_dir,
            lambda d: _pick_group(d, fashion, data_dir is not None),
            what=f"{name} IDX files (*images*idx3* with *labels*idx1*)",
        )

    def read_pair(pair: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray]:
        x = read_idx(pair[0], ndim=3)
        y = read_idx(pair[1], ndim=1)
        if len(x) != len(y):
            raise UserError(f"{pair[0]} holds {len(x)} images but {pair[1]} holds {len(y)} labels")
        return x[..., None], validate_labels(y, len(classes), str(pair[1]))

    if "train" in group and "test" in group:
        x_tr, y_tr = read_pair(group["train"])
        x_te, y_te = read_pair(group["test"])
        return RawDataset(name=name, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, classes=list(classes))
    if len(group) != 1:
        listing = ", ".join(str(v[0]) for v in group.values())
        raise UserError(f"{name}: several IDX pairs and no train/t10k pair among them: {listing}")
    x, y = read_pair(next(iter(group.values())))
    raw = RawDataset(name=name, x_train=x, y_train=y, x_test=None, y_test=None, classes=list(classes))
    return split_off_test(raw, test_fraction=test_fraction)


@DATASETS.register("mnist", help="MNIST digits from IDX files (train-/t10k- pairs, gzipped or not)")
def load_mnist(
    *,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    images: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    test_images: str | os.PathLike[str] | None = None,
    test_labels: str | os.PathLike[str] | None = None,
    test_fraction: float = 0.2,
) -> RawDataset:
    """Load MNIST (LeCun et al., 1998) from any IDX image/label pair.

    ``data_dir`` is searched recursively for ``*images*idx3*`` / ``*labels*idx1*``
    (folders whose path mentions "fashion" are skipped unless ``data_dir`` points
    straight at them). When both a ``train-`` and a ``t10k-`` pair are found they
    are the training and test sets; a single pair is the whole pool and a fixed
    stratified test set (seed 0) is split off.

    Parameters
    ----------
    data_dir:
        Folder to search; ``None`` searches the default places.
    cache_dir:
        Unused (IDX files load quickly).
    images, labels:
        Explicit training (or pool) files instead of searching.
    test_images, test_labels:
        Explicit test files (optional, with ``images``/``labels``).
    test_fraction:
        Fraction held out when there is no test pair.

    Returns
    -------
    RawDataset
        uint8 images of shape ``(N, 28, 28, 1)``; classes ``"0"`` .. ``"9"``.
    """
    return _load_idx_dataset(
        "mnist", MNIST_CLASSES, data_dir=data_dir, images=images, labels=labels,
        test_images=test_images, test_labels=test_labels, test_fraction=test_fraction,
    )


@DATASETS.register("fashion-mnist", help="Fashion-MNIST from IDX files (same reader as mnist)")
def load_fashion_mnist(
    *,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    images: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    test_images: str | os.PathLike[str] | None = None,
    test_labels: str | os.PathLike[str] | None = None,
    test_fraction: float = 0.2,
) -> RawDataset:
    """Load Fashion-MNIST (Xiao et al., 2017) from IDX files.

    Same rules as :func:`load_mnist`, except that when searching, only folders
    whose path mentions "fashion" are used (unless ``data_dir`` points straight
    at a folder holding the files).

    Returns
    -------
    RawDataset
        uint8 images of shape ``(N, 28, 28, 1)`` with the Fashion-MNIST class names.
    """
    return _load_idx_dataset(
        "fashion-mnist", FASHION_MNIST_CLASSES, data_dir=data_dir, images=images, labels=labels,
        test_images=test_images, test_labels=test_labels, test_fraction=test_fraction,
    )
