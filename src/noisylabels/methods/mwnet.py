"""Meta-Weight-Net (Shu et al., NeurIPS 2019) with a clean or noisy meta set (Ghosh & Lan, WACV 2021).

Presets: ``mwnet`` (MW-Net*: clean meta set, CE meta loss), ``mnw-net`` (noisy meta set, CE) and
``rmnw-net`` (noisy meta set, MAE meta loss: the WACV paper's robust meta loss, whose expected
meta-gradient under uniform meta-label noise is (1 - eta) times the clean one, Theorem 1). The
bilevel step is :class:`~noisylabels.methods.meta.MetaNetMethod`'s; this module states the paper's
part: the weight net, its normalisation and the loss layer.
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
from .meta import MetaNetMethod
from .records import Record

__all__ = ["WeightNet", "MetaWeightNet", "MNWNet", "RMNWNet"]


class WeightNet(nn.Module):
    """The weighting function W(l; phi): MLP 1 -> hidden -> 1, ReLU, sigmoid output (MW-Net Sec. 3)."""

    def __init__(self, hidden: int = 100) -> None:
        super().__init__()
        self.fc1 = nn.Linear(1, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(loss.reshape(-1, 1))))).reshape(-1)


@register_method("mwnet", help="Meta-Weight-Net (MW-Net*: clean meta set, CE meta loss; Shu et al. 2019)")
class MetaWeightNet(MetaNetMethod):
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
    """

    own_loss = "ce"
    records = (Record("weight", plain_value=1.0),)
    detection = ("weight", -1.0)

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
    0.4, which scales the student's gradient (its effective lr) by that factor.
    """

    meta_set_kind = "noisy"
    default_normalize = "none"
    default_meta_optimizer = {"name": "sgd", "weight_decay": 5e-4, "momentum": 0.9, "nesterov": True}


@register_method("rmnw-net", help="robust MW-Net: noisy meta set, MAE meta loss (Ghosh & Lan, WACV 2021)")
class RMNWNet(MNWNet):
    """RMNW-Net (Ghosh & Lan 2021): noisy meta set, MAE meta loss (Theorem 1: robust to uniform noise);
    the paper's optimiser and Eq. 2 as :class:`MNWNet`."""

    default_meta_loss = "mae"
