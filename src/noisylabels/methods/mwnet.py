"""Meta-Weight-Net (Shu et al., NeurIPS 2019) with a clean or noisy meta set (Ghosh & Lan, WACV 2021).

Presets: ``mwnet`` (MW-Net*: clean meta set, CE meta loss), ``mnw-net`` (noisy meta set, CE) and
``rmnw-net`` (noisy meta set, MAE meta loss: the WACV paper's robust meta loss, whose expected
meta-gradient under uniform meta-label noise is (1 - eta) times the clean one, Theorem 1).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..meta import assign_grads, meta_gradient_double_backward, meta_gradient_jvp
from .base import register_method
from .reweighting import ReweightingMethod

__all__ = ["WeightNet", "MetaWeightNet", "META_GRADIENTS"]

#: ``meta_gradient`` option -> engine function (same gradient, different cost)
META_GRADIENTS = {
    "jvp": meta_gradient_jvp,
    "jvp-func": functools.partial(meta_gradient_jvp, jvp_backend="func"),
    "double-backward": meta_gradient_double_backward,
}


class WeightNet(nn.Module):
    """The weighting function W(l; phi): MLP 1 -> hidden -> 1, ReLU, sigmoid output (MW-Net Sec. 3)."""

    def __init__(self, hidden: int = 100) -> None:
        super().__init__()
        self.fc1 = nn.Linear(1, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(loss.reshape(-1, 1))))).reshape(-1)


@register_method("mwnet", help="Meta-Weight-Net (MW-Net*: clean meta set, CE meta loss; Shu et al. 2019)")
class MetaWeightNet(ReweightingMethod):
    """Meta-Weight-Net: per-sample weights ``W(l_i; phi)`` of the detached CE loss, learned bilevel.

    Each step (Shu et al. 2019, Eqs. 4-6; the WACV paper's Eq. 4): a virtual step
    ``theta_hat(phi)`` of the run's real SGD on ``L_train = sum_i W(l_i; phi) l_i / n`` (or
    normalised by ``sum_i W``), the meta-gradient ``dL_meta(theta_hat(phi))/dphi`` by one JVP
    (:func:`noisylabels.meta.meta_gradient_jvp`, exact, no double backward through the network),
    a step of phi's optimiser, then the real step with the updated phi reusing the training
    forward. ``l_i`` is the per-sample cross-entropy; the ``loss`` config section is not used.

    Parameters
    ----------
    meta_loss:
        ``'ce'`` (MW-Net, MNW-Net) or ``'mae'`` (RMNW-Net), or any registered loss; ``None``: the
        preset's.
    normalize:
        ``'sum'`` (default): ``sum_i W_i l_i / sum_i W_i`` inside the virtual step and the real
        step, as the official WRN-28-10 script (the protocol of the paper's uniform and flip
        tables, which Ghosh & Lan follow) does; ``'none'``: ``sum_i W_i l_i / n``, the paper's
        Eq. 2 as written and the official ResNet-32 script. Why ``'sum'`` is the default: without
        it, the one-step meta-gradient also rewards scaling every weight up (a larger effective
        step lowers the meta loss greedily), and on short runs the sigmoid saturates at 1 with the
        high-loss (noisy) samples on the flat side, so the learned function comes out *increasing*
        and the weights rank noisy samples above clean ones (see ``benchmarks/mwnet_normalize.py``).
    hidden:
        Hidden width of the weight net (MW-Net: 100).
    wnet_lr, wnet_weight_decay, wnet_optimizer:
        Optimiser of phi: the official code and Ghosh & Lan use Adam, lr 1e-3, weight decay 1e-4.
    meta_interval:
        Meta step every k-th training step (other steps train with the current phi).
    delayed:
        Approximation (MLC's trick, Wang et al. 2021): the real step applies the virtual step's
        gradient, i.e. the weights of the pre-update phi, and saves one backward pass.
    meta_gradient:
        ``'jvp'`` (default: one forward-mode pass on the training forward's graph, see
        :mod:`noisylabels.meta.graph_jvp`), ``'jvp-func'`` (the same pass by
        :func:`torch.func.jvp`, which re-runs the forward) or ``'double-backward'`` (the official
        code's reference path). All three give the same gradient up to rounding; the last two are
        for tests and benchmarks.
    meta_batch_size:
        As :class:`ReweightingMethod`.
    """

    default_meta_loss = "ce"

    def __init__(self, *, meta_loss: str | None = None, normalize: str = "sum", hidden: int = 100, wnet_lr: float = 1e-3,
                 wnet_weight_decay: float = 1e-4, wnet_optimizer: str = "adam", meta_interval: int = 1,
                 delayed: bool = False, meta_gradient: str = "jvp", meta_batch_size: int | None = None) -> None:
        super().__init__(meta_loss=meta_loss or self.default_meta_loss, meta_batch_size=meta_batch_size)
        if normalize not in ("none", "sum"):
            raise UserError(f"mwnet: normalize must be 'none' or 'sum', got {normalize!r}")
        if wnet_optimizer not in ("adam", "sgd"):
            raise UserError(f"mwnet: wnet_optimizer must be 'adam' or 'sgd', got {wnet_optimizer!r}")
        if not isinstance(meta_interval, int) or meta_interval < 1:
            raise UserError(f"mwnet: meta_interval must be an integer >= 1, got {meta_interval!r}")
        if meta_gradient not in META_GRADIENTS:
            raise UserError(f"mwnet: meta_gradient must be one of {', '.join(META_GRADIENTS)}; got {meta_gradient!r}")
        self.normalize, self.meta_interval, self.delayed = normalize, meta_interval, bool(delayed)
        self._meta_grad_fn = META_GRADIENTS[meta_gradient]
        self.wnet = WeightNet(int(hidden))
        self._opt_cfg = (wnet_optimizer, float(wnet_lr), float(wnet_weight_decay))

    def setup(self, ctx) -> None:
        super().setup(ctx)
        with torch.random.fork_rng(devices=[]):  # deterministic init, global RNG untouched
            torch.manual_seed(int(ctx.cfg["seed"]))
            for layer in (self.wnet.fc1, self.wnet.fc2):
                layer.reset_parameters()
        self.wnet.to(ctx.device)
        name, lr, wd = self._opt_cfg
        params = list(self.wnet.parameters())
        self.wnet_opt = (torch.optim.Adam(params, lr=lr, weight_decay=wd) if name == "adam"
                         else torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd))

    def batch_weights(self, ce: torch.Tensor) -> torch.Tensor:
        """``W(l_i; phi)`` of the detached losses, normalised as configured (mean 1 for ``'sum'``)."""
        w = self.wnet(ce.detach())
        if self.normalize == "sum":
            w = w * (len(w) / w.sum().clamp_min(1e-12))
        return w

    def loss_layer(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The per-sample training loss ``W(l_i; phi) l_i``; phi enters only through the weights."""
        ce = F.cross_entropy(z, y, reduction="none")
        return self.batch_weights(ce) * ce

    def train_step(self, ctx, x, y, index) -> dict[str, float]:
        meta_now = ctx.step % self.meta_interval == 0
        if meta_now:
            mx, my = self.next_meta_batch(ctx)
            res = self._meta_grad_fn(ctx.model, ctx.optimizer, x, y, self.loss_layer, mx, my, self.meta_loss,
                                     list(self.wnet.parameters()), keep_graph=True)
            if self.delayed:
                # apply the virtual step's gradient (pre-update phi) as the real step
                ctx.optimizer.zero_grad(set_to_none=True)
                for name, p in ctx.model.named_parameters():
                    g = res.train_grads.get(name) if res.train_grads else None
                    if g is not None:
                        p.grad = g
                ctx.clip_and_step()
                with torch.no_grad():
                    w = self.batch_weights(F.cross_entropy(res.train_logits.detach(), y, reduction="none"))
                loss = res.train_losses.mean()
            self.wnet_opt.zero_grad(set_to_none=True)
            assign_grads(list(self.wnet.parameters()), res.meta_grads)
            self.wnet_opt.step()
            z = res.train_logits
        else:
            z = ctx.model(x)
        if not (meta_now and self.delayed):
            ce = F.cross_entropy(z, y, reduction="none")
            with torch.no_grad():
                w = self.batch_weights(ce)
            loss = (w * ce).mean()
            ctx.backward_and_step(loss)
        self.record_weights(index, w)
        return {"loss": float(loss.detach()), "correct": float((z.detach().argmax(1) == y).sum()),
                "count": float(y.numel())}

    def weight_function(self, losses: torch.Tensor) -> torch.Tensor:
        """W(l) on a grid of losses (for the plot of the learned weighting function)."""
        with torch.no_grad():
            return self.wnet(losses.to(next(self.wnet.parameters()).device)).cpu()

    def finalize(self, ctx) -> dict[str, Any]:
        out = super().finalize(ctx)
        from ..eval.plots import plot_weight_function

        grid = torch.linspace(0, 10, 201)
        plot_weight_function(grid.numpy(), self.weight_function(grid).numpy(),
                             ctx.recorder.path("weight_function.png"),
                             title=f"{ctx.cfg['method']['name']}: learned weighting function (final phi)")
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "wnet": self.wnet.state_dict(), "wnet_opt": self.wnet_opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "wnet" in state:
            self.wnet.load_state_dict(state["wnet"])
            self.wnet_opt.load_state_dict(state["wnet_opt"])


@register_method("mnw-net", help="Meta-Weight-Net with a noisy meta set and CE meta loss (Ghosh & Lan 2021)")
class MNWNet(MetaWeightNet):
    """MW-Net trained on a *noisy* meta set (``data.meta_set: noisy``) with the CE meta loss."""

    meta_set_kind = "noisy"


@register_method("rmnw-net", help="robust MW-Net: noisy meta set, MAE meta loss (Ghosh & Lan, WACV 2021)")
class RMNWNet(MetaWeightNet):
    """RMNW-Net (Ghosh & Lan 2021): noisy meta set, MAE meta loss (Theorem 1: robust to uniform noise)."""

    meta_set_kind = "noisy"
    default_meta_loss = "mae"
