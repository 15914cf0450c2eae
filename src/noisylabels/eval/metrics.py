"""Metrics: accuracy, noisy-label detection (AUROC, average precision), label recovery."""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "detection_auroc", "detection_average_precision", "detection_metrics",
           "label_recovery"]


def accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Fraction of ``pred == target``."""
    pred, target = np.asarray(pred), np.asarray(target)
    return float((pred == target).mean()) if target.size else float("nan")


def detection_auroc(scores: np.ndarray, is_noisy: np.ndarray) -> float:
    """AUROC of ``scores`` (higher = more likely mislabeled) against the true corruption mask.

    Computed from ranks (Mann–Whitney U with average ranks for ties); ``nan`` when only one
    class is present.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_noisy, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty_like(s)
    sorted_s = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def detection_average_precision(scores: np.ndarray, is_noisy: np.ndarray) -> float:
    """Average precision of ranking mislabeled samples first (``nan`` without positives)."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(is_noisy, dtype=bool)
    if y.sum() == 0 or y.all():
        return float("nan")
    return float(average_precision_score(y, np.asarray(scores, dtype=np.float64)))


def detection_metrics(scores: np.ndarray, is_noisy: np.ndarray) -> dict[str, float]:
    """``{'detection_auroc': ..., 'detection_ap': ...}``."""
    return {"detection_auroc": detection_auroc(scores, is_noisy),
            "detection_ap": detection_average_precision(scores, is_noisy)}


def label_recovery(corrected: np.ndarray, clean: np.ndarray, noisy: np.ndarray) -> dict[str, float]:
    """How well a set of corrected labels recovers the clean ones.

    Returns overall accuracy of ``corrected`` against ``clean``, the fraction of corrupted
    labels fixed, and the fraction of clean labels broken.
    """
    corrected, clean, noisy = (np.asarray(a) for a in (corrected, clean, noisy))
    wrong = noisy != clean
    return {
        "recovery_accuracy": accuracy(corrected, clean),
        "fixed_fraction": float((corrected[wrong] == clean[wrong]).mean()) if wrong.any() else float("nan"),
        "broken_fraction": float((corrected[~wrong] != clean[~wrong]).mean()) if (~wrong).any() else float("nan"),
    }
