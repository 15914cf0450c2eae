"""The CIFAR python batches are read without running code (issue 19): a crafted batch, batches.meta
or CIFAR-100 file, in a folder or a tarball, found through --data-dir or ./data, is a one-line
error in `train` and `noise`, and the file its payload would create never appears."""

from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest

from noisylabels.cli import main
from noisylabels.data import create_dataset


class _Boom:
    """Unpickling this would create ``marker`` (a stand-in for any code)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _batch(rng, n, key):
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)  # as the official pickles: uint8 (N, 3072)
    return {b"batch_label": b"training batch", key: [int(v) for v in rng.integers(0, 10, size=n)], b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def _write(path, obj, protocol=2):  # the official files are protocol-2 pickles
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)


C10 = ("data_batch_1", "data_batch_2", "test_batch", "batches.meta")
C100 = ("train", "test", "meta")


def _cifar_folder(root, dataset, crafted, marker):
    """A small CIFAR-10 / -100 pickle folder; the file ``crafted`` carries the payload."""
    rng = np.random.default_rng(0)
    if dataset == "cifar10":
        folder = root / "cifar-10-batches-py"
        files = {"data_batch_1": _batch(rng, 6, b"labels"), "data_batch_2": _batch(rng, 6, b"labels"),
                 "test_batch": _batch(rng, 4, b"labels"),
                 "batches.meta": {b"label_names": [f"c{k}".encode() for k in range(10)], b"num_vis": 3072}}
    else:
        folder = root / "cifar-100-python"
        files = {"train": _batch(rng, 6, b"fine_labels"), "test": _batch(rng, 4, b"fine_labels"),
                 "meta": {b"fine_label_names": [f"f{k}".encode() for k in range(100)], b"coarse_label_names": []}}
    folder.mkdir(parents=True)
    for name, obj in files.items():
        if name == crafted:
            obj = {**obj, b"batch_label": _Boom(marker)}
        _write(folder / name, obj)
    return folder


def _tarball(folder, dest):
    name = "cifar-10-python.tar.gz" if folder.name.startswith("cifar-10-") else "cifar-100-python.tar.gz"
    dest.mkdir()
    with tarfile.open(dest / name, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    return dest


def _one_line_error(capsys, argv):
    code = main(argv)
    _, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    return lines[0]


CASES = [("cifar10", f) for f in C10] + [("cifar100", f) for f in C100]


@pytest.mark.parametrize("dataset,crafted", CASES)
@pytest.mark.parametrize("how", ["folder", "tarball"])
@pytest.mark.parametrize("command", ["train", "noise"])
def test_a_crafted_cifar_file_runs_nothing_and_is_one_line(tmp_path, capsys, dataset, crafted, how, command):
    marker = tmp_path / "pwned"
    folder = _cifar_folder(tmp_path / "src", dataset, crafted, marker)
    data_dir = folder.parent if how == "folder" else _tarball(folder, tmp_path / "tar")
    argv = ["--dataset", dataset, "--data-dir", str(data_dir)]
    if command == "train":
        argv = ["train", *argv, "--out", str(tmp_path / "run"), "--epochs", "1", "--quiet", "--model", "mlp"]
    else:
        argv = ["noise", *argv]
    line = _one_line_error(capsys, argv)
    assert crafted in line and "io.open" in line and "not allowed" in line, line
    assert not marker.exists()


def test_a_crafted_batch_found_in_dot_data_runs_nothing(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "pwned"
    _cifar_folder(tmp_path / "data", "cifar10", "data_batch_2", marker)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NOISYLABELS_DATA_DIR", raising=False)
    line = _one_line_error(capsys, ["noise", "--dataset", "cifar10"])
    assert "data_batch_2" in line and not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_the_real_format_still_loads_with_the_restricted_unpickler(tmp_path, protocol):
    rng = np.random.default_rng(1)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    batches = [_batch(rng, 5, b"labels") for _ in range(3)]
    for i, b in enumerate(batches[:2], start=1):
        _write(root / f"data_batch_{i}", b, protocol)
    _write(root / "test_batch", batches[2], protocol)
    _write(root / "batches.meta", {b"label_names": [f"c{k}".encode() for k in range(10)]}, protocol)
    raw = create_dataset("cifar10", data_dir=tmp_path)
    # the official layout: row i is the R, G, B 32x32 planes of image i, row-major
    want = np.concatenate([b[b"data"] for b in batches[:2]]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    assert np.array_equal(raw.x_train, want)
    assert raw.y_train.tolist() == batches[0][b"labels"] + batches[1][b"labels"]
    assert raw.classes == [f"c{k}" for k in range(10)]
