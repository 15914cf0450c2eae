"""SimCLR: self-supervised pretraining of a backbone (``noisylabels pretrain --method simclr``).

Chen, Kornblith, Norouzi & Hinton (2020), "A Simple Framework for Contrastive Learning of Visual
Representations" (ICML). Each training image gives two augmented views (``views = ('strong',
'strong')``: ``data.strong_augment: simclr``, the paper's crop-resize, flip, colour jitter and grey
conversion, no blur at CIFAR scale; :class:`noisylabels.data.policies.SimCLRAugment`). The network
``f`` (the run's model without its classifier: ``ctx.model.features``) gives ``h = f(x)``, a
projection head ``g`` gives ``z = g(h) = W2 relu(W1 h)`` (Sec. 2.1, "a MLP with one hidden layer";
hidden width = the width of ``h``, output 128 as the paper's experiments), and the two views of
every image are a positive pair of the NT-Xent loss (Eq. 1, :func:`noisylabels.losses.nt_xent`,
temperature 0.5 for CIFAR-10, App. B.9) over the ``2N`` views of the batch. Both views go through
the network in one forward, so batch normalisation sees all ``2N`` (the paper's global BN over the
batch, on one device). At the end the head is thrown away (Algorithm 1: "return encoder network
f, and throw away g"): the run writes ``backbone.pt``, the model without ``g`` and without the
(untrained) classifier, which ``model.init_checkpoint`` and EMLC's ``method.teacher_init`` load.

Where the paper and its code differ: the paper's head is ``W2 relu(W1 h)``; the authors' code puts
batch normalisation after each head layer (``head_bn: true`` here) and trains with LARS at lr
``0.3 x batch / 256`` (CIFAR-10: batch 512, 1000 epochs, weight decay 1e-6, temperature 0.5, ResNet-18);
this library has no LARS: the ``pretrain`` defaults are SupContrast's SGD settings (the SimCLR code
C2D pretrained with: momentum 0.9, weight decay 1e-4, cosine schedule; lr 0.5 at batch 512 here).

What the run reports: no classifier is trained, so ``val_accuracy`` / ``test_accuracy`` are those of
a weighted kNN classifier (Wu et al. 2018; ``knn_k`` 200, ``knn_temperature`` 0.1) on ``f``'s
features, the training split (with the labels training sees) as its memory; without labels there is
none. ``contrastive_accuracy`` (per epoch) is the fraction of anchors whose most similar other view
is their positive, which needs no label. Selection-free: ``backbone.pt`` is the last epoch's.

Several processes (``pretrain --nproc N``): the negatives are the whole *global* batch (Eq. 1's
``2(N - 1)`` other views of the minibatch, which the paper spreads over its TPU cores). Each process
projects its slice, the projections are gathered with their gradient
(:func:`global_contrastive_logits`), every process computes the 1-process loss over the global
batch, and the gradient all-reduce weighs the processes equally (``replicate_loss``), which gives
the 1-process gradient. BatchNorm (in the model or ``head_bn``) is refused there unless
``train.sync_batchnorm``: per-process statistics are the "local information leakage" that the
paper's global BN removes (Sec. 2.2, "Global BN"), and another model than one process trains.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..losses.contrastive import contrastive_logits, nt_xent_from_logits
from ..models.penultimate import check_features, feature_dim
from ..seeding import derive_seed
from .base import Method, register_method
from .context import MethodContext, StepOutput, data_parallel
from .options import int_option

__all__ = ["SimCLR", "ProjectionHead", "global_contrastive_logits"]


def global_contrastive_logits(ctx: Any, z1: torch.Tensor, z2: torch.Tensor, *,
                              temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~noisylabels.losses.contrastive.contrastive_logits` over the *global* batch (NT-Xent,
    Chen et al. 2020, Eq. 1: every other view of the batch is a negative).

    In a data-parallel training step (``ctx.dist``), ``z1``, ``z2`` are this process's slice of
    the two views' projections: they are gathered with their gradient (rank order: the 1-process
    batch), and the returned ``(2N, 2N)`` logits are the 1-process run's on every process; the step's
    loss is then the same on every process (``replicate_loss``: the gradient all-reduce weighs each
    process ``1 / N``, and each one's gradient holds its rows' share ``N`` times, the gather's
    backward summing all processes' gradients). One process: the batch's own logits."""
    dp = data_parallel(ctx)
    if dp is None or not getattr(dp, "in_step", False):
        return contrastive_logits(z1, z2, temperature=temperature)
    dp.replicate_loss()
    d = z1.shape[1]
    z = dp.gather_batch_grad(torch.cat([z1, z2], dim=1))  # one gather of both views
    return contrastive_logits(z[:, :d], z[:, d:], temperature=temperature)


class ProjectionHead(nn.Module):
    """SimCLR's projection head ``g(h) = W2 relu(W1 h)`` (Sec. 2.1); ``bn``: batch normalisation after
    each linear layer, the first one's before the ReLU, the last one without bias (the authors' code)."""

    def __init__(self, in_features: int, hidden: int, out_features: int, *, bn: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_features, hidden, bias=not bn)]
        if bn:
            layers.append(nn.BatchNorm1d(hidden))
        layers += [nn.ReLU(), nn.Linear(hidden, out_features, bias=not bn)]
        if bn:
            layers.append(nn.BatchNorm1d(out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


@register_method("simclr", help="SimCLR self-supervised pretraining (NT-Xent on two views, projection head "
                                "dropped; noisylabels pretrain writes backbone.pt)")
class SimCLR(Method):
    """SimCLR (Chen et al. 2020); see the module docstring.

    Parameters
    ----------
    temperature:
        ``tau`` of NT-Xent (0.5: the paper's CIFAR-10 setting; 0.1 on ImageNet).
    projection_dim:
        Output width of the head (128).
    projection_hidden:
        Hidden width of the head (``None``: the backbone's feature width, as the paper).
    head_bn:
        Batch normalisation in the head (the authors' code; the paper's equation has none).
    knn_k, knn_temperature:
        The kNN monitor (200 and 0.1, Wu et al. 2018); ``knn_k: 0`` switches it off (faster epochs).
    """

    self_supervised = True
    views = ("strong", "strong")
    own_loss = "nt-xent"

    def __init__(self, *, temperature: float = 0.5, projection_dim: int = 128, projection_hidden: int | None = None,
                 head_bn: bool = False, knn_k: int = 200, knn_temperature: float = 0.1) -> None:
        super().__init__()

        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not 0.0 < float(temperature) < float("inf"):
            raise UserError(f"simclr: temperature must be a positive number, got {temperature!r}")
        if isinstance(knn_temperature, bool) or not isinstance(knn_temperature, (int, float)) \
                or not 0.0 < float(knn_temperature) < float("inf"):
            raise UserError(f"simclr: knn_temperature must be a positive number, got {knn_temperature!r}")
        if not isinstance(head_bn, bool):
            raise UserError(f"simclr: head_bn must be true or false, got {head_bn!r}")
        self.temperature = float(temperature)
        self.projection_dim = int_option("simclr", "projection_dim", projection_dim, 1)
        self.projection_hidden = None if projection_hidden is None else int_option("simclr", "projection_hidden",
                                                                                         projection_hidden, 1)
        self.head_bn = head_bn
        self.knn_k = int_option("simclr", "knn_k", knn_k, 0)
        self.knn_temperature = float(knn_temperature)
        self._correct: torch.Tensor | int = 0
        self._count = 0

    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        width = feature_dim(check_features(ctx.model, what=f"simclr: model {ctx.cfg['model']['name']!r}"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(ctx.seed, "simclr-head"))
            head = ProjectionHead(width, self.projection_hidden or width, self.projection_dim, bn=self.head_bn)
        self.head = ctx.add_module("head", head)  # trained by the run's optimiser and schedule
        bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in (*ctx.model.modules(), *head.modules()))
        if bn and data_parallel(ctx) is not None and not ctx.cfg["train"].get("sync_batchnorm"):
            raise UserError(f"simclr on several processes: model {ctx.cfg['model']['name']!r}"
                            f"{' with head_bn' if self.head_bn else ''} has BatchNorm, whose per-process statistics "
                            f"leak which views pair up (the paper's global BN); use train.sync_batchnorm, a model "
                            f"without BatchNorm, or one process")

    def on_epoch_start(self, ctx: MethodContext) -> None:
        self._correct = self._count = 0

    def train_step(self, ctx: MethodContext, x: Any, y: torch.Tensor, index: torch.Tensor) -> StepOutput:
        """NT-Xent on the projections of the batch's two views (one forward through ``f`` and ``g``;
        several processes: over the global batch, :func:`global_contrastive_logits`)."""
        x1, x2 = x
        n = x1.shape[0]
        z = self.head(ctx.model.features(torch.cat([x1, x2])))
        logits, targets = global_contrastive_logits(ctx, z[:n], z[n:], temperature=self.temperature)
        loss = nt_xent_from_logits(logits, targets)  # the global batch's on every process
        ctx.backward_and_step(loss)
        with torch.no_grad():  # counted on the device: no host sync per step
            self._correct = self._correct + (logits.argmax(1) == targets).sum()
            self._count += len(targets)
        return StepOutput(logits=None, loss=loss.detach())

    def on_epoch_end(self, ctx: MethodContext) -> dict[str, Any]:
        """``contrastive_accuracy``: the fraction of the epoch's anchors whose nearest other view (in
        the projection space) is their positive."""
        return {"contrastive_accuracy": int(self._correct) / self._count if self._count else None}
