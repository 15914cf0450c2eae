"""Open-set label noise of Wang et al. (2018).

Wang, Liu, Ma, Bailey, Zha, Song, Xia, "Iterative learning with open-set noisy
labels", CVPR 2018, Sec. 4.1: a fraction of the training images is replaced by
images from another dataset (e.g. CIFAR-100 or SVHN images in CIFAR-10) while
their labels are kept, so those labels are wrong and no class is right.

It changes images, not only labels, so it is applied by the data pipeline
(``noise.type: open-set`` with ``noise.options.source``); ``apply_noise("open-set", ...)``
raises a :class:`~noisylabels.errors.UserError` saying so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import UserError
from .core import OPEN_SET, _check_labels, _check_num_classes, _check_rate, _check_seed, register_noise

__all__ = ["open_set", "open_set_count"]


def open_set_count(n: int, rate: float) -> int:
    """Number of images :func:`open_set` replaces: ``round(rate * n)``, halves rounded up."""
    return int(math.floor(rate * n + 0.5))


def open_set(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    rate: float,
    other_images: np.ndarray,
    num_classes: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replace a fraction ``rate`` of the training images by out-of-distribution images.

    Wang et al. (2018, CVPR, Sec. 4.1) open-set noise.  Exactly
    :func:`open_set_count` ``(N, rate)`` images, chosen uniformly without
    replacement, are overwritten by images drawn uniformly from
    ``other_images`` (without replacement when there are enough, with
    replacement otherwise).  Labels are kept, so the replaced samples carry a
    label of a class they do not belong to.

    Parameters
    ----------
    x:
        Training images ``(N, H, W, C)`` (any trailing shape; usually uint8 NHWC).
    labels:
        Their labels ``(N,)`` in ``[0, num_classes)``.
    rate:
        Fraction in ``[0, 1)``.
    other_images:
        Out-of-distribution images ``(M, H, W, C)`` with the same trailing shape and dtype as ``x``.
    num_classes:
        ``K >= 2``.
    seed:
        Non-negative integer.

    Returns
    -------
    x_new:
        Copy of ``x`` with the replaced images.
    labels_new:
        ``int64`` copy of ``labels`` (unchanged values).
    replaced_mask:
        Boolean ``(N,)``, true where the image was replaced.
    """
    k = _check_num_classes(num_classes)
    r = _check_rate(rate)
    rng = np.random.default_rng(_check_seed(seed))
    xa = np.asarray(x)
    y = _check_labels(labels, k)
    if xa.ndim < 1 or xa.shape[0] != y.shape[0]:
        raise UserError(
            f"open-set noise: {xa.shape[0] if xa.ndim else 0} images but {y.shape[0]} labels"
        )
    other = np.asarray(other_images)
    if other.ndim != xa.ndim or other.shape[1:] != xa.shape[1:]:
        raise UserError(
            f"open-set noise: other_images have image shape {other.shape[1:]} but training images "
            f"have {xa.shape[1:]} (resize / convert the out-of-distribution images first)"
        )
    if other.dtype != xa.dtype:
        raise UserError(
            f"open-set noise: other_images have dtype {other.dtype} but training images have {xa.dtype}"
        )
    n = y.shape[0]
    n_rep = open_set_count(n, r)
    x_new = xa.copy()
    mask = np.zeros(n, dtype=bool)
    if n_rep:
        m = other.shape[0]
        if m == 0:
            raise UserError("open-set noise: other_images is empty")
        idx = rng.choice(n, size=n_rep, replace=False)
        src = rng.choice(m, size=n_rep, replace=n_rep > m)
        x_new[idx] = other[src]
        mask[idx] = True
    return x_new, y, mask


@register_noise(
    "open-set",
    OPEN_SET,
    help="open-set (Wang et al. 2018): replace a fraction of images by out-of-distribution ones, "
    "keeping labels; set in the data config (noise.options.source)",
)
def _open_set_entry(*args: Any, **kwargs: Any) -> None:  # pragma: no cover - dispatch raises first
    """Registry entry only; :func:`apply_noise` raises a UserError pointing to the data pipeline."""
    raise UserError("open-set noise is applied by the data pipeline; use noisylabels.noise.open_set")
