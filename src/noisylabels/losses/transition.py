"""Anchor-point estimator of the noise transition matrix (Patrini et al., CVPR 2017)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError

__all__ = ["estimate_transition"]


def estimate_transition(
    probs: Any, *, percentile: float | None = 97.0, row_normalize: bool = True
) -> Tensor:
    """Estimate T[i, j] = P(noisy j | clean i) from noisy-label posteriors (Patrini et al., CVPR 2017).

    For each class i an anchor ("perfect example") is picked among the samples and row i of
    T-hat is the predicted noisy-label distribution p(y~ | x_anchor) of that sample.

    Convention (official code ``giorgiop/loss-correction``, ``NoiseEstimator`` in models.py):

    * ``percentile=None`` (``filter_outlier=False``): the anchor is ``argmax_n probs[n, i]``.
    * ``percentile=P`` (``filter_outlier=True``, used there for every dataset except CIFAR-100,
      with P = 97): ``thr = np.percentile(probs[:, i], P, interpolation='higher')`` (an actual
      data value), every sample with ``probs[n, i] >= thr`` is discarded as a possible outlier,
      and the anchor is the remaining sample with the largest ``probs[n, i]``. If no sample
      remains (all values equal), the plain argmax is used.
    * ``row_normalize=True`` (the default there): each row of T-hat is divided by its sum.

    The official code zeroes the filtered entries in place in the shared probability array,
    so later rows can read zeros from earlier classes' filtered entries; this implementation
    works on a copy and does not reproduce that side effect.

    Parameters
    ----------
    probs:
        (N, K) tensor or array of predicted probabilities p(y~ | x) of a network trained on the
        noisy labels (e.g. with plain CE), on held-out or training data.
    percentile:
        In (0, 100], or None for the plain argmax.
    row_normalize:
        Divide each estimated row by its sum.

    Returns
    -------
    Tensor
        T-hat of shape (K, K), dtype and device of ``probs`` (float64 for arrays).
    """
    p = probs.detach() if isinstance(probs, Tensor) else torch.as_tensor(np.asarray(probs, dtype=np.float64))
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise UserError(f"estimate_transition: probs must have shape (N, K) with N >= 1, K >= 2; got {tuple(p.shape)}")
    if not p.is_floating_point():
        p = p.double()
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
        raise UserError("estimate_transition: probs must be finite and non-negative")
    if percentile is not None and not (0.0 < float(percentile) <= 100.0):
        raise UserError(f"estimate_transition: percentile must lie in (0, 100] or be None; got {percentile}")
    k = p.shape[1]
    anchors = torch.empty(k, dtype=torch.long, device=p.device)
    if percentile is not None:
        # np.percentile(..., interpolation='higher') is the order statistic ceil((N-1) P/100)
        sorted_cols = torch.sort(p, dim=0).values
        idx = min(int(math.ceil((p.shape[0] - 1) * (float(percentile) / 100.0))), p.shape[0] - 1)
    for i in range(k):
        col = p[:, i]
        if percentile is None:
            anchors[i] = col.argmax()
            continue
        thr = sorted_cols[idx, i]
        below = col < thr
        if bool(below.any()):
            anchors[i] = torch.where(below, col, torch.full_like(col, float("-inf"))).argmax()
        else:
            anchors[i] = col.argmax()
    t_hat = p[anchors].clone()
    if row_normalize:
        sums = t_hat.sum(dim=1, keepdim=True)
        if bool((sums <= 0).any()):
            raise UserError("estimate_transition: an anchor has all-zero probabilities; cannot row-normalize")
        t_hat = t_hat / sums
    return t_hat
