"""Checks of a method's option values: one line each, naming the method and the option.

The registry already refuses unknown option names and values of the wrong plain type
(:func:`noisylabels.registry.call_with_options`); these check what a type cannot say (a range, a
set of words), in the constructor, so ``train.precheck`` reports them before any data are loaded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..errors import UserError

__all__ = ["int_option", "positive_option", "choice_option", "numbers_option"]


def int_option(method: str, name: str, value: Any, low: int) -> int:
    """``value`` if it is an integer (not a bool) ``>= low``; else ``'<method>: <name> must be an integer >= low'``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(f"{method}: {name} must be an integer >= {low}, got {value!r}")
    return value


def positive_option(method: str, name: str, value: Any) -> float:
    """``float(value)`` if it is positive; else ``'<method>: <name> must be positive'``."""
    if not float(value) > 0:
        raise UserError(f"{method}: {name} must be positive, got {value}")
    return float(value)


def choice_option(method: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; else ``'<method>: <name> must be one of ...'``."""
    if value not in choices:
        raise UserError(f"{method}: {name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def numbers_option(method: str, name: str, value: Any, default: Sequence[float], *, context: str = "") -> tuple[float, ...]:
    """``default`` for ``None``, else ``value`` (a number or a list) as ``len(default)`` finite floats;
    anything else is ``'<method>: <name> must be N number(s)<context>'``."""
    if value is None:
        return tuple(default)
    vals = (value,) if isinstance(value, (int, float)) else tuple(value)
    if len(vals) != len(default) or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals):
        raise UserError(f"{method}: {name} must be {len(default)} number(s){context}, got {value!r}")
    return tuple(float(v) for v in vals)
