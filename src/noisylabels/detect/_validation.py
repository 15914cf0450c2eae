"""Input checks shared by :mod:`noisylabels.detect` (one place, one-line errors).

Every public detection function calls :func:`check_labels_and_probs` first. A problem the
user can cause raises :class:`noisylabels.errors.UserError` with one line that names the
argument and the offending value: wrong shapes or dtypes, non-finite or out-of-range
probabilities, rows that do not sum to 1, labels outside ``[0, K)``, and classes that no
sample is labelled with (confident learning needs at least one sample per class to set
that class's threshold; ``allow_missing_classes=True`` gives cleanlab's behaviour instead:
such a class gets threshold 2 and no sample is counted into it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UserError

__all__ = ["ROW_SUM_TOLERANCE", "PROB_TOLERANCE", "check_labels_and_probs", "check_labels", "check_choice",
           "check_fraction"]

#: rows of ``pred_probs`` must sum to 1 within this absolute tolerance (float32 softmax
#: outputs are within ~1e-6; probabilities rounded to 4 decimals in a CSV within ~5e-4)
ROW_SUM_TOLERANCE = 1e-3
#: entries may lie this far outside [0, 1] (cleanlab's FLOATING_POINT_COMPARISON)
PROB_TOLERANCE = 1e-6


def check_labels(labels: Any, *, num_classes: int | None = None, n: int | None = None,
                 name: str = "labels") -> np.ndarray:
    """``labels`` as a 1-D int64 array (integers, or floats holding integers), in ``[0, num_classes)``."""
    if hasattr(labels, "detach"):  # a torch tensor
        labels = labels.detach().cpu().numpy()
    try:
        arr = np.asarray(labels)
    except (TypeError, ValueError) as err:
        raise UserError(f"{name} must be a 1-D array of class indices: {err}") from None
    if arr.ndim != 1:
        raise UserError(f"{name} must be a 1-D array of class indices, got shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        if arr.size:
            raise UserError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if arr.size and np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            i = int(np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))[0])
            raise UserError(f"{name} must hold integer class indices; position {i} holds {arr[i]!r}")
    out = arr.astype(np.int64)
    if n is not None and len(out) != n:
        raise UserError(f"{name} has {len(out)} entries but pred_probs has {n} rows")
    if num_classes is not None and out.size:
        bad = (out < 0) | (out >= num_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UserError(f"{name}[{i}] = {int(out[i])} is outside [0, {num_classes}) "
                            f"({int(bad.sum())} label(s) out of range; pred_probs has {num_classes} columns)")
    return out


def check_labels_and_probs(labels: Any, pred_probs: Any, *, allow_missing_classes: bool = False,
                           min_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``labels`` (N,) and ``pred_probs`` (N, K); return them as numpy arrays.

    ``pred_probs`` keeps its floating dtype (so scores equal cleanlab's in that dtype);
    integer or boolean arrays are refused.

    Raises
    ------
    UserError
        ``pred_probs`` not 2-D floating, fewer than ``min_classes`` columns, non-finite
        entries, entries outside ``[0, 1]``, a row not summing to 1 (within
        :data:`ROW_SUM_TOLERANCE`), a length mismatch, a label outside ``[0, K)``, no samples,
        or a class without samples (unless ``allow_missing_classes``).
    """
    if hasattr(pred_probs, "detach"):
        pred_probs = pred_probs.detach().cpu().numpy()
    try:
        p = np.asarray(pred_probs)
    except (TypeError, ValueError) as err:
        raise UserError(f"pred_probs must be a numeric (N, K) array: {err}") from None
    if p.ndim != 2:
        raise UserError(f"pred_probs must be a 2-D (N, K) array, got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.floating):
        raise UserError(f"pred_probs must hold floating-point probabilities, got dtype {p.dtype}")
    n, k = p.shape
    if n == 0:
        raise UserError("pred_probs has no rows (no samples to score)")
    if k < min_classes:
        raise UserError(f"pred_probs must have at least {min_classes} columns (one per class), got shape {p.shape}")
    finite = np.isfinite(p)
    if not finite.all():
        i, j = map(int, np.argwhere(~finite)[0])
        raise UserError(f"pred_probs[{i}, {j}] = {p[i, j]} is not finite ({int((~finite).sum())} such entries)")
    lo, hi = float(p.min()), float(p.max())
    if lo < -PROB_TOLERANCE or hi > 1 + PROB_TOLERANCE:
        i, j = map(int, np.argwhere((p < -PROB_TOLERANCE) | (p > 1 + PROB_TOLERANCE))[0])
        raise UserError(f"pred_probs must be probabilities in [0, 1]; pred_probs[{i}, {j}] = {p[i, j]:.6g} "
                        "(logits? apply a softmax first)")
    sums = p.sum(axis=1, dtype=np.float64)
    off = np.abs(sums - 1.0) > ROW_SUM_TOLERANCE
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise UserError(f"each row of pred_probs must sum to 1; row {i} sums to {sums[i]:.6g} "
                        f"({int(off.sum())} of {n} rows off by more than {ROW_SUM_TOLERANCE:g})")
    y = check_labels(labels, num_classes=k, n=n)
    if not allow_missing_classes:
        counts = np.bincount(y, minlength=k)
        missing = np.flatnonzero(counts == 0)
        if len(missing):
            shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            raise UserError(f"class(es) {shown} of the {k} columns of pred_probs have no sample with that label; "
                            "drop those columns or pass allow_missing_classes=True")
    return y, p


def check_choice(value: Any, choices: tuple[str, ...], name: str) -> str:
    """``value`` if it is one of ``choices``, else a one-line :class:`UserError` listing them."""
    if value not in choices:
        raise UserError(f"unknown {name} {value!r}; valid: {', '.join(choices)}")
    return str(value)


def check_fraction(value: Any, name: str, *, low: float = 0.0, high: float = 1.0) -> float:
    """``value`` as a float in ``[low, high]``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}") from None
    if not low <= v <= high:
        raise UserError(f"{name} must be in [{low:g}, {high:g}], got {v:g}")
    return v
