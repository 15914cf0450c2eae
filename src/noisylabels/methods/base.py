"""The method interface every training method implements, and the method registry.

A method plugs into the one training loop (:func:`noisylabels.train.fit`) through a few hooks:

* :meth:`Method.per_sample_loss` -- the loss hook: ``(logits, targets, indices) -> (B,)`` losses
  (``reduction='none'``). Plain robust-loss methods only override this.
* :meth:`Method.train_step` -- one optimisation step on a batch. The default is ERM on the
  per-sample loss; meta methods override it (virtual step, meta step, real step).
* :meth:`Method.on_epoch_start` / :meth:`Method.on_epoch_end` -- schedules such as pruning
  (truncated Lq) or a CE stage followed by a corrected stage (forward T-hat).
* :meth:`Method.sample_scores` -- per-sample "this label is wrong" scores for ``suspects.csv``
  and detection AUROC; the default is ``1 - p(given label)`` under the selected model.
* :meth:`Method.state_dict` / :meth:`Method.load_state_dict` -- everything needed to resume exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..registry import Registry, call_with_options

if TYPE_CHECKING:  # pragma: no cover
    from ..train.loop import TrainContext

__all__ = ["Method", "METHODS", "register_method", "create_method", "list_methods"]

METHODS: Registry = Registry("method")


def register_method(name: str, *, help: str | None = None):
    """Class decorator registering a :class:`Method` subclass under ``name``."""
    return METHODS.register(name, help=help)


class Method:
    """Base class: ERM with the configured loss.

    Subclasses take their options as keyword-only ``__init__`` arguments (they come from the
    ``method`` config section).
    """

    #: the method needs a meta set (``data.meta_size > 0``; ``auto`` then gives it one)
    needs_meta_set: bool = False
    #: the kind of meta set the method is defined with (``'clean'``, ``'noisy'`` or ``None``: either)
    meta_set_kind: str | None = None

    def __init__(self) -> None:
        self.ctx: TrainContext | None = None

    # -- set-up ---------------------------------------------------------------------------
    def setup(self, ctx: TrainContext) -> None:
        """Called once before training (and before a checkpoint is restored)."""
        self.ctx = ctx

    # -- the loss hook ----------------------------------------------------------------------
    def per_sample_loss(self, logits: torch.Tensor, targets: torch.Tensor,
                        indices: torch.Tensor) -> torch.Tensor:
        """Per-sample training loss, shape ``(B,)``; the default is the configured loss."""
        assert self.ctx is not None
        return self.ctx.loss_fn(logits, targets, reduction="none")

    # -- one step ---------------------------------------------------------------------------
    def train_step(self, ctx: TrainContext, x: torch.Tensor, y: torch.Tensor,
                   index: torch.Tensor) -> dict[str, float]:
        """One optimisation step; returns at least ``{'loss': float}`` (the batch mean)."""
        logits = ctx.model(x)
        losses = self.per_sample_loss(logits, y, index)
        loss = losses.mean()
        ctx.backward_and_step(loss)
        return {"loss": float(loss.detach()), "correct": float((logits.argmax(1) == y).sum()),
                "count": float(y.numel())}

    # -- epoch hooks ------------------------------------------------------------------------
    def on_epoch_start(self, ctx: TrainContext) -> None:
        """Called before each epoch's first step (``ctx.epoch`` is the epoch about to run)."""

    def on_epoch_end(self, ctx: TrainContext) -> dict[str, Any]:
        """Called after each epoch's last step; returned values go into ``metrics.jsonl``."""
        return {}

    def finalize(self, ctx: TrainContext) -> dict[str, Any]:
        """Called once after training with the selected model loaded; may write plots; returned
        values go into ``summary.json``."""
        return {}

    # -- detection ----------------------------------------------------------------------------
    def sample_scores(self, ctx: TrainContext, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample mislabeling scores (higher = more suspicious) on the training split.

        ``probs`` are the selected model's softmax outputs on the training split (no
        augmentation), ``labels`` the labels training saw. Default: ``1 - p(label)``.
        """
        return 1.0 - probs.gather(1, labels[:, None]).squeeze(1)

    # -- resume -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def create_method(name: str, **options: Any) -> Method:
    """Instantiate a registered method with its keyword options."""
    cls = METHODS.get(name)
    return call_with_options("method", name, cls, **options)


def list_methods() -> list[str]:
    return METHODS.names()


@register_method("erm", help="empirical risk minimisation with the configured loss (CE, GCE, ...)")
class ERM(Method):
    """Empirical risk minimisation: the mean of the configured per-sample loss."""
