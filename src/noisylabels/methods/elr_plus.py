"""ELR+ (Liu, Niles-Weed, Razavian & Fernandez-Granda, NeurIPS 2020, Sec. 4.4): ELR whose targets
come from weight-averaged networks, with two networks and mixup.

Per training batch ``(x, y, index)`` and for each of the two networks ``n`` (the run's model, then
``peer``), with ``o`` the other one:

1. target update (Sec. 4.3) from the *other* network's weight average:
   ``t^n_i <- beta t^n_i + (1 - beta) softmax(EMA_o(x_i))`` on the un-mixed batch;
2. mixup (``lam = max(lam, 1 - lam)``, one per batch, a permutation ``pi`` of the batch) of the inputs,
   the one-hot labels and the targets: ``x~ = lam x + (1 - lam) x_pi``, ``y~``, ``q = lam t^n + (1 - lam) t^n_pi``;
3. one SGD step of ``n`` on ``mean_i [ CE(y~_i, p_i) + w(s) lam_ELR log(1 - <p_i, q_i>) ]``, ``p = softmax(n(x~))``
   (soft-label cross-entropy; ``w(s)`` the regulariser's ramp-up, 1 without one);
4. weight averaging: ``theta^{EMA_n} <- a(s) theta^{EMA_n} + (1 - a(s)) theta^n`` (parameters; the
   averaged network's batch-norm statistics are its own, from its train-mode passes).

At test time (validation, model selection, scoring) the prediction is the softmax of the mean of the
two trained networks' logits (not of the averaged copies), as the official code evaluates.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from ..models import Ensemble
from ..seeding import derive_seed
from .base import Method, register_method
from .context import MethodContext, NetworkSpec, StepOutput
from .elr import _float, check_elr_options, elr_regularizer, target_probs, temporal_ensemble
from .label_correction import soft_cross_entropy
from .options import choice_option, int_option
from .records import Record

__all__ = ["ELRPlus", "sigmoid_rampup", "ema_decay"]

EMA_SCHEDULES = ("sigmoid", "mean-teacher", "constant")


def sigmoid_rampup(step: float, length: int) -> float:
    """``exp(-5 (1 - min(step, length) / length)^2)`` (Laine & Aila's ramp-up, which the official ELR+
    code uses for the EMA decay and the regulariser's weight); ``length = 0``: 1."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(float(step), 0.0), float(length)) / length
    return math.exp(-5.0 * phase * phase)


def ema_decay(step: int, *, decay: float, schedule: str, rampup_steps: int) -> float:
    """The weight-averaging decay ``a`` after ``step`` updates (1-based, as the official code counts).

    ``'sigmoid'``: ``decay * sigmoid_rampup(step + 1, rampup_steps)`` (the code's CIFAR configs,
    ``ema_update: true``); ``'mean-teacher'``: ``min(1 - 1 / (step + 1), decay)`` (its Clothing1M and
    WebVision configs); ``'constant'``: ``decay``.
    """
    if schedule == "sigmoid":
        return decay * sigmoid_rampup(step + 1, rampup_steps)
    if schedule == "mean-teacher":
        return min(1.0 - 1.0 / (step + 1), decay)
    return decay


@register_method("elr-plus", help="ELR+: two networks, targets from the other's weight average, mixup "
                                  "(Liu et al., NeurIPS 2020)")
class ELRPlus(Method):
    """ELR+ (Liu et al. 2020, Sec. 4.4, and the official ``ELR_plus`` code): see the module docstring for
    the step. Evaluation (validation, ``best_model.pt``, ``pred_probs.npy``, ``suspects.csv``) uses
    the two trained networks, their logits averaged (:class:`~noisylabels.models.Ensemble`).

    State: the run's model and ``peer`` (each with its own optimiser and schedule), their weight
    averages ``ema`` and ``peer_ema`` (copies of them at the start), the per-sample targets ``target``
    (the model's, fed by ``peer_ema``) and ``peer_target`` (the peer's, fed by ``ema``); all
    checkpointed. Both networks train on the same batches, each with its own mixup draw, one after
    the other within each step (the official code gives each network its own data loader and, on one
    GPU, trains the first network for a whole epoch before the second; the peer's targets then come
    from the model's average as it stands after that step here, after that epoch there). The
    averages start as copies of their networks (the official code initialises them independently;
    its sigmoid ramp-up starts at decay ``0.997 e^-5 = 0.007``, so the difference fades within the
    first steps).

    Records: ``agreement`` ``<p_i, q_i>`` (on the mixed input whose larger share is sample ``i``),
    ``target_given`` the mean over the two target tables of ``t_i[y_i]``; detection ranks by
    ``-target_given`` (see :class:`~noisylabels.methods.elr.ELR`).

    Parameters
    ----------
    beta, lam:
        As ELR's. The official CIFAR-10 config: 0.7 and 3 (default); CIFAR-100: 0.9 and 7.
    ema_decay:
        The weight average's decay ``gamma`` (official code: 0.997 on CIFAR, 0.9999 on Clothing1M).
    ema_schedule:
        ``'sigmoid'`` (default; CIFAR configs), ``'mean-teacher'`` (Clothing1M, WebVision) or
        ``'constant'`` (see :func:`ema_decay`).
    ema_rampup_steps:
        Length of the sigmoid ramp-up of the decay in steps (code: 40000, about 100 CIFAR epochs at
        batch 128; scale it with a shorter run, or the average stays close to the live weights).
    lambda_rampup_steps:
        Sigmoid ramp-up of the regulariser's weight in steps (code: 0 on CIFAR-10, 40000 on CIFAR-100).
    mixup_alpha:
        ``lam ~ Beta(alpha, alpha)`` (code: 1 on CIFAR, 1.5 on WebVision); 0 turns mixup off.
    weight_labels_by_target:
        The official code's CIFAR-100 branch: the cross-entropy's label ``y~`` is replaced by
        ``y~ * q / sum(y~ * q)``. Off by default (not in the paper's equations).
    clamp:
        As ELR's in the regulariser (the code clamps ``p`` to ``[1e-4, 1 - 1e-4]``; 0: the exact
        regulariser); the target update is never clamped (the ELR+ code does not clamp there).
    """

    own_loss = "elr-plus"
    networks = ("peer", NetworkSpec("ema", trainable=False), NetworkSpec("peer_ema", trainable=False))
    records = (Record("agreement"), Record("target_given"))
    detection = ("target_given", -1.0)

    def __init__(self, *, beta: float = 0.7, lam: float = 3.0, ema_decay: float = 0.997, ema_schedule: str = "sigmoid",
                 ema_rampup_steps: int = 40000, lambda_rampup_steps: int = 0, mixup_alpha: float = 1.0,
                 weight_labels_by_target: bool = False, clamp: float = 0.0) -> None:
        super().__init__()
        check_elr_options("elr-plus", beta=beta, lam=lam, clamp=clamp)
        if not 0.0 <= float(ema_decay) < 1.0:
            raise UserError(f"elr-plus: ema_decay must lie in [0, 1), got {ema_decay}")
        choice_option("elr-plus", "ema_schedule", ema_schedule, EMA_SCHEDULES)
        int_option("elr-plus", "ema_rampup_steps", ema_rampup_steps, 0)
        int_option("elr-plus", "lambda_rampup_steps", lambda_rampup_steps, 0)
        if not 0.0 <= float(mixup_alpha) < 1e6:
            raise UserError(f"elr-plus: mixup_alpha must be >= 0 (0: no mixup), got {mixup_alpha}")
        self.beta, self.lam, self.clamp = float(beta), float(lam), float(clamp)
        self.ema_decay, self.ema_schedule, self.ema_rampup_steps = float(ema_decay), ema_schedule, ema_rampup_steps
        self.lambda_rampup_steps, self.mixup_alpha = lambda_rampup_steps, float(mixup_alpha)
        self.weight_labels_by_target = bool(weight_labels_by_target)

    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        k = ctx.data.num_classes
        self.target = self.per_sample("target", shape=(k,))
        self.peer_target = self.per_sample("peer_target", shape=(k,))
        self.net("ema").model.load_state_dict(ctx.model.state_dict())
        self.net("peer_ema").model.load_state_dict(self.net("peer").model.state_dict())

    def eval_model(self, ctx: MethodContext) -> torch.nn.Module:
        return Ensemble([ctx.model, self.net("peer").model], combine="logits")

    def on_epoch_start(self, ctx: MethodContext) -> None:
        for name in ("ema", "peer_ema"):  # the official code's averaged networks run in train mode
            self.net(name).model.train()

    def network_step(self, ctx: MethodContext, name: str, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        """One ELR+ step of network ``name`` (``'model'`` or ``'peer'``) on the batch: target update from
        the other network's average, mixup, the step, this network's weight average."""
        peer = self.net("peer")
        if name == "model":  # (model, its trainable network, its targets, its teacher, its average)
            model, net, table = ctx.model, None, self.target
            teacher, average = self.net("peer_ema").model, self.net("ema").model
        else:
            model, net, table = peer.model, peer, self.peer_target
            teacher, average = self.net("ema").model, self.net("peer_ema").model
        k = table.shape[1]
        with torch.no_grad():
            t = temporal_ensemble(table[index], target_probs(teacher(x)), beta=self.beta)  # the code: no clamp here
            table[index] = t
            gen = torch.Generator().manual_seed(derive_seed(ctx.seed, f"elr-plus-{ctx.step}-{name}"))
            onehot = F.one_hot(y, k).to(t.dtype)
            mixed = ctx.mixup(x, torch.cat([onehot, t], dim=1), alpha=self.mixup_alpha, generator=gen, max_lambda=True)
            y_mix, q = mixed.targets[:, :k], mixed.targets[:, k:]
            if self.weight_labels_by_target:
                y_mix = y_mix * q
                y_mix = y_mix / y_mix.sum(1, keepdim=True).clamp_min(torch.finfo(y_mix.dtype).tiny)
        z = model(mixed.x)
        step = ctx.step + 1  # steps so far, this one included (the official code's counter)
        weight = self.lam * sigmoid_rampup(step, self.lambda_rampup_steps)
        zf = _float(z)
        loss = (soft_cross_entropy(zf, y_mix.to(zf.dtype)) + weight * elr_regularizer(zf, q, clamp=self.clamp)).mean()
        ctx.backward_and_step(loss, net=net)
        a = ema_decay(step, decay=self.ema_decay, schedule=self.ema_schedule, rampup_steps=self.ema_rampup_steps)
        with torch.no_grad():
            for pa, p in zip(average.parameters(), model.parameters()):
                pa.mul_(a).add_(p.detach(), alpha=1.0 - a)
            agreement = (torch.softmax(zf, 1) * q.to(zf.dtype)).sum(1)
        return {"z": z.detach(), "loss": loss.detach(), "agreement": agreement,
                "target_given": t.gather(1, y[:, None]).squeeze(1)}

    def train_step(self, ctx: MethodContext, x: Any, y: Tensor, index: Tensor) -> StepOutput:
        a = self.network_step(ctx, "model", x, y, index)
        b = self.network_step(ctx, "peer", x, y, index)
        self.record(index, agreement=(a["agreement"] + b["agreement"]) / 2,
                    target_given=(a["target_given"] + b["target_given"]) / 2)
        return StepOutput(logits=a["z"], loss=(a["loss"] + b["loss"]) / 2)
