"""Input and hyperparameter checks shared by the loss functions.

Every check raises :class:`noisylabels.errors.UserError` with a one-line
message naming the loss, the offending option and the offending value.
"""

from __future__ import annotations

import numbers
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError

__all__ = ["HParam", "check_inputs", "check_targets", "check_reduction", "hparam", "reduce"]

#: A hyperparameter: a Python number, a 0-d tensor, or a per-sample tensor of shape (B,).
HParam = Union[float, Tensor]

_REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str, loss: str) -> None:
    """Raise if ``reduction`` is not one of 'mean', 'sum', 'none'."""
    if reduction not in _REDUCTIONS:
        raise UserError(
            f"{loss}: reduction must be one of {', '.join(map(repr, _REDUCTIONS))}; got {reduction!r}"
        )


def reduce(loss: Tensor, reduction: str) -> Tensor:
    """Apply ``reduction`` to a per-sample loss vector of shape (B,)."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean()


def check_inputs(logits: Any, target: Any, loss: str) -> tuple[Tensor, Tensor]:
    """Check logits (B, K) floating and target (B,) integer class indices in [0, K).

    Returns the logits and the target as int64.
    """
    if not isinstance(logits, Tensor) or logits.ndim != 2 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise UserError(f"{loss}: logits must be a floating tensor of shape (B, K); got {shape}")
    n, k = logits.shape
    if k < 2:
        raise UserError(f"{loss}: logits need at least 2 classes; got shape {tuple(logits.shape)}")
    if isinstance(target, Tensor) and target.is_floating_point() and target.ndim == 2:
        raise UserError(f"{loss}: takes class indices only; soft (probability-vector) targets are not defined for it")
    if not isinstance(target, Tensor) or target.ndim != 1 or target.shape[0] != n:
        shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise UserError(
            f"{loss}: target must be a tensor of class indices of shape ({n},) matching logits "
            f"{tuple(logits.shape)}; got {shape}"
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise UserError(f"{loss}: target must hold int64 class indices; got dtype {target.dtype}")
    if target.device != logits.device:
        raise UserError(f"{loss}: target is on {target.device} but logits are on {logits.device}")
    if n:
        lo, hi = torch.aminmax(target)
        lo_v, hi_v = int(lo), int(hi)
        if lo_v < 0 or hi_v >= k:
            bad = lo_v if lo_v < 0 else hi_v
            raise UserError(f"{loss}: labels must lie in [0, {k}); got label {bad}")
    return logits, target.long()


def check_targets(logits: Any, target: Any, loss: str) -> tuple[Tensor, Tensor, bool]:
    """Like :func:`check_inputs`, but ``target`` may also be soft: a floating (B, K) tensor of
    probability vectors (non-negative, rows summing to 1 within 1e-4).

    Returns ``(logits, target, soft)``; a soft target is cast to the logits' dtype.
    """
    if isinstance(target, Tensor) and target.is_floating_point() and target.ndim == 2:
        if not isinstance(logits, Tensor) or logits.ndim != 2 or not logits.is_floating_point():
            check_inputs(logits, target, loss)  # raises the logits message
        if tuple(target.shape) != tuple(logits.shape):
            raise UserError(f"{loss}: a soft target must have the logits' shape {tuple(logits.shape)}; "
                            f"got {tuple(target.shape)}")
        if target.device != logits.device:
            raise UserError(f"{loss}: target is on {target.device} but logits are on {logits.device}")
        q = target.detach()
        if q.numel():
            if not bool(torch.isfinite(q).all()) or bool((q < 0).any()):
                raise UserError(f"{loss}: a soft target must hold finite non-negative probabilities")
            worst = float((q.sum(1) - 1).abs().max())
            if worst > 1e-4:
                raise UserError(f"{loss}: soft target rows must sum to 1; a row is off by {worst:.3g}")
        return logits, target.to(logits.dtype), True
    logits, target = check_inputs(logits, target, loss)
    return logits, target, False


def _describe_interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"


def hparam(
    value: Any,
    name: str,
    loss: str,
    logits: Tensor,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Tensor:
    """Turn a hyperparameter into a tensor that broadcasts over the batch and check its range.

    Parameters
    ----------
    value:
        A Python/numpy number, a 0-d tensor or a per-sample tensor of shape (B,).
        Tensors keep their autograd graph (they are only cast to the logits'
        dtype and device), so gradients flow back into whatever produced them.
    name, loss:
        Used in error messages.
    logits:
        The (B, K) logits; fixes B, dtype and device.
    low, high, low_open, high_open:
        The admissible interval; ``None`` means unbounded. Non-finite values are
        always rejected.

    Returns
    -------
    Tensor
        A 0-d tensor or a tensor of shape (B,).
    """
    n = logits.shape[0]
    if isinstance(value, Tensor):
        t = value.to(dtype=logits.dtype, device=logits.device)
        if not (t.ndim == 0 or (t.ndim == 1 and t.shape[0] == n)):
            raise UserError(
                f"{loss}: option {name} must be a float or a tensor of shape ({n},); "
                f"got shape {tuple(value.shape)}"
            )
    elif isinstance(value, np.ndarray):
        return hparam(torch.as_tensor(value), name, loss, logits, low=low, high=high,
                      low_open=low_open, high_open=high_open)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        t = torch.tensor(float(value), dtype=logits.dtype, device=logits.device)
    else:
        raise UserError(f"{loss}: option {name} must be a float or a tensor; got {type(value).__name__}")
    v = t.detach()
    ok = torch.isfinite(v)
    if low is not None:
        ok &= (v > low) if low_open else (v >= low)
    if high is not None:
        ok &= (v < high) if high_open else (v <= high)
    if not bool(ok.all()):
        bad = float(v[~ok].flatten()[0]) if v.ndim else float(v)
        raise UserError(
            f"{loss}: option {name} must lie in {_describe_interval(low, high, low_open, high_open)}; "
            f"got {bad:g}"
        )
    return t
