"""``nn.Module`` form of the registered losses: one small generic wrapper."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..registry import call_with_options
from ._validation import check_reduction
from .functional import LOSSES

__all__ = ["Loss", "create_loss", "get_loss_fn", "list_losses"]

_ALIASES = {"lq": "gce", "sl": "sce"}


def get_loss_fn(name: str) -> Callable[..., Tensor]:
    """Return the functional form ``fn(logits, target, *, reduction, **hp)`` of loss ``name``.

    Raises :class:`UserError` listing the valid names for an unknown name.
    """
    return LOSSES.get(name)


def list_losses(*, aliases: bool = True) -> list[str]:
    """Sorted names of the registered losses (with the aliases 'lq', 'sl' unless ``aliases=False``)."""
    return [n for n in LOSSES.names() if aliases or n not in _ALIASES]


def _options(fn: Callable[..., Tensor]) -> dict[str, Any]:
    """Keyword-only hyperparameters of ``fn`` (without ``reduction``) and their defaults."""
    return {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if p.kind is p.KEYWORD_ONLY and k != "reduction"
    }


class Loss(nn.Module):
    """A registered loss with default hyperparameters, as an ``nn.Module``.

    ``Loss("gce", q=0.7)(logits, target)`` equals ``gce_loss(logits, target, q=0.7)``.
    ``forward`` accepts per-call overrides, e.g. per-sample tensors predicted by a
    hyperparameter network: ``loss(logits, target, q=q_net(x).squeeze(1))``.

    Tensor-valued defaults (e.g. the transition matrix ``T``) are registered as buffers,
    so ``.to(device)`` moves them and they appear in ``state_dict``.

    Parameters
    ----------
    name:
        A name from :func:`list_losses`.
    reduction:
        Default reduction: 'mean', 'sum' or 'none'.
    **hyperparameters:
        Default hyperparameters; unknown names raise :class:`UserError`, and scalar
        values are range-checked here rather than at the first call.
    """

    def __init__(self, name: str, *, reduction: str = "mean", **hyperparameters: Any) -> None:
        super().__init__()
        self.fn = get_loss_fn(name)
        self.name = str(name).lower()
        check_reduction(reduction, self.name)
        self.reduction = reduction
        valid = _options(self.fn)
        bad = [k for k in hyperparameters if k not in valid]
        if bad:
            raise UserError(
                f"loss {self.name!r} has no option(s) {', '.join(map(repr, bad))}; "
                f"valid options: {', '.join(valid) or '(none)'}"
            )
        self._hp: dict[str, Any] = {}
        self._buffers_hp: list[str] = []
        for k, v in hyperparameters.items():
            if isinstance(v, Tensor) and not v.requires_grad:
                self.register_buffer(f"hp_{k}", v.detach().clone())
                self._buffers_hp.append(k)
            else:
                self._hp[k] = v
        self._check_defaults()

    def hyperparameters(self) -> dict[str, Any]:
        """The default hyperparameters given at construction (buffers included)."""
        hp = dict(self._hp)
        for k in self._buffers_hp:
            hp[k] = getattr(self, f"hp_{k}")
        return hp

    def _check_defaults(self) -> None:
        # Validate scalar/matrix defaults now with a one-sample dummy batch, so that a bad
        # value fails at construction. Per-sample (B,) tensors are checked at call time.
        hp = {
            k: v for k, v in self.hyperparameters().items()
            if k == "T" or not (isinstance(v, Tensor) and v.ndim > 0)
        }
        t = hp.get("T")
        n_classes = 2
        if t is not None:
            try:
                n_classes = max(2, int(torch.as_tensor(t).shape[-1]))
            except (TypeError, ValueError, IndexError, RuntimeError):
                n_classes = 2
        with torch.no_grad():
            self.fn(torch.zeros(1, n_classes, dtype=torch.float64), torch.zeros(1, dtype=torch.long),
                    reduction="none", **hp)

    def forward(self, logits: Tensor, target: Tensor, *, reduction: str | None = None,
                **overrides: Any) -> Tensor:
        """Loss of ``logits`` (B, K) against int64 ``target`` (B,); see the functional form."""
        hp = self.hyperparameters()
        hp.update(overrides)
        return call_with_options("loss", self.name, self.fn, logits, target,
                                 reduction=self.reduction if reduction is None else reduction, **hp)

    def extra_repr(self) -> str:
        items = [f"{self.name!r}", f"reduction={self.reduction!r}"]
        for k, v in self.hyperparameters().items():
            items.append(f"{k}=<tensor {tuple(v.shape)}>" if isinstance(v, Tensor) else f"{k}={v!r}")
        return ", ".join(items)


def create_loss(name: str, **hyperparameters: Any) -> Loss:
    """Build the ``nn.Module`` form of loss ``name`` with default hyperparameters.

    ``create_loss("gce", q=0.7)``, ``create_loss("forward", T=T_hat)``,
    ``create_loss("sce", alpha=0.1, beta=1.0, reduction="sum")``.
    Unknown names / options and out-of-range values raise :class:`UserError`.
    """
    return Loss(name, **hyperparameters)
