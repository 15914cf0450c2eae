"""Early-learning regularisation, ELR (Liu, Niles-Weed, Razavian & Fernandez-Granda, "Early-Learning
Regularization Prevents Memorization of Noisy Labels", NeurIPS 2020, Sec. 4).

The paper's loss (Sec. 4.2) is cross-entropy plus ``lambda`` times the regulariser

    R(p_i, t_i) = log(1 - <p_i, t_i>),

where ``p_i`` is the network's softmax output on sample ``i`` and ``t_i`` the sample's target, a
temporal ensemble of its past predictions (Sec. 4.3):

    t_i <- beta * t_i + (1 - beta) * p_i        (p_i detached; t_i starts at 0).

Its gradient in the logits (the paper's Lemma in Sec. 4.2) is

    dR/dz_c = p_c / (1 - <p, t>) * sum_k (t_k - t_c) p_k = p_c (<p, t> - t_c) / (1 - <p, t>),

negative for the classes the target favours more than the prediction does: gradient descent
pulls ``p`` towards ``t``, which counteracts the cross-entropy pull towards a wrong label as long
as the targets remember the early-learning predictions. The functions here are the pieces
:class:`ELR` and :class:`~noisylabels.methods.elr_plus.ELRPlus` share.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from .base import Method, register_method
from .context import MethodContext, StepOutput
from .records import Record

__all__ = ["ELR", "elr_regularizer", "target_probs", "temporal_ensemble", "check_elr_options"]


def _float(z: Tensor) -> Tensor:
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


def _log1m_softmax(z: Tensor) -> Tensor:
    """``log(1 - softmax(z)_k)`` for every class, accurate also when ``p_k`` rounds to 1: for the
    largest logit it is ``logsumexp_{j != k} z_j - logsumexp_j z_j``; elsewhere ``p_k <= 1/2`` and
    ``log1p(-p_k)`` is accurate."""
    lse = torch.logsumexp(z, dim=1, keepdim=True)
    top = F.one_hot(z.argmax(1), z.shape[1]).bool()
    rest = torch.logsumexp(z.masked_fill(top, float("-inf")), dim=1, keepdim=True) - lse
    p = torch.exp(z - lse).masked_fill(top, 0.0)  # 0 at the top class: no inf gradient in the branch not taken
    return torch.where(top, rest, torch.log1p(-p))


def elr_regularizer(logits: Tensor, target: Tensor, *, clamp: float = 0.0) -> Tensor:
    """ELR's per-sample regulariser ``log(1 - <p_i, t_i>)``, ``p = softmax(logits)`` (Liu et al. 2020, Sec. 4.2).

    Parameters
    ----------
    logits:
        ``(B, K)`` network outputs (the gradient flows through ``p``).
    target:
        ``(B, K)`` targets, non-negative with rows summing to at most 1 (a temporal ensemble that
        started at 0 sums to ``1 - beta^n`` after ``n`` updates); no gradient flows into them.
    clamp:
        ``0`` (default, the paper's equation): computed exactly as
        ``log((1 - sum_k t_k) + sum_k t_k (1 - p_k))`` with ``log(1 - p_k)`` from the logits, so it
        stays finite when ``p`` and ``t`` both approach the same one-hot vector (the plain formula
        reaches ``log 0`` in float32). ``> 0``: the official code's guard, ``p`` clamped to
        ``[clamp, 1 - clamp]`` (its value 1e-4) before the plain formula (the clamp also cuts the
        gradient of the clamped entries).

    Returns
    -------
    Tensor
        ``(B,)`` values, each ``<= 0``.
    """
    z = _float(logits)
    t = target.detach().to(z.dtype)
    if clamp > 0:
        p = torch.softmax(z, dim=1).clamp(clamp, 1.0 - clamp)
        return torch.log(1.0 - (t * p).sum(1))
    rest = (1.0 - t.sum(1, keepdim=True)).clamp_min(0.0)
    terms = torch.cat([torch.log(rest), torch.log(t) + _log1m_softmax(z)], dim=1)
    return torch.logsumexp(terms, dim=1)


def target_probs(logits: Tensor, *, clamp: float = 0.0) -> Tensor:
    """The detached prediction that enters a target update: ``softmax(logits)``; with ``clamp > 0``
    (the official code) clamped to ``[clamp, 1 - clamp]`` and renormalised to sum 1."""
    p = torch.softmax(_float(logits).detach(), dim=1)
    if clamp > 0:
        p = p.clamp(clamp, 1.0 - clamp)
        p = p / p.sum(1, keepdim=True)
    return p


def temporal_ensemble(target: Tensor, probs: Tensor, *, beta: float) -> Tensor:
    """The target update of Sec. 4.3: ``beta * t + (1 - beta) * p`` (``beta = 0``: the current prediction)."""
    return beta * target + (1.0 - beta) * probs.to(target.dtype)


def check_elr_options(method: str, *, beta: float, lam: float, clamp: float) -> None:
    """One-line errors for ELR's shared options."""
    if not 0.0 <= float(beta) < 1.0:
        raise UserError(f"{method}: beta (the target's temporal-ensemble momentum) must lie in [0, 1), got {beta}")
    if not 0.0 <= float(lam) < 1e6:
        raise UserError(f"{method}: lam (the regulariser's weight) must be >= 0 and finite, got {lam}")
    if not 0.0 <= float(clamp) < 0.5:
        raise UserError(f"{method}: clamp must lie in [0, 0.5) (0: the paper's exact regulariser; "
                        f"the official code's 1e-4), got {clamp}")


@register_method("elr", help="early-learning regularisation: CE + lam * log(1 - <p, t>) towards per-sample "
                             "temporal-ensemble targets (Liu et al., NeurIPS 2020)")
class ELR(Method):
    """ELR: cross-entropy plus ``lam * log(1 - <p_i, t_i>)`` (Liu et al. 2020, Sec. 4.2-4.3).

    Each step first updates the targets of the batch, ``t_i <- beta t_i + (1 - beta) p_i`` with the
    step's own detached prediction (:func:`temporal_ensemble`), then minimises the mean of
    ``CE(z_i, y_i) + lam * log(1 - <p_i, t_i>)`` (:func:`elr_regularizer`), as the official code orders
    them. The targets are per-sample state over the pool (``per_sample['target']``, checkpointed).

    Records: ``agreement`` = ``<p_i, t_i>`` and ``target_given`` = ``t_i[y_i]``, the early-learning
    target's probability of the given label. Detection ranks by ``-target_given`` (``1 - t_i[y_i]``
    orders the same): the target is an average of what the network predicted from the start of
    training, the early-learning phase in which it fits the correct labels first, so a label the
    target gives little probability is likely wrong. The direction holds whatever the run learns:
    a memorising run pushes ``t_i[y_i]`` up for every sample and the score loses resolution, but
    it never ranks the labels the target agrees with ahead of those it rejects.

    Parameters
    ----------
    beta:
        Temporal-ensemble momentum in [0, 1). Paper: 0.7 on CIFAR-10 (default), 0.9 on CIFAR-100.
    lam:
        The regulariser's weight ``lambda`` (>= 0; 0 is plain CE). Paper: 3 on CIFAR-10 (default),
        7 on CIFAR-100 (``--set method.beta=0.9 --set method.lam=7``). The paper's values assume the
        early-learning phase: a model that is right on most samples early. With a model that still
        under-fits (ResNet-8, 40 epochs, CIFAR-10N human labels: 47% test accuracy at epoch 10) the
        targets carry its early mistakes and ``lam=3`` lost 7 points to CE, while ``lam=0.5``
        matched CE (``benchmarks/realnoise_findings.md``, "realnoise-cpu at its budget").
    clamp:
        0 (default): the paper's regulariser, computed exactly. The official code clamps ``p`` to
        ``[1e-4, 1 - 1e-4]`` in the regulariser and in the target update (then renormalises): set
        ``clamp=1e-4`` for that (see :func:`elr_regularizer`).

    The paper trains ResNet-34 with SGD (lr 0.02, momentum 0.9, weight decay 1e-3, batch 128), a
    cosine-annealing schedule on CIFAR-10 and multistep on CIFAR-100: those are the run's ``optim``
    settings here, not options.
    """

    own_loss = "elr"
    records = (Record("agreement"), Record("target_given"))
    detection = ("target_given", -1.0)

    def __init__(self, *, beta: float = 0.7, lam: float = 3.0, clamp: float = 0.0) -> None:
        super().__init__()
        check_elr_options("elr", beta=beta, lam=lam, clamp=clamp)
        self.beta, self.lam, self.clamp = float(beta), float(lam), float(clamp)

    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        self.target = self.per_sample("target", shape=(ctx.data.num_classes,))

    def losses(self, z: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Update the batch's targets from ``z``, then the per-sample losses ``CE + lam * R`` and the
        batch's records (``agreement``, ``target_given``)."""
        prev = self.target[index]  # a copy (advanced indexing)
        with torch.no_grad():
            t = temporal_ensemble(prev, target_probs(z, clamp=self.clamp), beta=self.beta)
            self.target[index] = t
        reg = elr_regularizer(z, t, clamp=self.clamp)
        losses = F.cross_entropy(_float(z), y, reduction="none") + self.lam * reg
        with torch.no_grad():
            agreement = (torch.softmax(_float(z), 1) * t).sum(1)
        return losses, {"agreement": agreement, "target_given": t.gather(1, y[:, None]).squeeze(1)}

    def train_step(self, ctx: MethodContext, x: Any, y: Tensor, index: Tensor) -> StepOutput:
        z = ctx.model(x)
        losses, rec = self.losses(z, y, index)
        loss = losses.mean()
        ctx.backward_and_step(loss)
        self.record(index, **rec)
        return StepOutput(logits=z.detach(), loss=loss.detach())
