"""Which labels are wrong: confident learning's filters (Northcutt et al. 2021, Sec. 3.2).

:func:`find_label_issues` has the arguments and meanings of cleanlab 2.x's
``cleanlab.filter.find_label_issues`` for multi-class data and returns the same mask on the
same inputs. ``filter_by``:

* ``'prune_by_noise_rate'`` (default, the paper's "PBNR"): for each given class ``i`` and
  each other class ``j``, flag the :math:`N \\hat Q[i][j]` samples labelled ``i`` with the largest
  margin :math:`\\hat p_j - \\hat p_i` (counts from the calibrated joint, Eq. 3-4, after
  keeping at least ``min_examples_per_class`` per class).
* ``'prune_by_class'`` ("PBC"): for each class ``i`` flag the :math:`n_i - N \\hat Q[i][i]` samples
  labelled ``i`` with the lowest :math:`\\hat p_i`.
* ``'both'``: flagged by both of the above ("C+NR").
* ``'confident_learning'`` (":math:`C_{confusion}`" / ":math:`C_{\\tilde y, y^*}`"): the samples
  counted off the diagonal of the confident joint (Eq. 1).
* ``'predicted_neq_given'``: arg-max differs from the given label (a baseline).
* ``'low_self_confidence'`` / ``'low_normalized_margin'``: the ``num_label_issues`` samples
  with the lowest score (cleanlab's ranking-then-counting variants).

All but the last two finally unflag samples whose arg-max is their given label (ties within
1e-6 go to the given label). ``frac_noise`` scales the counts of the three pruning filters;
``num_to_remove_per_class`` fixes them per given class.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..errors import UserError
from ._validation import check_choice, check_fraction, check_labels_and_probs
from .count import _confident_joint, calibrate_confident_joint, reduce_issues, round_preserving_row_totals
from .rank import SCORE_METHODS, _scores, confident_thresholds

__all__ = ["FILTER_METHODS", "find_label_issues", "find_predicted_neq_given"]

FILTER_METHODS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
                  "low_normalized_margin", "low_self_confidence")
_PRUNING = ("prune_by_noise_rate", "prune_by_class", "both")


def _keep_at_least(prune: np.ndarray, n: int, frac_noise: float) -> np.ndarray:
    """Raise each diagonal entry of the prune-count matrix (``C.T``) to at least ``n``, taking
    the increase evenly from the column's non-zero off-diagonal entries; then multiply the
    off-diagonal by ``frac_noise`` keeping column totals; integers with row totals kept."""
    diag = np.diagonal(prune)
    new_diag = np.maximum(diag, n)
    raise_by = new_diag - diag
    per_col = np.maximum(np.count_nonzero(prune, axis=0) - 1.0, 1.0)
    m = prune - raise_by / per_col
    m[m < 0] = 0
    np.fill_diagonal(m, new_diag)
    scaled = m * frac_noise
    np.fill_diagonal(scaled, m.diagonal() + np.sum(m - np.where(np.eye(len(m), dtype=bool), m, scaled), axis=0))
    return round_preserving_row_totals(scaled.astype(int)).astype(int)


def find_predicted_neq_given(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Mask of samples whose arg-max prediction differs from the given label."""
    y, p = check_labels_and_probs(labels, pred_probs, allow_missing_classes=True)
    return p.argmax(axis=1) != y


def find_label_issues(labels: np.ndarray, pred_probs: np.ndarray, *, return_indices_ranked_by: str | None = None,
                      rank_by_kwargs: dict[str, Any] | None = None, filter_by: str = "prune_by_noise_rate",
                      frac_noise: float = 1.0, num_to_remove_per_class: list[int] | None = None,
                      min_examples_per_class: int = 1, confident_joint: np.ndarray | None = None,
                      allow_missing_classes: bool = False) -> np.ndarray:
    """Flag the samples whose given label is likely wrong.

    Parameters
    ----------
    labels:
        Given labels ``(N,)`` in ``[0, K)``.
    pred_probs:
        Out-of-sample predicted probabilities ``(N, K)`` (cross-fitted: in-sample
        probabilities have fitted the wrong labels and flag far too few).
    return_indices_ranked_by:
        ``None`` returns a boolean mask; a score method (``'self_confidence'``,
        ``'normalized_margin'``, ``'confidence_weighted_entropy'``) returns the flagged indices,
        most severe first.
    rank_by_kwargs:
        Options of the ranking score (``adjust_pred_probs``).
    filter_by:
        One of :data:`FILTER_METHODS` (see the module docstring).
    frac_noise:
        In ``(0, 1]``: flag only this fraction of the estimated issues (pruning filters).
    num_to_remove_per_class:
        ``K`` counts: flag this many per given class (pruning filters).
    min_examples_per_class:
        Leave at least this many samples of each given class unflagged (pruning filters).
    confident_joint:
        A precomputed *uncalibrated* confident joint (ignored, with a warning, by
        ``'confident_learning'``, which recomputes it).
    allow_missing_classes:
        Accept classes without samples (cleanlab's behaviour); by default an error.

    Returns
    -------
    numpy.ndarray
        A boolean mask ``(N,)``, or int indices of the flagged samples ranked by severity.

    Raises
    ------
    UserError
        Invalid inputs or options (one line).
    """
    check_choice(filter_by, FILTER_METHODS, "filter_by")
    if return_indices_ranked_by is not None:
        check_choice(return_indices_ranked_by, SCORE_METHODS, "return_indices_ranked_by")
    y, p = check_labels_and_probs(labels, pred_probs, allow_missing_classes=allow_missing_classes)
    n, k = p.shape
    frac_noise = check_fraction(frac_noise, "frac_noise")
    if frac_noise == 0:
        raise UserError("frac_noise must be in (0, 1], got 0")
    if not isinstance(min_examples_per_class, (int, np.integer)) or min_examples_per_class < 0:
        raise UserError(f"min_examples_per_class must be a non-negative integer, got {min_examples_per_class!r}")
    if filter_by not in _PRUNING:
        if num_to_remove_per_class is not None:
            raise UserError(f"num_to_remove_per_class needs filter_by in {', '.join(_PRUNING)}; got {filter_by!r}")
        if frac_noise != 1.0:
            warnings.warn(f"frac_noise is ignored by filter_by={filter_by!r}", stacklevel=2)
    if num_to_remove_per_class is not None:
        remove = np.asarray(num_to_remove_per_class)
        if remove.shape != (k,) or not np.issubdtype(remove.dtype, np.integer) or (remove < 0).any():
            raise UserError(f"num_to_remove_per_class must be {k} non-negative integers, got {num_to_remove_per_class!r}")
    counts = np.bincount(y, minlength=k)
    thresholds = confident_thresholds(y, p)
    if confident_joint is None or filter_by == "confident_learning":
        if confident_joint is not None:
            warnings.warn("filter_by='confident_learning' recomputes the confident joint; the one given is ignored",
                          stacklevel=2)
        cj, off = _confident_joint(y, p, thresholds)
    else:
        cj = np.asarray(confident_joint)
        if cj.shape != (k, k):
            raise UserError(f"confident_joint must have shape ({k}, {k}), got {cj.shape}")
        off = None

    mask = np.zeros(n, dtype=bool)
    if filter_by in ("low_normalized_margin", "low_self_confidence"):
        scores = _scores(y, p, filter_by[4:], False)
        cj0, off0 = (cj, off) if off is not None else _confident_joint(y, p, thresholds)
        count = np.zeros(n, dtype=bool)
        count[off0] = True
        count[reduce_issues(y, p)] = False
        mask[np.argsort(scores)[: int(count.sum())]] = True
    elif filter_by == "confident_learning":
        mask[off] = True
    elif filter_by == "predicted_neq_given":
        mask = p.argmax(axis=1) != y
    else:
        cal = calibrate_confident_joint(cj, y) if confident_joint is None else cj
        prune = _keep_at_least(cal.T, min_examples_per_class, frac_noise)
        if num_to_remove_per_class is not None:
            psy = prune / np.sum(prune, axis=1)
            noise_per = psy.sum(axis=1) - psy.diagonal()
            tmp = (psy.T * remove / noise_per).T
            np.fill_diagonal(tmp, counts - remove)
            prune = round_preserving_row_totals(tmp)
        by_class = np.zeros(n, dtype=bool)
        by_rate = np.zeros(n, dtype=bool)
        for c in range(k):
            members = np.flatnonzero(y == c)
            if len(members) <= min_examples_per_class:
                if len(members):
                    warnings.warn(f"class {c} has too few samples ({len(members)}) to flag any "
                                  "(see min_examples_per_class)", stacklevel=2)
                continue
            pc = p[members]
            if filter_by in ("prune_by_class", "both"):
                num = len(members) - prune[c, c]
                if num >= 1:
                    by_class[members[np.argsort(pc[:, c])[:num]]] = True
            if filter_by in ("prune_by_noise_rate", "both"):
                for j in range(k):
                    num = prune[j, c]
                    if j != c and num > 0:
                        margin = pc[:, j] - pc[:, c]
                        by_rate[members[np.argsort(-margin)[:num]]] = True
        mask = {"prune_by_class": by_class, "prune_by_noise_rate": by_rate, "both": by_class & by_rate}[filter_by]
    if filter_by not in ("low_normalized_margin", "low_self_confidence"):
        mask[reduce_issues(y, p)] = False
    if return_indices_ranked_by is None:
        return mask
    kwargs = dict(rank_by_kwargs or {})
    unknown = set(kwargs) - {"adjust_pred_probs"}
    if unknown:
        raise UserError(f"unknown rank_by_kwargs {sorted(unknown)}; valid: adjust_pred_probs")
    scores = _scores(y, p, return_indices_ranked_by, bool(kwargs.get("adjust_pred_probs", False)))
    idx = np.flatnonzero(mask)
    return idx[np.argsort(scores[idx], kind="stable")]
