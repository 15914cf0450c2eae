"""The in-memory dataset record every loader returns, and helpers shared by the loaders.

A loader (see :mod:`noisylabels.data.registry`) turns files on disk into a
:class:`RawDataset`: uint8 images in NHWC layout plus int64 labels. Sources
without an official test split get a fixed, stratified one from
:func:`split_off_test`, drawn with a seed that does not depend on the run
seed, so that every run of an experiment is scored on the same test images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import UserError

__all__ = ["RawDataset", "validate_labels", "split_off_test", "stratified_take", "UNLABELED_CLASS"]

#: the one placeholder class of images without labels (:attr:`RawDataset.has_labels` False)
UNLABELED_CLASS = "(unlabeled)"


@dataclass(eq=False)  # arrays make field-wise == ambiguous: compare by identity
class RawDataset:
    """A decoded dataset held in memory.

    Attributes
    ----------
    name:
        Registered loader name (``"cifar10"``, ``"imagefolder"``, ...).
    x_train:
        Training images, uint8, shape ``(N, H, W, C)``; ``C`` is 1 for grey images.
    y_train:
        Training labels, int64, shape ``(N,)``. When the labels come from a
        labels CSV these are the (possibly noisy) labels of that file.
    x_test, y_test:
        Test images and labels in the same layout, or ``None`` when the source
        has no test split (see :func:`split_off_test`).
    classes:
        Class names; label ``k`` means ``classes[k]``.
    paths_train, paths_test:
        Relative file paths of the images inside their source directory or zip
        (image-folder sources only), aligned with ``x_train`` / ``x_test``.
    y_train_clean:
        Set only when the training labels came from a labels CSV: the class of
        each image's folder (the ground truth when the folders are trustworthy).
    test_carved:
        True when the test split was carved out of the training images
        (:func:`split_off_test`): its images are the user's too, with the same kind of labels.
    has_labels:
        False for images without labels (an image folder read with ``unlabeled=True``, for
        self-supervised pretraining): ``y_train`` is all 0 under the one placeholder class
        :data:`UNLABELED_CLASS`, and there is no test set.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    classes: list[str]
    paths_train: list[str] | None = None
    paths_test: list[str] | None = None
    y_train_clean: np.ndarray | None = None
    test_carved: bool = False
    has_labels: bool = True

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(classes)``."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        h, w, c = self.x_train.shape[1:]
        return int(h), int(w), int(c)

    def __repr__(self) -> str:  # arrays are large: summarise them
        n_test = None if self.x_test is None else len(self.x_test)
        return (
            f"RawDataset(name={self.name!r}, train={len(self.x_train)}, test={n_test}, "
            f"image_shape={self.image_shape}, classes={len(self.classes)}, "
            f"labels_csv={self.y_train_clean is not None})"
        )


def validate_labels(y: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """Check that labels are integers in ``[0, num_classes)`` and return them as int64.

    Parameters
    ----------
    y:
        Label array of shape ``(N,)`` (any integer dtype, or floats holding integers).
    num_classes:
        Number of classes ``K``.
    where:
        What the labels are (a file name, ``"y_train"``), used in the error message.

    Returns
    -------
    numpy.ndarray
        The labels as a 1-D int64 array.

    Raises
    ------
    UserError
        When the labels are not 1-D integers or some label lies outside ``[0, K)``.
    """
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise UserError(f"{where}: labels must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise UserError(f"{where}: labels must be integers, got dtype {arr.dtype}")
    out = arr.astype(np.int64, copy=False)
    if out.size:
        bad = (out < 0) | (out >= num_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UserError(
                f"{where}: label {int(out[i])} at position {i} is outside [0, {num_classes}) "
                f"({int(bad.sum())} bad label(s))"
            )
    return out


def stratified_take(y: np.ndarray, *, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Pick a stratified random ``fraction`` of the positions of ``y``.

    Every class contributes ``floor(n_c * fraction)`` positions; the rounding
    remainder (so that the total is ``round(N * fraction)``) goes to the classes
    with the largest fractional parts, ties broken at random.

    Parameters
    ----------
    y:
        Integer labels used for stratification, shape ``(N,)``.
    fraction:
        Fraction in ``[0, 1]`` of the positions to take.
    rng:
        Source of randomness.

    Returns
    -------
    numpy.ndarray
        Sorted int64 positions into ``y``.
    """
    y = np.asarray(y)
    if len(y) == 0 or fraction <= 0:
        return np.zeros(0, dtype=np.int64)
    classes, inv = np.unique(y, return_inverse=True)
    counts = np.bincount(inv, minlength=len(classes))
    exact = counts * float(fraction)
    take = np.floor(exact).astype(np.int64)
    extra = int(round(len(y) * float(fraction))) - int(take.sum())
    if extra > 0:
        frac = exact - take
        tiebreak = rng.permutation(len(classes))
        order = np.lexsort((tiebreak, -frac))
        order = order[frac[order] > 0][:extra]
        take[order] += 1
    take = np.minimum(take, counts)
    chosen = []
    for c in range(len(classes)):
        members = np.flatnonzero(inv == c)
        if take[c]:
            chosen.append(rng.permutation(members)[: take[c]])
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def split_off_test(raw: RawDataset, *, test_fraction: float, seed: int = 0,
                   keep: np.ndarray | None = None) -> RawDataset:
    """Give a dataset without a test split a fixed, stratified one.

    The split is drawn with ``numpy.random.default_rng(seed)`` where ``seed``
    defaults to 0 and is deliberately *not* the run seed, so the test images
    are the same in every run and results stay comparable. Stratification and
    the test labels use ``y_train_clean`` when it is set (labels from a CSV):
    a test set is scored against the ground truth, never the noisy labels.

    Parameters
    ----------
    raw:
        The dataset. One that already has a test split is returned unchanged.
    test_fraction:
        Fraction of the pool moved to the test split, in ``(0, 1)``.
    seed:
        Seed of the split (keep the default for comparable test sets).
    keep:
        Positions that must stay in the training pool (e.g. the user's verified samples); the
        test split is drawn from the others.

    Returns
    -------
    RawDataset
        A new record with ``x_test``/``y_test`` filled and the training arrays
        reduced to the remaining images (original order kept).

    Raises
    ------
    UserError
        When ``test_fraction`` is outside ``(0, 1)`` or leaves no training image.
    """
    if raw.x_test is not None:
        return raw
    if not 0.0 < float(test_fraction) < 1.0:
        raise UserError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    truth = raw.y_train_clean if raw.y_train_clean is not None else raw.y_train
    if keep is None:
        test_idx = stratified_take(truth, fraction=float(test_fraction), rng=np.random.default_rng(seed))
    else:
        free = np.setdiff1d(np.arange(len(raw.y_train)), np.asarray(keep, dtype=np.int64))
        test_idx = free[stratified_take(np.asarray(truth)[free], fraction=float(test_fraction),
                                        rng=np.random.default_rng(seed))]
    keep = np.ones(len(raw.y_train), dtype=bool)
    keep[test_idx] = False
    train_idx = np.flatnonzero(keep)
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise UserError(
            f"{raw.name}: test_fraction={test_fraction} of {len(raw.y_train)} images leaves "
            f"{len(train_idx)} training and {len(test_idx)} test images"
        )

    def pick(paths: list[str] | None, idx: np.ndarray) -> list[str] | None:
        return None if paths is None else [paths[i] for i in idx]

    return dataclasses.replace(
        raw,
        x_train=raw.x_train[train_idx],
        y_train=raw.y_train[train_idx],
        x_test=raw.x_train[test_idx],
        y_test=np.asarray(truth)[test_idx].astype(np.int64),
        paths_train=pick(raw.paths_train, train_idx),
        paths_test=pick(raw.paths_train, test_idx),
        y_train_clean=None if raw.y_train_clean is None else raw.y_train_clean[train_idx],
        test_carved=True,
    )
