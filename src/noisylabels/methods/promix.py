"""ProMix (Xiao, Dong, Wang, Feng, Wu, Chen & Zhao, "ProMix: Combating Label Noise via Maximizing
Clean Sample Utility", IJCAI 2023): progressive selection of the clean set, and debiased
semi-supervised training with an auxiliary pseudo-label head.

The pieces, each a function below named after what it computes (Sec. 3 of the paper; the
official code, ``Justherozen/ProMix`` ``Train_promix.py`` and ``utils/utils.py``, where the paper
leaves a detail open):

* :func:`class_wise_small_loss` -- class-wise small-loss selection (CSS): per given class ``j``,
  the ``k_j = max(1, min(ceil(rho N / C), n_j))`` samples of smallest loss;
* :func:`matched_high_confidence` -- matched high-confidence selection (MHCS): samples whose
  prediction is the given label with confidence above ``tau``;
* :func:`debiased_logits` -- the debiased margin-based loss's logits ``z + alpha log pi`` (logit
  adjustment by the estimated class prior of the predictions), and :func:`debiased_pseudo_label`
  -- debiased pseudo-labelling ``softmax(z - beta log pi)``; :func:`update_prior` -- the moving
  average ``pi <- m pi + (1 - m) mean p`` that estimates ``pi`` (one for the selected set, one for
  the rest, per network);
* :func:`labelled_loss` -- the clean-set cross-entropy of a head on its debiased logits;
* :func:`unlabelled_loss` -- the auxiliary head's loss on the unselected samples: the primary
  head's debiased, sharpened weak-view prediction (no gradient) as the target of the auxiliary
  head's weak and strong views;
* :func:`label_guessing_by_agreement` -- the code's late-training expansion of the clean set by
  samples both networks predict alike with high confidence (off by default).

:class:`ProMix` puts them on the shared loop; :func:`~noisylabels.methods.dividemix.sharpen` and
:func:`~noisylabels.methods.dividemix.linear_rampup` are DivideMix's, mixup is
:func:`noisylabels.data.mixup` through ``ctx.mixup``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from ..models import Ensemble, check_features, feature_dim, logits_and_features
from ..models.ensemble import ENSEMBLE_COMBINE
from ..seeding import derive_seed
from .base import Method, register_method
from .context import MethodContext, StepOutput, data_parallel, is_noisy_train, selection_quality
from .dividemix import linear_rampup, per_sample_ce, sharpen, warmup_step
from .label_correction import soft_cross_entropy
from .options import choice_option, int_option
from .records import Record

__all__ = ["ProMix", "PseudoHeadModel", "class_wise_small_loss", "matched_high_confidence", "debiased_logits",
           "debiased_pseudo_label", "update_prior", "labelled_loss", "unlabelled_loss",
           "label_guessing_by_agreement", "selection_ratio"]

_TINY = float(torch.finfo(torch.float32).tiny)


# -- progressive selection -------------------------------------------------------------------------------------
def class_wise_small_loss(losses: Tensor, labels: Tensor, *, num_classes: int, rho: float) -> Tensor:
    """Class-wise small-loss selection (ProMix Sec. 3.1, CSS).

    For every class ``j`` with ``n_j > 0`` samples labelled ``j``, the ``k_j`` samples of smallest
    loss among them are selected, ``k_j = max(1, min(ceil(rho * N / C), n_j))``: the same budget
    ``rho N / C`` for every class (the balanced share of ``N`` samples over ``C`` classes), so an
    easy class cannot crowd out a hard one; ties go to the smaller position (a stable sort).

    Parameters
    ----------
    losses:
        ``(N,)`` per-sample losses (any monotone transform gives the same selection).
    labels:
        ``(N,)`` the given labels.
    num_classes:
        ``C``.
    rho:
        The selection ratio in ``(0, 1]``.

    Returns
    -------
    Tensor
        ``(N,)`` bool, True where selected.
    """
    losses, labels = losses.detach().reshape(-1).cpu(), labels.reshape(-1).cpu()
    n = losses.numel()
    budget = math.ceil(float(rho) * n / int(num_classes))
    keep = torch.zeros(n, dtype=torch.bool)
    for j in range(int(num_classes)):
        idx = torch.nonzero(labels == j).reshape(-1)
        if idx.numel() == 0:
            continue
        k = max(1, min(budget, idx.numel()))
        order = torch.sort(losses[idx].double(), stable=True).indices
        keep[idx[order[:k]]] = True
    return keep


def matched_high_confidence(probs: Tensor, labels: Tensor, *, tau: float) -> Tensor:
    """Matched high-confidence selection (ProMix Sec. 3.1, MHCS): ``argmax_c p_c = y`` and
    ``max_c p_c > tau``, i.e. (for ``tau >= 0.5``) ``p_y > tau`` (the code's form); ``(N,)`` bool."""
    conf, pred = probs.max(dim=1)
    return (pred == labels.to(pred.device)) & (conf > float(tau))


def selection_ratio(epoch: float, *, rho_start: float, rho_end: float, rampup_epochs: float) -> float:
    """``rho(e) = rho_start + (rho_end - rho_start) * min(e / rampup_epochs, 1)`` (the code's ramp of
    the CSS ratio; equal ends: a constant ``rho``)."""
    return float(rho_start) + (float(rho_end) - float(rho_start)) * linear_rampup(epoch, start=0.0,
                                                                               length=float(rampup_epochs))


# -- debiasing -------------------------------------------------------------------------------------------------
def debiased_logits(logits: Tensor, prior: Tensor, strength: float) -> Tensor:
    """The debiased margin-based loss's logits ``z + alpha log pi`` (ProMix Sec. 3.2; logit
    adjustment): a cross-entropy on them demands a larger margin for classes the model
    over-predicts (large ``pi_c``). ``prior`` is not differentiated."""
    return logits + float(strength) * torch.log(prior.detach().clamp_min(_TINY)).to(logits.dtype)


def debiased_pseudo_label(logits: Tensor, prior: Tensor, strength: float) -> Tensor:
    """Debiased pseudo-labels ``softmax(z - beta log pi)`` (ProMix Sec. 3.2, after DebiasPL): the
    prediction with the estimated class prior of the predictions divided out (``beta = 1``: all of it);
    computed without gradient."""
    with torch.no_grad():
        return torch.softmax(logits.detach().float() - float(strength) * torch.log(prior.detach().clamp_min(_TINY)),
                             dim=1)


def update_prior(prior: Tensor, probs: Tensor, momentum: float) -> Tensor:
    """``pi <- m pi + (1 - m) mean_i p_i`` (the moving-average estimate of the class prior of the
    predictions, ``m = 0.9999`` in the code); unchanged when ``probs`` is empty."""
    if probs.shape[0] == 0:
        return prior
    return float(momentum) * prior + (1.0 - float(momentum)) * probs.detach().to(prior).mean(0)


def labelled_loss(logits: Tensor, targets: Tensor, prior: Tensor, strength: float, *,
                  reduction: str = "mean") -> Tensor:
    """``mean_i CE(t_i, softmax(z_i + alpha log pi))`` over the rows given (the selected samples),
    0 without rows; ``reduction='sum'``: the sum (a part of a batch whose mean divides the sum of
    every part, several processes)."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    ce = soft_cross_entropy(debiased_logits(logits.float(), prior, strength), targets.float())
    return ce.sum() if reduction == "sum" else ce.mean()


def unlabelled_loss(pseudo_weak: Tensor, pseudo_strong: Tensor, primary_weak: Tensor, prior: Tensor, *,
                    debias_output: float, debias_pl: float, temperature: float,
                    strong_weight: float, reduction: str = "mean") -> tuple[Tensor, Tensor]:
    """The auxiliary pseudo-label head's loss on the unselected samples (ProMix Sec. 3.2).

    Targets: the *primary* head's weak-view prediction, debiased (:func:`debiased_pseudo_label` with
    the unselected set's prior) and sharpened (:func:`~noisylabels.methods.dividemix.sharpen`, ``T``),
    detached: the primary head makes the pseudo-labels, only the auxiliary head learns from them, so
    the primary head's own errors are not fed back into it (the paper's decoupling against
    confirmation bias). Loss: ``CE(q, h_AP(weak)) + w CE(q, h_AP(strong))`` on debiased logits
    (FixMatch-style consistency: the weak view's guess taught to the strong view).

    Parameters
    ----------
    pseudo_weak, pseudo_strong:
        ``(n, C)`` the auxiliary head's logits on the weak and strong views of the unselected samples.
    primary_weak:
        ``(n, C)`` the primary head's logits on their weak views (detached here).
    prior:
        ``(C,)`` the unselected set's prior estimate.
    debias_output, debias_pl:
        ``alpha`` (loss) and ``beta`` (pseudo-labels).
    temperature:
        Sharpening ``T``.
    strong_weight:
        ``w``, the weight of the strong view's term.
    reduction:
        ``'mean'`` over the rows, or ``'sum'`` (a part of a batch, several processes).

    Returns
    -------
    loss, targets
        The mean loss (0 for no rows) and the targets ``q`` ``(n, C)``.
    """
    q = sharpen(debiased_pseudo_label(primary_weak, prior, debias_pl), temperature)
    if pseudo_weak.shape[0] == 0:
        return pseudo_weak.sum() * 0.0, q
    lw = soft_cross_entropy(debiased_logits(pseudo_weak.float(), prior, debias_output), q)
    ls = soft_cross_entropy(debiased_logits(pseudo_strong.float(), prior, debias_output), q)
    if reduction == "sum":
        return lw.sum() + float(strong_weight) * ls.sum(), q
    return lw.mean() + float(strong_weight) * ls.mean(), q


def label_guessing_by_agreement(selected: Tensor, probs_a: Tensor, probs_b: Tensor, *, tau: float,
                                threshold: float) -> Tensor:
    """The code's label guessing by agreement (``label_guessing``), per batch: when fewer than
    ``threshold`` of the batch is selected, add unselected samples both networks predict alike with
    confidence above ``tau`` each, at most up to ``floor(threshold * B)`` selected, the most confident
    (mean of both) first. Returns the new ``(B,)`` bool selection (the added ones then train on the
    prediction, not the given label)."""
    b = selected.numel()
    if b == 0 or float(selected.sum()) / b >= float(threshold):
        return selected
    ca, pa = probs_a.max(1)
    cb, pb = probs_b.max(1)
    cand = (ca > tau) & (cb > tau) & (pa == pb) & ~selected
    room = int(b * float(threshold)) - int(selected.sum())
    idx = torch.nonzero(cand).reshape(-1)
    if idx.numel() > room:
        order = torch.sort(-(ca + cb)[idx] / 2, stable=True).indices
        cand[idx[order[max(room, 0):]]] = False
    return selected | cand


# -- the pseudo-label head ---------------------------------------------------------------------------------------
class PseudoHeadModel(nn.Module):
    """A network's prediction through its auxiliary pseudo-label head: ``head(features(x))``
    (:func:`noisylabels.models.features`); for evaluation with ``eval_head='pseudo'``."""

    def __init__(self, model: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.model, self.head = check_features(model, what="promix"), head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.model.features(x))


# -- the method --------------------------------------------------------------------------------------------------
@register_method("promix", help="ProMix: class-wise small-loss + matched high-confidence selection, debiased "
                                "semi-supervised training with an auxiliary pseudo-label head, two networks "
                                "(Xiao et al., IJCAI 2023)")
class ProMix(Method):
    """ProMix (Xiao et al., IJCAI 2023) on the shared loop.

    Two networks, each with its own selection, primary head and auxiliary pseudo-label head: network
    A is the run's model (``ctx.model``), B the declared network ``peer``; each auxiliary head
    ``h_AP`` is a second linear layer on the network's penultimate features
    (:func:`noisylabels.models.logits_and_features`), added with ``ctx.add_module`` so the network's
    optimiser and schedule train it and the checkpoint holds it. Each step trains both networks on
    the same batch of weak and strong views (``views = ('weak', 'strong')``; the code's strong view
    is RandAugment(3, 5) then crop and flip, ``data.strong_augment`` here).

    1. **Warm-up** (epochs ``< warmup_epochs``): CE on the weak view, primary heads only (plus the
       confidence penalty ``-H`` with ``conf_penalty``, the code's choice for asymmetric noise).
    2. **Selection**, at the start of every later epoch, per network (Sec. 3.1): per-sample CE of
       the primary head over the training split (evaluation pass, no augmentation), then
       :func:`class_wise_small_loss` with ``rho(e)`` (:func:`selection_ratio`). In each step the
       batch's selection is that set united with :func:`matched_high_confidence` on the network's
       current weak-view prediction (threshold ``tau``), as the code computes it.
    3. **Training** of each network on its own selection ``S`` (its complement ``U``):

       * primary head: ``L_CE(S, weak) + w(e) [L_CR(S, strong) + L_MIX(S)]``, all on debiased logits
         ``z + alpha log pi_S`` (:func:`labelled_loss`), ``L_MIX`` a mixup of the weak views of ``S``
         (``Beta(mixup_alpha, mixup_alpha)``, ``lam' = max(lam, 1 - lam)``) with their labels;
       * auxiliary head: the same three terms with its own mixup draw, plus ``lambda_u(e)`` times
         :func:`unlabelled_loss` on ``U`` (targets from the primary head, debiased with ``pi_U``,
         sharpened with ``temperature``, detached);
       * ``w(e) = min(e / rampup_epochs, 1)`` and ``lambda_u(e) = lambda_u min(e / (2 rampup_epochs), 1)``
         (the code's ramps, from epoch 0); the code switches the ``U`` term off from epoch
         ``2 rampup_epochs`` on: ``unlabelled_until`` (default: never);
       * after the step, ``pi_S`` and ``pi_U`` move towards the mean weak-view prediction of ``S`` and
         ``U`` (:func:`update_prior`, ``prior_momentum``).

       The networks' losses do not share gradients (selection and priors are computed without
       gradient), so each takes its own optimiser step: the code's one SGD over both, per parameter.
    4. **Test**: the mean of both networks' primary heads (``eval_head='primary'``, ``ensemble='probs'``;
       the code's "mean" accuracy averages logits: ``ensemble='logits'``); ``eval_head='pseudo'``
       evaluates the auxiliary heads instead (the code also prints network A's auxiliary head).

    Several processes (``--nproc``): each trains on its slice; label guessing by agreement runs on
    the gathered global batch, mixup on the gathered selected samples (the 1-process pairs), and
    every mean and prior update divides sums gathered from every process by the global counts, so
    a step equals one process's (``tests/train/test_distributed.py``).

    Not implemented: the code's FMix term (a second mix loss on Fourier masks, ``fmix``) and the
    unused contrastive projection head of its model.

    Records: ``label_prob`` (mean over both networks of ``p(y_i | x_i)`` in the selection pass) and
    ``selected_a`` / ``selected_b`` (the fraction of the epoch's steps a sample trained in ``S``,
    CSS or MHCS). Detection: ``1 - label_prob`` (declared ``('label_prob', -1)``: a label the
    networks give little probability is suspicious, whatever the run learned). ``metrics.jsonl``
    gets, per network, the CSS fraction and the final selection's fraction, and with ground truth
    their precision and recall of the truly clean samples (``css_a_precision``,
    ``selection_a_recall``, ...).

    Hyperparameters (paper Sec. 4 and the code's ``run.sh``): ResNet-18 (PreAct ResNet-18 for
    CIFAR-N), SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch 256, cosine schedule, 600 epochs;
    ``warmup_epochs`` 10 (CIFAR-10), 30 (CIFAR-100); ``rho`` 0.7 at 20% symmetric noise, 0.5 at 50%
    symmetric, 40% asymmetric and on CIFAR-10N/100N; ``tau`` 0.99 (CIFAR-10), 0.95 (CIFAR-100);
    ``debias_output = debias_pl`` 0.8 (CIFAR-10), 0.5 (CIFAR-100); ``temperature`` 0.5; ``rampup_epochs``
    50; ``prior_momentum`` 0.9999; mixup ``Beta(4, 4)``; the code's label guessing by agreement over
    its last 250 of 600 epochs (``lga_start_epoch=350``). These go in the suites
    (``benchmarks/realnoise_protocols.md``), not in code.

    Parameters
    ----------
    warmup_epochs:
        CE epochs before the first selection (the code's ``pretrain_ep``).
    rho_start, rho_end:
        The CSS ratio at epoch 0 and after ``rampup_epochs`` (the code's ``rho_range``; run.sh sets
        both equal).
    tau:
        MHCS confidence threshold (and LGA's).
    debias_output:
        ``alpha`` of the debiased margin-based loss (0: plain CE).
    debias_pl:
        ``beta`` of the debiased pseudo-labels (0: plain predictions).
    temperature:
        Sharpening of the pseudo-labels.
    lambda_u:
        Weight of the auxiliary head's loss on ``U`` at the end of its ramp (the code's 0.1).
    rampup_epochs:
        Ramp length of ``w`` and of the CSS ratio; ``lambda_u`` ramps over twice this (the code's
        ``warmup_ep``).
    unlabelled_until:
        Epoch from which the ``U`` term is off (the code: ``2 rampup_epochs``); ``None``: never.
    mixup_alpha:
        ``Beta(alpha, alpha)`` of the mixup terms (0: no mixup term).
    prior_momentum:
        ``m`` of the prior estimates.
    conf_penalty:
        Add ``-H`` to the warm-up CE (the code for asymmetric noise).
    lga_start_epoch:
        Label guessing by agreement from this epoch on (the code: after ``num_epochs - 250``);
        ``None``: off.
    lga_threshold:
        LGA fills each batch's selection up to this fraction (the code's ``threshold``).
    eval_head:
        ``'primary'`` or ``'pseudo'``: which heads predict at test time.
    ensemble:
        ``'probs'`` or ``'logits'``: how both networks' predictions are averaged.
    """

    own_loss = "promix"
    networks = ("peer",)
    views = ("weak", "strong")
    records = (Record("label_prob"), Record("selected_a"), Record("selected_b"))
    detection = ("label_prob", -1.0)
    EVAL_HEADS = ("primary", "pseudo")

    def __init__(self, *, warmup_epochs: int = 10, rho_start: float = 0.5, rho_end: float = 0.5, tau: float = 0.99,
                 debias_output: float = 0.8, debias_pl: float = 0.8, temperature: float = 0.5, lambda_u: float = 0.1,
                 rampup_epochs: int = 50, unlabelled_until: int | None = None, mixup_alpha: float = 4.0,
                 prior_momentum: float = 0.9999, conf_penalty: bool = False, lga_start_epoch: int | None = None,
                 lga_threshold: float = 0.9, eval_head: str = "primary", ensemble: str = "probs") -> None:
        super().__init__()
        int_option("promix", "warmup_epochs", warmup_epochs, 0)
        int_option("promix", "rampup_epochs", rampup_epochs, 0)
        for name, v in (("unlabelled_until", unlabelled_until), ("lga_start_epoch", lga_start_epoch)):
            if v is not None:
                int_option("promix", name, v, 0)
        for name, v in (("rho_start", rho_start), ("rho_end", rho_end)):
            if not 0.0 < float(v) <= 1.0:
                raise UserError(f"promix: {name} must lie in (0, 1], got {v!r}")
        for name, v in (("tau", tau), ("lga_threshold", lga_threshold)):
            if not 0.5 <= float(v) < 1.0:
                raise UserError(f"promix: {name} must lie in [0.5, 1), got {v!r}")
        for name, v in (("debias_output", debias_output), ("debias_pl", debias_pl), ("lambda_u", lambda_u),
                        ("mixup_alpha", mixup_alpha)):
            if not 0.0 <= float(v) <= 1e6:
                raise UserError(f"promix: {name} must be a number in [0, 1e+06], got {v!r}")
        if not 0.01 <= float(temperature) <= 100.0:
            raise UserError(f"promix: temperature must lie in [0.01, 100], got {temperature!r}")
        if not 0.0 <= float(prior_momentum) < 1.0:
            raise UserError(f"promix: prior_momentum must lie in [0, 1), got {prior_momentum!r}")
        choice_option("promix", "eval_head", eval_head, self.EVAL_HEADS)
        choice_option("promix", "ensemble", ensemble, ENSEMBLE_COMBINE)
        self.warmup_epochs, self.rampup_epochs = warmup_epochs, rampup_epochs
        self.unlabelled_until, self.lga_start_epoch = unlabelled_until, lga_start_epoch
        self.rho_start, self.rho_end, self.tau = float(rho_start), float(rho_end), float(tau)
        self.debias_output, self.debias_pl = float(debias_output), float(debias_pl)
        self.temperature, self.lambda_u, self.mixup_alpha = float(temperature), float(lambda_u), float(mixup_alpha)
        self.prior_momentum, self.conf_penalty = float(prior_momentum), bool(conf_penalty)
        self.lga_threshold, self.eval_head, self.ensemble = float(lga_threshold), eval_head, ensemble
        #: the class-prior estimates: (network, set) -> (C,); set "S" selected, "U" unselected
        self.priors: dict[str, Tensor] = {}
        self.heads: dict[str, nn.Module] = {}
        #: the last step's loss terms of network A (for tests; not checkpointed)
        self.last_terms: dict[str, torch.Tensor] = {}  # the last step's loss terms (tests; no host sync)

    # -- set-up ----------------------------------------------------------------------------------------------
    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        k = ctx.data.num_classes
        for net, handle in (("a", None), ("b", self.net("peer"))):
            model = ctx.model if handle is None else handle.model
            check_features(model, what="promix (its pseudo-label head sits on the penultimate features)")
            with torch.random.fork_rng(devices=[]):  # nn.Linear's own initialisation, from the head's seed
                torch.manual_seed(derive_seed(ctx.seed, f"promix-head-{net}"))
                head = nn.Linear(feature_dim(model), k)
            self.heads[net] = ctx.add_module(f"pseudo_head_{net}", head, net=handle)
            for s in ("S", "U"):
                self.priors[f"{net}{s}"] = torch.full((k,), 1.0 / k, device=ctx.device)
        #: the CSS selection of each network at the epoch's start (columns a, b)
        self.css = self.per_sample("css", shape=(2,))
        #: whether a sample trained in S at its latest step this epoch (columns a, b); -1: not seen yet
        self.used = self.per_sample("used", shape=(2,), fill=-1.0)

    def eval_model(self, ctx: MethodContext) -> nn.Module:
        models = [ctx.model, self.net("peer").model]
        if self.eval_head == "pseudo":
            models = [PseudoHeadModel(m, self.heads[n]) for m, n in zip(models, "ab")]
        return Ensemble(models, combine=self.ensemble)

    def is_warmup(self, epoch: int) -> bool:
        return epoch < self.warmup_epochs

    # -- selection -------------------------------------------------------------------------------------------
    def on_epoch_start(self, ctx: MethodContext) -> None:
        self.used.fill_(-1.0)
        if not self.is_warmup(ctx.epoch):
            self.select(ctx)

    def select(self, ctx: MethodContext) -> None:
        """Each network's class-wise small-loss selection over the training split (Sec. 3.1)."""
        idx = ctx.data.splits["train"]
        labels = ctx.data.labels[idx]
        rho = selection_ratio(ctx.epoch, rho_start=self.rho_start, rho_end=self.rho_end,
                              rampup_epochs=self.rampup_epochs)
        dev_idx = idx.to(self.css.device)
        p_label = []
        for col, model in enumerate((ctx.model, self.net("peer").model)):
            probs = ctx.predict(idx, model=model)
            loss = per_sample_ce(probs, labels)
            p_label.append(torch.exp(-loss))
            keep = class_wise_small_loss(loss, labels, num_classes=ctx.data.num_classes, rho=rho)
            self.css[dev_idx, col] = keep.to(self.css)
        self.record(dev_idx, label_prob=torch.stack(p_label).mean(0).to(self.css.device))

    # -- one step --------------------------------------------------------------------------------------------
    def train_step(self, ctx: MethodContext, x: Any, y: Tensor, index: Tensor) -> StepOutput:
        xw, xs = (x[0], x[1]) if isinstance(x, (tuple, list)) else (x, x)
        peer = self.net("peer")
        if self.is_warmup(ctx.epoch):
            out = warmup_step(ctx, ctx.model, None, xw, y, conf_penalty=self.conf_penalty)
            warmup_step(ctx, peer.model, peer, xw, y, conf_penalty=self.conf_penalty)
            return out
        # forwards of both networks, both heads, both views
        fw = {}
        for net, model in (("a", ctx.model), ("b", peer.model)):
            zw, hw = logits_and_features(model, xw)
            zs, hs = logits_and_features(model, xs)
            fw[net] = (model, zw, zs, self.heads[net](hw), self.heads[net](hs))
        dev_index = index.to(self.css.device)
        dp = data_parallel(ctx) if getattr(getattr(ctx, "dist", None), "in_step", False) else None
        with torch.no_grad():
            probs = {n: torch.softmax(fw[n][1].detach().float(), 1) for n in "ab"}
            sel, targets = {}, {}
            lga = self.lga_start_epoch is not None and ctx.epoch >= self.lga_start_epoch
            onehot = F.one_hot(y, ctx.data.num_classes).float()
            for col, n in enumerate("ab"):
                s = (self.css[dev_index, col] > 0.5).to(y.device) | matched_high_confidence(probs[n], y, tau=self.tau)
                t = onehot
                if lga:
                    s2 = self._guess_by_agreement(dp, s, probs["a"], probs["b"])
                    guess = F.one_hot(debiased_pseudo_label(fw[n][1], self.priors[f"{n}S"], self.debias_pl).argmax(1),
                                      ctx.data.num_classes).float()
                    t = torch.where((s2 & ~s)[:, None], guess, onehot)
                    s = s2
                sel[n], targets[n] = s, t
        w = linear_rampup(ctx.epoch, start=0.0, length=self.rampup_epochs)
        lam_u = self.lambda_u * linear_rampup(ctx.epoch, start=0.0, length=2 * self.rampup_epochs)
        if self.unlabelled_until is not None and ctx.epoch >= self.unlabelled_until:
            lam_u = 0.0
        out_loss = None
        k = ctx.data.num_classes
        for n, handle in (("a", None), ("b", peer)):
            model, zw, zs, aw, as_ = fw[n]
            s, t = sel[n], targets[n]
            pi_s, pi_u = self.priors[f"{n}S"], self.priors[f"{n}U"]
            # the sums over this process's rows of every mean (one process: the batch's), then the
            # batch's means: several processes add their sums (a differentiable gather), so every
            # mean, the prior updates included, is over the global batch's selection
            lab = [labelled_loss(z[s], t[s], pi_s, self.debias_output, reduction="sum") for z in (zw, zs, aw, as_)]
            mix = self._mix_terms(ctx, dp, n, model, xw[s], t[s], pi_s)
            u_sum, _ = unlabelled_loss(aw[~s], as_[~s], zw[~s], pi_u, debias_output=self.debias_output,
                                       debias_pl=self.debias_pl, temperature=self.temperature, strong_weight=w,
                                       reduction="sum")
            p_n = probs[n]
            stats = torch.cat([torch.stack([*lab, *mix, u_sum]).float(),
                               torch.stack([s.sum(), (~s).sum()]).to(zw.device, torch.float32),
                               p_n[s].sum(0).float(), p_n[~s].sum(0).float()])
            if dp is not None:
                dp.replicate_loss()  # the loss below is the global batch's on every process
                stats = dp.gather_batch_grad(stats[None], dp.world_size).sum(0)
            n_s, n_u = stats[7].detach().clamp_min(1.0), stats[8].detach().clamp_min(1.0)  # sums are 0 without rows
            terms = dict(zip(("ce", "cr", "ce_ph", "cr_ph", "mix", "mix_ph"), stats[:6] / n_s))
            terms["u"] = stats[6] / n_u
            loss = (terms["ce"] + w * (terms["cr"] + terms["mix"]) + terms["ce_ph"]
                    + w * (terms["cr_ph"] + terms["mix_ph"]) + lam_u * terms["u"])
            ctx.backward_and_step(loss, net=handle)
            with torch.no_grad():
                for key, prior, sums, count in ((f"{n}S", pi_s, stats[9:9 + k], stats[7]),
                                                (f"{n}U", pi_u, stats[9 + k:9 + 2 * k], stats[8])):
                    if float(count) > 0:  # pi <- m pi + (1 - m) mean over the global set
                        self.priors[key] = update_prior(prior, (sums / count)[None], self.prior_momentum)
            self.used[dev_index, "ab".index(n)] = s.to(self.used)
            if n == "a":
                out_loss = loss.detach()
                self.last_terms = {key: v.detach() for key, v in terms.items()}
        self.record(dev_index, selected_a=sel["a"].float().to(self.css.device),
                    selected_b=sel["b"].float().to(self.css.device))
        assert out_loss is not None
        return StepOutput(logits=fw["a"][1].detach(), loss=out_loss)

    def _guess_by_agreement(self, dp: Any, s: Tensor, probs_a: Tensor, probs_b: Tensor) -> Tensor:
        """:func:`label_guessing_by_agreement` over the batch (several processes: the global batch,
        gathered, whose fill-up ranks the candidates of every process; this process's rows back)."""
        kw = dict(tau=self.tau, threshold=self.lga_threshold)
        if dp is None:
            return label_guessing_by_agreement(s, probs_a, probs_b, **kw)
        whole = label_guessing_by_agreement(dp.gather_batch(s.to(torch.uint8)).bool(), dp.gather_batch(probs_a),
                                            dp.gather_batch(probs_b), **kw)
        return whole[dp.local_slice]

    def _mix_terms(self, ctx: MethodContext, dp: Any, n: str, model: nn.Module, x: Tensor, t: Tensor,
                   prior: Tensor) -> tuple[Tensor, Tensor]:
        """The sums (over this process's rows) of the mixup terms of the primary and the auxiliary head
        (independent draws, as the code's), mixed over the batch's selected samples: several processes
        gather every process's selected rows (rank order: the 1-process selection's order), mix them
        with the 1-process pairs and ``lam``, and each trains on its own rows of the result."""
        zero = x.new_zeros(())
        if self.mixup_alpha <= 0:
            return zero, zero
        if dp is None:
            if x.shape[0] == 0:
                return zero, zero
            xs, ts, mine = x, t, slice(None)
        else:
            counts = dp.gather_batch(torch.tensor([x.shape[0]], device=x.device), dp.world_size).tolist()
            m = max(counts)
            if m == 0:
                return zero, zero
            pad = lambda v: torch.cat([v, v.new_zeros((m - len(v), *v.shape[1:]))])  # noqa: E731
            xs, ts = (dp.gather_batch(pad(v), m * dp.world_size) for v in (x, t))
            keep = torch.cat([torch.arange(r * m, r * m + c, device=x.device) for r, c in enumerate(counts)])
            xs, ts = xs[keep], ts[keep]
            start = sum(counts[:dp.rank])
            mine = slice(start, start + x.shape[0])
        out = []
        for head in ("primary", "pseudo"):
            gen = torch.Generator().manual_seed(derive_seed(ctx.seed, f"promix-mix-{ctx.step}-{n}-{head}"))
            mixed = ctx.mixup(xs, ts, alpha=self.mixup_alpha, generator=gen, max_lambda=True, as_given=True)
            z, h = logits_and_features(model, mixed.x[mine])
            logits = z if head == "primary" else self.heads[n](h)
            out.append(labelled_loss(logits, mixed.targets[mine], prior, self.debias_output, reduction="sum"))
        return out[0], out[1]

    # -- records -----------------------------------------------------------------------------------------------
    def on_epoch_end(self, ctx: MethodContext) -> dict[str, Any]:
        if self.is_warmup(ctx.epoch):
            return {}
        idx = ctx.data.splits["train"]
        dev_idx = idx.to(self.css.device)
        noisy = is_noisy_train(ctx.data)
        out: dict[str, Any] = {}
        for col, name in enumerate("ab"):
            for what, mask in (("css", (self.css[dev_idx, col] > 0.5).cpu().numpy()),
                               ("selection", (self.used[dev_idx, col] > 0.5).cpu().numpy())):
                out.update(selection_quality(mask, noisy, prefix=f"{what}_{name}"))
        return out

    # -- resume ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"priors": {k: v.detach().cpu().clone() for k, v in self.priors.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in (state.get("priors") or {}).items():
            if k in self.priors:
                self.priors[k] = v.to(self.priors[k].device, self.priors[k].dtype)

