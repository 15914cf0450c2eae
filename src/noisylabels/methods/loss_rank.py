"""Detection by the per-sample training loss, for the weighting methods (issue 20).

MW-Net / MNW-Net / RMNW-Net (a learned weight function of the loss) and L2RW / L2B (per-step
meta-gradient weights) can rank the wrong labels either way with minus their weight: the direction
depends on the run (the learned function's slope; the meta set's kind and the noise). On digits, 3
epochs, 3 seeds each (``benchmarks/weight_score_direction.py``): RMNW-Net (paper preset) ``-weight``
AUROC 0.988 with seed 0 and 0.009 / 0.005 with seeds 1 / 2 under 40% uniform noise; MW-Net*
0.12-0.17 under 30% flip noise with a clean meta set; L2B ``-alpha`` 0.42-0.52 and L2RW 0.49-0.59
with a noisy meta set; the per-sample CE 0.64-0.996 in every one of those runs.
:class:`LossRanked` records each training sample's cross-entropy at the step (the logits the step
trained on, warm-up included) as the record ``loss`` and ranks by it (high loss = likely wrong,
whatever the weights learned); the weight's own detection metric, the WACV paper's Table 3 for the
MW-Net family, stays reported as ``<record>_detection_auroc`` / ``_ap`` (``metrics.jsonl`` per
epoch, ``summary.json`` at the selected epoch).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..eval.metrics import detection_metrics
from .context import MethodContext, StepOutput, is_noisy_train

__all__ = ["LossRanked", "weight_detection_metrics"]


def weight_detection_metrics(values: Any, noisy: Any, *, name: str = "weight") -> dict[str, float]:
    """AUROC and AP of ``-values`` for the corrupted samples (a weight as P(clean): Ghosh & Lan 2021,
    Table 3), as ``<name>_detection_auroc`` / ``<name>_detection_ap``; samples without a value are
    left out."""
    v = np.asarray(values, dtype=np.float64)
    seen = np.isfinite(v)
    out = detection_metrics(-v[seen], np.asarray(noisy, dtype=bool)[seen])
    return {f"{name}_{k}": x for k, x in out.items()}


class LossRanked:
    """Mixin (before the method base): record ``loss``, each sample's CE at its step, rank by it, and
    report the weight record's own AUROC apart.

    A class using it declares ``Record("loss")`` among its records, ``detection = ("loss", 1.0)``
    and :attr:`weight_record` (the record whose ``-value`` is the paper's score).
    """

    #: the record whose minus is the method's own (paper's) detection score
    weight_record: ClassVar[str] = "weight"

    def train_step(self, ctx: MethodContext, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> StepOutput:
        """The method's step, then the CE of each sample at the logits the step trained on (for the
        MW-Net family exactly the weight net's input) into the ``loss`` record."""
        out = super().train_step(ctx, x, y, index)  # type: ignore[misc]
        self.record(index, loss=F.cross_entropy(out.logits.float(), y, reduction="none"))  # type: ignore[attr-defined]
        return out

    def _weight_metrics(self, ctx: MethodContext, values: Any) -> dict[str, Any]:
        noisy = is_noisy_train(ctx.data)
        if values is None or noisy is None:
            return {}
        return weight_detection_metrics(values, noisy, name=self.weight_record)

    def on_epoch_end(self, ctx: MethodContext) -> dict[str, Any]:
        """The weight's detection metric of this epoch (``<record>_detection_auroc`` / ``_ap``)."""
        out = dict(super().on_epoch_end(ctx) or {})  # type: ignore[misc]
        recs = self.sample_records  # type: ignore[attr-defined]
        hist = recs.history.get(self.weight_record, {}) if recs is not None else {}
        out.update(self._weight_metrics(ctx, hist.get(ctx.epoch)))
        return out

    def finalize(self, ctx: MethodContext) -> dict[str, Any]:
        """The weight's detection metric at the selected epoch, into ``summary.json``."""
        out = dict(super().finalize(ctx) or {})  # type: ignore[misc]
        out.update(self._weight_metrics(ctx, self.selected_record(self.weight_record)))  # type: ignore[attr-defined]
        return out
