"""Optimisers and per-step learning-rate schedules built from the ``optim`` config section."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ..errors import UserError

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay, Nesterov) or Adam from ``cfg`` (the ``optim`` section)."""
    name = str(cfg["name"]).lower()
    lr = float(cfg["lr"])
    wd = float(cfg["weight_decay"])
    if name == "sgd":
        momentum = float(cfg["momentum"])
        nesterov = bool(cfg["nesterov"])
        if nesterov and momentum <= 0:
            raise UserError("optim.nesterov needs optim.momentum > 0")
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd, nesterov=nesterov)
    if name == "adam":
        b1, b2 = (float(b) for b in cfg["betas"])
        return torch.optim.Adam(params, lr=lr, betas=(b1, b2), weight_decay=wd)
    raise UserError(f"unknown optimizer {cfg['name']!r}; valid names: adam, sgd")


def lr_factor(step: int, *, steps_per_epoch: int, epochs: int, cfg: Mapping[str, Any]) -> float:
    """Multiplier of the base learning rate before optimisation step ``step`` (0-based).

    Linear warm-up over ``warmup_epochs`` (per step), then ``none`` (constant), ``multistep``
    (times ``gamma`` at each epoch in ``milestones``) or ``cosine`` (half cosine from the end of
    warm-up to zero at the last step).
    """
    schedule = str(cfg["schedule"]).lower()
    warm = int(round(float(cfg["warmup_epochs"]) * steps_per_epoch))
    if warm > 0 and step < warm:
        return (step + 1) / warm
    if schedule in ("none", "constant"):
        return 1.0
    if schedule == "multistep":
        epoch = step // steps_per_epoch
        passed = sum(1 for m in cfg["milestones"] or [] if epoch >= int(m))
        return float(cfg["gamma"]) ** passed
    if schedule == "cosine":
        total = max(1, epochs * steps_per_epoch - warm)
        t = min(step - warm, total)
        return 0.5 * (1.0 + math.cos(math.pi * t / total))
    raise UserError(f"unknown optim.schedule {cfg['schedule']!r}; valid: none, multistep, cosine")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], *, steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A :class:`~torch.optim.lr_scheduler.LambdaLR` stepped once per optimisation step."""
    lr_factor(0, steps_per_epoch=steps_per_epoch, epochs=epochs, cfg=cfg)  # validate early
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps_per_epoch=steps_per_epoch, epochs=epochs, cfg=cfg)
    )
