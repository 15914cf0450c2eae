"""mixup (Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization", ICLR), in-batch.

``x~ = lam x_i + (1 - lam) x_j`` and ``y~ = lam y_i + (1 - lam) y_j`` (Eq. 1 there), ``lam ~ Beta(alpha,
alpha)``, the partner ``j`` of sample ``i`` given by a random permutation of the batch (the
paper's code mixes a batch with a shuffled copy of itself). Options for the methods built on it:
one ``lam`` per batch (the paper's) or per sample, and DivideMix's ``lam' = max(lam, 1 - lam)``
(Li et al. 2020, "DivideMix", Sec. 3.3, after MixMatch), which keeps each mixed sample closer to
its own input. Targets are hard labels (turned into one-hot rows) or soft rows.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ..errors import UserError

__all__ = ["Mixed", "mixup"]


class Mixed(NamedTuple):
    """What :func:`mixup` returns.

    Attributes
    ----------
    x:
        The mixed inputs, shaped and typed like the inputs.
    targets:
        The mixed targets ``(B, K)`` (float, the inputs' float type or float32).
    lam:
        ``(B,)`` the weight of each sample's own input and target (equal entries per batch).
    perm:
        ``(B,)`` int64: sample ``i`` is mixed with sample ``perm[i]``.
    """

    x: torch.Tensor
    targets: torch.Tensor
    lam: torch.Tensor
    perm: torch.Tensor


def mixup(x: torch.Tensor, targets: torch.Tensor, *, alpha: float, generator: torch.Generator,
          num_classes: int | None = None, per_sample: bool = False, max_lambda: bool = False) -> Mixed:
    """Mix a batch with a random permutation of itself (Zhang et al. 2018, Eq. 1).

    Parameters
    ----------
    x:
        Inputs ``(B, ...)`` (float).
    targets:
        int64 labels ``(B,)`` (then ``num_classes`` is needed) or soft targets ``(B, K)``.
    alpha:
        ``lam ~ Beta(alpha, alpha)``; ``alpha = 0`` gives ``lam = 1`` (no mixing, as the paper's code).
    generator:
        The only source of randomness, drawn in this order: the permutation (``torch.randperm``),
        then one 63-bit seed of the numpy generator that draws the Beta variates (torch has no
        seeded Beta sampler).
    num_classes:
        Classes of hard labels.
    per_sample:
        One ``lam`` per sample instead of one per batch.
    max_lambda:
        Use ``max(lam, 1 - lam)`` (DivideMix).

    Returns
    -------
    Mixed
        The mixed inputs and targets, ``lam`` and the permutation.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) < 1e6:
        raise UserError(f"mixup alpha must be a number >= 0, got {alpha!r}")
    if not isinstance(x, torch.Tensor) or x.ndim < 1:
        raise UserError("mixup: x must be a tensor with a batch dimension")
    b = x.shape[0]
    t = torch.as_tensor(targets)
    if t.ndim == 1 and not t.is_floating_point():
        if num_classes is None or int(num_classes) < 1:
            raise UserError("mixup: hard labels need num_classes")
        if b and (int(t.min()) < 0 or int(t.max()) >= int(num_classes)):
            raise UserError(f"mixup: labels must lie in [0, {int(num_classes)})")
        ftype = x.dtype if x.is_floating_point() else torch.float32
        t = torch.nn.functional.one_hot(t.long(), int(num_classes)).to(ftype)
    elif t.ndim != 2 or not t.is_floating_point():
        raise UserError(f"mixup: targets must be int64 labels (B,) or float soft targets (B, K), got "
                        f"{t.dtype} of shape {tuple(t.shape)}")
    if t.shape[0] != b:
        raise UserError(f"mixup: {b} inputs but {t.shape[0]} targets")
    dev = generator.device if hasattr(generator, "device") else torch.device("cpu")
    perm = torch.randperm(b, generator=generator, device=dev).to(x.device)
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=dev))
    k = b if per_sample else 1
    lam_np = np.random.default_rng(seed).beta(alpha, alpha, size=k) if alpha > 0 else np.ones(k)
    if max_lambda:
        lam_np = np.maximum(lam_np, 1.0 - lam_np)
    lam = torch.from_numpy(lam_np).to(x.device).expand(b).contiguous()
    lx = lam.to(x.dtype if x.is_floating_point() else torch.float32).reshape(b, *([1] * (x.ndim - 1)))
    lt = lam.to(t.dtype).to(t.device)[:, None]
    mixed_x = lx * x + (1 - lx) * x[perm]
    mixed_t = lt * t + (1 - lt) * t[perm.to(t.device)]
    return Mixed(mixed_x, mixed_t, lam, perm)
