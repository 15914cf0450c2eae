"""Images in class folders, from a directory or a ``.zip``, decoded once and cached.

Layout: ``[prefix/]split/class/image`` with splits ``train`` and ``test``
(``val``/``valid``/``validation`` splits are recognised and ignored: the
validation set is carved out of the training pool by
:func:`noisylabels.data.splits.make_splits`). A tree with no split folders,
``[prefix/]class/image``, is a training set (or, given as ``test_path``, a
test set). Hidden files, ``__MACOSX`` and non-image files are skipped.

Decoding (:mod:`noisylabels.data.decode`) uses Pillow with a pool of worker
processes (or threads where ``fork`` is unavailable) on chunks of files; the
decoded uint8 array is cached by :mod:`noisylabels.data.cache`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import UNLABELED_CLASS, RawDataset, split_off_test
from .cache import cache_key, cached_array, file_fingerprint
from .decode import close_zip, decode_chunk, decode_images, open_image
from .labels_csv import read_labels_csv
from .registry import DATASETS, resolve_path

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageTree",
    "list_image_files",
    "scan_image_tree",
    "decode_images",
    "decode_cached",
    "load_imagefolder",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
_SPLITS = {"train": "train", "test": "test", "val": "val", "valid": "val", "validation": "val"}


@dataclass
class ImageTree:
    """The image files found in a folder or zip.

    Attributes
    ----------
    source:
        The folder or ``.zip``.
    is_zip:
        Whether ``source`` is a zip archive.
    prefix:
        Folders above the split (or class) level, e.g. ``"cifar10"``; ``""`` if none.
    splits:
        ``{split: [(relpath, class), ...]}`` sorted by path; split ``""`` holds
        the files of a tree without split folders.
    stats:
        For folders: ``{relpath: (size, mtime_ns)}`` (part of the cache key).
    """

    source: Path
    is_zip: bool
    prefix: str
    splits: dict[str, list[tuple[str, str]]]
    stats: dict[str, tuple[int, int]] = field(default_factory=dict)


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def list_image_files(src: Path) -> tuple[list[str], dict[str, tuple[int, int]], bool]:
    """Every image file under a folder or in a zip, at any depth (hidden files, hidden
    folders and ``__MACOSX`` skipped): ``(relative paths, {path: (size, mtime_ns)}, is_zip)``."""
    stats: dict[str, tuple[int, int]] = {}
    if src.is_file():
        try:
            with zipfile.ZipFile(src) as zf:
                names = [i.filename for i in zf.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError) as err:
            raise UserError(f"cannot read zip file {src}: {err}") from None
        names = [n for n in names if _is_image(n) and not n.startswith("__MACOSX/")
                 and not any(part.startswith(".") for part in n.split("/")[:-1])]
        return names, stats, True
    if not src.is_dir():
        raise UserError(f"image folder {src} does not exist")
    names = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        rel_root = os.path.relpath(root, src).replace(os.sep, "/")
        for f in sorted(files):
            rel = f if rel_root == "." else f"{rel_root}/{f}"
            if _is_image(rel):
                st = os.stat(os.path.join(root, f))
                stats[rel] = (int(st.st_size), int(st.st_mtime_ns))
                names.append(rel)
    return names, stats, False


def scan_image_tree(path: str | os.PathLike[str]) -> ImageTree:
    """List the image files of a folder or zip and sort them into splits and classes.

    Parameters
    ----------
    path:
        A folder or a ``.zip`` file.

    Returns
    -------
    ImageTree

    Raises
    ------
    UserError
        Missing path, unreadable zip, no images, or images under several
        different prefixes.
    """
    src = Path(path)
    names, stats, is_zip = list_image_files(src)
    split_files: dict[tuple[str, str], list[tuple[str, str]]] = {}
    plain_files: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        if not _is_image(name) or name.startswith("__MACOSX/"):
            continue
        parts = name.split("/")
        if any(p.startswith(".") for p in parts[:-1]):
            continue
        if len(parts) >= 3 and parts[-3].lower() in _SPLITS:
            key = ("/".join(parts[:-3]), _SPLITS[parts[-3].lower()])
            split_files.setdefault(key, []).append((name, parts[-2]))
        elif len(parts) >= 2:
            plain_files.setdefault("/".join(parts[:-2]), []).append((name, parts[-2]))
    if split_files:
        prefixes = sorted({k[0] for k in split_files})
        if len(prefixes) > 1:
            raise UserError(
                f"{src}: split folders under several roots ({', '.join(p or '.' for p in prefixes)}); "
                "point path= at one of them"
            )
        splits = {s: sorted(v) for (_, s), v in split_files.items()}
        prefix = prefixes[0]
    elif plain_files:
        prefixes = sorted(plain_files)
        if len(prefixes) > 1:
            shown = ", ".join(p or "." for p in prefixes[:5])
            raise UserError(
                f"{src}: expected [prefix/]split/class/image or [prefix/]class/image, "
                f"but class folders sit under several roots ({shown})"
            )
        prefix = prefixes[0]
        splits = {"": sorted(plain_files[prefix])}
    elif names:  # images, but none inside a class folder: the labels must come from a file
        raise UserError(f"{src} holds {len(names)} image(s) but no class folders ([prefix/]<class>/<image>), so "
                        f"nothing says their labels: give a labels CSV of path,label rows with --set "
                        f"data.options.labels_csv=FILE (see `noisylabels noise --csv` for the format), or, to "
                        f"pretrain without labels, --set data.options.unlabeled=true with noisylabels pretrain")
    else:
        raise UserError(f"no images found in {src} (expected [prefix/]train/<class>/<image>, or any images with "
                        f"a labels CSV: --set data.options.labels_csv=FILE)")
    return ImageTree(source=src, is_zip=is_zip, prefix=prefix, splits=splits, stats=stats)


def decode_cached(
    tree: ImageTree,
    files: list[tuple[str, str]],
    *,
    split: str,
    image_size: int | None,
    workers: int | None,
    cache_dir: Path | None,
    cache: bool,
) -> np.ndarray:
    """Decode ``files`` of ``tree`` (:func:`~noisylabels.data.decode.decode_images`) through the array cache.

    The key is the source (the zip's fingerprint or the folder's path), ``split``, every file name
    with its size/mtime stats, and ``image_size``.
    """
    names = [f for f, _ in files]
    h = hashlib.sha256()
    for f in names:
        h.update(f.encode("utf-8", "surrogateescape"))
        h.update(repr(tree.stats.get(f)).encode())
        h.update(b"\0")
    if tree.is_zip:
        fp = file_fingerprint(tree.source)
    else:
        fp = [str(tree.source.resolve())]
    key = cache_key("imagefolder", source=fp, split=split, files=h.hexdigest(), image_size=image_size)
    return cached_array(
        lambda: decode_images(tree.source, names, is_zip=tree.is_zip, image_size=image_size, workers=workers),
        key=key, cache_dir=cache_dir, name=f"imagefolder-{split or 'train'}",
        expect_len=len(names), enabled=cache,
    )


def _load_csv_defined(src: Path, csv_path: Path, *, classes: Sequence[str] | None, force: bool,
                      image_size: int | None, workers: int | None, cache_dir: Path | None,
                      cache: bool) -> RawDataset | None:
    """The training pool defined by a labels CSV over any layout (``classes_from='csv'``), or
    ``None`` when ``auto`` finds a class-folder tree whose classes the CSV uses."""
    from .labels_csv import labels_from_csv_rows, read_csv_rows

    if not force:
        try:
            scan_image_tree(src)
            return None  # class folders: they define the classes (a label that is none of them is an error)
        except UserError:
            pass  # no [split/]class/file structure (e.g. a flat folder): the CSV defines the classes
    rows = read_csv_rows(csv_path)
    if isinstance(classes, str):
        raise UserError("classes must be a list of class names, not a string")
    names_all, stats, is_zip = list_image_files(src)
    lookup: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, rel in enumerate(names_all):
        lookup.setdefault(rel, i)
        parts = rel.split("/", 1)
        if len(parts) == 2:  # a zip (or folder) wrapping everything in one top folder
            first.setdefault(parts[1], i)
    positions, seen = [], {}
    for row_no, rel, _ in rows:
        pos = lookup.get(rel, first.get(rel))
        if pos is None:
            raise UserError(f"labels_csv {csv_path} row {row_no}: path {rel!r} is not an image in {src}")
        if pos in seen:
            raise UserError(f"labels_csv {csv_path} row {row_no}: path {rel!r} already listed in row {seen[pos]}")
        seen[pos] = row_no
        positions.append(pos)
    labels, class_list = labels_from_csv_rows(rows, classes=classes, where=str(csv_path))
    files = [(names_all[p], class_list[int(y)]) for p, y in zip(positions, labels)]
    tree = ImageTree(source=src, is_zip=is_zip, prefix="", splits={"": files}, stats=stats)
    x = decode_cached(tree, files, split="csv", image_size=image_size, workers=workers, cache_dir=cache_dir,
                       cache=cache)
    return RawDataset(name="imagefolder", x_train=x, y_train=labels, x_test=None, y_test=None, classes=class_list,
                      paths_train=[f for f, _ in files], paths_test=None, y_train_clean=None)
def _lazy_images(tree: ImageTree, files: list[tuple[str, str]], *, image_size: int | None):
    """The files as :class:`~noisylabels.data.stream.StreamImages` (decoded later, in workers)."""
    from .stream import StreamImages

    names = [f for f, _ in files]
    src = str(tree.source)
    try:
        if image_size is not None:
            if int(image_size) < 1:
                raise UserError(f"image_size must be a positive integer, got {image_size!r}")
            size = (int(image_size), int(image_size))
        else:
            size = open_image(src, is_zip=tree.is_zip, name=names[0]).size
        _, grey = decode_chunk(src, tree.is_zip, names[:64], size, image_size is not None)
    finally:
        if tree.is_zip:
            close_zip(src)
    return StreamImages(source=src, is_zip=tree.is_zip, names=tuple(names), size=size,
                        channels=1 if bool(grey.all()) else 3, resize=image_size is not None)


def _decoded_bytes(tree: ImageTree, files: list[tuple[str, str]], image_size: int | None) -> int:
    """What decoding ``files`` would take in memory (3 channels; the first image's size)."""
    if image_size is not None:
        w = h = int(image_size)
    else:
        src = str(tree.source)
        try:
            w, h = open_image(src, is_zip=tree.is_zip, name=files[0][0], where=src).size
        finally:
            if tree.is_zip:
                close_zip(src)
    return len(files) * w * h * 3


def _load_unlabeled(src: Path, *, image_size: int | None, workers: int | None, cache_dir: Path | None, cache: bool,
                    stream: bool | str, memory_budget_gb: float | None) -> RawDataset:
    """Every image under ``src`` as a training pool without labels (``unlabeled=True``)."""
    names, stats, is_zip = list_image_files(src)
    if not names:
        raise UserError(f"no images found in {src}")
    files = [(n, UNLABELED_CLASS) for n in names]
    tree = ImageTree(source=src, is_zip=is_zip, prefix="", splits={"": files}, stats=stats)
    lazy = False
    if stream is not False:
        from .stream import memory_budget, should_stream

        lazy = should_stream(stream, decoded_bytes=_decoded_bytes(tree, files, image_size),
                             budget=memory_budget(memory_budget_gb))
    if lazy:
        x = _lazy_images(tree, files, image_size=image_size)
    else:
        x = decode_cached(tree, files, split="unlabeled", image_size=image_size, workers=workers, cache_dir=cache_dir,
                          cache=cache)
    return RawDataset(name="imagefolder", x_train=x, y_train=np.zeros(len(names), dtype=np.int64), x_test=None,
                      y_test=None, classes=[UNLABELED_CLASS], paths_train=list(names), paths_test=None,
                      has_labels=False)


@DATASETS.register("imagefolder", help="class-folder images from a directory or .zip ([prefix/]split/class/file)")
def load_imagefolder(
    *,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    path: str | os.PathLike[str] | None = None,
    test_path: str | os.PathLike[str] | None = None,
    classes: Sequence[str] | None = None,
    image_size: int | None = None,
    labels_csv: str | os.PathLike[str] | None = None,
    test_fraction: float | None = None,
    train_split: str = "train",
    test_split: str = "test",
    workers: int | None = None,
    cache: bool = True,
    classes_from: str = "auto",
    stream: bool | str = False,
    memory_budget_gb: float | None = None,
    unlabeled: bool = False,
) -> RawDataset:
    """Load an ImageFolder-style tree (a folder or a ``.zip``), or any folder plus a labels CSV.

    Parameters
    ----------
    data_dir:
        Used as ``path`` when ``path`` is not given, and to resolve relative
        ``path``/``test_path``/``labels_csv`` that do not exist as given.
    cache_dir:
        Cache folder for decoded images (default ``$NOISYLABELS_CACHE`` or
        ``~/.cache/noisylabels``).
    path:
        Folder or ``.zip`` with ``[prefix/]train/<class>/<image>`` (and
        optionally ``test/``), or ``[prefix/]<class>/<image>`` (all training).
    test_path:
        A second folder or zip whose ``test`` split (or split-less tree) is the
        test set, replacing any ``test`` split of ``path``.
    classes:
        Class names in label order; every class folder must be listed. Default:
        the folder names, sorted.
    image_size:
        Resize every image to a square of this side; needed when sizes differ.
    labels_csv:
        ``path,label`` CSV (see :mod:`noisylabels.data.labels_csv`): the
        training pool becomes its rows in order, ``y_train`` its labels and
        ``y_train_clean`` the folder classes of those files.
    test_fraction:
        When the tree has no test split: split off this fraction as a fixed
        stratified test set (seed 0). ``None`` leaves ``x_test`` as ``None``.
    train_split, test_split:
        Which split folders are the training pool and the test set (``train``,
        ``test`` or ``val``). E.g. ``train_split="test"`` reads a test-only tree
        as the pool (combine with ``test_fraction``).
    workers:
        Decoder processes (see :func:`decode_images`).
    cache:
        ``False`` skips the decoded-image cache.
    classes_from:
        With ``labels_csv``: ``"folders"`` (the class folders define the classes and
        ``y_train_clean``), ``"csv"`` (any layout, a flat folder too: the training pool is
        the CSV's files wherever they are, the classes are ``classes`` or those the CSV
        names, and there are no folder labels), or ``"auto"``: ``"folders"`` when the tree
        has class folders, ``"csv"`` when it has none (a flat folder).
    stream:
        ``True``: keep the images as :class:`~noisylabels.data.stream.StreamImages` (decoded
        on demand by data-loader workers; for data larger than memory); ``"auto"``: stream
        when the decoded train + test images exceed the memory budget; ``False``: decode
        everything now (the default; faster where the data fit).
    memory_budget_gb:
        The budget of ``stream="auto"`` (default: half the physical memory).
    unlabeled:
        Images without labels, for self-supervised pretraining (``noisylabels pretrain``): every
        image under ``path`` (a flat folder or any tree; folder names are not read as classes) is the
        training pool, with no test set and no labels (:attr:`RawDataset.has_labels` False).

    Returns
    -------
    RawDataset
        uint8 NHWC images; ``paths_train``/``paths_test`` are the files' paths
        inside their source.

    Raises
    ------
    UserError
        Missing path, no images, unknown class folder, missing or undecodable
        file (named), mixed sizes without ``image_size``, bad labels CSV row.
    """
    if path is None:
        if data_dir is None:
            raise UserError("imagefolder needs path= (a folder or .zip) or data_dir=")
        src = data_dir
        if not src.exists():
            raise UserError(f"data_dir {src} does not exist")
    else:
        src = resolve_path(path, data_dir, what="imagefolder path")
    splits_ = {}
    for opt, value in (("train_split", train_split), ("test_split", test_split)):
        if str(value).lower() not in _SPLITS:
            raise UserError(f"{opt} must be one of train, test, val; got {value!r}")
        splits_[opt] = _SPLITS[str(value).lower()]
    tr_split, te_split = splits_["train_split"], splits_["test_split"]
    if not isinstance(unlabeled, bool):
        raise UserError(f"unlabeled must be true or false, got {unlabeled!r}")
    if unlabeled:
        given = [k for k, v in (("labels_csv", labels_csv), ("test_path", test_path), ("classes", classes),
                                ("test_fraction", test_fraction)) if v is not None]
        if given:
            raise UserError(f"imagefolder unlabeled=true reads images without labels; {', '.join(given)} would be "
                            f"ignored: remove it, or drop unlabeled to train on labels")
        return _load_unlabeled(src, image_size=image_size, workers=workers, cache_dir=cache_dir, cache=cache,
                               stream=stream, memory_budget_gb=memory_budget_gb)
    if classes_from not in ("auto", "folders", "csv"):
        raise UserError(f"classes_from must be auto, folders or csv; got {classes_from!r}")
    if classes_from != "folders" and labels_csv is not None:
        csv_path = resolve_path(labels_csv, data_dir, what="labels_csv")
        raw = _load_csv_defined(src, csv_path, classes=classes, force=classes_from == "csv", image_size=image_size,
                                workers=workers, cache_dir=cache_dir, cache=cache)
        if raw is not None:
            if test_path is not None:
                raise UserError("test_path with a CSV-defined data set is not supported; carve the test split "
                                "(test_fraction) or use class folders")
            if test_fraction is not None:
                raw = split_off_test(raw, test_fraction=test_fraction)
            return raw
    tree = scan_image_tree(src)
    train_files = tree.splits.get(tr_split) or tree.splits.get("")
    if not train_files:
        have = ", ".join(sorted(s for s in tree.splits if s)) or "none"
        raise UserError(
            f"no {tr_split!r} images in {src} (expected [prefix/]{tr_split}/<class>/<image>; "
            f"split folders found: {have}; see train_split=)"
        )
    test_tree: ImageTree | None = None
    test_files: list[tuple[str, str]] | None = None
    if test_path is not None:
        test_tree = scan_image_tree(resolve_path(test_path, data_dir, what="imagefolder test_path"))
        test_files = test_tree.splits.get(te_split) or test_tree.splits.get("")
        if not test_files:
            raise UserError(
                f"no {te_split!r} images in {test_tree.source} (expected [prefix/]{te_split}/<class>/<image>)"
            )
    elif te_split != tr_split and tree.splits.get(te_split):
        test_tree, test_files = tree, tree.splits[te_split]

    found = sorted({c for _, c in train_files} | {c for _, c in (test_files or [])})
    if classes is None:
        class_list = found
    else:
        if isinstance(classes, str):
            raise UserError("classes must be a list of class names, not a string")
        class_list = [str(c) for c in classes]
        if len(set(class_list)) != len(class_list):
            raise UserError(f"classes has duplicates: {class_list}")
        unknown = [c for c in found if c not in set(class_list)]
        if unknown:
            raise UserError(f"class folder(s) {', '.join(unknown)} not in classes={class_list}")
    class_id = {c: k for k, c in enumerate(class_list)}

    opts = dict(image_size=image_size, workers=workers, cache_dir=cache_dir, cache=cache)
    lazy = False
    if stream is not False:
        from .stream import memory_budget, should_stream

        need = _decoded_bytes(tree, train_files, image_size)
        if test_files:
            need += _decoded_bytes(test_tree, test_files, image_size)
        lazy = should_stream(stream, decoded_bytes=need, budget=memory_budget(memory_budget_gb))

    def images_of(t: ImageTree, files: list[tuple[str, str]], split: str):
        if lazy:
            return _lazy_images(t, files, image_size=image_size)
        return decode_cached(t, files, split=split, **opts)

    x_train = images_of(tree, train_files, tr_split)
    y_train = np.asarray([class_id[c] for _, c in train_files], dtype=np.int64)
    paths_train = [f for f, _ in train_files]
    y_clean = None
    if labels_csv is not None:
        csv_path = resolve_path(labels_csv, data_dir, what="labels_csv")
        pos, labels = read_labels_csv(csv_path, classes=class_list, train_paths=paths_train, prefix=tree.prefix)
        x_train, y_clean, y_train = x_train[pos], y_train[pos], labels
        paths_train = [paths_train[i] for i in pos]

    x_test = y_test = paths_test = None
    if test_tree is not None and test_files:
        x_test = images_of(test_tree, test_files, te_split)
        y_test = np.asarray([class_id[c] for _, c in test_files], dtype=np.int64)
        paths_test = [f for f, _ in test_files]
        if x_test.shape[1:3] != x_train.shape[1:3]:
            raise UserError(
                f"test images are {x_test.shape[2]}x{x_test.shape[1]} but training images "
                f"{x_train.shape[2]}x{x_train.shape[1]}; pass image_size="
            )
        if x_test.shape[3] != x_train.shape[3]:  # one side all grey, the other colour
            if lazy:  # the decoder yields grey as three equal channels
                x_test, x_train = (dataclasses.replace(a, channels=3) for a in (x_test, x_train))
            elif x_test.shape[3] == 1:
                x_test = np.repeat(x_test, 3, axis=3)
            else:
                x_train = np.repeat(x_train, 3, axis=3)
    raw = RawDataset(
        name="imagefolder", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        classes=class_list, paths_train=paths_train, paths_test=paths_test, y_train_clean=y_clean,
    )
    if raw.x_test is None and test_fraction is not None:
        raw = split_off_test(raw, test_fraction=test_fraction)
    return raw
