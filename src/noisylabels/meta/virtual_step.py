"""The virtual ("look-ahead") step of the bilevel methods: one step of the real SGD optimiser.

Meta-Weight-Net (Shu et al. 2019, Eq. 4; Ghosh & Lan 2021, Eq. 4), L2RW (Ren et al. 2018, Eq. 3)
and L2B (Zhou et al. 2022) all differentiate a meta loss through one optimisation step
``theta_hat(phi) = theta - lr * d(phi)``. Here that step is exactly the step the run's
:class:`torch.optim.SGD` would take (momentum, dampening, weight decay, Nesterov, the *current*
learning rate after the scheduler, the current momentum buffers), so the virtual model is the
model the real step would produce.

``torch.optim.SGD`` (``_single_tensor_sgd``), for each parameter with a gradient ``grad``::

    g    = grad + weight_decay * theta
    buf' = g                                    if there is no momentum buffer yet (first step)
         = momentum * buf + (1 - dampening) * g otherwise
    d    = g + momentum * buf'   (nesterov)     or  buf'   (momentum > 0)   or  g   (momentum = 0)
    theta_hat = theta - lr * d

(``maximize=True`` negates ``grad`` first.) Only ``grad`` depends on the meta-parameters: the
weight-decay term and the old buffer do not. Hence ``d d / d phi = c * d grad / d phi`` with the
*direction scale* ``c`` of :func:`sgd_direction_scale`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..errors import UserError

__all__ = [
    "check_sgd",
    "SGDHyperparams",
    "sgd_hyperparams",
    "sgd_direction_scale",
    "sgd_virtual_step",
    "VirtualStep",
    "optimizer_virtual_step",
    "SGDStepSetting",
    "sgd_step_settings",
    "lookahead_weights",
]


@dataclass(frozen=True)
class SGDHyperparams:
    """The hyperparameters of one ``torch.optim.SGD`` parameter group (``lr`` is the current one)."""

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    maximize: bool = False

    def direction_scale(self, *, first_step: bool) -> float:
        """:func:`sgd_direction_scale` for this group."""
        return sgd_direction_scale(self.momentum, self.nesterov, first_step, dampening=self.dampening,
                                   maximize=self.maximize)


def check_sgd(optimizer: torch.optim.Optimizer) -> None:
    """A one-line :class:`~noisylabels.errors.UserError` unless ``optimizer`` is a ``torch.optim.SGD``
    (the virtual step is exactly one step of the run's SGD)."""
    if not isinstance(optimizer, torch.optim.SGD):
        raise UserError(f"meta methods need SGD (optim.name: sgd); got {type(optimizer).__name__}")


def _group_hyperparams(group: Mapping) -> SGDHyperparams:
    lr = group["lr"]
    lr = float(lr.item()) if isinstance(lr, torch.Tensor) else float(lr)
    return SGDHyperparams(lr=lr, momentum=float(group.get("momentum", 0.0)),
                          dampening=float(group.get("dampening", 0.0)),
                          weight_decay=float(group.get("weight_decay", 0.0)),
                          nesterov=bool(group.get("nesterov", False)), maximize=bool(group.get("maximize", False)))


def sgd_hyperparams(optimizer: torch.optim.Optimizer, *, group: int = 0) -> SGDHyperparams:
    """Hyperparameters of one parameter group of a ``torch.optim.SGD``, with its current ``lr``.

    Parameters
    ----------
    optimizer:
        The run's optimiser; anything other than :class:`torch.optim.SGD` raises :class:`UserError`.
    group:
        Index into ``optimizer.param_groups``.
    """
    check_sgd(optimizer)
    if not 0 <= group < len(optimizer.param_groups):
        raise UserError(f"optimizer has {len(optimizer.param_groups)} parameter groups; no group {group}")
    return _group_hyperparams(optimizer.param_groups[group])


def sgd_direction_scale(momentum: float, nesterov: bool, first_step: bool, *, dampening: float = 0.0,
                        maximize: bool = False) -> float:
    """``c = d(direction) / d(loss gradient)`` of one ``torch.optim.SGD`` step.

    With ``theta_hat = theta - lr * d`` this gives ``d theta_hat / d phi = -lr * c * d grad / d phi``
    (Shu et al. 2019, Eq. 4 with the real optimiser in place of plain SGD).

    * ``momentum == 0``: ``d = g``, ``c = 1``.
    * momentum, first step (torch sets ``buf' = g``, ignoring dampening): ``c = 1``.
    * momentum, later steps (``buf' = momentum * buf + (1 - dampening) * g``): ``c = 1 - dampening``.
    * Nesterov (``d = g + momentum * buf'``; torch requires ``dampening = 0``): ``c = 1 + momentum``.
    * ``maximize=True`` negates ``c``.
    """
    if momentum == 0:
        c = 1.0
    elif nesterov:
        c = 1.0 + momentum
    else:
        c = 1.0 if first_step else 1.0 - dampening
    return -c if maximize else c


def sgd_virtual_step(params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor | None],
                     momentum_buffers: Mapping[str, torch.Tensor | None] | None = None, *, lr: float,
                     momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                     dampening: float = 0.0, maximize: bool = False) -> dict[str, torch.Tensor]:
    """``theta_hat``: the parameters after one ``torch.optim.SGD`` step, computed out of place.

    Uses the same tensor operations as ``torch.optim.SGD`` (single-tensor path), so the result
    equals a real ``optimizer.step()``; nothing is modified (momentum buffers included). It is
    differentiable: with ``grads`` built by ``autograd.grad(..., create_graph=True)`` the result
    carries the graph ``theta_hat(phi)`` (the reference double-backward path).

    Parameters
    ----------
    params:
        ``name -> theta``.
    grads:
        ``name -> gradient of the training loss`` (``None``: no gradient, the parameter is not
        stepped, as ``optimizer.step`` skips parameters whose ``.grad`` is ``None``).
    momentum_buffers:
        ``name -> momentum buffer`` from the optimiser state (``None`` or missing: first step).
    lr, momentum, weight_decay, nesterov, dampening, maximize:
        As in :class:`torch.optim.SGD` (see :func:`sgd_hyperparams`).

    Returns
    -------
    dict
        ``name -> theta_hat`` for every entry of ``params``.
    """
    bufs = momentum_buffers or {}
    out: dict[str, torch.Tensor] = {}
    for name, p in params.items():
        grad = grads.get(name)
        if grad is None:
            out[name] = p
            continue
        g = -grad if maximize else grad
        if weight_decay != 0:
            g = g.add(p, alpha=weight_decay)
        if momentum != 0:
            buf = bufs.get(name)
            buf = g if buf is None else buf.mul(momentum).add(g, alpha=1 - dampening)
            g = g.add(buf, alpha=momentum) if nesterov else buf
        out[name] = p.add(g, alpha=-lr)
    return out


@dataclass
class VirtualStep:
    """Result of :func:`optimizer_virtual_step`.

    Attributes
    ----------
    params:
        ``name -> theta_hat`` for every parameter passed in (unstepped ones unchanged).
    scale:
        ``name -> lr * c`` for the stepped parameters: ``d theta_hat / d phi = -scale * d grad / d phi``.
    """

    params: dict[str, torch.Tensor]
    scale: dict[str, float]


def optimizer_virtual_step(optimizer: torch.optim.Optimizer, params: Mapping[str, torch.Tensor],
                           grads: Mapping[str, torch.Tensor | None], *,
                           values: Mapping[str, torch.Tensor] | None = None) -> VirtualStep:
    """The step ``optimizer.step()`` would take, per parameter group, without taking it.

    Parameters
    ----------
    optimizer:
        A :class:`torch.optim.SGD` (others raise :class:`UserError`). Its current learning rates
        and momentum buffers are read, never written.
    params:
        ``name -> parameter`` of the model (the objects the optimiser holds; used to find each
        parameter's group and state). Parameters that the optimiser does not hold are not stepped.
    grads:
        ``name -> training-loss gradient`` (``None`` or missing: not stepped).
    values:
        ``name -> theta`` to step from (default: ``params`` themselves). Pass detached values for a
        step without a graph, or the parameters for a differentiable one.

    Returns
    -------
    VirtualStep
        ``theta_hat`` and, per stepped parameter, ``lr * c`` (:func:`sgd_direction_scale`).
    """
    check_sgd(optimizer)
    values = params if values is None else values
    group_of: dict[int, int] = {}
    for gi, group in enumerate(optimizer.param_groups):
        for p in group["params"]:
            group_of[id(p)] = gi
    by_group: dict[int, list[str]] = {}
    for name, p in params.items():
        gi = group_of.get(id(p))
        if gi is not None and grads.get(name) is not None:
            by_group.setdefault(gi, []).append(name)
    out = dict(values)
    scale: dict[str, float] = {}
    for gi, names in by_group.items():
        hp = _group_hyperparams(optimizer.param_groups[gi])
        bufs = {}
        if hp.momentum != 0:
            for n in names:
                state = optimizer.state.get(params[n])
                bufs[n] = None if not state else state.get("momentum_buffer")
        out.update(sgd_virtual_step({n: values[n] for n in names}, {n: grads[n] for n in names}, bufs,
                                    lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay,
                                    nesterov=hp.nesterov, dampening=hp.dampening, maximize=hp.maximize))
        for n in names:
            scale[n] = hp.lr * hp.direction_scale(first_step=bufs.get(n) is None)
    return VirtualStep(params=out, scale=scale)


#: one parameter's SGD step: ``(lr, momentum, dampening, weight_decay, nesterov, maximize, first_step)``
#: (``first_step``: momentum on and no buffer yet, so torch sets ``buf = g``)
SGDStepSetting = tuple[float, float, float, float, bool, bool, bool]


def sgd_step_settings(optimizer: torch.optim.Optimizer,
                      params: Mapping[str, torch.Tensor]) -> dict[str, SGDStepSetting]:
    """The setting of the step ``optimizer.step()`` is about to take, per parameter it holds (read only).

    Read *before* the step (``first_step`` is whether the momentum buffer is still empty).
    """
    check_sgd(optimizer)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out: dict[str, SGDStepSetting] = {}
    for name, p in params.items():
        group = group_of.get(id(p))
        if group is None:
            continue
        hp = _group_hyperparams(group)
        state = optimizer.state.get(p)
        first = hp.momentum != 0 and (not state or state.get("momentum_buffer") is None)
        out[name] = (hp.lr, hp.momentum, hp.dampening, hp.weight_decay, hp.nesterov, hp.maximize, bool(first))
    return out


def lookahead_weights(settings: list[SGDStepSetting] | tuple[SGDStepSetting, ...]) -> list[float]:
    r"""FPMG's discounts for one parameter over a k-step window of ``torch.optim.SGD`` steps, exact when
    the training loss's Hessian in that parameter is the identity (EMLC Eq. 11 for the real optimiser).

    ``settings``: the window's steps ``tau = 0..k-1`` oldest first; the last is the step whose scale
    ``s = lr c`` (:func:`sgd_direction_scale`) built the tangent. Returns ``a_tau / a_{k-1}`` per step
    (the last is 1), where ``a_tau`` is the derivative of ``w_k`` with respect to a unit change of step
    ``tau``'s gradient, through the torch SGD recursion with ``H_ww = I`` (``W = dw/dphi``, ``M`` the
    buffer's derivative, ``B`` step tau's ``d^2 L / dw dphi``, ``sigma = -1`` under ``maximize``)::

        dg_t = (sigma + weight_decay) W_t + sigma [t = tau] B           g = sigma grad + wd w
        M_t  = dg_t  (first step: buf = g)   or   momentum M_{t-1} + (1 - dampening) dg_t
        D_t  = dg_t + momentum M_t (Nesterov)   or   M_t (momentum)   or   dg_t (no momentum)
        W_{t+1} = W_t - lr_t D_t,        W_tau = M_{tau-1} = 0

    (the buffer and the weights at the window's start are held constant, as in the one-step
    meta-gradient). Plain SGD without weight decay gives ``(1 - lr)^(k-1-tau)``: EMLC's
    ``gamma = 1 - eta`` (Proposition 2).
    """
    k = len(settings)
    lr, mom, damp, _, nest, maxi, first = settings[-1]
    s_last = lr * sgd_direction_scale(mom, nest, first, dampening=damp, maximize=maxi)
    out = []
    for tau in range(k):
        w = m = 0.0
        for t in range(tau, k):
            lr, mom, damp, wd, nest, maxi, first = settings[t]
            sigma = -1.0 if maxi else 1.0
            dg = (sigma + wd) * w + (sigma if t == tau else 0.0)
            if mom == 0:
                d = dg
            else:
                m = dg if first else mom * m + (1.0 - damp) * dg
                d = dg + mom * m if nest else m
            w = w - lr * d
        out.append(-w / s_last if s_last else 0.0)
    return out
