"""DivideMix (Li, Socher & Hoi, "DivideMix: Learning with Noisy Labels as Semi-supervised Learning",
ICLR 2020): two networks, a per-epoch co-division of the training data by a Gaussian mixture on
the per-sample loss, and MixMatch with label co-refinement and co-guessing.

The pieces, each a function below named after the paper's equation it computes:

* :func:`per_sample_ce` (Eq. 1) and :func:`normalize_losses` (the official code's min-max scaling
  of the losses before the fit), :func:`gmm_clean_probability` (Sec. 3.1: a two-component GMM fitted
  by EM; ``w_i`` = the posterior of the component with the smaller mean);
* :func:`confidence_penalty` (Eq. 2, warm-up under asymmetric noise);
* :func:`co_refine` (Eq. 3), :func:`sharpen` (Eq. 4), :func:`co_guess` (Sec. 3.3: the mean of both
  networks over the augmentations); mixup with ``lam' = max(lam, 1 - lam)`` (Eqs. 5-8) is
  :func:`noisylabels.data.mixup` through ``ctx.mixup``;
* :func:`mixmatch_losses` (Eqs. 9-11; from the batch's sums, :func:`mixmatch_sums` and
  :func:`mixmatch_losses_from_sums`, so several processes add theirs) and :func:`linear_rampup` (the
  code's ramp of ``lambda_u``).

:class:`DivideMix` puts them on the shared loop (Algorithm 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from ..models import Ensemble, eval_mode
from ..models.ensemble import ENSEMBLE_COMBINE
from ..seeding import derive_seed
from .base import Method, register_method
from .context import MethodContext, StepOutput, data_parallel, is_noisy_train, selection_quality
from .options import choice_option, int_option
from .records import Record

__all__ = ["DivideMix", "per_sample_ce", "normalize_losses", "gmm_clean_probability", "confidence_penalty",
           "co_refine", "co_guess", "sharpen", "mixmatch_losses", "mixmatch_sums", "mixmatch_losses_from_sums",
           "mixmatch_batch", "global_mixmatch_losses",
           "linear_rampup", "warmup_step", "GMM_SETTINGS"]

#: the official code's GaussianMixture settings (``Train_cifar.py``: ``eval_train``)
GMM_SETTINGS = {"n_components": 2, "max_iter": 10, "tol": 1e-2, "reg_covar": 5e-4}
#: the smallest probability a log is taken of (float32's smallest normal number: a loss of at most 87.3)
_TINY = float(torch.finfo(torch.float32).tiny)


# -- the equations ---------------------------------------------------------------------------------------------
def per_sample_ce(probs: Tensor, labels: Tensor) -> Tensor:
    """``l_i = -log p_model(y_i | x_i)`` (Eq. 1) from softmax outputs ``(N, C)`` and labels ``(N,)``
    (probabilities clamped at float32's smallest normal number, so a loss is finite)."""
    return -probs.gather(1, labels.reshape(-1, 1).to(probs.device)).squeeze(1).clamp_min(_TINY).log()


def normalize_losses(losses: Tensor | np.ndarray) -> np.ndarray:
    """``(l - min l) / (max l - min l)`` (the official code's ``eval_train``), float64; all zeros
    when the losses do not vary."""
    a = np.asarray(losses.detach().cpu().numpy() if isinstance(losses, Tensor) else losses, dtype=np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def gmm_clean_probability(losses: np.ndarray, *, seed: int, max_iter: int = GMM_SETTINGS["max_iter"],
                          tol: float = GMM_SETTINGS["tol"], reg_covar: float = GMM_SETTINGS["reg_covar"]) -> np.ndarray:
    """The clean probability ``w_i = p(g | l_i)`` of every sample (DivideMix Sec. 3.1).

    A two-component Gaussian mixture is fitted to the (normalised) per-sample losses by EM
    (:class:`sklearn.mixture.GaussianMixture`, k-means initialisation seeded by ``seed``); ``g`` is
    the component with the smaller mean, so ``w_i`` is the posterior that sample ``i``'s loss comes
    from the low-loss ("clean") component. Defaults: the official code's ``max_iter=10``,
    ``tol=1e-2``, ``reg_covar=5e-4``.

    Parameters
    ----------
    losses:
        ``(N,)`` per-sample losses (the caller normalises them, :func:`normalize_losses`).
    seed:
        Seeds the k-means initialisation (reduced modulo 2**32).
    max_iter, tol, reg_covar:
        EM settings of the fit.

    Returns
    -------
    np.ndarray
        ``(N,)`` float64 in ``[0, 1]``; all ones when the losses do not vary (nothing to divide:
        every sample is kept as labelled).
    """
    x = np.asarray(losses, dtype=np.float64).reshape(-1, 1)
    if x.shape[0] < 2 or float(x.max() - x.min()) <= 0.0:
        return np.ones(x.shape[0])
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(n_components=2, max_iter=int(max_iter), tol=float(tol), reg_covar=float(reg_covar),
                          random_state=int(seed) % (2**32))
    with warnings.catch_warnings():  # 10 EM iterations often stop short of tol; the paper's setting
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x)
        post = gmm.predict_proba(x)
    return post[:, int(np.argmin(gmm.means_.reshape(-1)))]


def confidence_penalty(logits: Tensor) -> Tensor:
    """``-H = sum_c p_c log p_c`` averaged over the batch (Eq. 2): added to the warm-up CE under
    asymmetric noise, it penalises confident predictions."""
    logp = F.log_softmax(logits.float(), dim=1)
    return (logp.exp() * logp).sum(1).mean()


def warmup_step(ctx: MethodContext, model: torch.nn.Module, handle: Any, x: Tensor, y: Tensor, *,
                conf_penalty: bool) -> StepOutput:
    """One warm-up step of one network (Sec. 3.1, and ProMix's): CE on the given labels, plus
    :func:`confidence_penalty` (Eq. 2) with ``conf_penalty``; ``handle`` is the network's
    :class:`~noisylabels.methods.context.Network` (``None``: the run's own model)."""
    z = model(x)
    loss = F.cross_entropy(z.float(), y)
    if conf_penalty:
        loss = loss + confidence_penalty(z)
    ctx.backward_and_step(loss, net=handle)
    return StepOutput(logits=z.detach(), loss=loss.detach())


def sharpen(p: Tensor, temperature: float) -> Tensor:
    """``Sharpen(p, T)_c = p_c^(1/T) / sum_c' p_c'^(1/T)`` (Eq. 4), row-wise."""
    q = p.pow(1.0 / float(temperature))
    return q / q.sum(dim=1, keepdim=True)


def co_refine(labels_onehot: Tensor, view_probs: Sequence[Tensor], w: Tensor) -> Tensor:
    """Label co-refinement ``y_bar = w y + (1 - w) p`` (Eq. 3): ``p`` the mean of the network's
    probabilities over the augmented views (``M`` of them), ``w`` the clean probability from the
    *other* network's division, ``(B,)`` or ``(B, 1)``."""
    p = torch.stack(list(view_probs)).mean(0)
    w = w.reshape(-1, 1).to(p.dtype)
    return w * labels_onehot.to(p.dtype) + (1.0 - w) * p


def co_guess(view_probs: Sequence[Tensor]) -> Tensor:
    """Label co-guessing: the mean of both networks' probabilities over the ``M`` views of each
    unlabelled sample (Sec. 3.3; ``2M`` terms), before sharpening."""
    return torch.stack(list(view_probs)).mean(0)


def mixmatch_losses(logits: Tensor, targets: Tensor, *, num_labelled: int,
                    lu_reduction: str = "sum") -> tuple[Tensor, Tensor, Tensor]:
    """``L_X``, ``L_U`` and ``L_reg`` of one MixMatch step (Eqs. 9-11).

    Parameters
    ----------
    logits:
        ``(n, C)`` the network's logits on the mixed batch, the ``num_labelled`` mixed labelled
        inputs ``X'`` first, then the mixed unlabelled ones ``U'``.
    targets:
        ``(n, C)`` the mixed targets in the same order.
    num_labelled:
        ``|X'|``.
    lu_reduction:
        ``'sum'``: ``L_U = 1/|U'| sum ||p - p_model||_2^2`` (Eq. 10); ``'mean'``: that divided by the
        number of classes, the official code's ``torch.mean((probs_u - targets_u)**2)`` (and MixMatch's
        ``1/(L|U'|)``), the scale its ``lambda_u`` values were tuned at.

    Returns
    -------
    L_X, L_U, L_reg
        ``L_X = -1/|X'| sum_x sum_c p_c log p_model^c`` (Eq. 9); ``L_U`` (Eq. 10, 0 without unlabelled
        inputs); ``L_reg = sum_c pi_c log(pi_c / mean_x p_model^c)`` over ``X' + U'`` with the uniform
        prior ``pi_c = 1/C`` (Eq. 11).
    """
    sums = mixmatch_sums(logits, targets, num_labelled=num_labelled)
    return mixmatch_losses_from_sums(sums, num_labelled=num_labelled, num_unlabelled=logits.shape[0] - num_labelled,
                                     lu_reduction=lu_reduction)


def mixmatch_sums(logits: Tensor, targets: Tensor, *, num_labelled: int) -> Tensor:
    """The sums over a (part of a) mixed batch that Eqs. 9-11 divide: ``(2 + C,)`` float32 at least,
    ``[sum_x -sum_c p_c log p_model^c, sum_u ||p - p_model||_2^2, sum_{x, u} p_model (C values)]``
    over the ``num_labelled`` rows first (``X'``) and the rest (``U'``). Sums add over a batch's parts
    (several processes' slices: :meth:`DivideMix._mixmatch_step`)."""
    z = logits.float()
    t = targets.to(z.dtype)
    logp = F.log_softmax(z, dim=1)
    sx = -(t[:num_labelled] * logp[:num_labelled]).sum()
    su = (logp[num_labelled:].exp() - t[num_labelled:]).pow(2).sum()
    return torch.cat([torch.stack([sx, su]), logp.exp().sum(0)])


def mixmatch_losses_from_sums(sums: Tensor, *, num_labelled: int, num_unlabelled: int,
                              lu_reduction: str = "sum") -> tuple[Tensor, Tensor, Tensor]:
    """``L_X``, ``L_U``, ``L_reg`` (Eqs. 9-11, see :func:`mixmatch_losses`) from :func:`mixmatch_sums`
    of the whole mixed batch of ``num_labelled + num_unlabelled`` rows."""
    c = sums.shape[0] - 2
    lx = sums[0] / num_labelled
    if num_unlabelled > 0:
        lu = sums[1] / num_unlabelled / (1 if lu_reduction == "sum" else c)
    else:
        lu = sums.new_zeros(())
    mean_p = sums[2:] / (num_labelled + num_unlabelled)
    lreg = (torch.log(torch.tensor(1.0 / c, dtype=sums.dtype, device=sums.device)) - mean_p.log()).sum() / c
    return lx, lu, lreg


def mixmatch_batch(dp: Any, x: Sequence[Tensor], u: Sequence[Tensor], targets_x: Tensor, targets_u: Tensor | None, *,
                   n_unlabelled: int) -> tuple[Tensor, Tensor, Tensor | slice]:
    """MixMatch's batch before mixup, ``[X1, X2, U1, U2]`` with targets ``[t_x, t_x, t_u, t_u]``, and
    the rows of it this process trains on.

    One process (``dp`` ``None``): the step's own views, ``slice(None)``. Several (``dp`` the run's
    ``ctx.dist`` in a step): ``x`` / ``u`` and the targets are this process's slices of the global
    labelled batch (``dp.n_global`` rows) and unlabelled batch (``n_unlabelled`` rows); they are
    gathered into the 1-process order, so mixup pairs across processes with the 1-process
    permutation and ``lam``, and the returned index picks this process's rows of the result."""
    if dp is None:
        inputs = torch.cat([*x, *u])
        targets = torch.cat([targets_x, targets_x] + ([targets_u, targets_u] if u else []))
        return inputs, targets, slice(None)
    n_x, n_u = dp.n_global, int(n_unlabelled)
    lab, unl = dp.local_slice, dp.rows(n_u)
    inputs = torch.cat([dp.gather_batch(v, n_x) for v in x] + [dp.gather_batch(v, n_u) for v in u])
    tx = dp.gather_batch(targets_x, n_x)
    targets = torch.cat([tx, tx] + ([dp.gather_batch(targets_u, n_u)] * 2 if u else []))
    dev = inputs.device
    starts = [(lab, 0), (lab, n_x)] + ([(unl, 2 * n_x), (unl, 2 * n_x + n_u)] if u else [])
    mine = torch.cat([torch.arange(sl.start, sl.stop, device=dev) + start for sl, start in starts])
    return inputs, targets, mine


def global_mixmatch_losses(dp: Any, logits: Tensor, targets: Tensor, *, num_labelled: int, n_labelled: int,
                           n_unlabelled: int, lu_reduction: str = "sum") -> tuple[Tensor, Tensor, Tensor]:
    """``L_X``, ``L_U``, ``L_reg`` (Eqs. 9-11) of the whole mixed batch (``n_labelled`` + ``n_unlabelled``
    rows) from this process's rows (``logits``, ``targets``: ``num_labelled`` mixed labelled rows
    first). Several processes (``dp``): the sums of every process (:func:`mixmatch_sums`, a
    differentiable gather) give the global means, ``L_reg``'s mean prediction included, the same
    loss on every process (``dp.replicate_loss()``: the gradient all-reduce weighs each ``1 / N``)."""
    sums = mixmatch_sums(logits, targets, num_labelled=num_labelled)
    if dp is not None:
        dp.replicate_loss()
        sums = dp.gather_batch_grad(sums[None], dp.world_size).sum(0)
    return mixmatch_losses_from_sums(sums, num_labelled=n_labelled, num_unlabelled=n_unlabelled,
                                     lu_reduction=lu_reduction)


def linear_rampup(current: float, *, start: float, length: float) -> float:
    """``clip((current - start) / length, 0, 1)`` (the official code's ``linear_rampup`` of
    ``lambda_u``: 0 at the end of the warm-up, 1 after ``length`` more epochs); ``length=0``: 1."""
    if length <= 0:
        return 1.0
    return float(min(max((float(current) - float(start)) / float(length), 0.0), 1.0))


# -- the method ------------------------------------------------------------------------------------------------
@dataclass
class _Active:
    """What the batch being trained is (set by the epoch's batches just before the loop gets it)."""

    net: str            # "model" (network A, ctx.model) or "peer" (network B)
    kind: str           # "warmup" or "mixmatch"
    j: int = 0          # the batch's position in its network's pass
    n_iter: int = 1     # the code's num_iter of the pass (len(labelled) // batch + 1)
    n_unlabelled: int | None = None  # the global unlabelled batch's size (None: the step's own)


class _Batch:
    """One batch the loop moves to the device: ``views`` (x1, x2[, u1, u2]) and the labelled part's
    ``y`` and ``index``."""

    __slots__ = ("x", "y", "index", "views")

    def __init__(self, views: tuple[Tensor, ...], y: Tensor, index: Tensor) -> None:
        self.x, self.y, self.index, self.views = views[0], y, index, views

    def shard_views(self, dist: Any) -> tuple[Tensor, ...]:
        """This process's views in a data-parallel run (the loop calls it after ``dist.shard(len(y))``):
        its slice of the labelled views and its own slice of the unlabelled ones, whose global batch
        may have another size (split like a global batch of that size)."""
        lab = dist.local_slice
        unl = dist.rows(len(self.views[2])) if len(self.views) > 2 else lab
        return tuple(v[lab] for v in self.views[:2]) + tuple(v[unl] for v in self.views[2:])


class _EpochBatches:
    """The epoch's batches: network A's pass, then network B's (as Algorithm 1 and the code train
    them one by one). Sized, so the loop advances the schedules by the epoch's fraction per batch."""

    def __init__(self, method: DivideMix, ctx: MethodContext, generator: torch.Generator,
                 passes: list[tuple[str, Tensor | None, Tensor | None]]) -> None:
        self.method, self.ctx, self.gen, self.passes = method, ctx, generator, passes
        self.bs = int(ctx.cfg["train"]["batch_size"])
        self.kinds = tuple(ctx.cfg["data"].get("views") or method.views)

    def _count(self, labelled: Tensor | None) -> int:
        if labelled is None:  # warm-up: the whole split at twice the batch (the code's warm-up loader)
            return math.ceil(len(self.ctx.data.splits["train"]) / (2 * self.bs))
        return math.ceil(len(labelled) / self.bs)

    def __len__(self) -> int:
        return sum(self._count(lab) for _, lab, _ in self.passes)

    def __iter__(self) -> Iterator[Any]:
        ctx, m = self.ctx, self.method
        for net, labelled, unlabelled in self.passes:
            if labelled is None:
                n = self._count(None)
                loader = ctx.loader("train", shuffle=True, augment=True, batch_size=2 * self.bs, generator=self.gen,
                                    views=self.kinds[:1])
                for j, b in enumerate(loader):
                    m._active = _Active(net, "warmup", j, n)
                    yield b
                continue
            if len(labelled) == 0:
                continue
            lab = ctx.loader(labelled, shuffle=True, augment=True, batch_size=self.bs, generator=self.gen,
                             views=self.kinds)
            unl = self._cycle(unlabelled) if unlabelled is not None and len(unlabelled) else None
            n_iter = len(labelled) // self.bs + 1
            for j, b in enumerate(lab):
                views = tuple(b.views)
                if unl is not None:
                    views += tuple(next(unl).views)
                m._active = _Active(net, "mixmatch", j, n_iter, len(views[2]) if len(views) > 2 else 0)
                yield _Batch(views, b.y, b.index)
        m._active = None

    def _cycle(self, idx: Tensor) -> Iterator[Any]:
        """The unlabelled batches, reshuffled whenever a pass ends (the code re-creates its iterator)."""
        loader = self.ctx.loader(idx, shuffle=True, augment=True, batch_size=self.bs, generator=self.gen,
                                 views=self.kinds)
        while True:
            yield from loader


@register_method("dividemix", help="DivideMix: two networks, per-epoch GMM co-division of the losses, MixMatch with "
                                   "co-refinement and co-guessing (Li et al., ICLR 2020)")
class DivideMix(Method):
    """DivideMix (Li, Socher & Hoi, ICLR 2020), Algorithm 1 on the shared loop.

    Two networks: A is the run's model (``ctx.model``), B the declared network ``peer`` (built like
    the run's model from its own seed, its own SGD and schedule).

    1. **Warm-up** (epochs ``< warmup_epochs``): each network trains on CE over the whole training
       split (plus the confidence penalty ``-H``, Eq. 2, with ``conf_penalty``: the paper's choice for
       asymmetric noise), batches of twice ``train.batch_size`` as the official code's warm-up loader.
    2. **Co-divide**, at the start of every later epoch: each network's per-sample CE (Eq. 1) over
       the training split (an evaluation pass, no augmentation), min-max normalised (the code; the
       paper fits the raw losses, to which the posteriors are invariant but for ``reg_covar``),
       averaged over the last ``loss_window`` epochs (the code's 90%-noise option), fitted by a
       two-component GMM (seeded by the run seed, the epoch and the network; the code's
       ``max_iter=10, tol=1e-2, reg_covar=5e-4``): ``w_i`` = the posterior of the low-mean component.
       The samples with ``w_i >= p_threshold`` under network B's fit form network A's labelled set
       ``X`` (with B's ``w``), the rest A's unlabelled set ``U``, and vice versa (Algorithm 1; the
       code keeps ``w_i > p_threshold``: equal unless a posterior is exactly the threshold).
    3. **MixMatch**, network A over its labelled set, then network B over its own (the code and
       Algorithm 1 train them one by one, the other network fixed, in eval mode, for its guesses;
       the loop's learning-rate schedule advances through both passes by the epoch's fraction per
       batch). Each step takes ``B = train.batch_size`` labelled samples with two weak views and ``B``
       unlabelled ones with two weak views (the unlabelled set reshuffled whenever it runs out), all
       drawn from the epoch's generator:

       * co-refinement ``y_bar = w y + (1 - w) p`` (Eq. 3, ``p`` the network's mean over the two
         views), sharpened with ``temperature`` (Eq. 4);
       * co-guessing: the mean of both networks over the two views of each unlabelled sample,
         sharpened;
       * mixup of all ``4B`` inputs and targets with one ``lam ~ Beta(alpha, alpha)``,
         ``lam' = max(lam, 1 - lam)`` (Eqs. 5-8; :func:`noisylabels.data.mixup`, seeded by the run seed
         and the step);
       * loss ``L_X + lambda_u(t) L_U + lambda_r L_reg`` (Eqs. 9-12), ``lambda_u(t)`` ramped linearly
         from 0 at the end of the warm-up to ``lambda_u`` over ``rampup_epochs`` (the code's
         ``linear_rampup``, per batch; the paper states no ramp).

       The batch's training accuracy is that of the network's first view against the given labels.
    4. **Test**: both networks (``eval_model``: :class:`~noisylabels.models.Ensemble`, the mean of the
       probabilities, ``ensemble='probs'``; the code sums the logits: ``ensemble='logits'``).

    Records (per epoch, from the division at its start): ``clean_prob_a`` (``w`` from network A's
    losses: network B's labelled weights), ``clean_prob_b`` (from B's: A's), and ``clean_prob``, their
    mean. Detection: ``1 - clean_prob`` ranks likely-wrong labels first (declared as
    ``('clean_prob', -1)``; the direction is the GMM's: the low-loss component is the clean one).
    ``metrics.jsonl`` gets each division's labelled fraction and, with ground truth, its precision
    and recall of the truly clean samples (``division_a_precision``, ...).

    Per-setting hyperparameters (paper Sec. 4.1 and Appendix B, Table 7; the authors' replies in
    the code's issues #10, #15): PreAct ResNet-18, SGD lr 0.02 (x0.1 after epoch 150), momentum 0.9,
    weight decay 5e-4, 300 epochs; warm-up 10 epochs on CIFAR-10, 30 on CIFAR-100; ``M = 2``,
    ``T = 0.5``, ``alpha = 4``; ``p_threshold`` 0.5, 0.6 at 90% noise; ``lambda_u`` chosen from
    {0, 25, 50, 150}: CIFAR-10 sym. 20% 0, 50% 25, 80% 25, 90% 50, asym. 40% 0; CIFAR-100 sym. 20% 25,
    50% 150, 80% 150, 90% 150; CIFAR-N (Wei et al.'s benchmark) 0. The paper's batch is 128: the
    code's 64 labelled + 64 unlabelled per step and 128 per warm-up batch, i.e. ``train.batch_size: 64``
    here. These go in the suites (``benchmarks/realnoise_protocols.md``), not in code.

    Parameters
    ----------
    warmup_epochs:
        CE epochs before the first division (paper: 10 on CIFAR-10, 30 on CIFAR-100).
    lambda_u:
        Weight of ``L_U`` (Eq. 12); the code's default 25; per setting above.
    p_threshold:
        ``tau``: a sample is labelled for the other network when ``w_i >= tau`` (paper 0.5; 0.6 at 90%).
    temperature:
        Sharpening temperature ``T`` (0.5).
    alpha:
        mixup's ``Beta(alpha, alpha)`` (4; 0: no mixing).
    lambda_r:
        Weight of ``L_reg`` (the paper's 1).
    rampup_epochs:
        Epochs over which ``lambda_u`` ramps up after the warm-up (the code's 16; 0: none).
    conf_penalty:
        Add the confidence penalty ``-H`` to the warm-up CE (the paper for asymmetric noise; the
        CIFAR-N benchmark runs the code with ``noise_mode='asym'``).
    lu_reduction:
        ``'mean'`` (default: the code's, also divided by the number of classes, the scale at which the
        paper's ``lambda_u`` values, the default 25 included, were tuned and its tables produced) or
        ``'sum'`` (Eq. 10 as printed: squared error summed over classes, where the same ``lambda_u``
        weighs ``L_U`` C times as much). A choice against the printed equation, for the paper's
        numbers: the equation and its ``lambda_u`` values disagree by the factor C.
    ensemble:
        ``'probs'`` (mean probabilities of both networks) or ``'logits'`` (mean logits: the code's sum).
    loss_window:
        Fit the GMM to the mean normalised loss of the last this many divisions (1: the paper; the
        code uses 5 at 90% noise).
    """

    own_loss = "dividemix"
    networks = ("peer",)
    views = ("weak", "weak")
    records = (Record("clean_prob"), Record("clean_prob_a"), Record("clean_prob_b"))
    detection = ("clean_prob", -1.0)
    LU_REDUCTIONS = ("sum", "mean")

    def __init__(self, *, warmup_epochs: int = 10, lambda_u: float = 25.0, p_threshold: float = 0.5,
                 temperature: float = 0.5, alpha: float = 4.0, lambda_r: float = 1.0, rampup_epochs: int = 16,
                 conf_penalty: bool = False, lu_reduction: str = "mean", ensemble: str = "probs",
                 loss_window: int = 1) -> None:
        super().__init__()
        for name, v in (("warmup_epochs", warmup_epochs), ("rampup_epochs", rampup_epochs)):
            int_option("dividemix", name, v, 0)
        if int_option("dividemix", "loss_window", loss_window, 1) > 100:
            raise UserError(f"dividemix: loss_window must be an integer in [1, 100], got {loss_window!r}")
        for name, v in (("lambda_u", lambda_u), ("lambda_r", lambda_r), ("alpha", alpha)):
            if not 0.0 <= float(v) <= 1e6:
                raise UserError(f"dividemix: {name} must be a number in [0, 1e+06], got {v!r}")
        if not 0.0 < float(p_threshold) < 1.0:
            raise UserError(f"dividemix: p_threshold must lie in (0, 1), got {p_threshold!r}")
        if not 0.01 <= float(temperature) <= 100.0:
            raise UserError(f"dividemix: temperature must lie in [0.01, 100], got {temperature!r}")
        choice_option("dividemix", "lu_reduction", lu_reduction, self.LU_REDUCTIONS)
        choice_option("dividemix", "ensemble", ensemble, ENSEMBLE_COMBINE)
        self.warmup_epochs, self.rampup_epochs, self.loss_window = warmup_epochs, rampup_epochs, loss_window
        self.lambda_u, self.lambda_r, self.alpha = float(lambda_u), float(lambda_r), float(alpha)
        self.p_threshold, self.temperature = float(p_threshold), float(temperature)
        self.conf_penalty, self.lu_reduction, self.ensemble = bool(conf_penalty), lu_reduction, ensemble
        self.divisions = 0
        self._active: _Active | None = None
        #: seconds of the last division pass (two evaluation passes and two fits; not checkpointed)
        self.division_seconds = 0.0
        #: the last step's mixup weight ``lam'`` (for tests; not checkpointed)
        self.last_lambda: torch.Tensor | None = None  # the last step's mixup lambda' (tests; no host sync)

    # -- set-up ----------------------------------------------------------------------------------------------
    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        #: ``w`` per pool sample: column 0 from network A's losses (B's labelled weights), 1 from B's (A's)
        self.w = self.per_sample("clean_prob", shape=(2,), fill=1.0)
        #: the last ``loss_window`` normalised losses of each network (the code's ``all_loss``), a ring
        self.loss_history = self.per_sample("loss_history", shape=(2, self.loss_window))

    def eval_model(self, ctx: MethodContext) -> torch.nn.Module:
        return Ensemble([ctx.model, self.net("peer").model], combine=self.ensemble)

    def is_warmup(self, epoch: int) -> bool:
        return epoch < self.warmup_epochs

    # -- co-divide ---------------------------------------------------------------------------------------------
    def on_epoch_start(self, ctx: MethodContext) -> None:
        if not self.is_warmup(ctx.epoch):
            self.co_divide(ctx)

    def co_divide(self, ctx: MethodContext) -> None:
        """Each network's division of the training split (Sec. 3.1): ``self.w[:, 0]`` from network A,
        ``self.w[:, 1]`` from network B; records them."""
        import time

        t0 = time.perf_counter()
        idx = ctx.data.splits["train"]
        labels = ctx.data.labels[idx]
        slot, filled = self.divisions % self.loss_window, min(self.divisions + 1, self.loss_window)
        dev_idx = idx.to(self.w.device)
        for col, model in enumerate((ctx.model, self.net("peer").model)):
            loss = normalize_losses(per_sample_ce(ctx.predict(idx, model=model), labels))
            hist = self.loss_history
            hist[dev_idx, col, slot] = torch.from_numpy(loss).to(hist)
            mean_loss = hist[dev_idx, col, :filled].double().mean(1).cpu().numpy()
            seed = derive_seed(ctx.seed, f"dividemix-gmm-{ctx.epoch}-{'ab'[col]}")
            w = gmm_clean_probability(mean_loss, seed=seed)
            self.w[dev_idx, col] = torch.from_numpy(w).to(self.w)
        self.divisions += 1
        w = self.w[dev_idx]
        self.record(dev_idx, clean_prob=w.mean(1), clean_prob_a=w[:, 0], clean_prob_b=w[:, 1])
        self.division_seconds = time.perf_counter() - t0

    def labelled_sets(self, ctx: MethodContext) -> dict[str, tuple[Tensor, Tensor]]:
        """``{'model': (X, U), 'peer': (X, U)}``: each network's labelled and unlabelled dataset
        indices, from the *other* network's division (co-divide)."""
        idx = ctx.data.splits["train"]
        w = self.w[idx.to(self.w.device)].cpu()
        out = {}
        for net, col in (("model", 1), ("peer", 0)):  # A learns from B's division, B from A's
            keep = w[:, col] >= self.p_threshold
            out[net] = (idx[keep], idx[~keep])
        return out

    def epoch_batches(self, ctx: MethodContext, generator: torch.Generator) -> _EpochBatches:
        if self.is_warmup(ctx.epoch):
            passes: list[tuple[str, Tensor | None, Tensor | None]] = [("model", None, None), ("peer", None, None)]
        else:
            sets = self.labelled_sets(ctx)
            passes = [(net, *sets[net]) for net in ("model", "peer")]
        return _EpochBatches(self, ctx, generator, passes)

    # -- one step --------------------------------------------------------------------------------------------
    def train_step(self, ctx: MethodContext, x: Any, y: Tensor, index: Tensor) -> StepOutput:
        a = self._active
        if a is None:
            raise RuntimeError("dividemix trains on the batches of its epoch_batches only")
        peer = self.net("peer")
        net, other = (ctx.model, peer.model) if a.net == "model" else (peer.model, ctx.model)
        handle = None if a.net == "model" else peer
        if a.kind == "warmup":
            return warmup_step(ctx, net, handle, x, y, conf_penalty=self.conf_penalty)
        return self._mixmatch_step(ctx, a, net, other, handle, x, y, index)

    def _mixmatch_step(self, ctx: MethodContext, a: _Active, net: torch.nn.Module, other: torch.nn.Module,
                       handle: Any, x: tuple[Tensor, ...], y: Tensor, index: Tensor) -> StepOutput:
        """One MixMatch step (Eqs. 3-12). Several processes: ``x`` holds this process's slices of the
        global labelled and unlabelled batches; co-refinement and co-guessing are per sample; the
        inputs and targets are gathered into the 1-process batch order ``[X1, X2, U1, U2]`` and mixed
        with the 1-process permutation and ``lam`` (the same generator on every process); each
        process trains on its own rows of the mixed batch, and Eqs. 9-11's means (``L_reg``'s mean
        prediction included) divide the sums over every process (a differentiable gather), so the
        loss is the 1-process loss on every process (``replicate_loss``)."""
        x1, x2 = x[0], x[1]
        u = x[2:4] if len(x) >= 4 else ()
        col = 1 if a.net == "model" else 0  # the other network's division
        w = self.w[index.to(self.w.device), col].to(x1.device)
        k = ctx.data.num_classes
        with torch.no_grad():
            targets_u = None
            if u:  # co-guessing (the code's order: this network's two views, then the other's, fixed)
                own = [torch.softmax(net(v).float(), 1) for v in u]
                with eval_mode(other):
                    fixed = [torch.softmax(other(v).float(), 1) for v in u]
                targets_u = sharpen(co_guess(own + fixed), self.temperature)
            z1 = net(x1)
            probs_x = [torch.softmax(z1.float(), 1), torch.softmax(net(x2).float(), 1)]
            targets_x = sharpen(co_refine(F.one_hot(y, k), probs_x, w), self.temperature)
        dp = data_parallel(ctx) if getattr(getattr(ctx, "dist", None), "in_step", False) else None
        n_u = int(a.n_unlabelled) if dp is not None and a.n_unlabelled is not None else (len(u[0]) if u else 0)
        inputs, targets, mine = mixmatch_batch(dp, (x1, x2), u, targets_x, targets_u, n_unlabelled=n_u)
        gen = torch.Generator().manual_seed(derive_seed(ctx.seed, f"dividemix-mix-{ctx.step}"))
        mixed = ctx.mixup(inputs, targets, alpha=self.alpha, generator=gen, max_lambda=True, as_given=True)
        self.last_lambda = mixed.lam[0].detach()
        logits = net(mixed.x[mine])
        lx, lu, lreg = global_mixmatch_losses(dp, logits, mixed.targets[mine], num_labelled=2 * len(y),
                                              n_labelled=2 * (len(y) if dp is None else dp.n_global),
                                              n_unlabelled=2 * n_u, lu_reduction=self.lu_reduction)
        lam_u = self.lambda_u * linear_rampup(ctx.epoch + a.j / a.n_iter, start=self.warmup_epochs,
                                              length=self.rampup_epochs)
        loss = lx + lam_u * lu + self.lambda_r * lreg
        ctx.backward_and_step(loss, net=handle)
        return StepOutput(logits=z1.detach(), loss=loss.detach())

    # -- records -----------------------------------------------------------------------------------------------
    def on_epoch_end(self, ctx: MethodContext) -> dict[str, Any]:
        if self.is_warmup(ctx.epoch):
            return {}
        idx = ctx.data.splits["train"]
        w = self.w[idx.to(self.w.device)].cpu()
        noisy = is_noisy_train(ctx.data)
        out: dict[str, Any] = {}
        for col, name in enumerate("ab"):
            out.update(selection_quality((w[:, col] >= self.p_threshold).numpy(), noisy, prefix=f"division_{name}",
                                         fraction="labelled_fraction"))
        return out

    # -- resume ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"divisions": self.divisions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.divisions = int(state.get("divisions", 0))
