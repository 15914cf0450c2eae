"""Robust losses for learning with noisy labels.

Registered names (``list_losses()``): ``ce``, ``mae``, ``gce`` (alias ``lq``),
``truncated-lq``, ``sce`` (alias ``sl``), ``js``, ``polysoft``, ``bootstrap-soft``,
``bootstrap-hard``, ``forward``, ``focal``.

Functional form: ``get_loss_fn(name)(logits, target, *, reduction='mean', **hp)``;
module form: ``create_loss(name, **hp)`` (a :class:`Loss`). Every hyperparameter accepts a
float or a per-sample tensor of shape (B,) and is differentiable where the maths allows.
Helpers for the truncated-Lq method (``truncated_lq_weighted``, ``prune_mask``) and the
forward-correction transition estimator (``estimate_transition``) are exported too, and SimCLR's
contrastive loss ``nt_xent`` (two views' projections, not a classification loss: not registered).
"""

from __future__ import annotations

from .functional import (
    LOG_1E_4,
    LOSSES,
    bootstrap_hard_loss,
    bootstrap_soft_loss,
    cross_entropy,
    focal_loss,
    forward_loss,
    gce_loss,
    js_loss,
    mae_loss,
    polysoft_loss,
    prune_mask,
    sce_loss,
    truncated_lq_loss,
    truncated_lq_weighted,
)
from .contrastive import contrastive_logits, nt_xent
from .module import Loss, create_loss, get_loss_fn, list_losses
from .transition import estimate_transition

__all__ = [
    "LOSSES",
    "LOG_1E_4",
    "Loss",
    "create_loss",
    "get_loss_fn",
    "list_losses",
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
    "estimate_transition",
    "contrastive_logits",
    "nt_xent",
]
