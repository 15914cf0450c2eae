"""Shared pieces of :mod:`noisylabels.models`: the registry, the base class and option checks.

Every model is a :class:`Classifier`: a feature extractor followed by one
linear layer. Methods that need penultimate features (meta label correction,
MLC / MSLC; feature-space sample selection) call :meth:`Classifier.features`
and :attr:`Classifier.classifier` separately.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from ..errors import UserError
from ..registry import Registry

__all__ = [
    "eval_mode",
    "MODELS",
    "Classifier",
    "count_parameters",
    "check_int",
    "check_probability",
    "check_choice",
]

#: Registry of model factories. Each factory takes keyword-only
#: ``num_classes``, ``in_channels``, ``image_size`` and its own options and
#: returns a :class:`Classifier`.
MODELS: Registry = Registry("model")


class Classifier(nn.Module):
    """Base class of every model: ``forward(x) = classifier(features(x))``.

    Subclasses build their body, then call :meth:`_set_classifier` last so
    the final linear layer is registered after the body (state-dict order
    follows the data flow).

    Attributes
    ----------
    num_classes:
        Number of output logits ``K``.
    num_features:
        Size of the penultimate features returned by :meth:`features`.
    classifier:
        The last layer, ``nn.Linear(num_features, num_classes)``.
    """

    num_classes: int
    num_features: int
    classifier: nn.Linear

    def _set_classifier(self, num_features: int, num_classes: int) -> None:
        self.num_features = int(num_features)
        self.num_classes = int(num_classes)
        self.classifier = nn.Linear(self.num_features, self.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Return the flattened penultimate activations, shape ``(B, num_features)``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Return logits of shape ``(B, num_classes)`` for images ``x`` of shape ``(B, C, H, W)``."""
        return self.classifier(self.features(x))


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (buffers such as BatchNorm statistics excluded).

    Parameters
    ----------
    model:
        Any ``nn.Module``.
    trainable_only:
        Count only parameters with ``requires_grad=True``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def check_int(model: str, name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` >= ``minimum`` or raise :class:`UserError`."""
    if isinstance(value, bool):
        ok = False
    else:
        try:
            value = operator.index(value)
            ok = value >= minimum
        except TypeError:
            ok = False
    if not ok:
        raise UserError(f"model {model!r}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_probability(model: str, name: str, value: Any) -> float:
    """Return ``value`` as a float in ``[0, 1)`` (a dropout rate) or raise :class:`UserError`."""
    try:
        p = float(value)
    except (TypeError, ValueError):
        p = math.nan
    if isinstance(value, bool) or not (0.0 <= p < 1.0):
        raise UserError(f"model {model!r}: {name} must be a number in [0, 1), got {value!r}")
    return p


def check_choice(model: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value`` matched case-insensitively against ``choices`` or raise :class:`UserError`."""
    for c in choices:
        if isinstance(value, str) and value.lower() == c.lower():
            return c
    raise UserError(
        f"model {model!r}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
    )


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; afterwards every submodule gets back its own mode (an
    ensemble's members, a frozen part, may differ from the whole)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
