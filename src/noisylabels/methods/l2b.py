"""L2B: Learning to Bootstrap for Combating Label Noise (Zhou et al.) on the bilevel engine.

Per sample, ``alpha_i`` weighs ``CE(z_i, y_i)`` (observed label) and ``beta_i`` weighs
``CE(z_i, yhat_i)`` with the current model's pseudo-label ``yhat_i = argmax z_i``; both are the
rectified meta-gradients at zero of one L2RW-style look-ahead with two perturbation columns
(:func:`noisylabels.meta.per_example_weights`), normalised jointly.

Detection ranks by each sample's cross-entropy against its given label at its step (record
``loss``), not by minus ``alpha``, whose direction depends on the run (see
:mod:`noisylabels.methods.l2rw`); ``alpha``'s AUROC is ``alpha_detection_auroc``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..eval.plots import Curve
from .base import register_method
from .context import MethodContext
from .l2rw import NORMALIZATIONS, normalize_weights
from .loss_rank import LossRanked
from .meta import ExampleWeightingMethod
from .records import Record

__all__ = ["L2B", "ABLATIONS"]

ABLATIONS = ("none", "alpha=0", "beta=0", "alpha+beta=1")


@register_method("l2b", help="learning to bootstrap (L2B): meta-learned weights on observed and pseudo-labels")
class L2B(LossRanked, ExampleWeightingMethod):
    """L2B: the real loss is ``sum_i alpha_i CE(z_i, y_i) + beta_i CE(z_i, yhat_i)`` (Eq. 8).

    ``alpha, beta`` are the rectified meta-gradients at zero, normalised jointly (``'sum'``, Eq. 9;
    ``'sigmoid'``, Eq. 13; ``'softmax'`` with temperature, Eq. 14). The first ``warmup_epochs``
    train with plain CE (the paper's appendix: 10 epochs on CIFAR); gradient-norm clipping is the
    loop's ``train.clip_grad_norm``.

    Parameters
    ----------
    normalize:
        ``'sum'`` (default, Eq. 9), ``'sigmoid'`` or ``'softmax'``.
    temperature:
        Softmax temperature (the paper: 10).
    ablation:
        ``'none'``; ``'alpha=0'`` (pseudo-labels only); ``'beta=0'`` (observed labels only: L2RW);
        ``'alpha+beta=1'`` (per-sample ``alpha_i = a_i / (a_i + b_i)``, ``beta_i = 1 - alpha_i`` from
        the rectified raw weights, averaged over the batch: hard bootstrapping with learned
        per-sample ``beta``, the paper's appendix B.1).
    warmup_epochs:
        Epochs of plain CE before meta-reweighting.
    meta_loss, meta_batch_size, meta_gradient:
        As :class:`~noisylabels.methods.meta.MetaMethod`.
    """

    own_loss = "ce"
    records = (Record("alpha", plain_value=1.0), Record("beta", plain_value=0.0), Record("loss"))
    #: suspicion = the sample's CE (given label) at its step; -alpha: ``alpha_detection_auroc``
    detection = ("loss", 1.0)
    weight_record = "alpha"

    def __init__(self, *, normalize: str = "sum", temperature: float = 10.0, ablation: str = "none",
                 warmup_epochs: int = 1, **options: Any) -> None:
        if normalize not in NORMALIZATIONS:
            raise UserError(f"l2b: normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
        if ablation not in ABLATIONS:
            raise UserError(f"l2b: ablation must be one of {', '.join(ABLATIONS)}, got {ablation!r}")
        if float(temperature) <= 0:
            raise UserError(f"l2b: temperature must be positive, got {temperature}")
        super().__init__(warmup_epochs=warmup_epochs, **options)
        self.normalize_mode, self.temperature, self.ablation = normalize, float(temperature), ablation

    def example_losses(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(n, 2)``: CE against the observed label and against the pseudo-label (no extra forward)."""
        y_hat = z.detach().argmax(1)
        return torch.stack([F.cross_entropy(z, y, reduction="none"), F.cross_entropy(z, y_hat, reduction="none")], 1)

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Normalised ``(alpha, beta)`` columns from the raw ``(n, 2)`` weights (mean convention)."""
        n = raw.shape[0]
        raw = raw * n  # the papers' sum convention (see noisylabels.methods.l2rw)
        mode, temp = self.normalize_mode, self.temperature
        if self.ablation == "alpha+beta=1":
            r = raw.clamp_min(0)
            tot = r.sum(1)
            alpha = torch.where(tot > 0, r[:, 0] / tot.clamp_min(1e-30), torch.full_like(tot, 0.5))
            return torch.stack([alpha / n, (1 - alpha) / n], 1)
        if self.ablation == "alpha=0":
            w = normalize_weights(raw[:, 1], mode=mode, temperature=temp)
            return torch.stack([torch.zeros_like(w), w], 1)
        if self.ablation == "beta=0":
            w = normalize_weights(raw[:, 0], mode=mode, temperature=temp)
            return torch.stack([w, torch.zeros_like(w)], 1)
        return normalize_weights(raw, mode=mode, temperature=temp)

    def record_weights(self, index: torch.Tensor, weights: torch.Tensor) -> None:
        n = len(weights)
        self.record(index, alpha=weights[:, 0] * n, beta=weights[:, 1] * n)

    def curves(self, ctx: MethodContext) -> list[Curve]:
        """Each training sample's mean ``(alpha_i, beta_i)`` at the selected epoch."""
        alpha, beta = self.selected_record("alpha"), self.selected_record("beta")
        if alpha is None or beta is None:
            return []
        return [Curve("alpha_beta", alpha, beta, "alpha (observed label)", "beta (pseudo-label)", per_sample=True,
                      title="L2B: mean alpha vs beta per sample (x batch size) at the selected epoch")]
