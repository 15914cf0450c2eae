"""Class names and fixed class maps used by the dataset-specific noise types.

The CIFAR-100 fine -> coarse table is the official one from the CIFAR-100
``train``/``test`` pickles (``fine_labels`` / ``coarse_labels``), in fine-label
order (fine and coarse names are both alphabetical).  It is the array widely
copied as ``sparse2coarse`` (github.com/ryanchankh/cifar100coarse), checked
here by spot-checking names (0 apple -> 4 fruit_and_vegetables, 1 aquarium_fish
-> 1 fish, 4 beaver -> 0 aquatic_mammals, 8 bicycle -> 18 vehicles_1,
99 worm -> 13 non-insect_invertebrates) and by the 20 x 5 group structure
(asserted at import).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_COARSE",
    "CIFAR100_SUPERCLASSES",
    "FASHION_MNIST_CLASSES",
    "CIFAR10_ASYM_MAP",
    "FASHION_ASYM_MAP",
    "MNIST_ASYM_MAP",
    "cifar100_superclass_groups",
]

#: CIFAR-10 label order.
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

#: Fashion-MNIST label order.
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)

#: CIFAR-100 superclass (coarse label) names, coarse-label order.
CIFAR100_SUPERCLASSES: tuple[str, ...] = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)

#: Coarse label of each CIFAR-100 fine label (index = fine label).
CIFAR100_COARSE: np.ndarray = np.array(
    [
        4, 1, 14, 8, 0, 6, 7, 7, 18, 3,
        3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
        6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
        0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
        5, 19, 8, 8, 15, 13, 14, 17, 18, 10,
        16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
        10, 3, 2, 12, 12, 16, 12, 1, 9, 19,
        2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
        16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
        18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
    ],
    dtype=np.int64,
)
CIFAR100_COARSE.setflags(write=False)

assert CIFAR100_COARSE.shape == (100,)
assert np.array_equal(np.bincount(CIFAR100_COARSE, minlength=20), np.full(20, 5))

#: Patrini et al. (2017) CIFAR-10 asymmetric map, source -> target:
#: truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog.
CIFAR10_ASYM_MAP: dict[int, int] = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}

#: Fashion-MNIST asymmetric map, source -> target: ankle boot -> sneaker,
#: sneaker -> sandal, pullover -> shirt, coat <-> dress.
FASHION_ASYM_MAP: dict[int, int] = {9: 7, 7: 5, 2: 6, 4: 3, 3: 4}

#: Patrini et al. (2017) MNIST map, source -> target: 2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1.
MNIST_ASYM_MAP: dict[int, int] = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}


def cifar100_superclass_groups(grouping: str = "superclass") -> list[np.ndarray]:
    """The 20 groups of 5 CIFAR-100 fine labels, each sorted ascending.

    Parameters
    ----------
    grouping:
        ``"superclass"``: the official superclasses (:data:`CIFAR100_COARSE`).
        ``"consecutive"``: fine labels ``5g .. 5g+4``, which is what the
        widely copied code of Patrini et al. (2017) and its descendants
        (``noisify_cifar100_asymmetric``) actually does; since fine labels are
        alphabetical those blocks are *not* superclasses.
    """
    if grouping == "consecutive":
        return [np.arange(5 * g, 5 * g + 5, dtype=np.int64) for g in range(20)]
    return [np.flatnonzero(CIFAR100_COARSE == g).astype(np.int64) for g in range(20)]
