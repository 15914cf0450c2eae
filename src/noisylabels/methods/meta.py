"""The base of every bilevel method: what MW-Net, RMNW-Net, L2RW, L2B, NARL and EMLC share.

:class:`MetaMethod` owns what every meta method has: a meta set and its batches
(``ctx.next_meta_batch``), the meta loss by name (``'ce'``, or ``'mae'`` for a noisy meta set as
in RMNW-Net), the hypergradient option ``meta_gradient`` (``jvp`` | ``jvp-func`` |
``double-backward``: the same gradient at different cost, :data:`noisylabels.meta.META_GRADIENTS`),
CE warm-up epochs, and the SGD check (the virtual step is the real SGD step).

:class:`MetaNetMethod` adds a meta-network acting at the loss layer, with its optimiser, seeded
initialisation, ``meta_interval`` and ``delayed``, and the one ``train_step`` (virtual step,
meta-gradient by one JVP, meta update, real step). A subclass states its paper's part only::

    @register_method("my-mwnet")
    class MyMWNet(MetaNetMethod):
        own_loss = "ce"
        records = (Record("weight", plain_value=1.0), Record("loss"))
        detection = ("loss", 1.0)             # suspicion = W's input (never -weight: DESIGN.md)

        def build_meta_net(self):             # phi
            return WeightNet(100)

        def loss_layer(self, z, y, *, x, index):   # l_i(z; phi): phi acts only here
            ce = F.cross_entropy(z, y, reduction="none")
            w = self.meta_net(ce.detach())
            self.note(weight=w, loss=ce)      # what the real step trained with
            return w * ce

:class:`ExampleWeightingMethod` is the per-step variant without a meta-network (L2RW, L2B): the
weights are the rectified, normalised meta-gradients with respect to per-example perturbations.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..errors import UserError
from ..losses import get_loss_fn
from ..meta import META_GRADIENTS, assign_grads, meta_gradient, per_example_weights, replicated_batch
from ..meta.schedule import EveryK, LookaheadWindow, MetaSchedule
from ..meta.virtual_step import check_sgd
from .base import Method
from .context import MethodContext, StepOutput, data_parallel
from .options import choice_option, int_option, positive_option

__all__ = ["MetaMethod", "MetaNetMethod", "ExampleWeightingMethod", "meta_loss_fn"]

Tensor = torch.Tensor


def meta_loss_fn(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Per-sample meta loss ``(z, y) -> (m,)`` from the loss registry (e.g. ``'ce'``, ``'mae'``)."""
    fn = get_loss_fn(name)
    return lambda z, y: fn(z, y, reduction="none")


@contextmanager
def frozen(params: Sequence[Tensor]) -> Iterator[None]:
    """Treat ``params`` as constants inside the block (no graph to them, no gradient into them)."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


class MetaMethod(Method):
    """Base of the bilevel methods.

    Parameters
    ----------
    meta_loss:
        Loss of the meta objective on meta batches (a registered loss name); ``None``: the
        preset's (:attr:`default_meta_loss`).
    meta_batch_size:
        Meta batch size (``None``: the training batch size).
    meta_gradient:
        ``'jvp'`` (default: one forward-mode pass on the training forward's graph, see
        :mod:`noisylabels.meta.graph_jvp`), ``'jvp-func'`` (the same pass by :func:`torch.func.jvp`,
        which re-runs the forward) or ``'double-backward'`` (the official codes' reference path).
        All three give the same gradient up to rounding.
    warmup_epochs:
        Epochs of plain mean-CE steps before meta-learning starts.
    """

    needs_meta_set = True
    default_meta_loss = "ce"

    def __init__(self, *, meta_loss: str | None = None, meta_batch_size: int | None = None,
                 meta_gradient: str = "jvp", warmup_epochs: int = 0) -> None:
        super().__init__()
        label = type(self).__name__
        self.meta_loss_name = str(meta_loss or self.default_meta_loss)
        self.meta_loss = meta_loss_fn(self.meta_loss_name)  # validates the name
        if meta_batch_size is not None:
            int_option(label, "meta_batch_size", meta_batch_size, 1)
        self.meta_batch_size = meta_batch_size
        self.meta_gradient = choice_option(label, "meta_gradient", meta_gradient, META_GRADIENTS)
        self.warmup_epochs = int_option(label, "warmup_epochs", warmup_epochs, 0)

    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        check_sgd(ctx.optimizer)

    def in_warmup(self, ctx: MethodContext) -> bool:
        return ctx.epoch < self.warmup_epochs

    def warmup_step(self, ctx: MethodContext, x: Tensor, y: Tensor, index: Tensor) -> StepOutput:
        """A plain mean-CE step (warm-up), recording each record's ``plain_value``."""
        return self.plain_step(ctx, x, y, index, loss_fn=lambda z, t: nn.functional.cross_entropy(z, t, reduction="none"))


class MetaNetMethod(MetaMethod):
    """A meta-network ``phi`` acting at the loss layer, learned through one virtual SGD step.

    Every ``meta_interval``-th step (Shu et al. 2019, Eqs. 4-6): the virtual step
    ``theta_hat(phi)`` of the run's real SGD on ``mean_i loss_layer(z, y)_i``; the meta-gradient
    ``dL_meta(theta_hat(phi))/dphi`` (:func:`noisylabels.meta.meta_gradient`, by ``meta_gradient``);
    a step of phi's optimiser; then the real step with the updated phi, reusing the training
    forward. Other steps train with the current phi.

    Subclasses implement :meth:`build_meta_net` and :meth:`loss_layer`, and declare
    :attr:`~Method.records` (what :meth:`note` receives) and :attr:`~Method.own_loss`.

    Parameters
    ----------
    meta_interval:
        Meta step every k-th training step.
    delayed:
        Approximation (MLC's trick, Wang et al. 2021): the real step applies the virtual step's
        gradient, i.e. the pre-update phi, and saves one backward pass. (For label correction,
        EMLC's Algorithm 1 *is* this order: the student steps with alpha^(t), then the teacher is
        updated from the clean loss at the student's new weights.)
    lookahead:
        k of a k-step look-ahead (EMLC, Taraday & Baskin 2023, Algorithm 1 and Eq. 11): phi is held
        fixed for k real steps and updated once, at steps with ``t mod k = k - 1``, by the
        discounted sum of the k steps' contributions (:func:`noisylabels.meta.lookahead_contributions`,
        FPMG; EMLC's gamma = 1 - lr generalised to the run's SGD: momentum, Nesterov, weight decay,
        each step's lr). An approximation that drops the student's Hessian; needs
        ``meta_interval = 1`` and a JVP ``meta_gradient``. The k - 1 stored student copies are its
        memory cost.
    meta_lr, meta_weight_decay, meta_optimizer, meta_momentum, meta_nesterov:
        phi's optimiser, ``'adam'`` or ``'sgd'``; unset values come from
        :attr:`default_meta_optimizer` (Adam, weight decay 1e-4: the official MW-Net code; a
        preset may state its paper's, e.g. RMNW-Net's SGD).
    meta_loss, meta_batch_size, meta_gradient, warmup_epochs:
        As :class:`MetaMethod`.
    """

    #: the meta-network's optimiser when the options leave it unset (a preset may state its paper's)
    default_meta_optimizer: ClassVar[dict[str, Any]] = {"name": "adam", "weight_decay": 1e-4, "momentum": 0.9,
                                                        "nesterov": False}

    def __init__(self, *, meta_interval: int = 1, delayed: bool = False, meta_lr: float = 1e-3,
                 meta_weight_decay: float | None = None, meta_optimizer: str | None = None,
                 meta_momentum: float | None = None, meta_nesterov: bool | None = None,
                 meta_loss: str | None = None, meta_batch_size: int | None = None, meta_gradient: str = "jvp",
                 warmup_epochs: int = 0, lookahead: int = 1) -> None:
        super().__init__(meta_loss=meta_loss, meta_batch_size=meta_batch_size, meta_gradient=meta_gradient,
                         warmup_epochs=warmup_epochs)
        label = type(self).__name__
        self.lookahead = int_option(label, "lookahead (k)", lookahead, 1)
        if self.lookahead > 1 and (meta_interval != 1 or meta_gradient == "double-backward"):
            raise UserError(f"{label}: a k-step look-ahead (k={lookahead}) needs meta_interval=1 and meta_gradient "
                            f"jvp or jvp-func (got meta_interval={meta_interval}, meta_gradient={meta_gradient})")
        d = self.default_meta_optimizer
        meta_optimizer = d["name"] if meta_optimizer is None else meta_optimizer
        if meta_optimizer not in ("adam", "sgd"):
            raise UserError(f"{label}: meta_optimizer must be 'adam' or 'sgd', got {meta_optimizer!r}")
        positive_option(label, "meta_lr", meta_lr)
        self.meta_interval = int_option(label, "meta_interval", meta_interval, 1)
        #: when phi updates and what an update accumulates (:mod:`noisylabels.meta.schedule`)
        self.schedule: MetaSchedule = LookaheadWindow(self.lookahead) if self.lookahead > 1 else EveryK(self.meta_interval)
        self.delayed = bool(delayed)
        self._opt_cfg = (meta_optimizer, float(meta_lr),
                         float(d["weight_decay"] if meta_weight_decay is None else meta_weight_decay),
                         float(d["momentum"] if meta_momentum is None else meta_momentum),
                         bool(d["nesterov"] if meta_nesterov is None else meta_nesterov))
        self._notes: dict[str, Tensor] = {}
        # built here, not in setup: construction draws from the global RNG the run seeded
        self.meta_net = self.build_meta_net()

    # -- the paper's part --------------------------------------------------------------------------
    def build_meta_net(self) -> nn.Module:
        """The meta-network (its parameters are phi)."""
        raise NotImplementedError

    def loss_layer(self, z: Tensor, y: Tensor, *, x: Tensor, index: Tensor) -> Tensor:
        """Per-sample training losses ``l_i(z; phi)``, shape ``(B,)``; phi acts only here. Call
        :meth:`note` with the per-sample values to record."""
        raise NotImplementedError

    def init_meta_net(self, ctx: MethodContext) -> None:
        """Called in :meth:`setup` after the seeded re-initialisation (inside the same seeded RNG
        block): a paper's own initialisation, or weights from a file."""

    def meta_optimizer_parts(self) -> list[tuple[list[Tensor], float]]:
        """phi in parts, each ``(parameters, lr)`` with an optimiser of its own (the ``meta_*``
        options); default one part at ``meta_lr``. EMLC: the teacher's backbone, and its gate at ``gate_lr``."""
        return [(list(self.meta_net.parameters()), self._opt_cfg[1])]

    def build_meta_optimizers(self) -> list[torch.optim.Optimizer]:
        """phi's optimisers, one per :meth:`meta_optimizer_parts` part."""
        name, _, wd, mom, nesterov = self._opt_cfg
        return [torch.optim.Adam(params, lr=lr, weight_decay=wd) if name == "adam"
                else torch.optim.SGD(params, lr=lr, momentum=mom, weight_decay=wd, nesterov=nesterov and mom > 0)
                for params, lr in self.meta_optimizer_parts()]

    def meta_net_loss(self, ctx: MethodContext, mb: Any) -> Tensor | None:
        """An auxiliary loss of the meta-network on the meta batch, added to the meta-gradient at
        each meta update (EMLC's teacher: supervised CE + gate BCE, Eq. 12); default none."""
        return None

    def apply_meta_gradient(self, ctx: MethodContext, grads: Sequence[Tensor], res: Any, mb: Any) -> None:
        """The meta update: ``grads`` (plus :meth:`meta_net_loss`'s gradient) into phi's optimisers."""
        for opt in self.meta_opts:
            opt.zero_grad(set_to_none=True)
        assign_grads(self.phi, grads)
        with replicated_batch():  # the meta batch: the same on every process (its own BatchNorm statistics)
            aux = self.meta_net_loss(ctx, mb)
        if aux is not None:
            aux.backward()
        for opt in self.meta_opts:
            opt.step()

    def note(self, **values: Tensor) -> None:
        """Values of the current loss-layer call to record (the last call before the real step wins)."""
        self._notes = {k: v.detach() for k, v in values.items()}

    # -- set-up --------------------------------------------------------------------------------------
    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        with torch.random.fork_rng(devices=[]):  # deterministic init, global RNG untouched
            torch.manual_seed(ctx.seed)
            for module in self.meta_net.modules():
                if module is not self.meta_net and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            self.init_meta_net(ctx)
        self.meta_net.to(ctx.device)
        self.meta_opts = self.build_meta_optimizers()

    @property
    def meta_opt(self) -> torch.optim.Optimizer:
        """phi's (first) optimiser: always ``meta_opts[0]``, so a shared meta-network has one."""
        return self.meta_opts[0]

    def share_meta_net(self, owner: "MetaNetMethod") -> None:
        """Train ``owner``'s meta-network with ``owner``'s optimisers (multi-task meta-training, e.g.
        NARL's transfer protocol): afterwards both methods hold the same module *and* the same
        optimiser objects, so every method's meta step moves the shared phi through one optimiser
        state. Call after both are set up."""
        if not isinstance(owner, MetaNetMethod) or type(owner) is not type(self):
            raise UserError(f"share_meta_net: a {type(self).__name__} can share the meta-network of another "
                            f"{type(self).__name__} only, got {type(owner).__name__}")
        self.meta_net = owner.meta_net
        self.meta_opts = owner.meta_opts

    @property
    def phi(self) -> list[Tensor]:
        return list(self.meta_net.parameters())

    # -- the step ------------------------------------------------------------------------------------
    def train_step(self, ctx: MethodContext, x: Tensor, y: Tensor, index: Tensor) -> StepOutput:
        if self.in_warmup(ctx):
            return self.warmup_step(ctx, x, y, index)

        xs, ys, idxs = x, y, index
        if self.schedule.is_meta_step(ctx.step):
            mb = ctx.next_meta_batch(self.meta_batch_size)
            xs, ys, idxs, mb = self.training_batch(ctx, x, y, index, mb)
            self.schedule.before_meta_gradient(model=ctx.model, meta_x=mb.x, meta_y=mb.y, meta_loss=self.meta_loss)

            def layer(z: Tensor, t: Tensor) -> Tensor:
                return self.loss_layer(z, t, x=xs, index=idxs)

            # data-parallel: the virtual step is the real one (the all-reduced mean gradient); each
            # process's meta-gradient is its slice's contribution, all-reduced once below
            dp = data_parallel(ctx)
            res = meta_gradient(ctx.model, ctx.optimizer, how=self.meta_gradient, x=xs, y=ys, loss_layer=layer,
                                meta_x=mb.x, meta_y=mb.y, meta_loss_fn=self.meta_loss, phi=self.phi,
                                grad_reduce=None if dp is None else dp.reduce_grads)
            notes = self._notes  # the schedule's stored steps re-run the loss layer: keep this step's notes
            grads = self.schedule.accumulate(
                ctx.step, list(res.meta_grads), res, model=ctx.model, optimizer=ctx.optimizer, phi=self.phi,
                loss_layer=lambda z, st: self.loss_layer(z, st.y, x=st.x, index=st.index))
            self._notes = notes
            if dp is not None and grads is not None:
                grads = dp.reduce_grads(grads)
            if self.delayed:  # the real step is the virtual step (pre-update phi)
                ctx.optimizer.zero_grad(set_to_none=True)
                for name, p in ctx.model.named_parameters():
                    g = res.train_grads.get(name)
                    if g is not None:
                        p.grad = g
                if dp is None:
                    ctx.clip_and_step()
                else:
                    ctx.clip_and_step(reduced=True)  # train_grads are the all-reduced ones
                self.record(index, **self._notes)
            if grads is not None:  # None: the schedule accumulates (MLC's k-step)
                self.apply_meta_gradient(ctx, grads, res, mb)
            self.after_meta_step(ctx, res)
            if self.delayed:
                return StepOutput(logits=res.train_logits[:len(y)].detach(), loss=res.train_losses.mean())
            z = res.train_logits
        else:
            def layer(z: Tensor, t: Tensor) -> Tensor:
                return self.loss_layer(z, t, x=x, index=index)

            self.schedule.on_plain_step(model=ctx.model, optimizer=ctx.optimizer, x=x, y=y, index=index)
            z = ctx.model(x)
        with frozen(self.phi):
            loss = layer(z, ys).mean()
        ctx.backward_and_step(loss)
        self.record(index, **self._notes)
        return StepOutput(logits=z[:len(y)].detach(), loss=loss.detach())

    def training_batch(self, ctx: MethodContext, x: Tensor, y: Tensor, index: Tensor,
                       mb: Any) -> tuple[Tensor, Tensor, Tensor, Any]:
        """At a meta step: the batch the (virtual and real) step trains on, and the meta batch of the
        meta-gradient (default: both unchanged). MLC's and EMLC's codes can move half of the clean
        batch into the training batch; its rows follow the given ones (records and the loop's
        accounting see the given rows only)."""
        return x, y, index, mb

    def after_meta_step(self, ctx: MethodContext, res: Any) -> None:
        """Called after each meta update with the engine's :class:`~noisylabels.meta.MetaGradientStep`
        (e.g. to log the meta loss)."""

    # -- resume ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"meta_net": self.meta_net.state_dict(), "meta_opt": self.meta_opt.state_dict()}
        if len(self.meta_opts) > 1:
            out["meta_opts"] = [o.state_dict() for o in self.meta_opts[1:]]
        out.update(self.schedule.state_dict())  # keys of the checkpoints before the schedule: "window", "mlc_acc"
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "meta_net" in state:
            self.meta_net.load_state_dict(state["meta_net"])
            self.meta_opt.load_state_dict(state["meta_opt"])
        for opt, sd in zip(self.meta_opts[1:], state.get("meta_opts", [])):
            opt.load_state_dict(sd)
        ctx = self.ctx
        self.schedule.load_state_dict(state, device=ctx.device if ctx is not None else torch.device("cpu"),
                                      model=ctx.model if ctx is not None else None,
                                      optimizer=ctx.optimizer if ctx is not None else None)


class ExampleWeightingMethod(MetaMethod):
    """Per-step example weights from the meta-gradient at ``eps = 0`` (L2RW, L2B).

    Each step: raw weights ``w_ic = -dL_meta(theta_hat(eps))/d eps_ic`` for every sample ``i`` and
    loss column ``c`` of :meth:`example_losses` (:func:`noisylabels.meta.per_example_weights`),
    normalised by :meth:`normalize`, then the real step on ``sum_ic w_ic l_ic`` reusing the
    training forward. Subclasses implement :meth:`example_losses`, :meth:`normalize` and
    :meth:`record_weights`.
    """

    def example_losses(self, z: Tensor, y: Tensor) -> Tensor:
        """Per-sample loss columns, ``(B,)`` or ``(B, k)`` (forward-mode differentiable)."""
        raise NotImplementedError

    def normalize(self, raw: Tensor) -> Tensor:
        """Training weights from the raw meta-gradient weights (same shape)."""
        raise NotImplementedError

    def record_weights(self, index: Tensor, weights: Tensor) -> None:
        """Record what a step trained with."""
        raise NotImplementedError

    def train_step(self, ctx: MethodContext, x: Tensor, y: Tensor, index: Tensor) -> StepOutput:
        if self.in_warmup(ctx):
            return self.warmup_step(ctx, x, y, index)
        mb = ctx.next_meta_batch(self.meta_batch_size)
        res = per_example_weights(ctx.model, ctx.optimizer, x=x, y=y, meta_x=mb.x, meta_y=mb.y,
                                  meta_loss_fn=self.meta_loss, per_sample_loss=self.example_losses,
                                  how=self.meta_gradient)
        dp = data_parallel(ctx)
        if dp is None:
            w = self.normalize(res.weights)
        else:  # normalised over the global batch: gather the raw weights (each rank's 1/n_r made 1/n)
            frac = dp.n_local / dp.n_global
            w_all = self.normalize(dp.gather_batch(res.weights * frac))
            w = w_all[dp.local_slice]
        losses = self.example_losses(res.train_logits, y)
        loss = (w * losses).sum(1).sum() if losses.ndim == 2 else (w * losses).sum()
        if dp is not None:  # a partial sum: as a per-rank mean, so that the all-reduce gives the global loss
            loss = loss * (dp.n_global / dp.n_local)
        ctx.backward_and_step(loss)
        if dp is None:
            self.record_weights(index, w)
        else:  # the weights' scale is the global batch's: rank 0 records the whole batch
            index_all = dp.gather_batch(index)
            if dp.rank == 0:
                self.record_weights(index_all, w_all)
        return StepOutput(logits=res.train_logits.detach(), loss=loss.detach())

