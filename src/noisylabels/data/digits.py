"""scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), no files needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import RawDataset, split_off_test, validate_labels
from .registry import DATASETS

__all__ = ["load_digits_dataset"]


@DATASETS.register("digits", help="scikit-learn load_digits: 1,797 8x8 grey digits (no files needed)")
def load_digits_dataset(
    *,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    test_fraction: float = 0.2,
) -> RawDataset:
    """scikit-learn's ``load_digits`` as uint8 images with a fixed stratified test split.

    The 0..16 intensities are scaled to 0..255 (``round(v * 255 / 16)``).

    Parameters
    ----------
    data_dir, cache_dir:
        Ignored (the data ships with scikit-learn).
    test_fraction:
        Fraction held out as the fixed test set (seed 0, stratified).

    Returns
    -------
    RawDataset
        ``x_*`` of shape ``(N, 8, 8, 1)``, classes ``"0"`` .. ``"9"``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)
    x = np.clip(np.round(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    y = validate_labels(np.asarray(bunch.target), 10, "sklearn load_digits")
    raw = RawDataset(
        name="digits", x_train=x, y_train=y, x_test=None, y_test=None,
        classes=[str(k) for k in range(10)],
    )
    return split_off_test(raw, test_fraction=test_fraction)
