"""Tests for noisylabels.data on tiny fixtures written into tmp_path."""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from noisylabels.data import (
    AugmentSpec,
    BatchLoader,
    RawDataset,
    channel_stats,
    create_dataset,
    list_datasets,
    load_splits,
    make_splits,
    random_crop,
    random_hflip,
    save_splits,
    split_off_test,
    to_nchw,
    validate_labels,
)
from noisylabels.data import cache as cache_mod
from noisylabels.data import decode as decode_mod
from noisylabels.data import imagefolder as imagefolder_mod
from noisylabels.data.registry import candidate_data_dirs
from noisylabels.errors import UserError


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Keep caches and data lookups inside tmp_path."""
    monkeypatch.setenv("NOISYLABELS_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.delenv("NOISYLABELS_DATA_DIR", raising=False)


# ----------------------------------------------------------------- fixtures

def _cifar_batch(rng, n, label_key, num_classes):
    imgs = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    data = imgs.transpose(0, 3, 1, 2).reshape(n, 3072)  # official: R, G, B planes row-major
    labels = [int(v) for v in rng.integers(0, num_classes, size=n)]
    return {b"data": data, label_key: labels, b"batch_label": b"x"}, imgs, np.array(labels)


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


@pytest.fixture
def cifar10_dir(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "c10" / "cifar-10-batches-py"
    root.mkdir(parents=True)
    names = [f"class{k}" for k in range(10)]
    xs, ys = [], []
    for b in (1, 2):
        d, x, y = _cifar_batch(rng, 7, b"labels", 10)
        _dump(root / f"data_batch_{b}", d)
        xs.append(x)
        ys.append(y)
    d, xt, yt = _cifar_batch(rng, 5, b"labels", 10)
    _dump(root / "test_batch", d)
    _dump(root / "batches.meta", {b"label_names": [n.encode() for n in names], b"num_vis": 3072})
    return root.parent, np.concatenate(xs), np.concatenate(ys), xt, yt, names


def _write_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).save(path)


def _make_folder(root: Path, *, prefix="ds", classes=("cat", "dog", "emu"), n_train=4, n_test=2, grey=False):
    rng = np.random.default_rng(1)
    c = 1 if grey else 3
    truth = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in classes:
            for k in range(n):
                arr = rng.integers(0, 256, size=(6, 5, c), dtype=np.uint8)
                rel = f"{prefix}/{split}/{cls}/{k:04d}.png" if prefix else f"{split}/{cls}/{k:04d}.png"
                _write_png(root / rel, arr)
                truth[rel] = arr
    return truth


def _zip_dir(src: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, p.relative_to(src).as_posix())
    return dest


def _idx_bytes(arr: np.ndarray) -> bytes:
    head = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def _write_idx(path: Path, arr: np.ndarray, *, gz: bool) -> None:
    data = _idx_bytes(arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


# ----------------------------------------------------------------- registry / base

def test_list_and_unknown_name():
    names = list_datasets()
    for n in ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder"):
        assert n in names
    with pytest.raises(UserError, match="unknown dataset 'nope'.*digits"):
        create_dataset("nope")


def test_unknown_option():
    with pytest.raises(UserError, match="no option.*'bogus'"):
        create_dataset("digits", bogus=1)


def test_missing_data_dir(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        create_dataset("cifar10", data_dir=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="could not find CIFAR-10.*looked in"):
        create_dataset("cifar10", data_dir=tmp_path / "empty")


def test_env_data_dir(tmp_path, monkeypatch, cifar10_dir):
    monkeypatch.setenv("NOISYLABELS_DATA_DIR", str(cifar10_dir[0]))
    assert candidate_data_dirs() == [cifar10_dir[0]]
    assert len(create_dataset("cifar10").x_train) == 14


def test_validate_labels():
    assert validate_labels(np.array([0, 2], dtype=np.int32), 3, "y").dtype == np.int64
    with pytest.raises(UserError, match="label 3 .*outside"):
        validate_labels(np.array([0, 3]), 3, "y")
    with pytest.raises(UserError, match="outside"):
        validate_labels(np.array([-1]), 3, "y")
    with pytest.raises(UserError, match="integers"):
        validate_labels(np.array([0.5]), 3, "y")


def test_split_off_test_fixed_and_stratified():
    y = np.repeat(np.arange(4), 25)
    raw = RawDataset("t", np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1), y, None, None, list("abcd"))
    a = split_off_test(raw, test_fraction=0.2)
    b = split_off_test(raw, test_fraction=0.2)
    assert len(a.y_test) == 20 and len(a.y_train) == 80
    assert np.array_equal(a.x_test, b.x_test)
    assert np.bincount(a.y_test).tolist() == [5, 5, 5, 5]
    assert not set(a.x_train.ravel()) & set(a.x_test.ravel())
    assert split_off_test(a, test_fraction=0.5) is a
    with pytest.raises(UserError):
        split_off_test(raw, test_fraction=1.0)


# ----------------------------------------------------------------- digits

def test_digits():
    raw = create_dataset("digits")
    assert raw.x_train.dtype == np.uint8 and raw.x_train.shape[1:] == (8, 8, 1)
    assert len(raw.x_train) + len(raw.x_test) == 1797
    assert raw.x_train.max() == 255 and raw.y_train.dtype == np.int64
    assert abs(len(raw.x_test) - 0.2 * 1797) <= 1
    again = create_dataset("digits")
    assert np.array_equal(raw.y_test, again.y_test)


# ----------------------------------------------------------------- mnist

@pytest.mark.parametrize("gz", [True, False])
def test_mnist_train_and_test(tmp_path, gz):
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    xtr, ytr = rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 10, 12)
    xte, yte = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 10, 5)
    d = tmp_path / "MNIST" / "raw"
    _write_idx(d / f"train-images-idx3-ubyte{sfx}", xtr, gz=gz)
    _write_idx(d / f"train-labels-idx1-ubyte{sfx}", ytr, gz=gz)
    _write_idx(d / f"t10k-images-idx3-ubyte{sfx}", xte, gz=gz)
    _write_idx(d / f"t10k-labels-idx1-ubyte{sfx}", yte, gz=gz)
    raw = create_dataset("mnist", data_dir=tmp_path)
    assert raw.x_train.shape == (12, 28, 28, 1) and raw.x_test.shape == (5, 28, 28, 1)
    assert np.array_equal(raw.x_train[..., 0], xtr) and np.array_equal(raw.y_test, yte)
    # a fashion folder beside it: each loader picks its own
    f = tmp_path / "fashion"
    _write_idx(f / "train-images-idx3-ubyte.gz", xtr[:3], gz=True)
    _write_idx(f / "train-labels-idx1-ubyte.gz", ytr[:3], gz=True)
    _write_idx(f / "t10k-images-idx3-ubyte.gz", xte[:2], gz=True)
    _write_idx(f / "t10k-labels-idx1-ubyte.gz", yte[:2], gz=True)
    assert len(create_dataset("mnist", data_dir=tmp_path).x_train) == 12
    fm = create_dataset("fashion-mnist", data_dir=tmp_path)
    assert fm.classes[0] == "T-shirt/top" and len(fm.x_train) == 3
    # pointed straight at a folder, the name does not matter
    assert len(create_dataset("fashion-mnist", data_dir=d).x_train) == 12
    (tmp_path / "none").mkdir()
    with pytest.raises(UserError, match="could not find fashion-mnist IDX files.*looked in"):
        create_dataset("fashion-mnist", data_dir=tmp_path / "none")


def test_mnist_single_pair_and_explicit_files(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (50, 4, 4)), np.repeat(np.arange(10), 5)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x, gz=True)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y, gz=True)
    raw = create_dataset("mnist", data_dir=tmp_path, test_fraction=0.2)
    assert len(raw.x_train) == 40 and len(raw.x_test) == 10
    assert np.bincount(raw.y_test).tolist() == [1] * 10
    raw2 = create_dataset(
        "mnist", images=tmp_path / "t10k-images-idx3-ubyte.gz", labels=tmp_path / "t10k-labels-idx1-ubyte.gz"
    )
    assert np.array_equal(raw.x_test, raw2.x_test)


def test_mnist_corrupt(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (10, 28, 28)), rng.integers(0, 10, 10)
    img = tmp_path / "train-images-idx3-ubyte"
    lab = tmp_path / "train-labels-idx1-ubyte"
    img.write_bytes(_idx_bytes(x)[:-100])  # truncated
    _write_idx(lab, y, gz=False)
    with pytest.raises(UserError, match="train-images-idx3-ubyte is truncated"):
        create_dataset("mnist", data_dir=tmp_path)
    img.write_bytes(_idx_bytes(y))  # labels where images belong: wrong magic
    with pytest.raises(UserError, match="train-images-idx3-ubyte is not a uint8 IDX"):
        create_dataset("mnist", data_dir=tmp_path)
    gz_bytes = gzip.compress(_idx_bytes(x))
    img.unlink()
    img_gz = tmp_path / "train-images-idx3-ubyte.gz"
    img_gz.write_bytes(gz_bytes[: len(gz_bytes) // 2])  # truncated gzip stream
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz"):
        create_dataset("mnist", data_dir=tmp_path)
    _write_idx(img_gz, x, gz=True)
    _write_idx(lab, np.full(10, 12), gz=False)  # labels out of range
    with pytest.raises(UserError, match="label 12 .*outside"):
        create_dataset("mnist", data_dir=tmp_path)
    _write_idx(lab, y[:9], gz=False)
    with pytest.raises(UserError, match="10 images but .* 9 labels"):
        create_dataset("mnist", data_dir=tmp_path)


# ----------------------------------------------------------------- cifar

def test_cifar10_pickle_folder_and_tarball(tmp_path, cifar10_dir):
    parent, x, y, xt, yt, names = cifar10_dir
    raw = create_dataset("cifar10", data_dir=parent)
    assert raw.x_train.shape == (14, 32, 32, 3) and raw.x_train.dtype == np.uint8
    assert np.array_equal(raw.x_train, x) and np.array_equal(raw.y_train, y)
    assert np.array_equal(raw.x_test, xt) and np.array_equal(raw.y_test, yt)
    assert raw.classes == names
    # data_dir pointing at the batches folder itself
    assert np.array_equal(create_dataset("cifar10", data_dir=parent / "cifar-10-batches-py").x_train, x)
    # the tarball, read without extraction
    tdir = tmp_path / "tar"
    tdir.mkdir()
    with tarfile.open(tdir / "cifar-10-python.tar.gz", "w:gz") as tf:
        tf.add(parent / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    raw_t = create_dataset("cifar10", data_dir=tdir)
    assert np.array_equal(raw_t.x_train, x) and np.array_equal(raw_t.y_test, yt)
    assert np.array_equal(create_dataset("cifar10", data_dir=tdir / "cifar-10-python.tar.gz").x_test, xt)
    with pytest.raises(UserError, match="unknown CIFAR source"):
        create_dataset("cifar10", data_dir=tdir, source="png")
    with pytest.raises(UserError, match="labels_csv needs the JPEG"):
        create_dataset("cifar10", data_dir=tdir, labels_csv="x.csv")


def test_cifar10_errors(cifar10_dir):
    parent = cifar10_dir[0]
    root = parent / "cifar-10-batches-py"
    (root / "test_batch").unlink()
    with pytest.raises(UserError, match="test_batch is missing"):
        create_dataset("cifar10", data_dir=parent)
    (root / "test_batch").write_bytes(b"garbage")
    with pytest.raises(UserError, match="test_batch"):
        create_dataset("cifar10", data_dir=parent)
    d, _, _ = _cifar_batch(np.random.default_rng(0), 3, b"labels", 10)
    d[b"labels"] = [0, 10, 1]
    _dump(root / "test_batch", d)
    with pytest.raises(UserError, match="label 10 .*outside"):
        create_dataset("cifar10", data_dir=parent)


@pytest.mark.parametrize("as_tar", [False, True])
def test_cifar100(tmp_path, as_tar):
    rng = np.random.default_rng(3)
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    dtr, xtr, ytr = _cifar_batch(rng, 9, b"fine_labels", 100)
    dte, xte, yte = _cifar_batch(rng, 4, b"fine_labels", 100)
    dtr[b"coarse_labels"] = [0] * 9
    _dump(root / "train", dtr)
    _dump(root / "test", dte)
    names = [f"fine{k:02d}" for k in range(100)]
    _dump(root / "meta", {b"fine_label_names": [n.encode() for n in names], b"coarse_label_names": []})
    data_dir = tmp_path
    if as_tar:
        data_dir = tmp_path / "t"
        data_dir.mkdir()
        with tarfile.open(data_dir / "cifar-100-python.tar.gz", "w:gz") as tf:
            tf.add(root, arcname="cifar-100-python")
    raw = create_dataset("cifar100", data_dir=data_dir)
    assert raw.classes == names
    assert np.array_equal(raw.x_train, xtr) and np.array_equal(raw.y_train, ytr)
    assert np.array_equal(raw.x_test, xte) and np.array_equal(raw.y_test, yte)


# ----------------------------------------------------------------- imagefolder

@pytest.mark.parametrize("as_zip", [False, True])
def test_imagefolder_dir_and_zip(tmp_path, as_zip):
    src = tmp_path / "tree"
    truth = _make_folder(src)
    path = _zip_dir(src, tmp_path / "tree.zip") if as_zip else src
    raw = create_dataset("imagefolder", path=path, cache_dir=tmp_path / "cache")
    assert raw.classes == ["cat", "dog", "emu"]
    assert raw.x_train.shape == (12, 6, 5, 3) and raw.x_test.shape == (6, 6, 5, 3)
    assert raw.paths_train[0] == "ds/train/cat/0000.png" and raw.y_train.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for arr, p in zip(raw.x_train, raw.paths_train):
        assert np.array_equal(arr, truth[p])
    assert raw.y_train_clean is None
    # explicit class order
    raw2 = create_dataset("imagefolder", path=path, classes=["emu", "dog", "cat"], cache_dir=tmp_path / "cache")
    assert raw2.y_train[0] == 2 and np.array_equal(raw2.x_train, raw.x_train)
    with pytest.raises(UserError, match="emu not in classes"):
        create_dataset("imagefolder", path=path, classes=["cat", "dog"], cache_dir=tmp_path / "cache")


def test_imagefolder_grey_resize_and_test_path(tmp_path):
    src = tmp_path / "g"
    _make_folder(src, prefix="", grey=True, n_test=0)
    raw = create_dataset("imagefolder", data_dir=src, cache=False)
    assert raw.x_train.shape == (12, 6, 5, 1) and raw.x_test is None
    raw = create_dataset("imagefolder", data_dir=src, cache=False, test_fraction=0.25)
    assert len(raw.x_test) == 3 and len(raw.paths_test) == 3
    # a separate test tree (colour) next to a grey training tree: channels unified
    tsrc = tmp_path / "t"
    _make_folder(tsrc, prefix="x", n_train=0, n_test=1)
    raw = create_dataset("imagefolder", path=src, test_path=_zip_dir(tsrc, tmp_path / "t.zip"), cache=False)
    assert raw.x_train.shape[-1] == 3 and raw.x_test.shape == (3, 6, 5, 3)
    # mixed sizes need image_size
    _write_png(src / "train" / "cat" / "big.png", np.zeros((9, 9, 1), np.uint8))
    with pytest.raises(UserError, match="big.png is 9x9.*image_size"):
        create_dataset("imagefolder", path=src, cache=False)
    raw = create_dataset("imagefolder", path=src, cache=False, image_size=4)
    assert raw.x_train.shape == (13, 4, 4, 1)


def test_imagefolder_plain_class_layout(tmp_path):
    for cls in ("a", "b"):
        for k in range(2):
            _write_png(tmp_path / "flat" / cls / f"{k}.png", np.full((3, 3, 3), k, np.uint8))
    raw = create_dataset("imagefolder", path=tmp_path / "flat", cache=False)
    assert raw.classes == ["a", "b"] and len(raw.x_train) == 4 and raw.x_test is None


def test_imagefolder_errors(tmp_path):
    with pytest.raises(UserError, match="needs path"):
        create_dataset("imagefolder")
    with pytest.raises(UserError, match="not found"):
        create_dataset("imagefolder", path=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images found"):
        create_dataset("imagefolder", path=tmp_path / "empty")
    src = tmp_path / "tree"
    _make_folder(src)
    bad = src / "ds" / "train" / "dog" / "0002.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(UserError, match=r"cannot decode image .*dog.0002\.png"):
        create_dataset("imagefolder", path=src, cache=False)
    z = _zip_dir(src, tmp_path / "bad.zip")
    with pytest.raises(UserError, match=r"cannot decode image .*bad\.zip:ds/train/dog/0002\.png"):
        create_dataset("imagefolder", path=z, cache=False)
    (tmp_path / "notzip.zip").write_bytes(b"nope")
    with pytest.raises(UserError, match="cannot read zip"):
        create_dataset("imagefolder", path=tmp_path / "notzip.zip")


def test_decode_parallel_matches_serial(tmp_path):
    src = tmp_path / "tree"
    _make_folder(src, n_train=30, n_test=0)
    z = _zip_dir(src, tmp_path / "t.zip")
    tree = imagefolder_mod.scan_image_tree(z)
    names = [f for f, _ in tree.splits["train"]]
    serial = imagefolder_mod.decode_images(z, names, is_zip=True, workers=0)
    parallel = imagefolder_mod.decode_images(z, names, is_zip=True, workers=2)
    assert np.array_equal(serial, parallel) and serial.shape == (90, 6, 5, 3)


# ----------------------------------------------------------------- labels CSV

def test_labels_csv_names_and_ids(tmp_path):
    src = tmp_path / "tree"
    _make_folder(src)
    z = _zip_dir(src, tmp_path / "tree.zip")
    csv1 = tmp_path / "names.csv"
    csv1.write_text("path,label\ntrain/dog/0001.png,cat\nds/train/cat/0000.png,emu\n\nemu/0003.png,emu\n")
    raw = create_dataset("imagefolder", path=z, labels_csv=csv1, cache_dir=tmp_path / "c")
    assert raw.paths_train == ["ds/train/dog/0001.png", "ds/train/cat/0000.png", "ds/train/emu/0003.png"]
    assert raw.y_train.tolist() == [0, 2, 2] and raw.y_train_clean.tolist() == [1, 0, 2]
    full = create_dataset("imagefolder", path=z, cache_dir=tmp_path / "c")
    assert np.array_equal(raw.x_train[0], full.x_train[full.paths_train.index("ds/train/dog/0001.png")])
    assert len(raw.x_test) == 6
    csv2 = tmp_path / "ids.csv"
    csv2.write_text("./train/emu/0000.png,1\ncat/0002.png,0\n")  # no header, integer ids
    raw = create_dataset("imagefolder", path=src, labels_csv=csv2, cache=False)
    assert raw.y_train.tolist() == [1, 0] and raw.y_train_clean.tolist() == [2, 0]


@pytest.mark.parametrize(
    "body, match",
    [
        ("train/cat/0000.png,cat\ntrain/cat/9999.png,cat\n", r"row 2: path 'train/cat/9999.png'"),
        ("path,label\ntrain/cat/0000.png,zebra\n", r"row 2: unknown class 'zebra'"),
        ("train/cat/0000.png,7\n", r"row 1: label id 7 outside"),
        ("train/cat/0000.png,cat\ncat/0000.png,dog\n", r"row 2: .*already listed in row 1"),
        ("test/cat/0000.png,cat\n", r"row 1: path 'test/cat/0000.png'"),
        ("justonecell\n", r"row 1: expected 'path,label'"),
        ("path,label\n", r"has no rows"),
    ],
)
def test_labels_csv_errors(tmp_path, body, match):
    src = tmp_path / "tree"
    _make_folder(src, n_train=1, n_test=1)
    csv = tmp_path / "l.csv"
    csv.write_text(body)
    with pytest.raises(UserError, match=match):
        create_dataset("imagefolder", path=src, labels_csv=csv, cache=False)


def test_cifar10_jpeg_zip_source(tmp_path):
    """The cifar10 loader reads the shared-style JPEG zips in CIFAR-10 label order."""
    from noisylabels.data import CIFAR10_CLASSES

    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    for split, n in (("train", 2), ("test", 1)):
        for cls in ("truck", "airplane", "cat"):
            for k in range(n):
                _write_png(tmp_path / "src" / split / "cifar10" / split / cls / f"{k:04d}.png",
                           rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        _zip_dir(tmp_path / "src" / split, tmp_path / "data" / f"cifar10-{split}-jpeg.zip")
    csv = tmp_path / "noisy.csv"
    csv.write_text("train/truck/0001.png,ship\n")
    raw = create_dataset("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path / "c")
    assert raw.name == "cifar10" and raw.classes == CIFAR10_CLASSES
    assert raw.y_train.tolist() == [0, 0, 3, 3, 9, 9] and raw.y_test.tolist() == [0, 3, 9]
    raw = create_dataset("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path / "c", labels_csv=csv)
    assert raw.y_train.tolist() == [8] and raw.y_train_clean.tolist() == [9]


def test_cifar10_relative_labels_csv_is_found_beside_the_zips(tmp_path, monkeypatch):
    """A suite names ``labels_csv: file.csv``: a relative path missing as given is read from the
    folder the JPEG zips were found in (wherever the data folder is), the current directory's first."""
    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    for split in ("train", "test"):
        for cls in ("airplane", "truck"):
            _write_png(tmp_path / "src" / split / "cifar10" / split / cls / "0000.png",
                       rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        _zip_dir(tmp_path / "src" / split, tmp_path / "data" / f"cifar10-{split}-jpeg.zip")
    (tmp_path / "data" / "human.csv").write_text("train/truck/0000.png,ship\ntrain/airplane/0000.png,bird\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    raw = create_dataset("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path / "c", labels_csv="human.csv")
    assert raw.y_train.tolist() == [8, 2] and raw.y_train_clean.tolist() == [9, 0]
    (work / "human.csv").write_text("train/truck/0000.png,cat\n")  # as given (here) wins
    raw = create_dataset("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path / "c", labels_csv="human.csv")
    assert raw.y_train.tolist() == [3]
    with pytest.raises(UserError, match="labels_csv 'missing.csv' not found"):
        create_dataset("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path / "c", labels_csv="missing.csv")


# ----------------------------------------------------------------- cache

def test_cache_second_load_skips_decoding(tmp_path, monkeypatch):
    src = tmp_path / "tree"
    _make_folder(src)
    z = _zip_dir(src, tmp_path / "t.zip")
    calls = {"n": 0}
    real = decode_mod._decode_one

    def counting(data, where):
        calls["n"] += 1
        return real(data, where)

    monkeypatch.setattr(decode_mod, "_decode_one", counting)
    first = create_dataset("imagefolder", path=z, cache_dir=tmp_path / "c")
    assert calls["n"] > 0
    assert len(list((tmp_path / "c").glob("*.npy"))) == 2  # train and test
    assert not list((tmp_path / "c").glob("*.tmp"))

    def boom(data, where):
        raise AssertionError("decoded despite cache")

    monkeypatch.setattr(decode_mod, "_decode_one", boom)
    second = create_dataset("imagefolder", path=z, cache_dir=tmp_path / "c")
    assert np.array_equal(first.x_train, second.x_train) and np.array_equal(first.x_test, second.x_test)
    # a corrupt cache entry is rebuilt
    for f in (tmp_path / "c").glob("*.npy"):
        f.write_bytes(b"\x93NUMPY garbage")
    monkeypatch.setattr(decode_mod, "_decode_one", counting)
    calls["n"] = 0
    third = create_dataset("imagefolder", path=z, cache_dir=tmp_path / "c")
    assert calls["n"] > 0 and np.array_equal(first.x_train, third.x_train)
    # a changed source is a new key
    _write_png(tmp_path / "extra" / "ds" / "train" / "cat" / "9999.png", np.zeros((6, 5, 3), np.uint8))
    with zipfile.ZipFile(z, "a") as zf:
        zf.write(tmp_path / "extra" / "ds" / "train" / "cat" / "9999.png", "ds/train/cat/9999.png")
    assert len(create_dataset("imagefolder", path=z, cache_dir=tmp_path / "c").x_train) == 13


def test_cache_atomic_helpers(tmp_path, monkeypatch):
    p = tmp_path / "sub" / "a.npy"
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert cache_mod.save_array(p, arr)
    assert np.array_equal(cache_mod.load_array(p), arr)
    assert cache_mod.load_array(tmp_path / "missing.npy") is None
    p.write_bytes(b"junk")
    assert cache_mod.load_array(p) is None
    assert cache_mod.cache_key("x", a=1) != cache_mod.cache_key("x", a=2)
    monkeypatch.setenv("NOISYLABELS_CACHE", str(tmp_path / "env"))
    assert cache_mod.default_cache_dir() == tmp_path / "env"


# ----------------------------------------------------------------- augment

def test_random_crop():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 10, 12)
    assert torch.equal(random_crop(x, padding=0, generator=g), x)
    out = random_crop(x, padding=4, generator=g)
    assert out.shape == x.shape
    out1 = random_crop(x, padding=4, generator=torch.Generator().manual_seed(5))
    out2 = random_crop(x, padding=4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out1, out2)
    # every output equals the zero-padded input at some offset
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for b in range(8):
        assert any(
            torch.equal(out1[b], padded[b, :, i:i + 10, j:j + 12]) for i in range(9) for j in range(9)
        )
    # offsets vary across samples
    ones = torch.ones(64, 1, 5, 5)
    crops = random_crop(ones, padding=2, generator=torch.Generator().manual_seed(1))
    assert len({tuple(c.flatten().tolist()) for c in crops}) > 1


def test_random_hflip_and_spec():
    x = torch.rand(5, 3, 4, 6)
    assert torch.equal(random_hflip(x, generator=torch.Generator(), p=1.0), x.flip(3))
    assert torch.equal(random_hflip(x, generator=torch.Generator(), p=0.0), x)
    a = random_hflip(x, generator=torch.Generator().manual_seed(2))
    b = random_hflip(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    with pytest.raises(UserError):
        AugmentSpec(crop_padding=-1)


# ----------------------------------------------------------------- loader

def _loader_data(n=23):
    imgs = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(n) % 4
    return imgs, labels


def test_batch_loader_epoch_coverage_and_shapes():
    imgs, labels = _loader_data()
    idx = np.arange(3, 23)
    mean, std = channel_stats(imgs)
    loader = BatchLoader(imgs, labels, idx, batch_size=6, shuffle=True, mean=mean, std=std,
                         augment=AugmentSpec(crop_padding=2, hflip=True),
                         generator=torch.Generator().manual_seed(0))
    assert len(loader) == 4
    for _ in range(2):
        seen = []
        for batch in loader:
            assert batch.x.dtype == torch.float32 and batch.x.shape[1:] == (3, 8, 8)
            assert batch.y.dtype == torch.int64 and batch.index.dtype == torch.int64
            assert torch.equal(batch.y, labels[batch.index])
            seen.extend(batch.index.tolist())
        assert sorted(seen) == idx.tolist()
    dl = BatchLoader(imgs, labels, idx, batch_size=6, shuffle=False, mean=mean, std=std, drop_last=True)
    assert len(dl) == 3 and sum(len(b.y) for b in dl) == 18
    # no augmentation, no shuffle: exact normalisation in order
    b0 = next(iter(dl))
    assert b0.index.tolist() == list(range(3, 9))
    expect = (imgs[3:9].float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(b0.x, expect, atol=1e-6)


def test_batch_loader_deterministic():
    imgs, labels = _loader_data()

    def run(seed):
        loader = BatchLoader(imgs, labels, torch.arange(23), batch_size=5, shuffle=True, mean=[0.5] * 3,
                             std=[0.25] * 3, augment=AugmentSpec(crop_padding=1, hflip=True),
                             generator=torch.Generator().manual_seed(seed))
        return [(b.x.clone(), b.index.clone()) for b in loader]

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(x1, x2) and torch.equal(i1, i2) for (x1, i1), (x2, i2) in zip(a, b))
    assert not all(torch.equal(i1, i2) for (_, i1), (_, i2) in zip(a, c))


def test_batch_loader_errors_and_stats():
    imgs, labels = _loader_data()
    with pytest.raises(UserError, match="one per channel"):
        BatchLoader(imgs, labels, [0], batch_size=2, shuffle=False, mean=[0.5], std=[0.5])
    with pytest.raises(UserError, match="indices"):
        BatchLoader(imgs, labels, [99], batch_size=2, shuffle=False, mean=[0.5] * 3, std=[0.5] * 3)
    with pytest.raises(UserError, match="batch_size"):
        BatchLoader(imgs, labels, [0], batch_size=0, shuffle=False, mean=[0.5] * 3, std=[0.5] * 3)
    x = torch.zeros(4, 2, 3, 3, dtype=torch.uint8)
    x[:, 1] = 255
    x[:2, 0] = 255
    mean, std = channel_stats(x)
    assert mean == pytest.approx((0.5, 1.0)) and std == pytest.approx((0.5, 0.0))
    assert channel_stats(x, indices=[0, 1], chunk=1)[0] == pytest.approx((1.0, 1.0))
    nhwc = np.zeros((2, 4, 5, 3), np.uint8)
    assert to_nchw(nhwc).shape == (2, 3, 4, 5)


# ----------------------------------------------------------------- splits

def test_make_splits_properties():
    y = np.repeat(np.arange(5), [40, 30, 20, 10, 3])
    s = make_splits(y, val_fraction=0.2, meta_size=25, seed=0, num_classes=5)
    allidx = np.concatenate([s["train"], s["val"], s["meta"]])
    assert sorted(allidx.tolist()) == list(range(len(y)))
    for v in s.values():
        assert v.dtype == np.int64 and np.all(np.diff(v) > 0)
    assert len(s["meta"]) == 25
    assert np.bincount(y[s["meta"]], minlength=5)[4] == 3  # class 4 gives what it has
    assert len(s["val"]) == round((len(y) - 25) * 0.2)
    again = make_splits(y, val_fraction=0.2, meta_size=25, seed=0, num_classes=5)
    other = make_splits(y, val_fraction=0.2, meta_size=25, seed=1, num_classes=5)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    assert not np.array_equal(s["val"], other["val"])
    balanced = make_splits(np.repeat(np.arange(4), 50), meta_size=42, seed=3, num_classes=4, val_fraction=0.0)
    counts = np.bincount(np.repeat(np.arange(4), 50)[balanced["meta"]])
    assert counts.sum() == 42 and counts.max() - counts.min() <= 1
    assert len(balanced["val"]) == 0


def test_make_splits_errors(tmp_path):
    y = np.repeat(np.arange(3), 4)
    with pytest.raises(UserError, match="val_fraction"):
        make_splits(y, val_fraction=1.0, seed=0, num_classes=3)
    with pytest.raises(UserError, match="meta_size"):
        make_splits(y, meta_size=10, seed=0, num_classes=3)
    with pytest.raises(UserError, match="leave"):
        make_splits(y, meta_size=8, val_fraction=0.5, seed=0, num_classes=3)
    with pytest.raises(UserError, match="outside"):
        make_splits(np.array([0, 5]), seed=0, num_classes=3)
    s = make_splits(y, seed=0, num_classes=3, meta_size=3)
    save_splits(tmp_path / "s.npz", s)
    back = load_splits(tmp_path / "s.npz")
    assert set(back) == {"train", "val", "meta"} and all(np.array_equal(s[k], back[k]) for k in s)
    with pytest.raises(UserError, match="not found"):
        load_splits(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"xx")
    with pytest.raises(UserError, match="cannot read"):
        load_splits(tmp_path / "bad.npz")
