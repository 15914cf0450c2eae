"""Learning to reweight examples (Ren et al., ICML 2018) on the bilevel engine.

At every step the raw weight of example ``i`` is the meta-gradient ``-dL_meta/d eps_i`` at
``eps = 0`` (:func:`noisylabels.meta.per_example_weights`: one JVP pass, no per-sample loop); the
real step trains on ``sum_i w_i CE_i`` with the rectified weights normalised by their sum (Eqs.
12-13), reusing the training forward.

Scale: the paper (and official code) defines the weights from ``sum_i eps_i l_i``; the engine uses
the batch mean, so its weights are ``1/n`` of theirs. The sum normalisation removes the factor; the
sigmoid and softmax normalisations of L2B are not scale-free, so raw weights are multiplied by
``n`` first to match the official code.

Detection (``suspects.csv``, ``method_scores.npy``, ``detection_auroc``) ranks by each sample's
cross-entropy at its step (record ``loss``, :class:`~noisylabels.methods.loss_rank.LossRanked`), not
by minus the weight: the weight measures how well a sample's gradient agrees with the meta set's,
and with a noisy meta set it ranked the wrong labels at chance or inversely (digits, 3 epochs:
L2RW 0.49-0.59, L2B 0.42-0.52; ``benchmarks/weight_score_direction.py``). The weight's AUROC stays
reported as ``weight_detection_auroc`` (L2B: ``alpha_detection_auroc``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import register_method
from .loss_rank import LossRanked
from .meta import ExampleWeightingMethod
from .records import Record

__all__ = ["L2RW", "normalize_weights", "NORMALIZATIONS"]

NORMALIZATIONS = ("sum", "sigmoid", "softmax")


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
    raise UserError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {mode!r}")


@register_method("l2rw", help="learning to reweight examples (Ren et al. 2018): per-step meta-gradient weights")
class L2RW(LossRanked, ExampleWeightingMethod):
    """L2RW: ``w_i = max(-dL_meta/d eps_i, 0)`` normalised by the batch sum (Ren et al. 2018, Eqs. 12-13).

    Parameters
    ----------
    warmup_epochs:
        Epochs of plain CE before reweighting (default 0, as Ren et al.; the L2B code's
        ``--warm_up`` applies to its L2RW runs too, so a comparison with L2B should match it).
    meta_loss, meta_batch_size, meta_gradient:
        As :class:`~noisylabels.methods.meta.MetaMethod`.
    """

    own_loss = "ce"
    records = (Record("weight", plain_value=1.0), Record("loss"))
    #: suspicion = the sample's CE at its step (module docstring); -weight: ``weight_detection_auroc``
    detection = ("loss", 1.0)

    def example_losses(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(z, y, reduction="none")

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        return normalize_weights(raw * len(raw), mode="sum")

    def record_weights(self, index: torch.Tensor, weights: torch.Tensor) -> None:
        self.record(index, weight=weights * len(weights))  # on the scale "1 = average weight"
