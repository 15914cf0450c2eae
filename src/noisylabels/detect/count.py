"""Confident learning's counts: the confident joint, its calibration, the joint of given and
true labels, noise matrices and the number of label issues.

Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels",
JAIR 70 (2021). Notation: :math:`\\tilde y` the given (noisy) label, :math:`y^*` the latent
true label, :math:`\\hat p(\\tilde y = j; x)` the model's predicted probability.

* Eq. 2, thresholds :math:`t_j`: :func:`noisylabels.detect.rank.confident_thresholds`.
* Eq. 1, the confident joint :math:`C_{\\tilde y, y^*}[i][j] = |\\{x \\in X_{\\tilde y=i} :
  \\hat p(\\tilde y=j; x) \\ge t_j,\\ j = \\arg\\max_{l : \\hat p_l(x) \\ge t_l} \\hat p_l(x)\\}|`:
  :func:`compute_confident_joint`. Paper-vs-code difference: where several classes pass their
  thresholds, cleanlab 2.x (and this module, to give the same masks) takes the arg-max over
  *all* classes, not only over those above threshold; a probability must reach
  :math:`t_j - 10^{-6}`; the diagonal is floored at 1.
* Eq. 3, calibration :math:`\\tilde C[i][j] = \\frac{C[i][j]}{\\sum_{j'} C[i][j']} |X_{\\tilde y=i}|`
  and Eq. 4, the joint :math:`\\hat Q = \\tilde C / \\sum \\tilde C`: :func:`calibrate_confident_joint`
  (rounded to integers preserving row totals) and :func:`estimate_joint`.
* Sec. 3.1, noise matrix :math:`\\hat P_{\\tilde y | y^*}` (columns of :math:`C` normalised), inverse
  noise matrix :math:`\\hat P_{y^* | \\tilde y}` and latent prior :math:`\\hat p(y^*)` (cleanlab's
  ``py_method='cnt'``): :func:`estimate_latent`.
* The number of label issues: :func:`num_label_issues`; ``'off_diagonal'`` counts the samples
  off the diagonal of the (uncalibrated) confident joint, ``'off_diagonal_calibrated'`` is
  :math:`N (1 - \\operatorname{tr} \\hat Q)`, the paper's estimate of the number of wrong labels
  (the count that ``prune_by_noise_rate`` removes, Sec. 3.2). :func:`estimate_noise` gathers
  all of these.

Functions take the same arguments and give the same numbers as cleanlab 2.9's
``cleanlab.count`` for multi-class data (tests compare them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._validation import check_choice, check_labels_and_probs
from .rank import confident_thresholds

__all__ = ["compute_confident_joint", "calibrate_confident_joint", "estimate_joint", "estimate_latent",
           "num_label_issues", "round_preserving_row_totals", "reduce_issues", "NoiseEstimate", "estimate_noise",
           "ESTIMATION_METHODS"]

_SLACK = 1e-6          # a probability counts as reaching t_j when p >= t_j - 1e-6
_TINY = 1e-100

ESTIMATION_METHODS = ("off_diagonal", "off_diagonal_calibrated")


def _round_preserving_sum(values: np.ndarray) -> np.ndarray:
    """Round to integers so that the rounded values sum to the rounded total.

    Round half to even, then move the largest rounding residuals up (or the most negative
    down) by one until the totals agree (the largest-remainder method, as cleanlab does).
    """
    floats = np.asarray(values, dtype=float)
    ints = floats.round()
    target = np.sum(floats).round()
    total = np.sum(ints).round()
    while abs(total - target) > _SLACK:
        diff = np.round(target - total)
        step = -1 if diff < 0 else 1
        n = min(int(abs(diff)), len(floats))
        order = np.argsort(floats - ints)[::-step][:n]
        ints[order] += step
        total = np.sum(ints).round()
    return ints.astype(int)


def round_preserving_row_totals(matrix: np.ndarray) -> np.ndarray:
    """Round a ``(K, K)`` float matrix to integers, each row keeping its (rounded) total."""
    return np.stack([_round_preserving_sum(row) for row in np.asarray(matrix, dtype=float)]).astype(int)


def _confident_joint(labels: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Uncalibrated confident joint (Eq. 1) and the indices counted off its diagonal."""
    k = p.shape[1]
    above = p >= thresholds - _SLACK
    n_above = above.sum(axis=1)
    guess = np.where(n_above > 1, p.argmax(axis=1), above.argmax(axis=1))
    counted = n_above > 0
    # column-major, as cleanlab builds it (a transposed confusion matrix): the floating-point
    # sums of the calibration then agree bit for bit, and so do its rounding ties
    cj = np.zeros((k, k), dtype=np.int64, order="F")
    np.add.at(cj, (labels[counted], guess[counted]), 1)
    np.fill_diagonal(cj, np.maximum(cj.diagonal(), 1))
    off = np.flatnonzero(counted)[guess[counted] != labels[counted]]
    return cj, off


def calibrate_confident_joint(confident_joint: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Eq. 3: scale each row of ``C`` to the number of samples with that given label, then the
    whole matrix to ``N``; round to integers preserving row totals."""
    cj = np.asarray(confident_joint)
    k = len(cj)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=k)[:k]
    cal = (cj.T / np.clip(cj.sum(axis=1), _TINY, None) * counts).T
    cal = cal / np.clip(np.sum(cal), _TINY, None) * counts.sum()
    return round_preserving_row_totals(cal)


def compute_confident_joint(labels: np.ndarray, pred_probs: np.ndarray, *, thresholds: np.ndarray | None = None,
                            calibrate: bool = True, return_indices_of_off_diagonals: bool = False,
                            allow_missing_classes: bool = False) -> Any:
    """The confident joint ``C[i][j]``: samples with given label ``i`` confidently of class ``j``.

    Confident Learning Eq. 1 (thresholds Eq. 2; see the module docstring for the tie rule),
    calibrated by Eq. 3 when ``calibrate``.

    Parameters
    ----------
    labels, pred_probs:
        Given labels ``(N,)`` and out-of-sample predicted probabilities ``(N, K)``.
    thresholds:
        Per-class thresholds ``(K,)``; default Eq. 2's expected self-confidences.
    calibrate:
        Apply Eq. 3 (rows sum to the class counts, total ``N``).
    return_indices_of_off_diagonals:
        Also return the indices of the samples counted off the diagonal.
    allow_missing_classes:
        Accept classes without samples (their threshold is 2, so no sample is counted there).

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, numpy.ndarray)
        ``(K, K)`` int counts (rows: given label, columns: true label), optionally with indices.
    """
    y, p = check_labels_and_probs(labels, pred_probs, allow_missing_classes=allow_missing_classes)
    t = confident_thresholds(y, p) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    cj, off = _confident_joint(y, p, t)
    if calibrate:
        cj = calibrate_confident_joint(cj, y)
    return (cj, off) if return_indices_of_off_diagonals else cj


def estimate_joint(labels: np.ndarray, pred_probs: np.ndarray, *, confident_joint: np.ndarray | None = None,
                   allow_missing_classes: bool = False) -> np.ndarray:
    """Eq. 4: :math:`\\hat Q_{\\tilde y, y^*}`, the joint of given and true labels (sums to 1, row sums
    equal the given-label frequencies). ``confident_joint`` (uncalibrated) may be passed in."""
    y, p = check_labels_and_probs(labels, pred_probs, allow_missing_classes=allow_missing_classes)
    if confident_joint is None:
        cal = calibrate_confident_joint(_confident_joint(y, p, confident_thresholds(y, p))[0], y)
    else:
        cal = calibrate_confident_joint(np.asarray(confident_joint), y)
    return cal / np.clip(float(np.sum(cal)), _TINY, None)


def estimate_latent(confident_joint: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latent prior :math:`\\hat p(y^*)`, noise matrix :math:`\\hat P(\\tilde y | y^*)` and inverse
    noise matrix :math:`\\hat P(y^* | \\tilde y)` from a confident joint (Sec. 3.1).

    ``py`` is cleanlab's ``'cnt'`` estimate :math:`\\hat p(y^*=k) = \\hat P(y^*=k|\\tilde y=k) /
    \\hat P(\\tilde y=k|y^*=k)\\, p(\\tilde y=k)`; off-diagonal rates are clipped to
    ``[0, 0.9999]`` and columns renormalised; no convergence iterations.
    """
    cj = np.asarray(confident_joint, dtype=float)
    k = len(cj)
    y = np.asarray(labels, dtype=np.int64)
    ps = np.bincount(y, minlength=k)[:k] / float(len(y))
    noise = cj / np.clip(cj.sum(axis=0), _TINY, None)
    inv = cj.T / np.clip(cj.sum(axis=1), _TINY, None)
    py = inv.diagonal() / np.clip(noise.diagonal(), _TINY, None) * ps
    py = np.clip(py, 1e-6, 1.0)
    py = py / np.clip(py.sum(), _TINY, None)

    def clip_rates(m: np.ndarray) -> np.ndarray:
        d = m.diagonal().copy()
        m = np.clip(m, 0, 0.9999)
        np.fill_diagonal(m, d)
        return m / np.clip(m.sum(axis=0), _TINY, None)

    return py, clip_rates(noise), clip_rates(inv)


def reduce_issues(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """True where the model's arg-max (ties within 1e-6 going to the given label) is the given
    label: such a sample is never flagged (cleanlab's final filtering step)."""
    p = np.array(pred_probs, copy=True)
    p[np.arange(len(labels)), labels] += _SLACK
    return p.argmax(axis=1) == labels


def num_label_issues(labels: np.ndarray, pred_probs: np.ndarray, *, estimation_method: str = "off_diagonal",
                     confident_joint: np.ndarray | None = None, allow_missing_classes: bool = False) -> int:
    """Estimated number of wrong labels.

    ``'off_diagonal'`` (cleanlab's default): samples off the confident joint's diagonal whose
    arg-max is not their given label. ``'off_diagonal_calibrated'``: :math:`\\mathrm{rint}(N (1 -
    \\operatorname{tr}\\hat Q))` with :math:`\\hat Q` from Eq. 3-4 (never smaller than the former on
    out-of-sample probabilities; the one :func:`estimate_noise` reports). A ``confident_joint``
    given here is calibrated and used by ``'off_diagonal_calibrated'`` (cleanlab's
    ``'off_diagonal_custom'``).
    """
    check_choice(estimation_method, ESTIMATION_METHODS, "estimation_method")
    y, p = check_labels_and_probs(labels, pred_probs, allow_missing_classes=allow_missing_classes)
    if estimation_method == "off_diagonal":
        _, off = _confident_joint(y, p, confident_thresholds(y, p))
        mask = np.zeros(len(y), dtype=bool)
        mask[off] = True
        mask[reduce_issues(y, p)] = False
        return int(mask.sum())
    joint = estimate_joint(y, p, confident_joint=confident_joint, allow_missing_classes=True)
    return int(np.rint((1.0 - joint.trace()) * len(y)))


@dataclass
class NoiseEstimate:
    """What confident learning estimates about a label set.

    Attributes
    ----------
    confident_joint:
        ``(K, K)`` uncalibrated counts ``C[given][true]`` (Eq. 1).
    joint:
        ``(K, K)`` :math:`\\hat Q_{\\tilde y, y^*}` (Eq. 3-4), sums to 1.
    noise_matrix:
        :math:`\\hat P(\\tilde y=i | y^*=j)`, columns sum to 1.
    inverse_noise_matrix:
        :math:`\\hat P(y^*=i | \\tilde y=j)`, columns sum to 1.
    py:
        Latent prior :math:`\\hat p(y^*)`.
    noise_rate:
        :math:`1 - \\operatorname{tr}\\hat Q`: the estimated fraction of wrong labels.
    num_issues:
        :math:`\\mathrm{rint}(N \\cdot` ``noise_rate``:math:`)`, the estimated number of wrong labels.
    num_issues_off_diagonal:
        cleanlab's default count (``num_label_issues(..., 'off_diagonal')``), usually smaller.
    thresholds:
        Per-class thresholds :math:`t_j` (Eq. 2).
    """

    confident_joint: np.ndarray
    joint: np.ndarray
    noise_matrix: np.ndarray
    inverse_noise_matrix: np.ndarray
    py: np.ndarray
    noise_rate: float
    num_issues: int
    num_issues_off_diagonal: int
    thresholds: np.ndarray
    num_samples: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def top_confusions(self, n: int = 5) -> list[tuple[int, int, float]]:
        """The ``n`` largest off-diagonal entries ``(given, true, fraction of all samples)``."""
        q = self.joint.copy()
        np.fill_diagonal(q, 0.0)
        order = np.argsort(-q, axis=None, kind="stable")[:n]
        out = []
        for flat in order:
            i, j = divmod(int(flat), q.shape[1])
            if q[i, j] <= 0:
                break
            out.append((i, j, float(q[i, j])))
        return out


def estimate_noise(labels: np.ndarray, pred_probs: np.ndarray, *, allow_missing_classes: bool = False) -> NoiseEstimate:
    """Confident learning's estimates from out-of-sample ``pred_probs`` (see :class:`NoiseEstimate`).

    Use cross-fitted probabilities: with in-sample ones the model has fitted the wrong labels,
    so the confident joint is nearly diagonal and the count comes out far too small.
    """
    y, p = check_labels_and_probs(labels, pred_probs, allow_missing_classes=allow_missing_classes)
    t = confident_thresholds(y, p)
    cj, off = _confident_joint(y, p, t)
    cal = calibrate_confident_joint(cj, y)
    joint = cal / np.clip(float(cal.sum()), _TINY, None)
    py, noise, inv = estimate_latent(cal, y)
    rate = float(1.0 - joint.trace())
    mask = np.zeros(len(y), dtype=bool)
    mask[off] = True
    mask[reduce_issues(y, p)] = False
    return NoiseEstimate(confident_joint=cj, joint=joint, noise_matrix=noise, inverse_noise_matrix=inv, py=py,
                         noise_rate=rate, num_issues=int(np.rint(rate * len(y))),
                         num_issues_off_diagonal=int(mask.sum()), thresholds=t, num_samples=len(y))
