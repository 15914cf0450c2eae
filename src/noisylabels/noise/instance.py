"""Instance-dependent label noise of Xia et al. (2020).

Xia, Liu, Han, Wang, Gong, Liu, Niu, Tao, Sugiyama, "Part-dependent label
noise: towards instance-dependent label noise", NeurIPS 2020, Appendix,
Algorithm 2 ("instance-dependent label noise generation").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import UserError
from .core import INSTANCE, NoiseResult, _check_labels, _check_num_classes, _check_rate, _check_seed
from .core import _result, _sample_rows, _streams, register_noise

__all__ = ["instance_noise", "instance_flip_probabilities", "truncated_normal"]

_CHUNK = 4096  # rows of features converted to float at a time


def truncated_normal(
    rng: np.random.Generator, size: int, *, mean: float, std: float, low: float = 0.0, high: float = 1.0
) -> np.ndarray:
    """``size`` draws of ``N(mean, std^2)`` truncated to ``[low, high]``, by rejection.

    Batches are sized from the acceptance probability (computed with
    :func:`math.erf`), so the loop runs a handful of times.  ``std = 0`` gives
    ``mean`` clipped to ``[low, high]``.
    """
    if std == 0:
        return np.full(size, min(max(mean, low), high), dtype=np.float64)

    def cdf(z: float) -> float:
        return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))

    accept = cdf((high - mean) / std) - cdf((low - mean) / std)
    if accept < 1e-6:
        raise UserError(
            f"truncated normal N({mean:g}, {std:g}^2) on [{low:g}, {high:g}] has negligible mass"
        )
    out = np.empty(size, dtype=np.float64)
    filled = 0
    while filled < size:
        need = size - filled
        draw = rng.normal(mean, std, size=int(math.ceil(need / accept * 1.1)) + 16)
        ok = draw[(draw >= low) & (draw <= high)][:need]
        out[filled : filled + ok.size] = ok
        filled += ok.size
    return out


def _instance_probs(
    features: Any,
    labels: np.ndarray,
    num_classes: int,
    rate: float,
    std: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample flip rates ``q`` ``(N,)`` and noisy-label distributions ``P`` ``(N, K)``."""
    x = np.asarray(features)
    n, k = labels.shape[0], num_classes
    if x.ndim < 1 or x.shape[0] != n:
        raise UserError(
            f"features must have one row per label: got {x.shape[0] if x.ndim else 0} rows for {n} labels"
        )
    if x.dtype.kind not in "biuf":
        raise UserError(f"features must be numeric, got dtype {x.dtype}")
    d = int(np.prod(x.shape[1:])) if x.ndim > 1 else 1
    if d == 0:
        raise UserError("features must have at least one value per sample")
    x = x.reshape(n, d)

    # flip rate q_i ~ N(eta, std^2) truncated to [0, 1]
    q = truncated_normal(rng, n, mean=rate, std=std)
    P = np.empty((n, k), dtype=np.float64)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=k)
    start = 0
    for c in range(k):
        # W_c ~ N(0, 1), shape (D, K); drawn for every class (even absent ones) for determinism
        W = rng.standard_normal((d, k))
        members = order[start : start + counts[c]]
        start += counts[c]
        for lo in range(0, members.size, _CHUNK):
            idx = members[lo : lo + _CHUNK]
            xc = x[idx].astype(np.float64)
            if not np.all(np.isfinite(xc)):
                raise UserError("features contain NaN or infinite values")
            norms = np.linalg.norm(xc, axis=1, keepdims=True)
            xc /= np.maximum(norms, 1e-12)  # each sample to unit L2 norm
            s = xc @ W
            s[:, c] = -np.inf  # never "flip" to the clean class
            s -= s.max(axis=1, keepdims=True)
            e = np.exp(s)
            p = e / e.sum(axis=1, keepdims=True)
            p *= q[idx, None]
            p[:, c] = 1.0 - q[idx]
            P[idx] = p
    return q, P


def _check_std(std: Any) -> float:
    try:
        v = float(std)
    except (TypeError, ValueError):
        raise UserError(f"noise type 'instance': option std must be a number, got {std!r}") from None
    if not (0.0 <= v <= 1.0):
        raise UserError(f"noise type 'instance': option std must be in [0, 1], got {std!r}")
    return v


def instance_flip_probabilities(
    features: Any,
    labels: Any,
    *,
    num_classes: int,
    rate: float,
    seed: int,
    std: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample flip rates and noisy-label distributions of Xia et al. (2020), Algorithm 2.

    Uses the same random stream as :func:`apply_noise` with ``"instance"``, so
    the rows returned are exactly those the noisy labels are drawn from.

    Returns
    -------
    q:
        ``(N,)`` flip rates, ``q_i ~ N(rate, std^2)`` truncated to ``[0, 1]``.
    P:
        ``(N, K)`` rows ``P[i] = q_i softmax(x_i W_{y_i})`` with the clean
        entry set to ``1 - q_i`` (the softmax excludes the clean class).
    """
    k = _check_num_classes(num_classes)
    y = _check_labels(labels, k)
    r = _check_rate(rate)
    mrng, _ = _streams(_check_seed(seed))
    return _instance_probs(features, y, k, r, _check_std(std), mrng)


@register_noise(
    "instance",
    INSTANCE,
    help="instance-dependent (Xia et al. 2020): flip rate ~ truncated N(eta, 0.1^2), targets from random projections",
)
def instance_noise(
    labels: np.ndarray,
    features: Any,
    num_classes: int,
    rate: float,
    seed: int,
    /,
    *,
    std: float = 0.1,
) -> NoiseResult:
    """Instance-dependent noise, Xia et al. (2020, NeurIPS, Appendix Algorithm 2).

    1. Flatten each input to ``x_i`` (``D`` values) and scale it to unit L2 norm.
    2. Draw flip rates ``q_i ~ N(eta, std^2)`` truncated to ``[0, 1]`` (``std = 0.1`` in the paper).
    3. Draw ``W_c ~ N(0, 1)`` of shape ``(D, K)`` for every class ``c``.
    4. For sample ``i`` with label ``y``: ``s = x_i W_y``, ``s_y = -inf``,
       ``p = q_i softmax(s)``, ``p_y = 1 - q_i``.
    5. ``noisy_i ~ Categorical(p)``.

    The expected realised rate is ``mean(q_i) ~= eta``.  The returned
    ``transition`` is the mean of the rows ``p`` within each clean class.
    Vectorised per class (``K`` matrix products, chunked), never per sample.
    """
    mrng, srng = _streams(seed)
    q, P = _instance_probs(features, labels, num_classes, rate, _check_std(std), mrng)
    noisy = _sample_rows(P, srng)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    sums = np.eye(num_classes)[labels].T @ P  # per-class sums of the rows
    T = np.divide(sums, counts[:, None], out=np.eye(num_classes), where=counts[:, None] > 0)
    T /= T.sum(axis=1, keepdims=True)
    return _result(noisy, T, labels, "instance", rate)
