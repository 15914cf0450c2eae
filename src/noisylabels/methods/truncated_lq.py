"""Truncated L_q loss trained by alternating convex search (Zhang & Sabuncu, NeurIPS 2018, Algorithm 1)."""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..errors import UserError
from ..losses.functional import prune_mask, truncated_lq_weighted
from .base import Method, register_method
from .context import MethodContext

__all__ = ["TruncatedLq"]


@register_method("truncated-lq", help="truncated Lq with alternating pruning (GCE paper, Algorithm 1)")
class TruncatedLq(Method):
    """Truncated L_q with the alternating convex search of Algorithm 1.

    Per-sample weights ``w_i in {0, 1}`` are held by dataset index. The network minimises
    ``sum_i w_i L_q(f(x_i), y_i) - L_q(k) sum_i w_i`` (Eq. 11) with ``w`` fixed; the first
    ``warmup_epochs`` train on all samples (``w = 1``); then, at the start of every
    ``prune_every``-th epoch, ``w_i = 1[p_{y_i}(x_i) > k]`` is recomputed over the whole
    training split (eval mode, no augmentation) from the model ``prune_model`` names:

    * ``'best'`` (default): the model of the best-validation epoch so far, as the paper does
      ("To prevent overfitting, we used the model at the optimal epoch based on maximum
      validation accuracy for pruning", Sec. 4.2). It is read from the run's ``best_model.pt``
      into a copy of the network, so the model being trained is untouched; before any epoch
      has been validated (a prune at epoch 0) the current model is used.
    * ``'current'``: the model being trained (Algorithm 1's w-step read literally, with
      ``theta^(t-1)`` the latest parameters). The pass changes no weights or BatchNorm
      statistics, so no update of the finished epoch is lost.

    The network keeps training from its current parameters in both cases; only the pruning
    decision reads the selected model. The method defines its own loss (``own_loss``): ``q`` and
    ``k`` are its options, and a ``loss`` config section other than ``auto`` is refused.

    Parameters
    ----------
    q:
        L_q exponent in (0, 1]; the paper uses 0.7.
    k:
        Truncation threshold in (0, 1); the paper uses 0.5.
    warmup_epochs:
        Epochs on all samples before the first pruning (paper: 40 of 120 on CIFAR-10, 80 of 150
        on CIFAR-100). ``None``: a third of the run.
    prune_every:
        Epochs between pruning passes (paper: 10). ``None``: a twelfth of the run (10 of 120).
    prune_model:
        ``'best'`` (the paper) or ``'current'``: which model's ``p_y`` decides the pruning.
    """

    PRUNE_MODELS = ("best", "current")

    own_loss = "truncated-lq"
    total_epochs_matter = True

    def __init__(self, *, q: float = 0.7, k: float = 0.5, warmup_epochs: int | None = None,
                 prune_every: int | None = None, prune_model: str = "best") -> None:
        super().__init__()
        if prune_model not in self.PRUNE_MODELS:
            raise UserError(f"truncated-lq: prune_model must be one of {', '.join(self.PRUNE_MODELS)}; "
                            f"got {prune_model!r}")
        self.prune_model = prune_model
        #: the epoch whose model decided the latest pruning (``None``: none yet, or the initial model)
        self.pruned_with_epoch: int | None = None
        if not 0.0 < float(q) <= 1.0:
            raise UserError(f"truncated-lq: q must lie in (0, 1], got {q}")
        if not 0.0 < float(k) < 1.0:
            raise UserError(f"truncated-lq: k must lie in (0, 1), got {k}")
        for name, v in (("warmup_epochs", warmup_epochs), ("prune_every", prune_every)):
            if v is not None and (not isinstance(v, int) or v < (0 if name == "warmup_epochs" else 1)):
                raise UserError(f"truncated-lq: {name} must be a positive integer, got {v!r}")
        self.q, self.k = float(q), float(k)
        self._warmup, self._every = warmup_epochs, prune_every
        self.weights: torch.Tensor | None = None
        self.prunes = 0

    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        epochs = ctx.epochs
        self.warmup_epochs = self._warmup if self._warmup is not None else epochs // 3
        self.prune_every = self._every if self._every is not None else max(1, round(epochs / 12))
        self.weights = torch.ones(len(ctx.data.labels), device=ctx.device)

    def is_prune_epoch(self, epoch: int) -> bool:
        return epoch >= self.warmup_epochs and (epoch - self.warmup_epochs) % self.prune_every == 0

    def _selected_model(self, ctx) -> torch.nn.Module | None:
        """A copy of the network holding the best-validation epoch's parameters (``None`` when
        no epoch has been validated yet)."""
        path = ctx.recorder.path("best_model.pt")
        if ctx.best.get("epoch") is None or not path.is_file():
            return None
        model = copy.deepcopy(ctx.model)
        model.load_state_dict(torch.load(path, map_location=ctx.device, weights_only=True))
        return model

    def prune(self, ctx: MethodContext) -> None:
        """The w-step of Algorithm 1: ``w_i = 1[p_{y_i} > k]`` on the training split, from the
        model ``prune_model`` names."""
        idx = ctx.data.splits["train"]
        selected = self._selected_model(ctx) if self.prune_model == "best" else None
        if selected is None:
            probs = ctx.predict(idx)
            self.pruned_with_epoch = ctx.epoch - 1 if ctx.epoch > 0 else None
        else:
            probs = ctx.predict(idx, model=selected)
            self.pruned_with_epoch = int(ctx.best["epoch"])
        p_y = probs.gather(1, ctx.data.labels[idx].cpu()[:, None]).squeeze(1)
        assert self.weights is not None
        self.weights[idx.to(self.weights.device)] = prune_mask(p_y, self.k).to(self.weights)
        self.prunes += 1

    def on_epoch_start(self, ctx: MethodContext) -> None:
        if self.is_prune_epoch(ctx.epoch):
            self.prune(ctx)

    def per_sample_loss(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        assert self.weights is not None
        return truncated_lq_weighted(logits, targets, self.weights[indices], q=self.q, k=self.k, reduction="none")

    def on_epoch_end(self, ctx: MethodContext) -> dict[str, Any]:
        assert self.weights is not None
        idx = ctx.data.splits["train"]
        w = self.weights[idx.to(self.weights.device)].cpu()
        truth = getattr(ctx.data, "has_ground_truth", True)
        noisy = ctx.data.is_noisy[idx]
        pruned = w == 0
        return {
            "kept_fraction": float(w.mean()),
            "pruned_noisy_precision": float(noisy[pruned].float().mean()) if pruned.any() and truth else None,
            "pruned_noisy_recall": float(pruned[noisy].float().mean()) if noisy.any() and truth else None,
            "pruned_with_epoch": self.pruned_with_epoch,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"weights": None if self.weights is None else self.weights.cpu(), "prunes": self.prunes,
                "pruned_with_epoch": self.pruned_with_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("weights") is not None:
            self.weights = state["weights"].to(self.weights.device if self.weights is not None else "cpu")
        self.prunes = int(state.get("prunes", 0))
        self.pruned_with_epoch = state.get("pruned_with_epoch")
