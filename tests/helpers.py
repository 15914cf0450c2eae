"""Helpers shared by the test modules (one config helper for every test that trains)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from noisylabels.config import resolve_config


def run_cfg(tmp_path: Path, name: str = "run", *, epochs: int = 3, **over: Any) -> dict[str, Any]:
    """A resolved config writing to ``tmp_path / name``: ``epochs`` epochs, no progress bar, ``over``
    as dotted overrides (e.g. ``**{"method.name": "mwnet"}``)."""
    base = {"out": str(tmp_path / name), "train.progress": False, "train.epochs": epochs}
    base.update(over)
    return resolve_config(overrides=base)


def tiny_problem(seed: int = 0, k: int = 3, d: int = 5, n: int = 8, m: int = 4):
    """A float64 two-layer net with SGD (momentum, weight decay), a training batch and a meta batch:
    ``(model, optimizer, x, y, meta_x, meta_y)`` for exact meta-gradient identities."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, 6), nn.Tanh(), nn.Linear(6, k)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    x, y = torch.randn(n, d, dtype=torch.float64), torch.randint(0, k, (n,))
    mx, my = torch.randn(m, d, dtype=torch.float64), torch.randint(0, k, (m,))
    return model, opt, x, y, mx, my


def auroc_by_pairs(score, positive) -> float:
    """P(score of a positive > score of a negative) + 1/2 P(tie), by counting every pair (numpy arrays)."""
    pos, neg = score[positive], score[~positive]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def drive_one_epoch_by_hand(ctx, meta_batch=None):
    """One epoch of the method's ``train_step`` on the unaugmented train batches, the model in eval
    mode (so the logits a step trains on are the ones computed here before it); ``meta_batch(b)``,
    if given, is the meta batch of batch ``b``'s step. Returns (dataset indices, each sample's CE
    ``-log softmax(z)_y`` at its step, by hand, float64 numpy)."""
    import torch

    m = ctx.method
    ctx.model.eval()
    ctx.start_epoch(0)
    m.start_epoch(ctx)
    idx, ce = [], []
    for b in ctx.loader("train", shuffle=False, augment=False):
        with torch.no_grad():
            z = ctx.model(b.x).double()
        ce.append(torch.logsumexp(z, 1) - z[torch.arange(len(b.y)), b.y])
        idx.append(b.index)
        if meta_batch is not None:
            ctx.next_meta_batch = lambda bs=None, b=b: meta_batch(b)
        m.train_step(ctx, b.x, b.y, b.index)
        ctx.step += 1
    return torch.cat(idx), torch.cat(ce).numpy()


def to_pil(a):
    """An (H, W, C) uint8 array as a Pillow image (``L`` for one channel)."""
    from PIL import Image

    return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)


def from_pil(im):
    """A Pillow image as an (H, W, C) uint8 array."""
    import numpy as np

    r = np.asarray(im)
    return r[..., None] if r.ndim == 2 else r
