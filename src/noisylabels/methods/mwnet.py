"""Meta-Weight-Net (Shu et al., NeurIPS 2019) with a clean or noisy meta set (Ghosh & Lan, WACV 2021).

Presets: ``mwnet`` (MW-Net*: clean meta set, CE meta loss), ``mnw-net`` (noisy meta set, CE) and
``rmnw-net`` (noisy meta set, MAE meta loss: the WACV paper's robust meta loss, whose expected
meta-gradient under uniform meta-label noise is (1 - eta) times the clean one, Theorem 1; weights
sum-normalised as the authors' code), ``rmnw-net-paper`` (the same with Eq. 2 unnormalised). The
bilevel step is :class:`~noisylabels.methods.meta.MetaNetMethod`'s; this module states the paper's
part: the weight net, its normalisation and the loss layer.

Detection (``suspects.csv``, ``method_scores.npy``, ``detection_auroc``): the score is the weight
net's *input*, each sample's cross-entropy under the training model (record ``loss``: the mean over
the selected epoch's visits), not minus the weight. The weight is a learned function of that loss
whose direction the method does not fix: unnormalised (Eq. 2 as written), or with the CE meta loss
on a noisy meta set, the learned function can come out *increasing*, and minus the weight then
ranks the corrupted labels last, and which way it comes out can change with the seed alone
(digits, 40% uniform, 3 epochs: RMNW-Net as the paper writes it 0.988 with seed 0, 0.009 and 0.005
with seeds 1 and 2; MW-Net ``normalize='none'`` 0.010-0.019; MW-Net* under 30% flip noise
0.12-0.17, ``benchmarks/weight_score_direction.py``; CIFAR-10N human labels, RMNW-Net with Adam and
no normalisation: 0.387, ``benchmarks/realnoise_findings.md``). The loss
ranks high-loss samples first whatever the weight net learned. The paper's own detection metric
(Ghosh & Lan 2021, Table 3: AUROC of the weight as P(clean)) is reported beside it as
``weight_detection_auroc`` / ``weight_detection_ap`` (``metrics.jsonl`` per epoch, ``summary.json``
at the selected epoch), and the weights stay in the ``weight`` record.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..eval.plots import Curve, sample_function
from .base import register_method
from .context import MethodContext, batch_total
from .loss_rank import LossRanked
from .meta import MetaNetMethod
from .records import Record

__all__ = ["WeightNet", "MetaWeightNet", "MNWNet", "RMNWNet", "RMNWNetPaper"]


class WeightNet(nn.Module):
    """The weighting function W(l; phi): MLP 1 -> hidden -> 1, ReLU, sigmoid output (MW-Net Sec. 3)."""

    def __init__(self, hidden: int = 100) -> None:
        super().__init__()
        self.fc1 = nn.Linear(1, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(loss.reshape(-1, 1))))).reshape(-1)


@register_method("mwnet", help="Meta-Weight-Net (MW-Net*: clean meta set, CE meta loss; Shu et al. 2019)")
class MetaWeightNet(LossRanked, MetaNetMethod):
    """Meta-Weight-Net: per-sample weights ``W(l_i; phi)`` of the detached CE loss, learned bilevel.

    The loss layer (Shu et al. 2019, Eq. 2; the WACV paper's Eq. 4) is ``W(l_i; phi) l_i`` with
    ``l_i`` the per-sample cross-entropy, normalised as below; the meta step is
    :class:`~noisylabels.methods.meta.MetaNetMethod`'s (Eqs. 4-6, exact meta-gradient by one JVP).

    Parameters
    ----------
    normalize:
        ``'sum'`` (MW-Net's default): ``W_i l_i / mean_j W_j`` inside the virtual step and the real step, as
        the official WRN-28-10 script (the protocol of the paper's uniform and flip tables) does;
        ``'none'``: ``W_i l_i``, the paper's Eq. 2 as written and the official ResNet-32 script. Why
        ``'sum'`` is the default: without it, the one-step meta-gradient also rewards scaling every
        weight up (a larger effective step lowers the meta loss greedily), and on short runs the
        sigmoid saturates at 1 with the high-loss (noisy) samples on the flat side, so the learned
        function comes out *increasing* and ranks noisy samples above clean ones (see
        ``benchmarks/mwnet_normalize.py``).
    hidden:
        Hidden width of the weight net (MW-Net: 100).
    meta_lr, meta_weight_decay, meta_optimizer, meta_momentum, meta_nesterov:
        Optimiser of phi. MW-Net's default: Adam, lr 1e-3, weight decay 1e-4, as the official
        MW-Net code. Ghosh & Lan (2021, Sec. 4) fix the weighting network's learning rate at 1e-3
        with weight decay 5e-4 and train it by SGD (beta in their Eq. 2 is "the weighting network
        SGD parameter"; their code: momentum 0.9, Nesterov): the ``mnw-net`` / ``rmnw-net``
        presets' defaults.
    meta_loss:
        ``'ce'`` (MW-Net, MNW-Net) or ``'mae'`` (RMNW-Net), or any registered loss; ``None``: the preset's.
    meta_interval, delayed, meta_batch_size, meta_gradient, warmup_epochs:
        As :class:`~noisylabels.methods.meta.MetaNetMethod`.

    Notes
    -----
    Records: ``weight`` (what each sample was trained with; 1 in warm-up) and ``loss`` (the weight
    net's input, the sample's CE; also in warm-up: :class:`~noisylabels.methods.loss_rank.LossRanked`).
    Detection ranks by ``loss`` (see the module docstring: minus the weight inverts when the learned
    function increases); the weight's own AUROC, the paper's Table 3 metric, is
    ``weight_detection_auroc``.
    """

    own_loss = "ce"
    records = (Record("weight", plain_value=1.0), Record("loss"))
    #: suspicion = the weight net's input (the per-sample CE), whose direction no run can flip
    detection = ("loss", 1.0)

    #: ``normalize`` when the options leave it unset
    default_normalize = "sum"

    def __init__(self, *, normalize: str | None = None, hidden: int = 100, **options: Any) -> None:
        normalize = self.default_normalize if normalize is None else normalize
        if normalize not in ("none", "sum"):
            raise UserError(f"mwnet: normalize must be 'none' or 'sum', got {normalize!r}")
        self.normalize, self.hidden = normalize, int(hidden)
        super().__init__(**options)

    def build_meta_net(self) -> nn.Module:
        return WeightNet(self.hidden)

    def batch_weights(self, ce: torch.Tensor) -> torch.Tensor:
        """``W(l_i; phi)`` of the detached losses, normalised as configured (mean 1 for ``'sum'``)."""
        w = self.meta_net(ce.detach())
        if self.normalize == "sum":  # over the global batch in a data-parallel run
            total, n = batch_total(self.ctx, w)
            w = w * (n / total.clamp_min(1e-12))
        return w

    def loss_layer(self, z: torch.Tensor, y: torch.Tensor, *, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``W(l_i; phi) l_i``; phi enters only through the weights (of the detached loss)."""
        ce = F.cross_entropy(z, y, reduction="none")
        w = self.batch_weights(ce)
        self.note(weight=w)
        return w * ce

    def curves(self, ctx: MethodContext) -> list[Curve]:
        """The learned weighting function ``W(l; phi)`` at the final phi, on losses 0..10."""
        loss, w = sample_function(self.meta_net, 0, 10)
        return [Curve("weight_function", loss, w, "per-sample cross-entropy loss", "weight W(loss)",
                      title=f"{ctx.cfg['method']['name']}: learned weighting function (final phi)")]


@register_method("mnw-net", help="Meta-Weight-Net with a noisy meta set and CE meta loss (Ghosh & Lan 2021)")
class MNWNet(MetaWeightNet):
    """MW-Net trained on a *noisy* meta set (selects ``data.meta_set: noisy``) with the CE meta loss.

    Defaults of Ghosh & Lan (2021) as written: the weight net trained by SGD (lr 1e-3, weight decay
    5e-4, Sec. 4; momentum 0.9 with Nesterov as their code) and the loss layer of Eq. 2 without
    normalisation (their code normalises by the batch sum: ``normalize='sum'``). With the MW-Net
    code's Adam and the sum normalisation, RMNW-Net collapsed to a constant predictor in 7 of 8
    seeds at 60% uniform noise on MNIST (the normalised step concentrates on the samples of the
    classifier's currently favoured class; at a constant one-hot prediction the MAE meta-gradient
    is exactly zero); as written, in none of 13 (``benchmarks/rmnw_collapse.py``). The collapse
    needs both: SGD + sum and Adam + unnormalised collapsed in 0 of 4 seeds each. On CIFAR-10N
    human labels (3 epochs, ``benchmarks/realnoise_findings.md``) the four combinations were within
    1.4 points of each other and of CE on the same images; unnormalised, the weights average about
    0.4, which scales the student's gradient (its effective lr) by that factor. At 15 epochs that
    cost RMNW-Net 3.3 points, and ``rmnw-net`` defaults to ``'sum'`` (:class:`RMNWNet`); MNW-Net's
    default was not measured there and stays as written.
    """

    meta_set_kind = "noisy"
    default_normalize = "none"
    default_meta_optimizer = {"name": "sgd", "weight_decay": 5e-4, "momentum": 0.9, "nesterov": True}


@register_method("rmnw-net", help="robust MW-Net: noisy meta set, MAE meta loss, SGD weight net, sum-normalised weights "
                 "(Ghosh & Lan, WACV 2021, as their code)")
class RMNWNet(MNWNet):
    """RMNW-Net (Ghosh & Lan 2021): noisy meta set, MAE meta loss (Theorem 1: robust to uniform noise);
    the paper's weight-net optimiser (SGD lr 1e-3, wd 5e-4, momentum 0.9, Nesterov) and the weights
    normalised by their batch sum (``normalize='sum'``, the authors' code). ``rmnw-net-paper`` is
    Eq. 2 as written (unnormalised).

    Why ``'sum'`` by default (issue 20; ``benchmarks/realnoise_investigation.py``, ``rmnw_collapse.py``):
    on CIFAR-10N human labels (10k images, ResNet-8, 15 epochs, 3 seeds) unnormalised with SGD the
    weight net's output stayed at its initial value, about 0.47 for clean and wrong labels alike
    (AUROC of -weight 0.40-0.50 in every epoch), so the run was CE with the student's step scaled by
    0.47, and it ended 3.3 points below SGD + sum (55.5 vs 58.8 %; CE on the same 9000 images
    57.6 %; CE on them with every weight 0.47, seeds 0 / 1: 55.3 / 54.5 %, RMNW-Net as written
    55.5 / 56.9 %). Each
    of Adam (58.9 %) and the sum normalisation (58.8 %) alone removes the deficit;
    the noisy meta set does not cause it (Adam + sum on the same noisy meta set: 58.6 %). On MNIST
    at 60% uniform noise Adam + sum collapsed to a constant predictor in 7 of 8 seeds, SGD + sum in
    0 of 4 (test accuracy 94.9-96.5 %), Adam + unnormalised in 0 of 4. SGD + sum and Adam +
    unnormalised are good on both; SGD + sum keeps the paper's optimiser and is the authors' code.
    """

    default_meta_loss = "mae"
    default_normalize = "sum"


@register_method("rmnw-net-paper", help="RMNW-Net as the WACV 2021 paper writes it: Eq. 2 unnormalised, SGD weight net")
class RMNWNetPaper(RMNWNet):
    """RMNW-Net with the paper's Eq. 2 as written: ``W(l_i; phi) l_i`` without normalisation (the
    weight net by SGD, Sec. 4, as :class:`RMNWNet`). Not the default: with the weight net's SGD at
    lr 1e-3 its output barely moves from its initial ~0.47, which scales the student's step by that
    factor and cost 3.3 points on CIFAR-10N human labels (see :class:`RMNWNet`)."""

    default_normalize = "none"
