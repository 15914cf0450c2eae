"""Shared machinery of the meta-reweighting methods (MW-Net, L2RW, L2B) on the bilevel engine.

What every reweighting run gets from :class:`ReweightingMethod`:

* a meta batch per training step, drawn from the meta split by a generator seeded per epoch
  (so resume is exact), with the same batch augmentation as training;
* the meta loss by name from the loss registry (``meta_loss='ce'`` or ``'mae'`` for RMNW-Net);
* per-sample weights recorded by dataset index (mean over the epoch's visits), saved to
  ``sample_weights.npz`` and scored each epoch as noisy-label detection (AUROC, AP of
  ``-weight`` against the true corruption mask);
* ``suspects.csv`` ranked by the weights of the best-validation epoch, and PNG plots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..eval.metrics import detection_metrics
from ..losses import get_loss_fn
from ..train.prepare import derive_seed
from .base import Method

__all__ = ["ReweightingMethod", "meta_loss_fn"]


def meta_loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-sample meta loss ``(z, y) -> (m,)`` from the loss registry (e.g. ``'ce'``, ``'mae'``)."""
    fn = get_loss_fn(name)
    return lambda z, y: fn(z, y, reduction="none")


class ReweightingMethod(Method):
    """Base of methods that learn per-sample weights from a meta set.

    Parameters
    ----------
    meta_loss:
        Loss of the meta objective on meta batches (a registered loss name).
    meta_batch_size:
        Meta batch size (``None``: the training batch size).
    """

    needs_meta_set = True

    def __init__(self, *, meta_loss: str = "ce", meta_batch_size: int | None = None) -> None:
        super().__init__()
        self.meta_loss_name = str(meta_loss)
        self.meta_loss = meta_loss_fn(self.meta_loss_name)  # validates the name
        if meta_batch_size is not None and int(meta_batch_size) < 1:
            raise UserError(f"meta_batch_size must be >= 1, got {meta_batch_size}")
        self.meta_batch_size = meta_batch_size
        self.weight_history: dict[int, np.ndarray] = {}   # epoch -> mean weight per training sample
        self._meta_iter: Iterator[Any] | None = None

    # -- set-up and meta batches ----------------------------------------------------------------
    def setup(self, ctx) -> None:
        super().setup(ctx)
        from ..meta.virtual_step import _check_sgd

        _check_sgd(ctx.optimizer)
        n = len(ctx.data.labels)
        self._w_sum = torch.zeros(n, device=ctx.device)
        self._w_cnt = torch.zeros(n, device=ctx.device)

    def _meta_batches(self, ctx) -> Iterator[Any]:
        gen = torch.Generator().manual_seed(derive_seed(int(ctx.cfg["seed"]), f"meta-{ctx.epoch}"))
        bs = int(self.meta_batch_size or ctx.cfg["train"]["batch_size"])
        while True:
            for batch in ctx.loader("meta", shuffle=True, augment=True, batch_size=bs, generator=gen):
                yield batch

    def next_meta_batch(self, ctx) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._meta_iter is not None
        b = next(self._meta_iter)
        return b.x.to(ctx.device), b.y.to(ctx.device)

    def on_epoch_start(self, ctx) -> None:
        self._meta_iter = self._meta_batches(ctx)
        self._w_sum.zero_()
        self._w_cnt.zero_()

    # -- weight records -------------------------------------------------------------------------
    def record_weights(self, index: torch.Tensor, weights: torch.Tensor) -> None:
        """Accumulate the weights a training batch was trained with (by dataset index)."""
        self._w_sum.index_add_(0, index, weights.detach().to(self._w_sum.dtype))
        self._w_cnt.index_add_(0, index, torch.ones_like(self._w_sum[index]))

    def epoch_mean(self, ctx, sums: torch.Tensor) -> np.ndarray | None:
        """Per-training-sample mean over this epoch's visits of a quantity accumulated in ``sums``
        (by dataset index, counted by :meth:`record_weights`); NaN for unvisited samples, ``None``
        if no sample was visited."""
        idx = ctx.data.splits["train"].to(sums.device)
        cnt = self._w_cnt[idx]
        if not bool((cnt > 0).any()):
            return None
        return torch.where(cnt > 0, sums[idx] / cnt.clamp_min(1), torch.nan).cpu().numpy()

    def on_epoch_end(self, ctx) -> dict[str, Any]:
        mean = self.epoch_mean(ctx, self._w_sum)
        if mean is None:
            return {}
        self.weight_history[ctx.epoch] = mean.astype(np.float32)
        self._save_history(ctx)
        noisy = ctx.data.is_noisy[ctx.data.splits["train"]].numpy()
        seen = np.isfinite(mean)
        out: dict[str, Any] = detection_metrics(-mean[seen], noisy[seen])
        out["mean_weight_clean"] = float(np.nanmean(mean[~noisy])) if (~noisy).any() else None
        out["mean_weight_noisy"] = float(np.nanmean(mean[noisy])) if noisy.any() else None
        return out

    def _save_history(self, ctx) -> None:
        epochs = sorted(self.weight_history)
        path = ctx.recorder.path("sample_weights.npz")
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, epochs=np.asarray(epochs), index=ctx.data.splits["train"].numpy(),
                            weights=np.stack([self.weight_history[e] for e in epochs]))
        tmp.replace(path)

    @staticmethod
    def at_selected_epoch(ctx, history: dict[int, np.ndarray]) -> np.ndarray | None:
        """The entry of a per-epoch ``history`` at the best-validation epoch (else the last one)."""
        if not history:
            return None
        epoch = ctx.best.get("epoch")
        return history[epoch if epoch in history else max(history)]

    def selected_weights(self, ctx) -> np.ndarray | None:
        """Weights of the best-validation epoch (else the last recorded one)."""
        return self.at_selected_epoch(ctx, self.weight_history)

    def sample_scores(self, ctx, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Suspicion = minus the weight the best-validation epoch gave the sample."""
        w = self.selected_weights(ctx)
        if w is None:
            return super().sample_scores(ctx, probs, labels)
        w = np.where(np.isfinite(w), w, np.nanmax(w) if np.isfinite(w).any() else 0.0)
        return -torch.from_numpy(w).double()

    def finalize(self, ctx) -> dict[str, Any]:
        w = self.selected_weights(ctx)
        if w is None:
            return {}
        from ..eval.plots import plot_weight_histograms

        noisy = ctx.data.is_noisy[ctx.data.splits["train"]].numpy()
        plot_weight_histograms(w, noisy, ctx.recorder.path("weights_hist.png"),
                               title=f"{ctx.cfg['method']['name']}: weights at the selected epoch")
        return {}

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"weight_history": dict(self.weight_history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weight_history = dict(state.get("weight_history", {}))

