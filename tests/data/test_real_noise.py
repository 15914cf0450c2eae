"""Real-noise label sets on small fixture files the tests write: CIFAR-10N / CIFAR-100N keyed to
the official order (pickle and JPEG-zip sources; labels encode their index so a mapping error
shows), safe loading of the .pt label files, and Clothing1M-style key lists."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from noisylabels.cli import main
from noisylabels.data import CIFAR10_CLASSES, create_dataset
from noisylabels.data.cifar_n import load_human_labels
from noisylabels.errors import UserError

N = 60  # official training images in the fixture


def _classes(n=N, k=10, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.integers(0, k, n)
    c[:k] = np.arange(k)
    return c


def _human(clean, k=10):
    i = np.arange(len(clean))
    return {"clean_label": clean.copy(), "aggre_label": (3 * i) % k, "worse_label": i % k,
            "random_label1": (i + 1) % k, "random_label2": (i + 2) % k, "random_label3": (i + 3) % k}


def _cifar10_pickles(root, clean):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    # image i is filled with the value i: its index can be read back from its pixels
    data = np.repeat(np.arange(len(clean), dtype=np.uint8)[:, None], 3072, axis=1)
    half = len(clean) // 2
    for b, sl in ((1, slice(0, half)), (2, slice(half, None))):
        with open(d / f"data_batch_{b}", "wb") as fh:
            pickle.dump({b"data": data[sl], b"labels": clean[sl].tolist()}, fh)
    with open(d / "test_batch", "wb") as fh:
        pickle.dump({b"data": data[:10], b"labels": list(range(10))}, fh)
    with open(d / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, fh)
    return d


def _cifar10_jpeg_zips(root, clean):
    root.mkdir(parents=True, exist_ok=True)
    rank = np.zeros(10, dtype=int)
    with zipfile.ZipFile(root / "cifar10-train-jpeg.zip", "w") as zf:
        for i, c in enumerate(clean):
            buf = io.BytesIO()
            Image.fromarray(np.full((32, 32, 3), 4 * i, np.uint8)).save(buf, format="JPEG", quality=95)
            zf.writestr(f"cifar10/train/{CIFAR10_CLASSES[c]}/{rank[c]:04d}.jpg", buf.getvalue())
            rank[c] += 1
    with zipfile.ZipFile(root / "cifar10-test-jpeg.zip", "w") as zf:
        for c in range(10):
            buf = io.BytesIO()
            Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, format="JPEG")
            zf.writestr(f"cifar10/test/{CIFAR10_CLASSES[c]}/0000.jpg", buf.getvalue())


@pytest.fixture
def pickle_root(tmp_path):
    clean = _classes()
    _cifar10_pickles(tmp_path, clean)
    torch.save(_human(clean), tmp_path / "CIFAR-10_human.pt")
    return tmp_path, clean


@pytest.mark.parametrize("which,key", [("worse", "worse_label"), ("aggre", "aggre_label"),
                                       ("random2", "random_label2"), ("clean", "clean_label")])
def test_cifar10n_pickle_source_maps_official_indices(pickle_root, which, key):
    root, clean = pickle_root
    raw = create_dataset("cifar10n", data_dir=root, noisy_labels=which)
    index = raw.x_train[:, 0, 0, 0].astype(int)
    expect = _human(clean)[key]
    np.testing.assert_array_equal(raw.y_train, expect[index])
    np.testing.assert_array_equal(raw.y_train_clean, clean[index])
    assert raw.name == "cifar10n"


def test_cifar10n_jpeg_source_maps_official_indices(tmp_path):
    clean = _classes(seed=1)
    _cifar10_jpeg_zips(tmp_path, clean)
    torch.save(_human(clean), tmp_path / "CIFAR-10_human.pt")
    raw = create_dataset("cifar10n", data_dir=tmp_path, noisy_labels="worse", source="jpeg")
    index = np.round(raw.x_train[:, :, :, 0].mean(axis=(1, 2)) / 4).astype(int)
    assert sorted(index) == list(range(N))  # the pixels name each official index once
    np.testing.assert_array_equal(raw.y_train, index % 10)
    np.testing.assert_array_equal(raw.y_train_clean, clean[index])
    assert all(p.startswith("cifar10/train/") for p in raw.paths_train)


def test_cifar10n_npz_export_and_cli(pickle_root, tmp_path, capsys, one_thread):
    root, clean = pickle_root
    os.remove(root / "CIFAR-10_human.pt")
    np.savez(root / "CIFAR-10_human.npz", **_human(clean))
    raw = create_dataset("cifar10n", data_dir=root, noisy_labels="random1")
    np.testing.assert_array_equal(raw.y_train, (raw.x_train[:, 0, 0, 0].astype(int) + 1) % 10)
    code = main(["train", "--quiet", "--dataset", "cifar10n", "--data-dir", str(root), "--set",
                 "data.options.noisy_labels=worse", "--noise", "none", "--noise-rate", "0", "--epochs", "1",
                 "--set", "train.num_threads=1", "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err


def test_cifar10n_errors(pickle_root, tmp_path):
    root, clean = pickle_root
    with pytest.raises(UserError, match="noisy_labels"):
        create_dataset("cifar10n", data_dir=root, noisy_labels="worst")
    bad = _human(clean)
    bad["clean_label"] = np.roll(clean, 1)
    torch.save(bad, root / "CIFAR-10_human.pt")
    with pytest.raises(UserError, match="disagrees"):
        create_dataset("cifar10n", data_dir=root)
    short = {k: v[:-1] for k, v in _human(clean).items()}
    torch.save(short, root / "CIFAR-10_human.pt")
    with pytest.raises(UserError, match="labels but the training set"):
        create_dataset("cifar10n", data_dir=root)
    os.remove(root / "CIFAR-10_human.pt")
    with pytest.raises(UserError, match="CIFAR-10_human.pt"):
        create_dataset("cifar10n", data_dir=root)
    # JPEG source: class counts of the file and the folders differ
    jroot = tmp_path / "jpeg"
    _cifar10_jpeg_zips(jroot, clean)
    other = _classes(seed=5)
    torch.save(_human(other), jroot / "CIFAR-10_human.pt")
    with pytest.raises(UserError, match="class counts"):
        create_dataset("cifar10n", data_dir=jroot, source="jpeg")


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_label_file_with_a_pickled_callable_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "executed"
    torch.save({"clean_label": _Payload(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(UserError) as err:
        load_human_labels(tmp_path / "evil.pt")
    assert "\n" not in str(err.value)
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="safely"):
        load_human_labels(tmp_path / "junk.pt")


def test_cifar100n(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    clean = _classes(n=120, k=100, seed=2)
    data = np.repeat(np.arange(120, dtype=np.uint8)[:, None], 3072, axis=1)
    with open(d / "train", "wb") as fh:
        pickle.dump({b"data": data, b"fine_labels": clean.tolist()}, fh)
    with open(d / "test", "wb") as fh:
        pickle.dump({b"data": data[:5], b"fine_labels": [0, 1, 2, 3, 4]}, fh)
    with open(d / "meta", "wb") as fh:
        pickle.dump({b"fine_label_names": [f"c{k}".encode() for k in range(100)]}, fh)
    i = np.arange(120)
    torch.save({"clean_label": clean, "noisy_label": (7 * i) % 100}, tmp_path / "CIFAR-100_human.pt")
    raw = create_dataset("cifar100n", data_dir=tmp_path)
    index = raw.x_train[:, 0, 0, 0].astype(int)
    np.testing.assert_array_equal(raw.y_train, (7 * index) % 100)
    np.testing.assert_array_equal(raw.y_train_clean, clean[index])


# ------------------------------------------------------------------------------ Clothing1M

def _clothing(root, n_train=30, n_test=8, k=4):
    keys = []
    for j in range(n_train + n_test):
        key = f"images/{j % 3}/{j:02d}/{j}.png"
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), j, np.uint8)).save(root / key)
        keys.append(key)
    train, test = keys[:n_train], keys[n_train:]
    noisy = {key: j % k for j, key in enumerate(keys)}
    clean = {key: (j + 1) % k for j, key in enumerate(keys)}
    (root / "noisy_label_kv.txt").write_text("".join(f"{key} {noisy[key]}\n" for key in train))
    (root / "clean_label_kv.txt").write_text("".join(f"{key} {clean[key]}\n" for key in keys))
    (root / "noisy_train_key_list.txt").write_text("\n".join(train) + "\n")
    (root / "clean_test_key_list.txt").write_text("\n".join(test) + "\n")
    (root / "category_names_eng.txt").write_text("T-Shirt\nShirt\nKnitwear\nChiffon\n")
    return train, test


def test_clothing1m_key_lists(tmp_path):
    train, test = _clothing(tmp_path)
    raw = create_dataset("clothing1m", data_dir=tmp_path)
    j = raw.x_train[:, 0, 0, 0].astype(int)  # image j holds the value j
    np.testing.assert_array_equal(raw.y_train, j % 4)
    np.testing.assert_array_equal(raw.y_train_clean, (j + 1) % 4)
    np.testing.assert_array_equal(raw.y_test, (raw.x_test[:, 0, 0, 0].astype(int) + 1) % 4)
    assert raw.paths_train == train and raw.paths_test == test
    assert raw.classes == ["T-Shirt", "Shirt", "Knitwear", "Chiffon"]
    assert len(create_dataset("clothing1m", data_dir=tmp_path, max_train=10).y_train) == 10


def test_clothing1m_errors(tmp_path):
    train, _ = _clothing(tmp_path)
    (tmp_path / "noisy_label_kv.txt").write_text(f"{train[0]} 1\n")
    with pytest.raises(UserError, match="have no label"):
        create_dataset("clothing1m", data_dir=tmp_path)
    _clothing(tmp_path)
    os.remove(tmp_path / train[3])
    with pytest.raises(UserError, match="not found"):
        create_dataset("clothing1m", data_dir=tmp_path)
    with pytest.raises(UserError, match="train_list"):
        create_dataset("clothing1m", data_dir=tmp_path, train_list="dirty")
    with pytest.raises(UserError, match="noisy_label_kv"):
        create_dataset("clothing1m", data_dir=tmp_path / "images")
