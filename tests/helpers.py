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
