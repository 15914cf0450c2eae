"""MLC: Meta Label Correction (Zheng, Awadallah & Dumais, AAAI 2021; public code microsoft/MLC).

A label-correction network (LCN) ``g_alpha(h(x), emb(y~)) -> q`` reads the *student's* detached
penultimate features ``h(x)`` and an embedding of the given label, and outputs a soft label
(softmax); the student trains on ``CE(q, p_w)`` (:class:`~noisylabels.methods.label_correction.LabelCorrectionMethod`),
the LCN is learned by the one-step look-ahead on the clean meta set (exact meta-gradient through the
run's real SGD step, by the engine's JVP; the official code's ``proxy_g`` is the same quantity by a
double backward). The EMLC paper (Taraday & Baskin 2023) is the baseline's critique: the teacher
is entangled with the student (it reads the student's features).

Choices (the MLC paper text is not among ``shared/papers``; these come from the public code at
HEAD, ``meta_models.py`` / ``main.py`` / ``mlc.py``):

* LCN: ``Embedding(K, 128)`` (README runs: ``--cls_dim 128``), concatenated with ``h``,
  ``Linear -> tanh -> Linear(128) -> tanh -> Linear(K)``, softmax; Xavier initialisation (uniform
  for the embedding, normal for the linear weights, zero biases) as ``MetaNet.init_weights``. No
  ``--skip`` gate (its default is off) and no sparsemax.
* LCN optimiser: Adam, lr 3e-4 (README CIFAR runs), weight decay 0 (the code's ``amsgrad=True`` is
  not reproduced: the base's Adam is plain Adam).
* The code's default ``hmlc_K_mix`` adds CE on a clean batch to the student loss: the default here
  too (``clean_in_student=True``: half of each clean batch joins the student's batch with its hard
  labels, the other half is the meta batch); ``clean_in_student=False`` is the code's ``hmlc_K``.
  Why: without it the student starts by fitting the untrained LCN's near-random soft labels and
  learns slowly or collapses to one class (digits, 40% symmetric, 6 epochs: test accuracy 0.52
  without, 0.88 with; MNIST-10k LeNet, uniform 80%: 0.09, a constant prediction, without).
* ``k`` (the code's ``--gradient_steps``, MLC's k-step look-ahead): every step computes the
  one-step meta-gradient ``G_t`` and carries the previous accumulated one with MLC's discount
  ``gamma_t = <(1 - s) * g_w(w_{t+1}), g_w(w_t)> / ||g_w(w_t)||^2`` (the training-loss Hessian taken
  as the identity, ``s`` = lr x SGD direction scale), ``A_t = G_t + gamma_t A_{t-1}``; the LCN
  steps on ``A_t`` every k-th step and the accumulator is reset
  (:class:`noisylabels.meta.schedule.DiscountedAccumulation`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models import FeatureTap, feature_dim, features
from .base import register_method
from .context import MethodContext
from .label_correction import LabelCorrectionMethod, upcast
from .options import int_option

__all__ = ["LabelCorrectionNet", "MLC"]

Tensor = torch.Tensor


class LabelCorrectionNet(nn.Module):
    """MLC's LCN: ``softmax(MLP([h; emb(y~)]))`` with two tanh hidden layers (public ``MetaNet``)."""

    def __init__(self, feature_dim: int, num_classes: int, *, embedding_dim: int = 128, hidden: int = 128) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_classes, embedding_dim)
        self.net = nn.Sequential(nn.Linear(feature_dim + embedding_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                 nn.Tanh(), nn.Linear(hidden, num_classes))

    def xavier_init(self) -> None:
        """The public code's ``MetaNet.init_weights``."""
        nn.init.xavier_uniform_(self.embedding.weight)
        for i in (0, 2, 4):
            nn.init.xavier_normal_(self.net[i].weight)
            nn.init.zeros_(self.net[i].bias)

    def forward(self, h: Tensor, y: Tensor) -> Tensor:
        return F.softmax(self.net(torch.cat([h, self.embedding(y).to(h.dtype)], dim=1)), dim=1)


@register_method("mlc", help="Meta Label Correction: label-correction net on the student's features (Zheng et al. 2021)")
class MLC(LabelCorrectionMethod):
    """MLC: soft labels ``g_alpha(h(x_i).detach(), emb(y~_i))`` learned by the one-step look-ahead.

    Parameters
    ----------
    k:
        MLC's k-step look-ahead (the code's ``gradient_steps``): discounted accumulation of the
        one-step meta-gradients, LCN step every k-th step (module docstring; the base's option with
        ``k_step = 'discounted'``). ``1``: the one-step look-ahead (exact meta-gradient).
    label_embedding_dim, hidden:
        LCN sizes (128, 128; the embedding's is
        :class:`~noisylabels.methods.label_correction.LabelCorrectionMethod`'s option).
    clean_in_student:
        Half of each clean batch in the student's step (the code's default ``hmlc_K_mix``; default
        ``True``, see the module docstring).
    meta_lr, meta_optimizer, meta_weight_decay, ...:
        The LCN's optimiser (default Adam, lr 3e-4, weight decay 0).
    **options:
        As :class:`~noisylabels.methods.label_correction.LabelCorrectionMethod` (``delayed`` default
        ``True`` as the code; ``meta_batch_size``, ``meta_gradient``, ``warmup_epochs``).
    """

    default_meta_optimizer = {"name": "adam", "weight_decay": 0.0, "momentum": 0.9, "nesterov": False}
    k_step = "discounted"

    def __init__(self, *, hidden: int = 128, meta_lr: float = 3e-4, clean_in_student: bool = True,
                 **options: Any) -> None:
        self.hidden = int_option("mlc", "hidden", hidden, 1)
        super().__init__(meta_lr=meta_lr, clean_in_student=clean_in_student, **options)

    def build_teacher(self, ctx: MethodContext) -> nn.Module:
        self.tap = FeatureTap(ctx.model, what="mlc")
        return LabelCorrectionNet(feature_dim(ctx.model), ctx.data.num_classes, embedding_dim=self.embedding_dim,
                                  hidden=self.hidden)

    def init_meta_net(self, ctx: MethodContext) -> None:
        self.meta_net.xavier_init()

    def soft_labels(self, z: Tensor, y: Tensor, *, x: Tensor, index: Tensor) -> Tensor:
        """``g_alpha(h(x).detach(), emb(y~))``; ``h`` from the training forward that gave ``z``."""
        h = self.tap.features(x)
        if h is None and self._mixed is not None and len(x) == self._mixed[1]:  # the given rows of a mixed batch
            full = self.tap.features(self._mixed[0])
            h = None if full is None else full[:len(x)]
        if h is None:  # a forward we did not see: recompute without a graph
            with torch.no_grad():
                h = features(self.ctx.model, x).detach()
        return self.meta_net(upcast(h), y)
