"""The contrastive loss of SimCLR (NT-Xent), on two views' projections.

Chen, Kornblith, Norouzi & Hinton (2020), "A Simple Framework for Contrastive Learning of Visual
Representations" (ICML), Sec. 2.1, Eq. 1 and Algorithm 1. A batch of ``N`` images gives ``2N``
augmented examples; for a positive pair ``(i, j)`` (the two views of one image)

    l(i, j) = -log( exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau) ),

with ``sim(u, v) = u . v / (|u| |v|)`` the cosine similarity, the ``2(N - 1)`` other examples of
the batch as negatives, and the loss ``L = 1 / (2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)]``: every
example is an anchor once. Here the first view of image ``k`` is row ``k`` and its second view
row ``N + k`` (the order does not change ``L``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError

__all__ = ["contrastive_logits", "nt_xent", "nt_xent_from_logits"]


def contrastive_logits(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``2N`` anchors' similarity logits and the position of each one's positive.

    Parameters
    ----------
    z1, z2:
        ``(N, d)`` projections of the first and second view of the same ``N`` images.
    temperature:
        ``tau > 0``.

    Returns
    -------
    logits:
        ``(2N, 2N)``: ``sim(z_a, z_k) / tau`` for anchor ``a`` (rows ``0..N-1``: first views,
        ``N..2N-1``: second views) and every example ``k``; the anchor's own entry is ``-inf``
        (``k != i`` of Eq. 1), so a softmax over a row is over the ``2N - 1`` others.
    targets:
        ``(2N,)`` int64: the column of each anchor's positive (``a + N`` modulo ``2N``).
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise UserError(f"nt_xent needs two (N, d) projections of the same shape, got {tuple(z1.shape)} and "
                        f"{tuple(z2.shape)}")
    if not float(temperature) > 0:
        raise UserError(f"nt_xent temperature must be positive, got {temperature!r}")
    n = z1.shape[0]
    if n < 2:
        raise UserError("nt_xent needs at least two images per batch (the other images are the negatives)")
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    logits = (z @ z.T) / float(temperature)
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    targets = (torch.arange(2 * n, device=z.device) + n) % (2 * n)
    return logits, targets


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent loss ``L`` (Eq. 1, averaged over all ``2N`` anchors as Algorithm 1).

    Parameters
    ----------
    z1, z2:
        ``(N, d)`` projections ``g(f(x))`` of the two views (not normalised: the cosine similarity
        normalises them).
    temperature:
        ``tau`` (0.5: the paper's CIFAR-10 setting, App. B.9; 0.1 on ImageNet).

    Returns
    -------
    torch.Tensor
        The 0-dim mean loss (differentiable; computed in float32 at least).
    """
    return nt_xent_from_logits(*contrastive_logits(z1, z2, temperature=temperature))


def nt_xent_from_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 1's mean over the ``2N`` anchors from :func:`contrastive_logits`' output (in float32 at
    least), for a caller that also reads the logits (SimCLR's contrastive accuracy)."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits, targets)
