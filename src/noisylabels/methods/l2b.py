"""Per-example meta-reweighting: L2RW (Ren et al., ICML 2018) and L2B (Zhou et al., "L2B: Learning to
Bootstrap for Combating Label Noise").

Both take, at every step, the meta-gradient of the meta loss with respect to per-example
perturbations ``eps`` at zero (:func:`noisylabels.meta.per_example_weights`, one JVP pass, no
per-sample loop): L2RW on ``eps_i CE(z_i, y_i)``, L2B on ``alpha_i CE(z_i, y_i) + beta_i CE(z_i,
yhat_i)`` with the pseudo-label ``yhat_i = argmax z_i`` of the current model. The raw weights
are rectified and normalised, and the real step trains on ``sum_i w_i l_i`` (weights summing to
one), reusing the training forward.

Scale: the papers (and official code) define the weights from ``sum_i eps_i l_i``; the engine
uses the batch mean, so its weights are ``1/n`` of theirs. The sum normalisation (Eq. 9 of L2B,
L2RW Eq. 13) removes the factor; the sigmoid and softmax normalisations are not scale-free, so
the raw weights are multiplied by ``n`` first to match the official code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..meta import per_example_weights
from .base import register_method
from .reweighting import ReweightingMethod

__all__ = ["L2RW", "L2B", "normalize_weights"]


def normalize_weights(raw: torch.Tensor, *, mode: str = "sum", temperature: float = 10.0) -> torch.Tensor:
    """Normalise raw meta-gradient weights (any shape; all entries normalised jointly).

    ``'sum'`` (L2RW Eq. 13, L2B Eq. 9): ``max(w, 0) / (sum max(w, 0) + 1e-10)``;
    ``'sigmoid'`` (L2B Eq. 13): ``sigmoid(w) / sum sigmoid(w)``;
    ``'softmax'`` (L2B Eq. 14): ``softmax(w / temperature)`` over all entries.
    """
    if mode == "sum":
        r = raw.clamp_min(0)
        return r / (r.sum() + 1e-10)
    if mode == "sigmoid":
        s = torch.sigmoid(raw)
        return s / s.sum()
    if mode == "softmax":
        return torch.softmax(raw.reshape(-1) / float(temperature), dim=0).reshape(raw.shape)
    raise UserError(f"normalize must be 'sum', 'sigmoid' or 'softmax', got {mode!r}")


def _check_warmup(method: str, warmup_epochs: int) -> int:
    if not isinstance(warmup_epochs, int) or warmup_epochs < 0:
        raise UserError(f"{method}: warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
    return warmup_epochs


def _ce_warmup_step(ctx, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A plain mean-CE step (the warm-up epochs before meta-reweighting); returns ``(logits, loss)``."""
    z = ctx.model(x)
    loss = F.cross_entropy(z, y)
    ctx.backward_and_step(loss)
    return z, loss


@register_method("l2rw", help="learning to reweight examples (Ren et al. 2018): per-step meta-gradient weights")
class L2RW(ReweightingMethod):
    """L2RW: ``w_i = max(-dL_meta/d eps_i, 0)`` normalised by the batch sum (Ren et al. 2018, Eqs. 12-13).

    The ``loss`` config section is not used (the per-example loss is cross-entropy).

    Parameters
    ----------
    warmup_epochs:
        Epochs of plain CE before reweighting (default 0, as Ren et al.; the L2B code's
        ``--warm_up`` applies to its L2RW runs too, so a comparison with L2B should match it).
    meta_loss, meta_batch_size:
        As :class:`ReweightingMethod`.
    """

    def __init__(self, *, warmup_epochs: int = 0, meta_loss: str = "ce", meta_batch_size: int | None = None) -> None:
        super().__init__(meta_loss=meta_loss, meta_batch_size=meta_batch_size)
        self.warmup_epochs = _check_warmup("l2rw", warmup_epochs)

    def train_step(self, ctx, x, y, index) -> dict[str, float]:
        if ctx.epoch < self.warmup_epochs:
            z, loss = _ce_warmup_step(ctx, x, y)
            w = torch.full_like(y, 1.0 / len(y), dtype=z.dtype)
        else:
            mx, my = self.next_meta_batch(ctx)
            res = per_example_weights(ctx.model, ctx.optimizer, x, y, mx, my, self.meta_loss, keep_graph=True)
            w = normalize_weights(res.weights * len(y), mode="sum")
            z = res.train_logits
            loss = (w * F.cross_entropy(z, y, reduction="none")).sum()
            ctx.backward_and_step(loss)
        self.record_weights(index, w * len(y))  # recorded on the scale "1 = average weight"
        return {"loss": float(loss.detach()), "correct": float((z.detach().argmax(1) == y).sum()),
                "count": float(y.numel())}


ABLATIONS = ("none", "alpha=0", "beta=0", "alpha+beta=1")


@register_method("l2b", help="learning to bootstrap (L2B): meta-learned weights on observed and pseudo-labels")
class L2B(ReweightingMethod):
    """L2B: per-sample ``alpha_i`` on ``CE(z_i, y_i)`` and ``beta_i`` on ``CE(z_i, yhat_i)``.

    ``alpha, beta`` are the rectified meta-gradients at zero, normalised jointly (``'sum'``,
    Eq. 9; ``'sigmoid'``, Eq. 13; ``'softmax'`` with temperature, Eq. 14). The real loss is
    ``sum_i alpha_i CE(z_i, y_i) + beta_i CE(z_i, yhat_i)``. The first ``warmup_epochs``
    train with plain CE (the paper's appendix: 10 epochs on CIFAR); gradient-norm clipping is the
    loop's ``train.clip_grad_norm``. The ``loss`` config section is not used.

    Parameters
    ----------
    normalize:
        ``'sum'`` (default, Eq. 9), ``'sigmoid'`` or ``'softmax'``.
    temperature:
        Softmax temperature (the paper: 10).
    ablation:
        ``'none'``; ``'alpha=0'`` (pseudo-labels only); ``'beta=0'`` (observed labels only: L2RW);
        ``'alpha+beta=1'`` (per-sample ``alpha_i = a_i / (a_i + b_i)``, ``beta_i = 1 - alpha_i``
        from the rectified raw weights, averaged over the batch: hard bootstrapping with learned
        per-sample ``beta``, the paper's appendix B.1).
    warmup_epochs:
        Epochs of plain CE before meta-reweighting.
    meta_loss, meta_batch_size:
        As :class:`ReweightingMethod`.
    """

    def __init__(self, *, normalize: str = "sum", temperature: float = 10.0, ablation: str = "none",
                 warmup_epochs: int = 1, meta_loss: str = "ce", meta_batch_size: int | None = None) -> None:
        super().__init__(meta_loss=meta_loss, meta_batch_size=meta_batch_size)
        normalize_weights(torch.zeros(2), mode=normalize)  # validates the name
        if ablation not in ABLATIONS:
            raise UserError(f"l2b: ablation must be one of {', '.join(ABLATIONS)}, got {ablation!r}")
        if float(temperature) <= 0:
            raise UserError(f"l2b: temperature must be positive, got {temperature}")
        self.normalize, self.temperature = normalize, float(temperature)
        self.ablation, self.warmup_epochs = ablation, _check_warmup("l2b", warmup_epochs)
        self.beta_history: dict[int, np.ndarray] = {}

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self._b_sum = torch.zeros_like(self._w_sum)

    def on_epoch_start(self, ctx) -> None:
        super().on_epoch_start(ctx)
        self._b_sum.zero_()

    def per_sample_losses(self, z: torch.Tensor, y: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        """``(n, 2)``: CE against the observed label and against the pseudo-label."""
        return torch.stack([F.cross_entropy(z, y, reduction="none"), F.cross_entropy(z, y_hat, reduction="none")], 1)

    def alpha_beta(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised ``(alpha, beta)`` from the raw ``(n, 2)`` meta-gradient weights (mean convention)."""
        n = raw.shape[0]
        raw = raw * n  # the papers' sum convention (see the module docstring)
        if self.ablation == "alpha+beta=1":
            r = raw.clamp_min(0)
            tot = r.sum(1)
            alpha = torch.where(tot > 0, r[:, 0] / tot.clamp_min(1e-30), torch.full_like(tot, 0.5))
            return alpha / n, (1 - alpha) / n
        if self.ablation == "alpha=0":
            w = normalize_weights(raw[:, 1], mode=self.normalize, temperature=self.temperature)
            return torch.zeros_like(w), w
        if self.ablation == "beta=0":
            w = normalize_weights(raw[:, 0], mode=self.normalize, temperature=self.temperature)
            return w, torch.zeros_like(w)
        w = normalize_weights(raw, mode=self.normalize, temperature=self.temperature)
        return w[:, 0], w[:, 1]

    def train_step(self, ctx, x, y, index) -> dict[str, float]:
        if ctx.epoch < self.warmup_epochs:
            z, loss = _ce_warmup_step(ctx, x, y)
            alpha, beta = torch.ones_like(y, dtype=z.dtype) / len(y), torch.zeros_like(y, dtype=z.dtype)
        else:
            mx, my = self.next_meta_batch(ctx)
            # the pseudo-label is the current model's prediction on the same forward (no extra pass)
            res = per_example_weights(
                ctx.model, ctx.optimizer, x, y, mx, my, self.meta_loss, keep_graph=True,
                per_sample_loss=lambda t, yy: self.per_sample_losses(t, yy, t.detach().argmax(1)))
            z = res.train_logits
            y_hat = z.detach().argmax(1)
            alpha, beta = self.alpha_beta(res.weights)
            losses = self.per_sample_losses(z, y, y_hat)
            loss = (alpha * losses[:, 0] + beta * losses[:, 1]).sum()
            ctx.backward_and_step(loss)
        n = len(y)
        self.record_weights(index, alpha * n)
        self._b_sum.index_add_(0, index, (beta * n).detach().to(self._b_sum.dtype))
        return {"loss": float(loss.detach()), "correct": float((z.detach().argmax(1) == y).sum()),
                "count": float(y.numel())}

    def on_epoch_end(self, ctx) -> dict[str, Any]:
        out = super().on_epoch_end(ctx)
        beta = self.epoch_mean(ctx, self._b_sum)
        if beta is not None:
            self.beta_history[ctx.epoch] = beta.astype(np.float32)
            out["mean_beta"] = float(np.nanmean(beta))
        return out

    def finalize(self, ctx) -> dict[str, Any]:
        out = super().finalize(ctx)
        alpha = self.selected_weights(ctx)
        beta = self.at_selected_epoch(ctx, self.beta_history)
        if alpha is not None and beta is not None:
            from ..eval.plots import plot_alpha_beta

            plot_alpha_beta(alpha, beta, ctx.data.is_noisy[ctx.data.splits["train"]].numpy(),
                            ctx.recorder.path("alpha_beta.png"),
                            title="L2B: mean alpha vs beta per sample (x batch size) at the selected epoch")
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "beta_history": dict(self.beta_history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.beta_history = dict(state.get("beta_history", {}))
