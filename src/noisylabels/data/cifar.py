"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009, "Learning Multiple Layers of Features from Tiny Images").

Accepted sources, searched in this order in each candidate data folder:

* the official python-pickle folders ``cifar-10-batches-py/`` (``data_batch_*``,
  ``test_batch``, ``batches.meta``) and ``cifar-100-python/`` (``train``,
  ``test``, ``meta``; fine labels) -- or ``data_dir`` pointing at such a folder;
* their tarballs ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``, read
  directly with :mod:`tarfile` (no extraction);
* CIFAR-10 only: the JPEG ImageFolder zips ``cifar10-train-jpeg.zip`` (and
  ``cifar10-test-jpeg.zip``), read with the ``imagefolder`` reader, classes in
  CIFAR-10 label order. Only this source accepts ``labels_csv``.

The pickles are read with a restricted unpickler (:func:`noisylabels.io.safe_pickle.restricted_load`):
dicts, lists, bytes, strings, numbers and numpy arrays only; a file naming any other callable
is a one-line error and nothing in it runs.
"""

from __future__ import annotations

import os
import pickle
import re
import tarfile
import zlib
from pathlib import Path
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from ..errors import UserError
from .base import RawDataset, validate_labels
from .registry import DATASETS, locate_data
from ..io.safe_pickle import restricted_load

__all__ = [
    "CIFAR10_CLASSES",
    "read_cifar_batch",
    "load_cifar10",
    "load_cifar100",
]

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]

_SOURCES = ("auto", "pickle", "tar", "jpeg")
_BATCH_RE = re.compile(r"^data_batch_(\d+)$")


def _get(d: dict[Any, Any], key: str, where: str) -> Any:
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise UserError(f"{where}: missing key {key!r} (not a CIFAR python pickle?)")


def _unpickle(fh: BinaryIO, where: str) -> dict[Any, Any]:
    try:
        obj = restricted_load(fh, encoding="bytes")  # a crafted batch can name no callable: nothing runs
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, OSError, zlib.error) as err:
        raise UserError(f"cannot read CIFAR file {where}: {err or type(err).__name__}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def read_cifar_batch(batch: dict[Any, Any], *, label_key: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Convert one unpickled CIFAR batch dict to NHWC uint8 images and labels.

    Parameters
    ----------
    batch:
        The dict with ``b"data"`` (uint8, ``(N, 3072)``: the red, green and blue
        32x32 planes, row-major) and the label list ``label_key``.
    label_key:
        ``"labels"`` (CIFAR-10) or ``"fine_labels"`` (CIFAR-100).
    where:
        File name for error messages.

    Returns
    -------
    tuple of numpy.ndarray
        Images ``(N, 32, 32, 3)`` uint8 and labels ``(N,)`` (not yet range-checked).
    """
    data = np.asarray(_get(batch, "data", where))
    labels = np.asarray(_get(batch, label_key, where))
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise UserError(f"{where}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.ndim != 1 or len(labels) != len(data):
        raise UserError(f"{where}: {len(data)} images but {labels.size} labels")
    x = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return x, labels.astype(np.int64)


def _names(meta: dict[Any, Any], key: str, where: str) -> list[str]:
    names = _get(meta, key, where)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


class _Members:
    """Uniform access to the pickles of a CIFAR folder or tarball.

    A tarball is read in one sequential pass (seeking back in a ``.tar.gz``
    would decompress it again), unpickling the members ``wanted`` selects.
    """

    def __init__(self, root: Path, wanted: Callable[[str], bool]) -> None:
        self.root = root
        self.is_tar = root.is_file()
        self.names: dict[str, str] = {}
        self._loaded: dict[str, dict[Any, Any]] = {}
        if not self.is_tar:
            for p in root.iterdir():
                if p.is_file():
                    self.names[p.name] = p.name
            return
        try:
            with tarfile.open(root, "r:*") as tar:
                for m in tar:
                    base = m.name.rsplit("/", 1)[-1]
                    if not m.isfile() or base in self.names:
                        continue
                    self.names[base] = m.name
                    if wanted(base):
                        fh = tar.extractfile(m)
                        if fh is None:
                            raise UserError(f"cannot read {root}:{m.name}")
                        with fh:
                            self._loaded[base] = _unpickle(fh, f"{root}:{m.name}")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise UserError(f"cannot read tarball {root}: {err}") from None

    def load(self, base: str) -> dict[Any, Any]:
        where = f"{self.root}/{base}" if not self.is_tar else f"{self.root}:{self.names.get(base, base)}"
        if base not in self.names:
            raise UserError(f"CIFAR file {where} is missing")
        if self.is_tar:
            return self._loaded[base]
        with open(self.root / base, "rb") as fh:
            return _unpickle(fh, where)


def _find(d: Path, *, folder: str, tarball: str, marker: str, source: str,
          jpeg: str | None = None) -> tuple[str, Path] | None:
    if d.is_file():
        low = d.name.lower()
        if source in ("auto", "tar") and (low.endswith(".tar.gz") or low.endswith(".tgz") or low.endswith(".tar")):
            return "tar", d
        if jpeg and source in ("auto", "jpeg") and low.endswith(".zip"):
            return "jpeg", d
        return None
    if source in ("auto", "pickle"):
        for cand in (d, d / folder):
            if (cand / marker).is_file():
                return "pickle", cand
    if source in ("auto", "tar") and (d / tarball).is_file():
        return "tar", d / tarball
    if jpeg and source in ("auto", "jpeg") and (d / jpeg).is_file():
        return "jpeg", d / jpeg
    return None


def _check_source(source: str) -> None:
    if source not in _SOURCES:
        raise UserError(f"unknown CIFAR source {source!r}; valid: {', '.join(_SOURCES)}")


@DATASETS.register("cifar10", help="CIFAR-10: pickle folder, cifar-10-python.tar.gz, or the JPEG zips")
def load_cifar10(
    *,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    source: str = "auto",
    labels_csv: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> RawDataset:
    """Load CIFAR-10 (50,000 training and 10,000 test 32x32 colour images).

    Parameters
    ----------
    data_dir:
        Folder holding one of the sources (or the source itself); ``None``
        searches the default places.
    cache_dir:
        Cache for decoded JPEGs (JPEG source only).
    source:
        ``"auto"`` (first found of pickle folder, tarball, JPEG zips), or force
        ``"pickle"``, ``"tar"`` or ``"jpeg"``.
    labels_csv:
        A ``path,label`` CSV replacing the training labels (JPEG source only;
        see :func:`noisylabels.data.imagefolder.load_imagefolder`). A relative path that does
        not exist as given is looked up in the folder the JPEG zips were found in, so a suite
        can name ``cifar10n-random1.csv`` beside the shared data wherever that folder is.
    workers:
        Decoder processes for the JPEG source (see ``imagefolder``).

    Returns
    -------
    RawDataset
        ``(N, 32, 32, 3)`` uint8 images; classes in CIFAR-10 label order.
    """
    _check_source(source)
    kind, path = locate_data(
        data_dir,
        lambda d: _find(d, folder="cifar-10-batches-py", tarball="cifar-10-python.tar.gz",
                        marker="data_batch_1", source=source, jpeg="cifar10-train-jpeg.zip"),
        what="CIFAR-10 (cifar-10-batches-py/, cifar-10-python.tar.gz or cifar10-train-jpeg.zip)",
    )
    if kind == "jpeg":
        from .imagefolder import load_imagefolder

        test_zip = path.with_name(path.name.replace("train", "test")) if "train" in path.name else None
        raw = load_imagefolder(
            data_dir=path.parent,  # resolves a relative labels_csv against the data folder
            path=path,
            test_path=test_zip if test_zip is not None and test_zip.is_file() else None,
            classes=list(CIFAR10_CLASSES),
            labels_csv=labels_csv,
            cache_dir=cache_dir,
            workers=workers,
        )
        raw.name = "cifar10"
        return raw
    if labels_csv is not None:
        raise UserError(
            f"cifar10: labels_csv needs the JPEG ImageFolder source (file paths); found the {kind} source {path}"
        )
    members = _Members(path, lambda b: b in ("batches.meta", "test_batch") or _BATCH_RE.match(b) is not None)
    batches = sorted(
        (int(m.group(1)), n) for n in members.names if (m := _BATCH_RE.match(n)) is not None
    )
    if not batches:
        raise UserError(f"no data_batch_* files in {path}")
    classes = _names(members.load("batches.meta"), "label_names", f"{path}/batches.meta")
    xs, ys = [], []
    for _, b in batches:
        x, y = read_cifar_batch(members.load(b), label_key="labels", where=f"{path}/{b}")
        xs.append(x)
        ys.append(validate_labels(y, len(classes), f"{path}/{b}"))
    x_te, y_te = read_cifar_batch(members.load("test_batch"), label_key="labels", where=f"{path}/test_batch")
    y_te = validate_labels(y_te, len(classes), f"{path}/test_batch")
    return RawDataset(
        name="cifar10", x_train=np.concatenate(xs), y_train=np.concatenate(ys),
        x_test=x_te, y_test=y_te, classes=classes,
    )


@DATASETS.register("cifar100", help="CIFAR-100 (fine labels): cifar-100-python/ or cifar-100-python.tar.gz")
def load_cifar100(
    *,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    source: str = "auto",
) -> RawDataset:
    """Load CIFAR-100 with its 100 fine labels (50,000 training, 10,000 test images).

    Parameters
    ----------
    data_dir:
        Folder holding ``cifar-100-python/`` or ``cifar-100-python.tar.gz`` (or
        that folder / tarball itself); ``None`` searches the default places.
    cache_dir:
        Unused.
    source:
        ``"auto"``, ``"pickle"`` or ``"tar"``.

    Returns
    -------
    RawDataset
        ``(N, 32, 32, 3)`` uint8 images; class names from ``meta``'s ``fine_label_names``.
    """
    _check_source(source)
    if source == "jpeg":
        raise UserError("cifar100 has no JPEG source; use source='pickle' or 'tar'")

    def finder(d: Path) -> tuple[str, Path] | None:
        found = _find(d, folder="cifar-100-python", tarball="cifar-100-python.tar.gz",
                      marker="meta", source=source)
        if found and found[0] == "pickle" and not (found[1] / "train").is_file():
            return None
        return found

    _, path = locate_data(data_dir, finder, what="CIFAR-100 (cifar-100-python/ or cifar-100-python.tar.gz)")
    members = _Members(path, lambda b: b in ("meta", "train", "test"))
    classes = _names(members.load("meta"), "fine_label_names", f"{path}/meta")
    x_tr, y_tr = read_cifar_batch(members.load("train"), label_key="fine_labels", where=f"{path}/train")
    x_te, y_te = read_cifar_batch(members.load("test"), label_key="fine_labels", where=f"{path}/test")
    return RawDataset(
        name="cifar100",
        x_train=x_tr, y_train=validate_labels(y_tr, len(classes), f"{path}/train"),
        x_test=x_te, y_test=validate_labels(y_te, len(classes), f"{path}/test"),
        classes=classes,
    )
