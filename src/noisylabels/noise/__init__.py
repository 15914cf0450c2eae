"""Label-noise simulators: pure, seeded functions returning noisy labels and how they were drawn.

Quick use::

    from noisylabels.noise import apply_noise, transition_matrix, list_noise_types
    res = apply_noise("symmetric", y, num_classes=10, rate=0.4, seed=0)
    res.noisy_labels, res.transition, res.realized_rate, res.noisy_mask

Convention everywhere: ``T[i, j] = P(noisy = j | clean = i)`` (rows sum to 1).
Registered types (see each builder's docstring for the paper followed):

* ``none``; ``symmetric`` (other classes only; ``include_true_class=True`` for
  uniform over all K); ``uniform`` (= symmetric with ``include_true_class=True``);
  ``pair``; ``flip``; ``flip2``;
* dataset maps ``cifar10-asym``, ``cifar100-next``, ``cifar100-superclass``, ``fashion-asym``;
* ``custom`` (``matrix`` or ``matrix_path``);
* ``instance`` (Xia et al. 2020; needs ``features``);
* ``open-set`` (Wang et al. 2018; images are replaced, see :func:`open_set`).
"""

from __future__ import annotations

from . import class_conditional as _class_conditional  # noqa: F401  (registers types)
from . import instance as _instance  # noqa: F401
from . import openset as _openset  # noqa: F401
from .class_conditional import flip_targets, load_matrix
from .classmaps import (
    CIFAR10_CLASSES,
    CIFAR100_COARSE,
    CIFAR100_SUPERCLASSES,
    FASHION_MNIST_CLASSES,
    cifar100_superclass_groups,
)
from .core import (
    NOISE,
    NoiseResult,
    apply_noise,
    describe_noise_type,
    list_noise_types,
    noise_kind,
    sample_from_transition,
    transition_matrix,
)
from .instance import instance_flip_probabilities
from .io import NoisyLabelsTable, format_matrix, read_noisy_labels_csv, write_noisy_labels_csv
from .openset import open_set, open_set_count

__all__ = [
    "NOISE",
    "NoiseResult",
    "apply_noise",
    "transition_matrix",
    "list_noise_types",
    "describe_noise_type",
    "noise_kind",
    "sample_from_transition",
    "instance_flip_probabilities",
    "flip_targets",
    "load_matrix",
    "open_set",
    "open_set_count",
    "NoisyLabelsTable",
    "write_noisy_labels_csv",
    "read_noisy_labels_csv",
    "format_matrix",
    "CIFAR10_CLASSES",
    "CIFAR100_COARSE",
    "CIFAR100_SUPERCLASSES",
    "FASHION_MNIST_CLASSES",
    "cifar100_superclass_groups",
]
