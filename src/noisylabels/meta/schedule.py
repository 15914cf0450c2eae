"""When a meta-network updates and what each update accumulates: one strategy per schedule.

A meta method's step asks its schedule three things: is this step a meta step (a meta batch and a
meta-gradient, :meth:`MetaSchedule.is_meta_step`); what a plain step leaves behind
(:meth:`MetaSchedule.on_plain_step`); and, given the live step's meta-gradient, what to apply now
(:meth:`MetaSchedule.accumulate`, ``None``: nothing yet). The schedules:

* :class:`EveryK` - a meta step every ``k``-th step (MW-Net's and NARL's ``meta_interval``), the
  live meta-gradient applied as is.
* :class:`LookaheadWindow` - EMLC's k-step look-ahead (Taraday & Baskin 2023, Algorithm 1 and
  Eq. 11): phi fixed for k real steps; at ``t mod k = k - 1`` the live meta-gradient plus the
  discounted contributions of the k - 1 stored steps (:func:`~noisylabels.meta.lookahead_contributions`, FPMG).
* :class:`DiscountedAccumulation` - MLC's k-step (Zheng et al. 2021, the code's ``gradient_steps``):
  a meta-gradient ``G_t`` every step, ``A_t = G_t + gamma_t A_{t-1}`` with
  ``gamma_t = <(1 - s) g_w(w_{t+1}), g_w(w_t)> / ||g_w(w_t)||^2`` (training-loss Hessian taken as the
  identity), applied and reset every k-th step.

State (:meth:`MetaSchedule.state_dict`) is tensors and plain containers under the keys the methods'
checkpoints used before the schedules existed (``window``, ``mlc_acc``), so those still load.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from .engine import StoredStep, lookahead_contributions
from .functional import functional_logits, params_and_buffers, replicated_batch
from .virtual_step import sgd_step_settings

__all__ = ["MetaSchedule", "EveryK", "LookaheadWindow", "DiscountedAccumulation"]

Tensor = torch.Tensor


class MetaSchedule:
    """Base: a meta step at every step, the live meta-gradient applied as is (no state)."""

    #: whether every step is a meta step (a clean batch is drawn at every step)
    meta_every_step: bool = True
    #: whether :meth:`accumulate` needs the engine's tangent (a JVP meta-gradient)
    needs_tangent: bool = False

    def is_meta_step(self, step: int) -> bool:
        """Whether step ``step`` draws a meta batch and computes a meta-gradient."""
        return True

    def on_plain_step(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                      index: Tensor) -> None:
        """Called before the real step of a step that is not a meta step."""

    def before_meta_gradient(self, *, model: nn.Module, meta_x: Tensor, meta_y: Tensor,
                             meta_loss: Callable[[Tensor, Tensor], Tensor]) -> None:
        """Called with each meta batch before the meta-gradient (at the step's weights)."""

    def accumulate(self, step: int, grads: list[Tensor], res: Any, *, model: nn.Module,
                   optimizer: torch.optim.Optimizer, phi: Sequence[Tensor],
                   loss_layer: Callable[[Tensor, StoredStep], Tensor]) -> list[Tensor] | None:
        """The meta-gradient to apply now from the live one (``res``: the engine's
        :class:`~noisylabels.meta.MetaGradientStep`; a :class:`~noisylabels.meta.JVPMetaGradientStep`
        where :attr:`needs_tangent`), or ``None`` to apply nothing at this step."""
        return grads

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any], *, device: torch.device,
                        model: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Restore from a method's state (the keys this schedule wrote; others ignored)."""


class EveryK(MetaSchedule):
    """A meta step at steps ``t`` with ``t mod k = 0``."""

    def __init__(self, k: int = 1) -> None:
        self.k = int(k)
        self.meta_every_step = self.k == 1

    def is_meta_step(self, step: int) -> bool:
        return step % self.k == 0


def _setting(values: Sequence[Any]) -> tuple:
    """A stored step's SGD setting back from a checkpoint (lr, momentum, dampening, weight decay, then three flags)."""
    lr, mom, damp, wd, nest, maxi, first = values
    return (float(lr), float(mom), float(damp), float(wd), bool(nest), bool(maxi), bool(first))


def _empty() -> Tensor:
    return torch.zeros(0, dtype=torch.uint8)


class LookaheadWindow(MetaSchedule):
    """EMLC's k-step window (FPMG): store k - 1 plain steps, then one update from all k."""

    meta_every_step = False
    needs_tangent = True

    def __init__(self, k: int) -> None:
        self.k = int(k)
        self.window: list[StoredStep] = []

    def is_meta_step(self, step: int) -> bool:
        return step % self.k == self.k - 1

    def on_plain_step(self, *, model, optimizer, x, y, index) -> None:  # keep w^(tau) and the batch for Eq. 11
        self.window.append(StoredStep.capture(model, x=x, y=y, index=index, optimizer=optimizer))

    def accumulate(self, step, grads, res, *, model, optimizer, phi, loss_layer):
        if self.window:  # Eq. 11: the stored steps of the window, discounted (FPMG)
            extra = lookahead_contributions(model, steps=self.window, tangent=res.tangent or {}, phi=phi, offset=1,
                                            optimizer=optimizer, loss_layer=loss_layer)
            grads = [g + e for g, e in zip(grads, extra)]
            self.window = []
        return grads

    def state_dict(self) -> dict[str, Any]:  # a window may span an epoch end: tensors only
        return {"window": [{"x": st.x, "y": st.y, "index": st.index, "params": st.params,
                            "rng": st.rng[0] if st.rng is not None else _empty(),
                            "cuda_rng": st.rng[1] if st.rng is not None and st.rng[1] is not None else _empty(),
                            "sgd": {n: list(v) for n, v in (st.sgd or {}).items()}} for st in self.window]}

    def load_state_dict(self, state, *, device, model=None, optimizer=None) -> None:
        if "window" not in state:
            return
        self.window = [StoredStep(x=w["x"].to(device), y=w["y"].to(device), index=w["index"].to(device),
                                  params={n: t.to(device) for n, t in w["params"].items()},
                                  rng=(w["rng"], w["cuda_rng"] if w["cuda_rng"].numel() else None, device)
                                  if w["rng"].numel() else None,
                                  sgd={n: _setting(v) for n, v in w["sgd"].items()} if "sgd" in w
                                  else _current_sgd_settings(model, optimizer))
                       for w in state["window"]]


def _current_sgd_settings(model: nn.Module | None, optimizer: torch.optim.Optimizer | None) -> dict[str, tuple] | None:
    """A window stored before steps kept their SGD setting: the optimiser's current one (buffers
    present), so such a checkpoint still resumes (its first window's discounts assume it)."""
    if model is None or optimizer is None:
        return None
    settings = sgd_step_settings(optimizer, dict(model.named_parameters()))
    return {n: v[:-1] + (False,) for n, v in settings.items()}


class DiscountedAccumulation(MetaSchedule):
    """MLC's k-step: a meta-gradient every step, discounted sum applied every k-th step."""

    needs_tangent = True

    def __init__(self, k: int) -> None:
        if int(k) < 2:
            raise UserError(f"DiscountedAccumulation: k must be at least 2, got {k}")
        self.k = int(k)
        self.acc: list[Tensor] | None = None
        self.g_prev: dict[str, Tensor] | None = None

    def before_meta_gradient(self, *, model, meta_x, meta_y, meta_loss) -> None:
        """``g_w(w_t)``: one clean forward/backward, functional (BatchNorm statistics untouched)."""
        params, buffers = params_and_buffers(model)
        names = [n for n, p in params.items() if p.requires_grad]
        with torch.enable_grad():
            with replicated_batch():
                loss = meta_loss(functional_logits(model, params, buffers, meta_x), meta_y).mean()
            g = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
        self.g_prev = {n: gi.detach() for n, gi in zip(names, g) if gi is not None}

    def discount(self, res: Any, device: torch.device | None = None) -> Tensor:
        """``<(1 - s) g_w(w_{t+1}), g_w(w_t)> / ||g_w(w_t)||^2`` (the code's ``gamma``, ``H_w = 1``)."""
        g = self.g_prev or {}
        tangent, scale = res.tangent or {}, res.scale or {}
        num = den = torch.zeros((), device=device)
        for n, gp in g.items():
            den = den + (gp.float() ** 2).sum()
            if n in tangent and scale.get(n):
                v = tangent[n].float() / scale[n]  # g_w(w_{t+1})
                num = num + ((1.0 - scale[n]) * v * gp.float()).sum()
        return num / den.clamp_min(1e-30)

    def accumulate(self, step, grads, res, *, model, optimizer, phi, loss_layer):
        gamma = self.discount(res, grads[0].device if grads else None)
        acc = [g.clone() for g in grads] if self.acc is None else [g + gamma * a for g, a in zip(grads, self.acc)]
        if (step + 1) % self.k == 0:
            self.acc = None
            return acc
        self.acc = acc
        return None

    def state_dict(self) -> dict[str, Any]:
        return {} if self.acc is None else {"mlc_acc": list(self.acc)}

    def load_state_dict(self, state, *, device, model=None, optimizer=None) -> None:
        self.acc = [t.to(device) for t in state["mlc_acc"]] if "mlc_acc" in state else None
