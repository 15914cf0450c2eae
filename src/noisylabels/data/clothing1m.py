"""Clothing1M-style key lists (Xiao et al., "Learning from Massive Noisy Labeled Data for Image
Classification", CVPR 2015): images on disk plus text files of keys.

Layout of the root folder (the official release's names)::

    images/...                      the image files (any tree)
    noisy_label_kv.txt              "<key> <label>" per line: the noisy (web) labels
    clean_label_kv.txt              "<key> <label>" per line: the verified labels
    noisy_train_key_list.txt        one key per line: the noisy training set
    clean_train_key_list.txt        clean_val_key_list.txt  clean_test_key_list.txt
    category_names_eng.txt          optional: one class name per line, in label order

A key is the image's path relative to the root (``images/0/00/123.jpg``). The training pool
is ``train_list``'s keys (default ``noisy_train``, labels from ``noisy_label_kv.txt``; the
``clean_*`` lists take their labels from ``clean_label_kv.txt``); the test set is
``test_list``'s keys (default ``clean_test``) with clean labels. Where a training key also has
a clean label, ``y_train_clean`` holds it; when only some do, ``y_train_clean`` is ``None``
(the clean subset is too small to call ground truth) unless ``require_clean=True``.
``max_train`` keeps the first keys of the list (the full set does not fit in memory on a CPU
machine). Images of different sizes need ``image_size``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import RawDataset
from .registry import DATASETS, resolve_path

__all__ = ["read_key_values", "read_key_list", "load_clothing1m"]

_LISTS = ("noisy_train", "clean_train", "clean_val", "clean_test")


def read_key_values(path: Path) -> dict[str, int]:
    """``{key: label}`` from ``<key> <label>`` lines (blank lines skipped)."""
    out: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    for no, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise UserError(f"{path} line {no}: expected '<key> <label>', got {line!r}")
        try:
            lab = int(parts[1])
        except ValueError:
            raise UserError(f"{path} line {no}: label {parts[1]!r} is not an integer") from None
        if lab < 0:
            raise UserError(f"{path} line {no}: negative label {lab}")
        out[parts[0]] = lab
    return out


def read_key_list(path: Path) -> list[str]:
    """Keys, one per line."""
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}") from None


def _labels_for(keys: list[str], kv: dict[str, int], what: str, where: Path) -> np.ndarray:
    missing = [k for k in keys if k not in kv]
    if missing:
        raise UserError(f"{where}: {len(missing)} key(s) of the {what} list have no label "
                        f"(first {missing[0]!r})")
    return np.asarray([kv[k] for k in keys], dtype=np.int64)


@DATASETS.register("clothing1m", help="Clothing1M-style key lists (noisy_label_kv.txt, ...) with images on disk")
def load_clothing1m(*, data_dir: Path | None = None, cache_dir: Path | None = None, path: str | None = None,
                    train_list: str = "noisy_train", test_list: str = "clean_test", image_size: int | None = None,
                    max_train: int | None = None, require_clean: bool = False, workers: int | None = None,
                    cache: bool = True) -> RawDataset:
    """Load a Clothing1M-style root (see the module docstring).

    Parameters
    ----------
    path:
        The root folder (default ``data_dir``, or ``data_dir/clothing1m``).
    train_list, test_list:
        One of ``noisy_train``, ``clean_train``, ``clean_val``, ``clean_test``.
    image_size:
        Resize every image to this square side (bilinear).
    max_train:
        Keep only the first ``max_train`` training keys.
    require_clean:
        Error unless every training key has a clean label (then ``y_train_clean`` is set).
    """
    from .imagefolder import ImageTree, decode_cached

    if path is not None:
        root = resolve_path(path, data_dir, what="clothing1m path")
    elif data_dir is not None:
        root = data_dir / "clothing1m" if (data_dir / "clothing1m" / "noisy_label_kv.txt").is_file() else data_dir
    else:
        raise UserError("clothing1m needs path= (the folder with noisy_label_kv.txt) or --data-dir")
    for name, value in (("train_list", train_list), ("test_list", test_list)):
        if value not in _LISTS:
            raise UserError(f"clothing1m {name} must be one of {', '.join(_LISTS)}; got {value!r}")
    kv_file = {"noisy": root / "noisy_label_kv.txt", "clean": root / "clean_label_kv.txt"}
    for f in kv_file.values():
        if not f.is_file():
            raise UserError(f"clothing1m: {f} not found (expected the Clothing1M key files in {root})")
    noisy_kv, clean_kv = read_key_values(kv_file["noisy"]), read_key_values(kv_file["clean"])

    def keys_of(which: str) -> list[str]:
        f = root / f"{which}_key_list.txt"
        if not f.is_file():
            raise UserError(f"clothing1m: {f} not found")
        return read_key_list(f)

    train_keys = keys_of(train_list)
    if max_train is not None:
        if int(max_train) < 1:
            raise UserError(f"max_train must be >= 1, got {max_train!r}")
        train_keys = train_keys[: int(max_train)]
    test_keys = keys_of(test_list)
    y_train = _labels_for(train_keys, noisy_kv if train_list == "noisy_train" else clean_kv, train_list, root)
    y_test = _labels_for(test_keys, clean_kv if test_list.startswith("clean") else noisy_kv, test_list, root)
    has_clean = [k in clean_kv for k in train_keys]
    y_clean = None
    if all(has_clean):
        y_clean = np.asarray([clean_kv[k] for k in train_keys], dtype=np.int64)
    elif require_clean:
        raise UserError(f"clothing1m: {len(has_clean) - sum(has_clean)} training keys have no clean label")
    names_file = root / "category_names_eng.txt"
    k = int(max(y_train.max(), y_test.max())) + 1
    classes = read_key_list(names_file) if names_file.is_file() else [str(i) for i in range(k)]
    if k > len(classes):
        raise UserError(f"clothing1m: label {k - 1} but {names_file} names {len(classes)} classes")
    for keys in (train_keys, test_keys):
        for key in keys:
            if not (root / key).is_file():
                raise UserError(f"clothing1m: image {root / key} not found")
    tree = ImageTree(source=root, is_zip=False, prefix="", splits={}, stats={
        key: (int(st.st_size), int(st.st_mtime_ns)) for key in train_keys + test_keys
        for st in [os.stat(root / key)]})
    opts = dict(image_size=image_size, workers=workers, cache_dir=cache_dir, cache=cache)
    x_train = decode_cached(tree, [(key, "") for key in train_keys], split=f"c1m-{train_list}", **opts)
    x_test = decode_cached(tree, [(key, "") for key in test_keys], split=f"c1m-{test_list}", **opts)
    if x_test.shape[1:3] != x_train.shape[1:3]:
        raise UserError("clothing1m: training and test images differ in size; pass image_size=")
    if x_test.shape[3] != x_train.shape[3]:
        x_train, x_test = (np.repeat(a, 3, axis=3) if a.shape[3] == 1 else a for a in (x_train, x_test))
    return RawDataset(name="clothing1m", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                      classes=classes, paths_train=list(train_keys), paths_test=list(test_keys),
                      y_train_clean=y_clean)
