"""When a suggested label may replace a given one, and how far the scoring models can be trusted.

Confident learning flags a sample and suggests its arg-max class; whether that suggestion is
right depends on how accurate the scoring models are out of sample. Measured
(``benchmarks/cl_reliability.py``, simulated noise on digits; ``benchmarks/realnoise_findings.md``):
at an out-of-sample accuracy of 93-95% the noise estimate is within 10% of the truth and 90% of
the suggestions on flagged samples are right; at 84-89% it over-counts by 15-40%, at 75% by
40-70% and at 48% by twice the truth, while fewer than half the suggestions are right below
about 70-75%. So:

* :func:`reference_rows` -- the rows the models' out-of-sample accuracy is measured on: the
  held-out ``test`` rows of a data set's own test split (not one carved from the user's labels)
  when there are at least ``2 K`` of them, else every held-out row (then the "accuracy" is the
  agreement with the given, possibly wrong labels);
* :func:`class_precision` -- per class ``j``, the fraction of reference rows predicted ``j`` whose
  label is ``j`` (the models' out-of-sample precision for ``j``);
* :func:`calibrated_threshold` -- the smallest confidence (max probability) at which the
  isotonic fit of "arg-max is right" against the confidence exceeds one half on the reference
  rows: above it the suggestion is right more often than wrong;
* :func:`relabel_decisions` -- the rule ``export --relabel`` applies: a flagged sample is
  relabelled to its suggestion ``s`` only if ``p_s`` is at least the threshold (the calibrated
  one unless the user gives ``--min-confidence``) **and** ``class_precision[s] > 1/2`` (never to
  a class the models get wrong more often than right out of sample); the other flagged samples
  (the *unsupported* ones) keep their given label (``unsupported='keep'``, the default) or are
  left out (``'drop'``, ``export --unsupported drop``): :data:`UNSUPPORTED_DEFAULT`.
* :data:`RELIABLE_ACCURACY` -- below this out-of-sample accuracy ``detect`` warns that confident
  learning's count and suggestions are unreliable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ._validation import check_labels_and_probs

__all__ = ["RELIABLE_ACCURACY", "UNSUPPORTED", "UNSUPPORTED_DEFAULT", "reference_rows", "class_precision",
           "calibrated_threshold", "RelabelRule", "relabel_rule", "relabel_decisions"]

#: out-of-sample accuracy below which the noise estimate over-counts by more than ~20% and a
#: growing share of the suggestions is wrong (``benchmarks/cl_reliability.py``)
RELIABLE_ACCURACY = 0.85

#: what ``export --relabel`` does with a flagged sample whose suggestion the evidence does not support
UNSUPPORTED = ("keep", "drop")
#: the default: keep it under its given label. Measured (``benchmarks/cleaning_path.py digits``, 3
#: retrain seeds, best-val test accuracy keep / drop): symmetric 40% with scoring models trained
#: 10 / 3 / 1 epochs 92.3 / 92.2, 93.5 / 93.3, 84.0 / 83.5; pair 30% (3 epochs) 87.9 / 86.7; on
#: CIFAR-10N (4k images, ``benchmarks/realnoise_findings.md``) leaving the 1767 unsupported
#: flagged samples out cost 1.5 points against CE on the given labels.
UNSUPPORTED_DEFAULT = "keep"


def reference_rows(split: list[str] | np.ndarray | None, held_out: np.ndarray, num_classes: int, *,
                   test_trusted: bool = False) -> tuple[np.ndarray, str, bool]:
    """The rows the scoring models' out-of-sample accuracy is measured on, what they are, and whether
    their labels are trusted.

    The held-out ``test`` rows when ``test_trusted`` (the data set's own test labels, not carved
    from the user's labels) and there are at least ``2 * num_classes`` of them; else every
    held-out row with its given label (then the "accuracy" is the agreement with noisy labels).
    """
    held = np.asarray(held_out, dtype=bool)
    if split is not None and test_trusted:
        test = np.flatnonzero(held & (np.asarray(split, dtype=object) == "test"))
        if len(test) >= 2 * num_classes:
            return test, "the test split's own labels", True
    return np.flatnonzero(held), "the given labels of the held-out rows (agreement with labels that may be wrong)", False


def class_precision(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """``(K,)``: of the rows whose arg-max is ``j``, the fraction labelled ``j`` (NaN: ``j`` never predicted)."""
    y, p = check_labels_and_probs(labels, pred_probs, allow_missing_classes=True)
    k = p.shape[1]
    pred = p.argmax(axis=1)
    hits = np.bincount(pred, weights=(pred == y).astype(np.float64), minlength=k)
    counts = np.bincount(pred, minlength=k).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def calibrated_threshold(labels: np.ndarray, pred_probs: np.ndarray, *, target: float = 0.5) -> float:
    """Smallest max-probability at which the isotonic (increasing) fit of ``argmax == label`` against
    the max probability exceeds ``target``; ``inf`` when it never does (no suggestion is supported)."""
    from sklearn.isotonic import IsotonicRegression

    y, p = check_labels_and_probs(labels, pred_probs, allow_missing_classes=True)
    if not 0.0 < float(target) < 1.0:
        raise UserError(f"target must be in (0, 1), got {target}")
    if len(y) == 0:
        return float("inf")
    conf = p.max(axis=1)
    right = (p.argmax(axis=1) == y).astype(np.float64)
    fit = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(conf, right).predict(conf)
    above = fit > float(target)
    return float(conf[above].min()) if above.any() else float("inf")


@dataclass(frozen=True)
class RelabelRule:
    """What :func:`relabel_rule` measured and decided."""

    threshold: float             # min p(suggested) for a relabel
    calibrated: bool             # threshold from :func:`calibrated_threshold` (else the user's)
    allowed: np.ndarray          # (K,) bool: classes a sample may be relabelled to
    precision: np.ndarray        # (K,) out-of-sample precision per class (NaN: never predicted)
    accuracy: float              # out-of-sample accuracy on the reference rows
    reference: str               # what the reference rows are
    num_reference: int


def relabel_rule(labels: np.ndarray, pred_probs: np.ndarray, *, split: list[str] | np.ndarray | None,
                 held_out: np.ndarray, min_confidence: float | None = None, test_trusted: bool = False) -> RelabelRule:
    """Measure the scoring models on the reference rows and fix the relabel rule (module docstring).

    Parameters
    ----------
    labels, pred_probs:
        Every row's given label and predicted probabilities (a run's ``labels.csv`` order).
    split, held_out:
        Each row's split name (or ``None``) and whether its probabilities are out-of-sample.
    min_confidence:
        A user's threshold on ``p(suggested)``; ``None``: the calibrated one.
    test_trusted:
        The ``test`` rows carry the data set's own labels (:func:`reference_rows`).
    """
    y, p = check_labels_and_probs(labels, pred_probs, allow_missing_classes=True)
    k = p.shape[1]
    ref, what, _ = reference_rows(split, held_out, k, test_trusted=test_trusted)
    if len(ref) == 0:
        raise UserError("no out-of-sample rows to measure the scoring models on: train with --folds K")
    prec = class_precision(y[ref], p[ref])
    acc = float((p[ref].argmax(axis=1) == y[ref]).mean())
    if min_confidence is None:
        thr, calibrated = calibrated_threshold(y[ref], p[ref]), True
    else:
        if not 0.0 <= float(min_confidence) <= 1.0:
            raise UserError(f"min_confidence must be in [0, 1], got {min_confidence}")
        thr, calibrated = float(min_confidence), False
    allowed = np.nan_to_num(prec, nan=0.0) > 0.5
    return RelabelRule(threshold=thr, calibrated=calibrated, allowed=allowed, precision=prec, accuracy=acc,
                       reference=what, num_reference=len(ref))


def relabel_decisions(pred_probs: np.ndarray, is_issue: np.ndarray, rule: RelabelRule, *,
                      unsupported: str = UNSUPPORTED_DEFAULT) -> np.ndarray:
    """Per row: ``'keep'`` (not flagged), ``'relabel'`` (flagged, suggestion supported), and for a
    flagged row whose suggestion is not supported ``'keep_flagged'`` (given label kept,
    ``unsupported='keep'``) or ``'drop'`` (left out, ``unsupported='drop'``)."""
    if unsupported not in UNSUPPORTED:
        raise UserError(f"unsupported must be one of {', '.join(UNSUPPORTED)}, got {unsupported!r}")
    p = np.asarray(pred_probs, dtype=np.float64)
    flagged = np.asarray(is_issue, dtype=bool)
    sug = p.argmax(axis=1)
    ok = (p[np.arange(len(p)), sug] >= rule.threshold) & rule.allowed[sug]
    other = "keep_flagged" if unsupported == "keep" else "drop"
    return np.where(~flagged, "keep", np.where(ok, "relabel", other))
