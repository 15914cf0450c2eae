"""Optimisers and per-step learning-rate schedules built from the ``optim`` config section."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ..errors import UserError

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "beta1_at", "RunScheduler", "SCHEDULES"]

#: the values of ``optim.schedule``
SCHEDULES = ("none", "constant", "multistep", "cosine", "cosine-restarts", "linear-decay")


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

    Linear warm-up over ``warmup_epochs`` (per step), then

    * ``none`` (constant);
    * ``multistep``: times ``gamma`` at each epoch in ``milestones``;
    * ``cosine``: half cosine from the end of warm-up to ``min_lr`` (default 0) at the last step (per
      step): ``min_lr + (lr - min_lr) (1 + cos(pi t / T)) / 2`` (torch's ``CosineAnnealingLR`` with
      ``eta_min``, stepped per step);
    * ``cosine-restarts``: SGDR (Loshchilov & Hutter, ICLR 2017, Eq. 5), per epoch as the ELR code
      steps torch's ``CosineAnnealingWarmRestarts`` (shengliu66/ELR ``trainer.py``: ``step()`` once
      after each epoch): epoch e of a period of ``T_i`` epochs (``restart_epochs`` T_0, each period
      ``restart_mult`` times the last) that began at epoch ``e_i`` runs at
      ``min_lr + (lr - min_lr) (1 + cos(pi (e - e_i) / T_i)) / 2``;
    * ``linear-decay``: Co-teaching's (Han et al. 2018, Sec. 4; bhanML/Co-teaching ``main.py``
      ``alpha_plan``), per epoch: ``lr`` until epoch ``decay_start`` (``s``), then epoch e runs at
      ``lr (E - e) / (E - s)`` for a run of E epochs (the lr would reach 0 at epoch E, one past the
      last; the code's epoch e uses ``alpha_plan[e]``, here epoch e).

    Epochs count from the start of the (possibly restarted) schedule; warm-up replaces the factor
    during its steps.
    """
    schedule = str(cfg["schedule"]).lower()
    warm = int(round(float(cfg["warmup_epochs"]) * steps_per_epoch))
    if warm > 0 and step < warm:
        return (step + 1) / warm
    epoch = step // steps_per_epoch
    if schedule in ("none", "constant"):
        return 1.0
    if schedule == "multistep":
        passed = sum(1 for m in cfg["milestones"] or [] if epoch >= int(m))
        return float(cfg["gamma"]) ** passed
    if schedule == "cosine":
        total = max(1, epochs * steps_per_epoch - warm)
        t = min(step - warm, total)
        floor = float(cfg["min_lr"]) / float(cfg["lr"]) if cfg.get("min_lr") else 0.0
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t / total))
    if schedule == "cosine-restarts":
        period, mult = int(cfg.get("restart_epochs", 10)), int(cfg.get("restart_mult", 1))
        t_cur = epoch
        while t_cur >= period:  # the periods already finished
            t_cur -= period
            period *= mult
        floor = float(cfg.get("min_lr", 0.0)) / float(cfg["lr"])
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t_cur / period))
    if schedule == "linear-decay":
        start = int(cfg.get("decay_start", 0))
        if epoch < start:
            return 1.0
        return max(0.0, (epochs - epoch) / max(1, epochs - start))
    raise UserError(f"unknown optim.schedule {cfg['schedule']!r}; valid: {', '.join(SCHEDULES)}")


def beta1_at(step: int, *, steps_per_epoch: int, cfg: Mapping[str, Any]) -> float | None:
    """Adam's beta1 for optimisation step ``step``, or ``None`` where the schedule leaves it alone:
    with ``schedule: linear-decay`` and ``decay_beta1`` set, ``betas[0]`` before epoch ``decay_start``
    and ``decay_beta1`` from it on (per epoch, as the Co-teaching code's ``beta1_plan``:
    ``mom1 = 0.9`` then ``mom2 = 0.1``, set with the lr at the start of each epoch)."""
    if str(cfg["schedule"]).lower() != "linear-decay" or cfg.get("decay_beta1") is None:
        return None
    if step // steps_per_epoch >= int(cfg.get("decay_start", 0)):
        return float(cfg["decay_beta1"])
    return float(cfg["betas"][0])


class RunScheduler(torch.optim.lr_scheduler.LambdaLR):
    """:class:`~torch.optim.lr_scheduler.LambdaLR` that also sets Adam's beta1 of every parameter
    group at each step from ``beta1_fn(step)`` (``None``: left alone). ``beta1_fn`` is not part of
    :meth:`state_dict` (checkpoints hold tensors and plain values only); the betas themselves are in
    the optimiser's state, and the next :meth:`step` sets them from the step count again."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr_lambda: Any, beta1_fn: Any = None) -> None:
        self.beta1_fn = beta1_fn
        super().__init__(optimizer, lr_lambda)

    def apply_beta1(self) -> None:
        """Set beta1 of every parameter group for the current step (``last_epoch``)."""
        b1 = None if self.beta1_fn is None else self.beta1_fn(self.last_epoch)
        if b1 is not None:
            for group in self.optimizer.param_groups:
                group["betas"] = (b1, group["betas"][1])

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        super().step() if epoch is None else super().step(epoch)
        self.apply_beta1()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.pop("beta1_fn", None)
        return state


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], *, steps_per_epoch: int,
                    epochs: int) -> RunScheduler:
    """A :class:`RunScheduler` stepped once per optimisation step (the per-epoch schedules change
    at epoch boundaries); refuses (one line) ``decay_beta1`` for an optimiser without betas."""
    lr_factor(0, steps_per_epoch=steps_per_epoch, epochs=epochs, cfg=cfg)  # validate early
    beta1 = None
    if beta1_at(0, steps_per_epoch=steps_per_epoch, cfg=cfg) is not None:
        if not all("betas" in g for g in optimizer.param_groups):
            raise UserError(f"optim.decay_beta1 needs optim.name=adam (it switches Adam's beta1); "
                            f"got optim.name={cfg['name']}")
        beta1 = lambda s: beta1_at(s, steps_per_epoch=steps_per_epoch, cfg=cfg)  # noqa: E731
    return RunScheduler(
        optimizer, lambda s: lr_factor(s, steps_per_epoch=steps_per_epoch, epochs=epochs, cfg=cfg), beta1
    )
