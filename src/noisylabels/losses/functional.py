"""Loss functions for learning with noisy labels, computed from logits.

Every loss has the signature ``fn(logits, target, *, reduction='mean', **hyperparameters)``:

* ``logits``: floating tensor (B, K), unnormalised scores.
* ``target``: int64 class indices (B,) in [0, K), or -- for every loss but truncated L_q -- a soft
  target: a floating (B, K) tensor of probability vectors (e.g. a corrected label, EMLC Eq. 6).
  Losses defined per label extend linearly, ``L(z, q) = sum_c q_c L(z, c)`` (the expected loss
  under the target distribution: CE, MAE, GCE, focal, forward); losses defined between two
  distributions use the target distribution directly (the RCE part of SCE, JS); PolySoft and the
  bootstrapping losses apply their definition to the soft CE. A one-hot soft target gives exactly
  the hard-label loss.
* ``reduction``: ``'mean'`` (default), ``'sum'`` or ``'none'`` (per-sample vector (B,)).
* each hyperparameter: a float, or a tensor of shape () or (B,) (one value per sample,
  e.g. predicted by NARL-Adjuster). Tensors keep their autograd graph, and every loss
  is differentiable in its continuous hyperparameters wherever the maths allows.

Probabilities are never formed and then logged: all losses are written in terms of
``log p_y = z_y - logsumexp(z)`` and ``log(1 - p_y) = logsumexp_{j != y}(z_j) - logsumexp(z)``,
so they stay finite (with finite gradients) when p_y underflows to 0 or rounds to 1.

Bad inputs or hyperparameters raise :class:`noisylabels.errors.UserError`.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ..registry import Registry
from ._validation import HParam, check_inputs, check_reduction, check_targets, hparam, reduce

__all__ = [
    "LOSSES",
    "LOG_1E_4",
    "cross_entropy",
    "mae_loss",
    "gce_loss",
    "truncated_lq_loss",
    "truncated_lq_weighted",
    "prune_mask",
    "sce_loss",
    "js_loss",
    "polysoft_loss",
    "bootstrap_soft_loss",
    "bootstrap_hard_loss",
    "forward_loss",
    "focal_loss",
]

#: The loss registry: name -> functional form.
LOSSES: Registry[Callable[..., Tensor]] = Registry("loss")

#: ``log(1e-4) = -4 ln 10``: the default ``A`` of the reverse cross entropy (official SCE code).
LOG_1E_4 = math.log(1e-4)


# --------------------------------------------------------------------------- helpers


def _log_py(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``(log p_y, logsumexp(z))``, both of shape (B,)."""
    lse = torch.logsumexp(logits, dim=1)
    return logits.gather(1, target[:, None]).squeeze(1) - lse, lse


def _log1m_py(logits: Tensor, target: Tensor, lse: Tensor) -> Tensor:
    """``log(1 - p_y) = logsumexp_{j != y} z_j - logsumexp_j z_j``, accurate when p_y -> 1."""
    others = logits.scatter(1, target[:, None], float("-inf"))
    return torch.logsumexp(others, dim=1) - lse


def _soft_ce(logits: Tensor, q: Tensor) -> Tensor:
    """``-sum_c q_c log p_c`` (B,), with ``0 * log 0 = 0`` (``xlogy`` semantics through the product)."""
    return -(q * torch.log_softmax(logits, dim=1)).sum(dim=1)


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x < 0`` (Maechler's switch at ``-log 2``); ``x`` is kept below ``-eps``
    so the value and its gradient stay finite when ``p`` rounds to 1."""
    x = x.clamp(max=-torch.finfo(x.dtype).eps)
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _lq_of_log(log_p: Tensor, q: Tensor) -> Tensor:
    """``(1 - p^q) / q`` computed as ``-expm1(q log p) / q``: exact for tiny q, -> -log p as q -> 0."""
    return -torch.expm1(q * log_p) / q


def _register(name: str, *aliases: str) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        LOSSES.register(name)(fn)
        for alias in aliases:
            LOSSES.register(alias, help=f"alias of {name!r}")(fn)
        return fn

    return deco


# --------------------------------------------------------------------------- losses


@_register("ce")
def cross_entropy(logits: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    """Categorical cross entropy -log p_y (the baseline of every noisy-label paper).

    Parameters
    ----------
    logits:
        Unnormalised scores (B, K).
    target:
        int64 class indices (B,).
    reduction:
        'mean', 'sum' or 'none'.

    Returns
    -------
    Tensor
        The reduced loss, or the per-sample losses (B,) for ``reduction='none'``.
    """
    check_reduction(reduction, "ce")
    logits, target, soft = check_targets(logits, target, "ce")
    if soft:
        return reduce(_soft_ce(logits, target), reduction)
    log_py, _ = _log_py(logits, target)
    return reduce(-log_py, reduction)


@_register("mae")
def mae_loss(logits: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    """Mean absolute error ||e_y - p||_1 = 2 - 2 p_y (Ghosh et al., AAAI 2017).

    Symmetric: sum_j L(f(x), j) = 2(K - 1) for every x, hence robust to symmetric
    noise. ``1 - p_y`` is computed as ``exp(logsumexp_{j!=y} z_j - logsumexp z)``.

    Parameters
    ----------
    logits, target, reduction:
        See :func:`cross_entropy`.
    """
    check_reduction(reduction, "mae")
    logits, target, soft = check_targets(logits, target, "mae")
    if soft:  # sum_c q_c ||e_c - p||_1 = 2 (1 - sum_c q_c p_c)
        return reduce(2.0 * (1.0 - (target * torch.softmax(logits, dim=1)).sum(dim=1)), reduction)
    _, lse = _log_py(logits, target)
    return reduce(2.0 * torch.exp(_log1m_py(logits, target, lse)), reduction)


@_register("gce", "lq")
def gce_loss(logits: Tensor, target: Tensor, *, q: HParam = 0.7, reduction: str = "mean") -> Tensor:
    """Generalized cross entropy L_q = (1 - p_y^q) / q (Zhang & Sabuncu, NeurIPS 2018, Eq. 6).

    Computed as ``-expm1(q log p_y) / q`` from ``log_softmax``, which is exact for tiny q
    (the q -> 0 limit is the cross entropy -log p_y) and equals ``1 - p_y`` (MAE / 2) at q = 1.

    Parameters
    ----------
    logits, target, reduction:
        See :func:`cross_entropy`.
    q:
        In (0, 1]; float or per-sample tensor (B,). Differentiable. The paper uses 0.7.
    """
    check_reduction(reduction, "gce")
    logits, target, soft = check_targets(logits, target, "gce")
    q_t = hparam(q, "q", "gce", logits, low=0.0, high=1.0, low_open=True)
    if soft:
        log_p = torch.log_softmax(logits, dim=1)
        qq = q_t if q_t.ndim == 0 else q_t[:, None]
        return reduce((target * _lq_of_log(log_p, qq)).sum(dim=1), reduction)
    log_py, _ = _log_py(logits, target)
    return reduce(_lq_of_log(log_py, q_t), reduction)


@_register("truncated-lq")
def truncated_lq_loss(
    logits: Tensor, target: Tensor, *, q: HParam = 0.7, k: HParam = 0.5, reduction: str = "mean"
) -> Tensor:
    """Truncated L_q loss (Zhang & Sabuncu, NeurIPS 2018, Eq. 9).

    ``L_trunc = L_q(k) = (1 - k^q)/q`` when ``p_y <= k``, else ``L_q = (1 - p_y^q)/q``;
    i.e. ``L_q(max(p_y, k))``. The samples with ``p_y <= k`` get no gradient w.r.t. the
    logits (they are the ones Algorithm 1 prunes).

    Parameters
    ----------
    logits, target, reduction:
        See :func:`cross_entropy`.
    q:
        In (0, 1]; the paper uses 0.7.
    k:
        Truncation threshold in (0, 1); the paper uses 0.5.
    """
    check_reduction(reduction, "truncated-lq")
    logits, target = check_inputs(logits, target, "truncated-lq")
    q_t = hparam(q, "q", "truncated-lq", logits, low=0.0, high=1.0, low_open=True)
    k_t = hparam(k, "k", "truncated-lq", logits, low=0.0, high=1.0, low_open=True, high_open=True)
    log_py, _ = _log_py(logits, target)
    log_k = torch.log(k_t)
    keep = log_py > log_k
    z = torch.where(keep, log_py, log_k)
    return reduce(_lq_of_log(z, q_t), reduction)


def truncated_lq_weighted(
    logits: Tensor,
    target: Tensor,
    weights: HParam,
    *,
    q: HParam = 0.7,
    k: HParam = 0.5,
    reduction: str = "mean",
) -> Tensor:
    """Per-sample objective of the alternating pruning method (Zhang & Sabuncu 2018, Eq. 11).

    Returns ``w_i * L_q(f(x_i), y_i) - L_q(k) * w_i``; summing it gives
    ``sum_i w_i L_q - L_q(k) sum_i w_i`` of Eq. 11, which Algorithm 1 minimises alternately
    over the network (this function, w fixed) and over ``w in [0, 1]^n``
    (closed form: :func:`prune_mask`).

    Parameters
    ----------
    logits, target, reduction:
        See :func:`cross_entropy`.
    weights:
        Sample weights w in [0, 1], float or tensor (B,) (usually 0/1 from :func:`prune_mask`).
    q:
        In (0, 1].
    k:
        In (0, 1).
    """
    name = "truncated_lq_weighted"
    check_reduction(reduction, name)
    logits, target = check_inputs(logits, target, name)
    w = hparam(weights, "weights", name, logits, low=0.0, high=1.0)
    q_t = hparam(q, "q", name, logits, low=0.0, high=1.0, low_open=True)
    k_t = hparam(k, "k", name, logits, low=0.0, high=1.0, low_open=True, high_open=True)
    log_py, _ = _log_py(logits, target)
    lq = _lq_of_log(log_py, q_t)
    lq_k = _lq_of_log(torch.log(k_t), q_t)
    return reduce(w * lq - lq_k * w, reduction)


def prune_mask(probs_true_class: Tensor, k: HParam = 0.5) -> Tensor:
    """Pruning step of Algorithm 1 (Zhang & Sabuncu 2018): ``w_i = 1[p_{y_i} > k]``.

    For fixed network, Eq. 11 is minimised by keeping exactly the samples whose loss
    ``L_q(p_y)`` is below ``L_q(k)``, i.e. whose ``p_y > k``.

    Parameters
    ----------
    probs_true_class:
        Probabilities of the (noisy) given labels, shape (N,).
    k:
        Threshold in (0, 1); float or tensor (N,).

    Returns
    -------
    Tensor
        Weights of shape (N,) and the dtype of ``probs_true_class`` (1.0 keep, 0.0 prune).
    """
    if not isinstance(probs_true_class, Tensor) or probs_true_class.ndim != 1:
        shape = tuple(probs_true_class.shape) if isinstance(probs_true_class, Tensor) else type(
            probs_true_class).__name__
        raise UserError(f"prune_mask: probs_true_class must be a tensor of shape (N,); got {shape}")
    p = probs_true_class.detach()
    if not p.is_floating_point():
        p = p.double()
    k_t = hparam(k, "k", "prune_mask", p[:, None].expand(-1, 2), low=0.0, high=1.0,
                 low_open=True, high_open=True)
    return (p > k_t).to(p.dtype)


@_register("sce", "sl")
def sce_loss(
    logits: Tensor,
    target: Tensor,
    *,
    alpha: HParam | None = None,
    beta: HParam | None = None,
    A: HParam = LOG_1E_4,
    gamma1: HParam | None = None,
    gamma2: HParam | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Symmetric cross entropy alpha * CE + beta * RCE (Wang et al., ICCV 2019).

    The reverse cross entropy RCE = -sum_k p_k log q_k uses the one-hot label q with
    ``log 0 := A``, so RCE = -A (1 - p_y). The official code clips the one-hot label at
    1e-4 and takes the natural log, so ``A = log(1e-4) = -4 ln 10 ~ -9.21`` here by default
    (the paper's text says "A = -4"; NARL-Adjuster's code uses log10, i.e. A = -4: pass
    ``A=-4`` to reproduce those). Unlike the official code, p is not clipped at 1e-7 in CE.

    Parameters
    ----------
    logits, target, reduction:
        See :func:`cross_entropy`.
    alpha:
        Weight of CE, >= 0 (default 0.1: the official CIFAR-10 setting; CIFAR-100 uses 6.0,
        MNIST 0.01). Alias ``gamma1`` (the project's issue calls it gamma_1).
    beta:
        Weight of RCE, >= 0 (default 1.0; CIFAR-100 uses 0.1). Alias ``gamma2``.
    A:
        The value of log 0, < 0.
    """
    name = "sce"
    check_reduction(reduction, name)
    if gamma1 is not None:
        if alpha is not None:
            raise UserError("sce: give either alpha or its alias gamma1, not both")
        alpha = gamma1
    if gamma2 is not None:
        if beta is not None:
            raise UserError("sce: give either beta or its alias gamma2, not both")
        beta = gamma2
    alpha = 0.1 if alpha is None else alpha
    beta = 1.0 if beta is None else beta
    logits, target, soft = check_targets(logits, target, name)
    a_t = hparam(alpha, "alpha", name, logits, low=0.0)
    b_t = hparam(beta, "beta", name, logits, low=0.0)
    big_a = hparam(A, "A", name, logits, high=0.0, high_open=True)
    if soft:  # RCE = -sum_k p_k log q_k with log q_k := A where q_k < e^A (log 0 := A)
        log_q = torch.log(target.clamp_min(1e-300)).maximum(big_a if big_a.ndim == 0 else big_a[:, None])
        rce = -(torch.softmax(logits, dim=1) * log_q).sum(dim=1)
        return reduce(a_t * _soft_ce(logits, target) + b_t * rce, reduction)
    log_py, lse = _log_py(logits, target)
    rce = -big_a * torch.exp(_log1m_py(logits, target, lse))
    return reduce(a_t * (-log_py) + b_t * rce, reduction)


def _js_soft(logits: Tensor, q: Tensor, pi: Tensor) -> Tensor:
    """Scaled ``JS_pi(q, p)`` between a target distribution q and p (0 log 0 = 0)."""
    log_p = torch.log_softmax(logits, dim=1)
    pic = pi if pi.ndim == 0 else pi[:, None]
    log_q = torch.log(q.clamp_min(1e-300))
    log_m = torch.logaddexp(torch.log(pic) + log_q, torch.log1p(-pic) + log_p)
    kl_qm = torch.where(q > 0, q * (log_q - log_m), torch.zeros_like(q)).sum(dim=1)
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(dim=1)
    return (pi * kl_qm + (1.0 - pi) * kl_pm) / (-(1.0 - pi) * torch.log1p(-pi))


@_register("js")
def js_loss(logits: Tensor, target: Tensor, *, pi1: HParam = 0.5, reduction: str = "mean") -> Tensor:
    """Jensen-Shannon divergence loss (Englesson & Azizpour, NeurIPS 2021).

    ``L_JS = [pi1 KL(e_y || m) + (1 - pi1) KL(p || m)] / Z``, ``m = pi1 e_y + (1 - pi1) p``,
    ``Z = -(1 - pi1) log(1 - pi1)``. Because the label is one-hot this reduces exactly to
    a function of p_y (0 log 0 = 0 is built in):

    ``pi1 * (-log m_y) + (1 - pi1) * [-(1 - p_y) log(1 - pi1) + p_y (log p_y - log m_y)]``,
    ``log m_y = logaddexp(log pi1, log(1 - pi1) + log p_y)``.

    The scaled loss tends to CE as pi1 -> 0 and to MAE / 2 = 1 - p_y as pi1 -> 1.

    Parameters
    ----------
    logits, target, reduction:
        See :func:`cross_entropy`.
    pi1:
        Weight of the label distribution, in (0, 1). Default 0.5; the official configs
        use 0.7 for CIFAR-10 and 0.3 for CIFAR-100 (40% symmetric noise).
    """
    name = "js"
    check_reduction(reduction, name)
    logits, target, soft = check_targets(logits, target, name)
    pi = hparam(pi1, "pi1", name, logits, low=0.0, high=1.0, low_open=True, high_open=True)
    if soft:
        return reduce(_js_soft(logits, target, pi), reduction)
    log_py, lse = _log_py(logits, target)
    py = torch.exp(log_py)
    one_m_py = torch.exp(_log1m_py(logits, target, lse))
    log_pi = torch.log(pi)
    log_1m_pi = torch.log1p(-pi)
    log_my = torch.logaddexp(log_pi.expand_as(log_py), log_1m_pi + log_py)
    js = pi * (-log_my) + (1.0 - pi) * (-one_m_py * log_1m_pi + py * (log_py - log_my))
    z = -(1.0 - pi) * log_1m_pi
    return reduce(js / z, reduction)


@_register("polysoft")
def polysoft_loss(
    logits: Tensor, target: Tensor, *, lam: HParam | None = None, d: HParam = 2.0, reduction: str = "mean"
) -> Tensor:
    """Latent loss of polynomial soft-weighting self-paced learning ("PolySoft").

    With l = CE = -log p_y (as used by NARL-Adjuster, Ding et al. 2023, "A-PolySoft")::

        L = (d-1) lam / d * [1 - (1 - l/lam)^(d/(d-1))]   if l < lam
        L = (d-1) lam / d                                  otherwise

    Each term lies in [0, (d-1) lam / d]; L is increasing and concave in l. The inner power
    is computed as ``-expm1(d/(d-1) * log1p(-l/lam))`` on the active branch only (the other
    branch sees a dummy 0), so gradients w.r.t. the logits, lam and d are finite everywhere.

    Parameters
    ----------
    logits, target, reduction:
        See :func:`cross_entropy`.
    lam:
        Age parameter lambda > 0 (saturation point of l). NARL-Adjuster clamps it to [0, 20].
        Default ``None``: ``2 log K`` for ``K`` classes (4.61 for 10). Why: a sample with
        ``l >= lam`` has no gradient, and every sample starts at ``l ~ log K`` (near-uniform
        predictions), so ``lam <= log K`` trains nothing (measured: LeNet on MNIST stayed at
        10.1% for 30 epochs with ``lam = 2``); NARL's Theorem 1(3) needs ``lam >= log c``, and
        ``2 log K`` leaves ``dL/dl = 0.5`` at the start for ``d = 2``.
    d:
        Polynomial order d > 1. NARL-Adjuster clamps it to [1.01, 20].
    """
    name = "polysoft"
    check_reduction(reduction, name)
    logits, target, soft = check_targets(logits, target, name)
    lam = 2.0 * math.log(logits.shape[1]) if lam is None else lam
    lam_t = hparam(lam, "lam", name, logits, low=0.0, low_open=True)
    d_t = hparam(d, "d", name, logits, low=1.0, low_open=True)
    ce = _soft_ce(logits, target) if soft else -_log_py(logits, target)[0]
    ratio = ce / lam_t
    active = ratio < 1.0
    safe = torch.where(active, ratio, torch.zeros_like(ratio))
    cap = (d_t - 1.0) / d_t * lam_t
    expo = d_t / (d_t - 1.0)
    inner = -torch.expm1(expo * torch.log1p(-safe))
    return reduce(torch.where(active, cap * inner, cap.expand_as(inner)), reduction)


@_register("bootstrap-soft")
def bootstrap_soft_loss(
    logits: Tensor, target: Tensor, *, beta: HParam = 0.95, reduction: str = "mean"
) -> Tensor:
    """Soft bootstrapping (Reed et al., ICLR-W 2015): CE against beta e_y + (1 - beta) p.

    ``L = -sum_j [beta e_y + (1 - beta) p_j] log p_j`` with p in the target detached, so the
    gradient w.r.t. the logits is ``beta (p - e_y)``.

    Parameters
    ----------
    logits, target, reduction:
        See :func:`cross_entropy`.
    beta:
        Weight of the given label, in [0, 1] (Reed's soft setting: 0.95).
    """
    name = "bootstrap-soft"
    check_reduction(reduction, name)
    logits, target, soft = check_targets(logits, target, name)
    b = hparam(beta, "beta", name, logits, low=0.0, high=1.0)
    logp = torch.log_softmax(logits, dim=1)
    p_hat = logp.detach().exp()
    ce = -(target * logp).sum(dim=1) if soft else -logp.gather(1, target[:, None]).squeeze(1)
    self_ce = -(p_hat * logp).sum(dim=1)
    return reduce(b * ce + (1.0 - b) * self_ce, reduction)


@_register("bootstrap-hard")
def bootstrap_hard_loss(
    logits: Tensor, target: Tensor, *, beta: HParam = 0.8, reduction: str = "mean"
) -> Tensor:
    """Hard bootstrapping (Reed et al., ICLR-W 2015): CE against beta e_y + (1 - beta) e_argmax p.

    Parameters
    ----------
    logits, target, reduction:
        See :func:`cross_entropy`.
    beta:
        Weight of the given label, in [0, 1] (Reed's hard setting: 0.8).
    """
    name = "bootstrap-hard"
    check_reduction(reduction, name)
    logits, target, soft = check_targets(logits, target, name)
    b = hparam(beta, "beta", name, logits, low=0.0, high=1.0)
    logp = torch.log_softmax(logits, dim=1)
    pred = logits.detach().argmax(dim=1)
    ce = -(target * logp).sum(dim=1) if soft else -logp.gather(1, target[:, None]).squeeze(1)
    ce_pred = -logp.gather(1, pred[:, None]).squeeze(1)
    return reduce(b * ce + (1.0 - b) * ce_pred, reduction)


def _transition_matrix(T: Any, logits: Tensor, loss: str) -> Tensor:
    k = logits.shape[1]
    if T is None:
        raise UserError(f"{loss}: option T (a {k}x{k} transition matrix, T[i, j] = P(noisy j | clean i)) is required")
    if isinstance(T, Tensor):
        t = T.to(dtype=logits.dtype, device=logits.device)
    else:
        try:
            t = torch.as_tensor(np.asarray(T, dtype=np.float64), dtype=logits.dtype, device=logits.device)
        except (TypeError, ValueError):
            raise UserError(f"{loss}: option T must be a {k}x{k} matrix; got {type(T).__name__}") from None
    if tuple(t.shape) != (k, k):
        raise UserError(f"{loss}: option T must have shape ({k}, {k}) to match the logits; got {tuple(t.shape)}")
    v = t.detach()
    if not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
        raise UserError(f"{loss}: option T must have finite non-negative entries")
    rows = v.sum(dim=1)
    if not bool(torch.allclose(rows, torch.ones_like(rows), atol=1e-3, rtol=0.0)):
        i = int((rows - 1).abs().argmax())
        raise UserError(f"{loss}: rows of T must sum to 1 (T[i, j] = P(noisy j | clean i)); row {i} sums to {float(rows[i]):g}")
    return t


@_register("forward")
def forward_loss(logits: Tensor, target: Tensor, *, T: Any = None, reduction: str = "mean") -> Tensor:
    """Forward loss correction (Patrini et al., CVPR 2017): -log((T^T p)_y~).

    ``T[i, j] = P(noisy label j | clean label i)`` (row-stochastic); the loss is the cross
    entropy of the noisy label against the predicted noisy-label distribution ``p @ T``.
    Computed in log space: ``-log sum_i exp(log p_i) T[i, y~]`` with a max-shift over the
    entries where ``T[i, y~] > 0``, so it stays finite when p_i underflows.

    The gradient w.r.t. T is exact for positive entries; entries that are exactly 0 get
    gradient 0 (they sit on the boundary T >= 0).

    Parameters
    ----------
    logits, target, reduction:
        See :func:`cross_entropy`. ``target`` holds the noisy labels.
    T:
        (K, K) tensor / array with non-negative entries and rows summing to 1; use
        :func:`noisylabels.losses.estimate_transition` to estimate it.
    """
    name = "forward"
    check_reduction(reduction, name)
    logits, target, soft = check_targets(logits, target, name)
    t = _transition_matrix(T, logits, name)
    logp = torch.log_softmax(logits, dim=1)
    if soft:  # -sum_c q_c log (T^T p)_c, in log space
        log_noisy = torch.logsumexp(logp[:, :, None] + torch.log(t.clamp_min(torch.finfo(t.dtype).tiny))[None], dim=1)
        return reduce(-(target * log_noisy.clamp_min(torch.finfo(logp.dtype).min)).sum(dim=1), reduction)
    cols = t.t()[target]  # (B, K): cols[b, i] = T[i, y~_b]
    pos = cols > 0
    if not bool(pos.any(dim=1).all()):
        b = int((~pos.any(dim=1)).nonzero()[0])
        raise UserError(f"{name}: column {int(target[b])} of T is all zero, but label {int(target[b])} occurs")
    neg_inf = torch.full_like(logp, float("-inf"))
    shift = torch.where(pos, logp, neg_inf).amax(dim=1, keepdim=True).detach()
    e = torch.exp(torch.where(pos, logp - shift, neg_inf))
    s = (e * cols).sum(dim=1)
    return reduce(-(shift.squeeze(1) + torch.log(s)), reduction)


@_register("focal")
def focal_loss(logits: Tensor, target: Tensor, *, gamma: HParam = 2.0, reduction: str = "mean") -> Tensor:
    """Focal loss -(1 - p_y)^gamma log p_y (Lin et al., ICCV 2017, Eq. 4 without the alpha weight).

    ``(1 - p_y)^gamma`` is computed as ``exp(gamma * log(1 - p_y))`` with ``log(1 - p_y)``
    from a masked logsumexp, so the gradient w.r.t. gamma is finite even when p_y -> 1.

    Parameters
    ----------
    logits, target, reduction:
        See :func:`cross_entropy`.
    gamma:
        Focusing parameter >= 0 (gamma = 0 is CE; Lin et al. use 2).
    """
    name = "focal"
    check_reduction(reduction, name)
    logits, target, soft = check_targets(logits, target, name)
    g = hparam(gamma, "gamma", name, logits, low=0.0)
    if soft:
        log_p = torch.log_softmax(logits, dim=1)
        gg = g if g.ndim == 0 else g[:, None]
        return reduce(-(target * torch.exp(gg * _log1mexp(log_p)) * log_p).sum(dim=1), reduction)
    log_py, lse = _log_py(logits, target)
    mod = torch.exp(g * _log1m_py(logits, target, lse))
    return reduce(-mod * log_py, reduction)
