"""noisylabels.data on the real files in ../shared/data (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from noisylabels.data import CIFAR10_CLASSES, create_dataset


def test_mnist_shared_test_set(shared_data):
    raw = create_dataset("mnist", data_dir=shared_data / "mnist-test")
    assert raw.x_train.shape == (8000, 28, 28, 1) and raw.x_test.shape == (2000, 28, 28, 1)
    assert raw.x_train.dtype == np.uint8 and raw.y_train.dtype == np.int64
    assert np.bincount(raw.y_test, minlength=10).min() >= 150  # stratified
    again = create_dataset("mnist", data_dir=shared_data / "mnist-test")
    assert np.array_equal(raw.y_test, again.y_test)  # the fixed test split does not move


def test_cifar10_test_zip_imagefolder(shared_data, tmp_path):
    """Decode the 10,000-image test zip once, then read it back from the cache."""
    path = shared_data / "cifar10-test-jpeg.zip"
    if not path.is_file():
        pytest.skip("cifar10-test-jpeg.zip not present")
    opts = dict(path=path, classes=CIFAR10_CLASSES, train_split="test", test_fraction=0.2, cache_dir=tmp_path)
    raw = create_dataset("imagefolder", **opts)
    assert raw.x_train.shape == (8000, 32, 32, 3) and raw.x_test.shape == (2000, 32, 32, 3)
    assert np.bincount(raw.y_test).tolist() == [200] * 10
    assert raw.paths_train[0] == "cifar10/test/airplane/0000.jpg"
    assert 100 < raw.x_train.mean() < 140  # real photos, not blank decodes
    assert len(list(tmp_path.glob("*.npy"))) == 1
    again = create_dataset("imagefolder", **opts)
    assert np.array_equal(raw.x_train, again.x_train) and np.array_equal(raw.y_test, again.y_test)


@pytest.mark.slow
def test_cifar10_jpeg_zips(shared_data, tmp_path, monkeypatch):
    if not (shared_data / "cifar10-train-jpeg.zip").is_file():
        pytest.skip("cifar10 JPEG zips not present")
    raw = create_dataset("cifar10", data_dir=shared_data, cache_dir=tmp_path)
    assert raw.x_train.shape == (50000, 32, 32, 3) and raw.x_test.shape == (10000, 32, 32, 3)
    assert np.bincount(raw.y_train).tolist() == [5000] * 10
    assert raw.classes == CIFAR10_CLASSES
    import noisylabels.data.imagefolder as imagefolder

    def no_decoding(*a, **k):  # the second load must come from the cache (not a clock comparison)
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(imagefolder, "decode_images", no_decoding)
    again = create_dataset("cifar10", data_dir=shared_data, cache_dir=tmp_path)
    assert np.array_equal(raw.x_train, again.x_train)
