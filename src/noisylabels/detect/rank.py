"""Label quality scores: how likely each given label is correct (lower = more suspicious).

Same names and meanings as cleanlab 2.x's ``cleanlab.rank`` (and equal values on the same
inputs, in the dtype of ``pred_probs``):

* ``self_confidence``: :math:`\\hat p(\\tilde y = y_i; x_i)`, the predicted probability of the
  given label (Northcutt et al. 2021, "Confident Learning", Sec. 3.2's ``self-confidence``
  ranking).
* ``normalized_margin``: :math:`(\\hat p_{y_i} - \\max_{k \\ne y_i} \\hat p_k + 1) / 2`
  (Wei et al. 2018's normalized margin, as ranked in Confident Learning Sec. 3.2).
* ``confidence_weighted_entropy``: :math:`\\log(1 + s) / \\max(s, 10^{-6})` with
  :math:`s = H(\\hat p) / \\log K / \\max(\\hat p_{y_i}, 10^{-6})` (cleanlab's transform of the
  normalised entropy divided by the self-confidence, so that lower means worse).

``adjust_pred_probs=True`` first subtracts each class's confident threshold
:math:`t_j` (Confident Learning Eq. 2) from column ``j``, shifts by :math:`\\max_j t_j` and
renormalises each row (cleanlab's ``_subtract_confident_thresholds``); it accounts for
classes the model is systematically over- or under-confident in.

Scores produced by a training method (MW-Net weights, L2B's alpha, ...) are not functions of
``pred_probs``: a run writes them to ``method_scores.npy`` and ``noisylabels detect --rank-by
method`` ranks by them (:func:`noisylabels.detect.report.run_detection`).
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from ._validation import check_choice, check_labels_and_probs

__all__ = ["SCORE_METHODS", "label_quality_scores", "order_label_issues", "confident_thresholds",
           "normalized_entropy", "subtract_confident_thresholds"]

SCORE_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")

_CLIP = 1e-6                       # cleanlab's CLIPPING_LOWER_BOUND
_THRESHOLD_FLOOR = 2e-6            # lower bound of a confident threshold (> the 1e-6 comparison slack)
_ABSENT_THRESHOLD = 2.0            # threshold of a class without samples: no probability reaches it


def confident_thresholds(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Per-class thresholds :math:`t_j = \\frac{1}{|X_{\\tilde y=j}|}\\sum_{x \\in X_{\\tilde y=j}} \\hat p(\\tilde y=j; x)`.

    Confident Learning (Northcutt, Jiang & Chuang 2021, JAIR), Eq. 2: the expected
    self-confidence of class ``j``. Classes without samples get 2 (never reached); every
    threshold is floored at 2e-6.

    Inputs are assumed valid (see :func:`noisylabels.detect._validation.check_labels_and_probs`).
    """
    k = pred_probs.shape[1]
    present = np.bincount(labels, minlength=k) > 0
    t = [np.mean(pred_probs[labels == j, j]) if present[j] else _ABSENT_THRESHOLD for j in range(k)]
    return np.clip(np.asarray(t, dtype=pred_probs.dtype), _THRESHOLD_FLOOR, None)


def subtract_confident_thresholds(labels: np.ndarray, pred_probs: np.ndarray,
                                  thresholds: np.ndarray | None = None) -> np.ndarray:
    """``pred_probs - t`` shifted by ``max(t)`` and renormalised per row (see module docstring)."""
    t = confident_thresholds(labels, pred_probs) if thresholds is None else np.asarray(thresholds)
    adj = pred_probs - t
    adj += t.max()
    adj /= adj.sum(axis=1, keepdims=True)
    return adj


def normalized_entropy(pred_probs: np.ndarray) -> np.ndarray:
    """:math:`-\\sum_k p_k \\log p_k / \\log K` per row (0 for one-hot rows, 1 for uniform)."""
    from scipy.special import xlogy

    return -np.sum(xlogy(pred_probs, pred_probs), axis=1) / np.log(pred_probs.shape[1])


def _self_confidence(labels: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p[np.arange(len(labels)), labels]


def _normalized_margin(labels: np.ndarray, p: np.ndarray) -> np.ndarray:
    sc = _self_confidence(labels, p)
    others = p.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return (sc - others.max(axis=1) + 1) / 2


def _confidence_weighted_entropy(labels: np.ndarray, p: np.ndarray) -> np.ndarray:
    sc = np.clip(_self_confidence(labels, p), _CLIP, None)
    s = normalized_entropy(p) / sc
    return np.log(s + 1) / np.clip(s, _CLIP, None)


_SCORERS = {"self_confidence": _self_confidence, "normalized_margin": _normalized_margin,
            "confidence_weighted_entropy": _confidence_weighted_entropy}


def _scores(labels: np.ndarray, p: np.ndarray, method: str, adjust_pred_probs: bool) -> np.ndarray:
    """Scores on validated inputs."""
    if adjust_pred_probs:
        if method == "confidence_weighted_entropy":
            raise UserError("adjust_pred_probs is not defined for method='confidence_weighted_entropy'")
        p = subtract_confident_thresholds(labels, p)
    return _SCORERS[method](labels, p)


def label_quality_scores(labels: np.ndarray, pred_probs: np.ndarray, *, method: str = "self_confidence",
                         adjust_pred_probs: bool = False, allow_missing_classes: bool = True) -> np.ndarray:
    """A score in [0, 1] per sample: how likely its given label is correct (lower = worse).

    Parameters
    ----------
    labels:
        Given (possibly wrong) labels, integers in ``[0, K)``, shape ``(N,)``.
    pred_probs:
        Predicted class probabilities ``(N, K)``, rows summing to 1. Use out-of-sample
        (cross-fitted) probabilities where you can: in-sample ones rank about as well but
        are over-confident in the given labels.
    method:
        ``'self_confidence'`` (default), ``'normalized_margin'`` or
        ``'confidence_weighted_entropy'`` (see the module docstring for the formulas).
    adjust_pred_probs:
        Subtract the per-class confident thresholds first (Confident Learning Eq. 2).
    allow_missing_classes:
        Scores need no sample of every class, so a class without samples is allowed here by
        default (``False`` makes it an error as in the counting functions).

    Returns
    -------
    numpy.ndarray
        ``(N,)`` scores, same values as ``cleanlab.rank.get_label_quality_scores``.

    Raises
    ------
    UserError
        Invalid inputs (see :mod:`noisylabels.detect._validation`) or an unknown method.
    """
    check_choice(method, SCORE_METHODS, "label quality method")
    y, p = check_labels_and_probs(labels, pred_probs, allow_missing_classes=allow_missing_classes)
    return _scores(y, p, method, bool(adjust_pred_probs))


def order_label_issues(label_issues_mask: np.ndarray, labels: np.ndarray, pred_probs: np.ndarray, *,
                       rank_by: str = "self_confidence", rank_by_kwargs: dict | None = None) -> np.ndarray:
    """Indices of the flagged samples, most severe (lowest score) first.

    ``rank_by`` is a score method of :func:`label_quality_scores`; ``rank_by_kwargs`` its
    options (``adjust_pred_probs``). Ties keep index order.
    """
    check_choice(rank_by, SCORE_METHODS, "rank_by")
    y, p = check_labels_and_probs(labels, pred_probs, allow_missing_classes=True)
    mask = np.asarray(label_issues_mask, dtype=bool)
    if mask.shape != y.shape:
        raise UserError(f"label_issues_mask has shape {mask.shape}, expected {y.shape}")
    kwargs = dict(rank_by_kwargs or {})
    unknown = set(kwargs) - {"adjust_pred_probs"}
    if unknown:
        raise UserError(f"unknown rank_by_kwargs {sorted(unknown)}; valid: adjust_pred_probs")
    scores = _scores(y, p, rank_by, bool(kwargs.get("adjust_pred_probs", False)))
    idx = np.flatnonzero(mask)
    return idx[np.argsort(scores[idx], kind="stable")]
