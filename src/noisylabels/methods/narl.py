"""NARL-Adjuster (Ding, Shu, Meng, Xu, "Improve Noise Tolerance of Robust Loss via Noise-Awareness").

A meta-learned network predicts, per sample, the hyperparameters of a robust loss from the
sample's margin: ``Lambda_i = h(m(x_i, y_i); theta)`` (Sec. 3.2), and the classifier trains on
``L_robust(f(x_i; w), y_i; Lambda_i)`` (Eq. 7). ``theta`` is learned bilevel on a meta set
(Eqs. 8-12, Algorithm 1): every ``meta_interval`` steps (the paper's T_Meta = 10) a virtual step of
the run's SGD, the meta-gradient of the meta loss through it (exact, by one JVP:
:class:`~noisylabels.methods.meta.MetaNetMethod`; theta acts only at the loss layer, through
``Lambda_i``), an Adam step on theta (lr 1e-3, weight decay 1e-4, Sec. 4.1), then the real step
with the updated theta.

Families (``method.loss``): ``gce`` (A-GCE: q), ``sl`` (A-SL: gamma1 on CE, gamma2 on RCE),
``polysoft`` (A-PolySoft: lambda, d), ``js`` (A-JS: pi1, pi2 = 1 - pi1). Transfer (T-*, Algorithm 2:
``t-narl``, a new classifier with a frozen, meta-trained adjuster read from a file, no meta set) is
:mod:`noisylabels.methods.narl_transfer`.

Where the paper and the authors' public code disagree (reading notes Sec. 3), the paper is
followed and the code's choice is an option: the margin is detached (paper and code agree); the
adjuster has biases (the paper's formula has none, "default PyTorch initialisation" and the code
use ``nn.Linear``); one output head (the 2024 code's three K-means heads are a CMW-Net remnant);
no linearisation of ``p^q`` near 0 (the 2023 code's ad-hoc ``12.9 p`` for ``p < 0.003``); the
virtual step is the real SGD step (momentum, weight decay; the 2023 code used plain SGD).

Detection (``suspects.csv``, ``detection_auroc``): the score is minus the adjuster's *input*, the
margin (``NARL.detection``, T-*'s too), not the predicted hyperparameter. The hyperparameter is a learned
function of the margin whose direction the method does not fix: it follows whichever samples the
meta loss wants fitted. On CIFAR-10 with human labels (issue 20, ``benchmarks/realnoise_findings.md``)
A-GCE's ``q`` ranked the wrong labels inversely (AUROC 0.21 in the issue, 0.39 here) while the
margin it is computed from ranked them the right way (0.64). The hyperparameters stay in the
records (``mean_q_clean`` / ``mean_q_noisy`` per epoch).

When not to use it (measured there): while the classifier is still under-fitting, most samples have
a negative margin and most of those are *clean* (CIFAR-10N random1, ResNet-8, 6 epochs: 69-84% of
the training samples had margin < 0 and only 19-21% of them were wrong labels, the overall noise
rate being 17%). The meta-gradient then asks for a CE-like small ``q`` at low margins, to fit those
clean samples, and the adjuster learns ``q`` increasing with the margin (correlation 0.66 -> 0.89
over the epochs): the opposite of the paper's Fig. 7, which describes a classifier that already
fits its clean samples (margin < 0 mostly on wrong labels). With few meta steps (6 epochs, meta
step every 10th: 17 steps) the adjuster also stays near its initialisation, ``q ~ 0.6-0.65`` for
most samples, a GCE that fits more slowly than CE: A-GCE was 4.1 points below CE (34.1% vs 38.2%;
about 2 points of it are the 1000 images the meta set takes from the 4000, measured at 3 epochs),
and a fixed GCE at q = 0.65 tracked A-GCE's first epochs.
So at a short budget, a weak model or a low noise rate (17% human noise), prefer CE; A-GCE needs
the classifier to fit the clean samples first (a longer run; ``warmup_epochs`` of plain CE).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..eval.plots import Curve, sample_function
from ..losses import LOG_1E_4, get_loss_fn
from .base import register_method
from .context import MethodContext
from .meta import MetaNetMethod
from .options import numbers_option
from .records import Record

__all__ = ["margin", "Family", "FAMILIES", "Adjuster", "RobustLoss", "adjuster_curves", "NARL"]


def margin(logits: Tensor, labels: Tensor) -> Tensor:
    """``m(x, y) = z_y - max_{j != y} z_j`` of the *detached* logits (Sec. 3.2, after AUM, Pleiss et al.).

    Negative exactly when the sample is classified into another class than ``y`` (ties aside);
    unchanged by adding a constant to all logits.
    """
    z = logits.detach()
    others = z.scatter(1, labels[:, None], float("-inf"))
    return z.gather(1, labels[:, None]).squeeze(1) - others.amax(dim=1)


class Family(NamedTuple):
    """A robust loss whose hyperparameters the adjuster predicts.

    Attributes
    ----------
    loss:
        Registered loss name.
    hparams:
        Names of the predicted hyperparameters (the loss's keyword options), in output order.
    scale, low, high:
        Defaults of the scale vector ``s`` (``Lambda = s * sigmoid(.)``) and of the clamp to the
        valid range applied afterwards, per hyperparameter.
    """

    loss: str
    hparams: tuple[str, ...]
    scale: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]


#: The four families of the paper, with the public code's scale and clamp as defaults. PolySoft's
#: scale is not recoverable from the code (its branch is broken there): ``s = (20, 20)`` with the
#: code's clamp ``lambda in [0.01, 20]`` (lower end 0.01 instead of 0 keeps lambda > 0) and
#: ``d in [1.01, 20]`` keeps ``lambda > 0`` and ``d > 1``; at initialisation (sigmoid ~ 1/2)
#: ``lambda ~ 10, d ~ 10``: nearly CE, since ``dL/dCE = (1 - CE/lambda)^(1/(d-1))``.
FAMILIES: dict[str, Family] = {
    "gce": Family("gce", ("q",), (1.5,), (0.01,), (1.0,)),
    "sl": Family("sce", ("gamma1", "gamma2"), (1.0, 1.0), (0.0, 0.0), (20.0, 20.0)),
    "polysoft": Family("polysoft", ("lam", "d"), (20.0, 20.0), (0.01, 1.01), (20.0, 20.0)),
    "js": Family("js", ("pi1",), (1.4,), (0.01,), (0.99,)),
}


class Adjuster(nn.Module):
    """``Lambda = clamp(s * sigmoid(W2 ReLU(W1 m + b1) + b2), low, high)`` (Sec. 3.2, Fig. 4).

    Parameters
    ----------
    num_hparams:
        ``d'``, the number of hyperparameters of the loss.
    hidden:
        ``d`` (the paper: 100).
    scale, low, high:
        The scale vector and the valid range, one value per hyperparameter.
    """

    def __init__(self, num_hparams: int, *, hidden: int = 100, scale: Sequence[float], low: Sequence[float],
                 high: Sequence[float]) -> None:
        super().__init__()
        self.fc1 = nn.Linear(1, hidden)
        self.fc2 = nn.Linear(hidden, num_hparams)
        for name, values in (("scale", scale), ("low", low), ("high", high)):  # float64, cast at use
            self.register_buffer(name, torch.tensor(values, dtype=torch.float64))

    def raw(self, m: Tensor) -> Tensor:
        """``s * sigmoid(.)`` before the clamp, shape ``(B, d')``: in ``(0, s)``."""
        h = self.fc2(torch.relu(self.fc1(m.reshape(-1, 1).to(self.fc1.weight.dtype))))
        return self.scale.to(h.dtype) * torch.sigmoid(h)

    def forward(self, m: Tensor) -> Tensor:
        out = self.raw(m)
        return torch.minimum(torch.maximum(out, self.low.to(out.dtype)), self.high.to(out.dtype))


class RobustLoss:
    """The loss layer of A-* and T-* (Eq. 7): the family's robust loss with per-sample hyperparameters."""

    def __init__(self, family: str, *, rce_A: float) -> None:
        self.family_name = str(family).lower()
        if self.family_name not in FAMILIES:
            raise UserError(f"narl: unknown loss family {family!r}; valid: {', '.join(FAMILIES)}")
        self.family = FAMILIES[self.family_name]
        self.fixed = {"A": float(rce_A)} if self.family_name == "sl" else {}
        if self.family_name == "sl" and not rce_A < 0:
            raise UserError(f"narl: rce_A (log 0 of the reverse cross entropy) must be negative, got {rce_A}")
        #: the per-sample records: each hyperparameter and the margin
        self.records = tuple(Record(n) for n in self.family.hparams) + (Record("margin"),)

    def losses(self, z: Tensor, y: Tensor, lam: Tensor) -> Tensor:
        hp = {name: lam[:, k] for k, name in enumerate(self.family.hparams)}  # JS: pi2 = 1 - pi1 inside js_loss
        return get_loss_fn(self.family.loss)(z, y, reduction="none", **hp, **self.fixed)


def adjuster_curves(adjuster: Adjuster, family: Family, title: str) -> list[Curve]:
    """Each predicted hyperparameter against the margin, on margins -10..10 (the paper's Fig. 7)."""
    m, lam = sample_function(adjuster, -10, 10)
    return [Curve(f"{name}_vs_margin", m, lam[:, k], "margin z_y - max_{j != y} z_j", name,
                  title=f"{title}: {name} vs margin") for k, name in enumerate(family.hparams)]


@register_method("narl", help="NARL-Adjuster: per-sample robust-loss hyperparameters from the margin (A-GCE, A-SL, "
                              "A-PolySoft, A-JS; Ding et al.)")
class NARL(MetaNetMethod):
    """A-GCE / A-SL / A-PolySoft / A-JS: the robust loss with hyperparameters ``h(m(x, y); theta)``.

    Parameters
    ----------
    loss:
        The family: ``'gce'`` (default), ``'sl'``, ``'polysoft'`` or ``'js'``.
    scale, low, high:
        Scale vector ``s`` and clamp range per hyperparameter (defaults: :data:`FAMILIES`).
    hidden:
        Hidden width of the adjuster (the paper: 100).
    rce_A:
        A-SL only: the value of ``log 0`` in the reverse cross entropy (default ``log 1e-4``; the
        2024 public code's log10 gives -4).
    meta_interval:
        Meta step every k-th training step (the paper's T_Meta: 10).
    meta_lr, meta_weight_decay, meta_optimizer, meta_momentum, meta_loss, meta_batch_size,
    meta_gradient, delayed, warmup_epochs:
        As :class:`~noisylabels.methods.meta.MetaNetMethod` (adjuster: Adam 1e-3, weight decay
        1e-4; meta loss CE on the clean meta set, any registered loss allowed, e.g. ``'mae'``
        on a noisy meta set as in RMNW-Net).
    """

    own_loss = "narl"
    #: suspicion = minus the margin, the adjuster's input (low margin = likely wrong; module docstring)
    detection = ("margin", -1.0)

    def __init__(self, *, loss: str = "gce", scale: Sequence[float] | float | None = None,
                 low: Sequence[float] | float | None = None, high: Sequence[float] | float | None = None,
                 hidden: int = 100, rce_A: float = LOG_1E_4, meta_interval: int = 10, **options: Any) -> None:
        self.robust = RobustLoss(loss, rce_A=rce_A)
        fam, where = self.robust.family, f" for the {self.robust.family_name} family"
        self.scale, self.low, self.high = (numbers_option("narl", k, v, getattr(fam, k), context=where)
                                           for k, v in (("scale", scale), ("low", low), ("high", high)))
        if any(lo > hi for lo, hi in zip(self.low, self.high)):
            raise UserError(f"narl: low must not exceed high, got low={self.low}, high={self.high}")
        self.hidden = int(hidden)
        self.records = self.robust.records
        super().__init__(meta_interval=meta_interval, **options)

    @classmethod
    def loss_name(cls, options: Mapping[str, Any]) -> str:
        return f"a-{str(options.get('loss', 'gce')).lower()}"

    def build_meta_net(self) -> nn.Module:
        return Adjuster(len(self.scale), hidden=self.hidden, scale=self.scale, low=self.low, high=self.high)

    def loss_layer(self, z: Tensor, y: Tensor, *, x: Tensor, index: Tensor) -> Tensor:
        """``L_robust(z_i, y_i; Lambda_i(theta))``, ``Lambda_i = h(m(x_i, y_i); theta)`` (Eq. 7)."""
        m = margin(z, y)
        lam = self.meta_net(m)
        self.note(margin=m, **{n: lam[:, k] for k, n in enumerate(self.robust.family.hparams)})
        return self.robust.losses(z, y, lam)

    def curves(self, ctx: MethodContext) -> list[Curve]:
        return adjuster_curves(self.meta_net, self.robust.family, f"A-{self.robust.family_name.upper()}")
