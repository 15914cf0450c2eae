"""Datasets, splits, augmentation and in-memory batching.

``create_dataset(name, ...)`` returns a :class:`RawDataset` of uint8 NHWC
images; :func:`make_splits` carves train/val/meta indices out of its training
pool; :class:`BatchLoader` serves normalised, augmented float batches from a
uint8 NCHW tensor (see :func:`to_nchw`), one view or several per batch (``augment=(weak, strong)``:
``Batch.views``); :mod:`noisylabels.data.policies` has the strong augmentation policies
(AutoAugment, RandAugment, TrivialAugment, Cutout) and :func:`mixup` mixes a batch.
"""

from __future__ import annotations

from .base import RawDataset, split_off_test, stratified_take, validate_labels
from .registry import DATASETS, candidate_data_dirs, create_dataset, list_datasets

# Loaders register themselves on import.
from . import cifar, cifar_n, clothing1m, digits, imagefolder, mnist  # noqa: E402,F401  isort: skip
from .augment import AugmentSpec, apply_augment, normalize, random_crop, random_hflip
from .cache import default_cache_dir
from .cifar import CIFAR10_CLASSES
from .imagefolder import scan_image_tree
from .labels_csv import read_labels_csv
from .loader import Batch, BatchLoader, channel_stats, to_nchw
from .mix import Mixed, mixup
from .policies import AugmentPolicy, create_augment_policy, list_augment_policies, strong_augment_policy
from .mnist import FASHION_MNIST_CLASSES, read_idx
from .splits import load_splits, make_splits, save_splits

__all__ = [
    "RawDataset",
    "validate_labels",
    "split_off_test",
    "stratified_take",
    "DATASETS",
    "create_dataset",
    "list_datasets",
    "candidate_data_dirs",
    "AugmentSpec",
    "apply_augment",
    "random_crop",
    "random_hflip",
    "normalize",
    "AugmentPolicy",
    "create_augment_policy",
    "list_augment_policies",
    "strong_augment_policy",
    "Mixed",
    "mixup",
    "default_cache_dir",
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "scan_image_tree",
    "read_labels_csv",
    "read_idx",
    "Batch",
    "BatchLoader",
    "channel_stats",
    "to_nchw",
    "make_splits",
    "save_splits",
    "load_splits",
]
