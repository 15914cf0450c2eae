r"""Meta-gradients through one virtual SGD step, by one forward-mode (JVP) pass.

The bilevel methods (Meta-Weight-Net, Shu et al. 2019, Eqs. 2-5; L2RW, Ren et al. 2018,
Eqs. 3-5 and 12-13; L2B, Zhou et al. 2022; RMNW-Net, Ghosh & Lan 2021, Eq. 4) share one computation. On a training batch
``(x_i, y_i), i = 1..n`` with logits ``z_i = f(x_i; theta)``, meta-parameters ``phi`` act only at
the loss layer: ``L_train(theta, phi) = (1/n) sum_i l_i(z; phi)``. The virtual step
``theta_hat(phi)`` is one step of the run's real :class:`torch.optim.SGD` on ``L_train``
(:mod:`noisylabels.meta.virtual_step`), and the meta-objective is ``L_meta(theta_hat)``, the mean
meta loss on a meta batch.

Conventions (used by every function here)
-----------------------------------------
* ``d theta_hat_p / d phi = -s_p * d g_p / d phi`` with ``g = grad_theta L_train`` and the
  per-parameter *scale* ``s_p = lr_p * c_p`` (``c`` from
  :func:`~noisylabels.meta.virtual_step.sgd_direction_scale`: 1 for plain SGD and for
  momentum, ``1 + momentum`` for Nesterov, ``1 - dampening`` / ``1 + momentum (1 - dampening)``
  once a momentum buffer exists). Weight decay and the old momentum buffer do not depend on phi.
* With ``v = grad_theta_hat L_meta(theta_hat)`` (held constant) and the tangent ``t_p = s_p v_p``::

      dL_meta/dphi = -d/dphi [ t . grad_theta L_train(theta, phi) ]
                   = -d/dphi sum_i (dL_train/dz_i)(z, phi) . u_i,      u = J_theta z . t

  ``u`` is one forward-mode pass of the training batch at ``theta``: by default evaluated on the
  graph the training forward recorded, reusing its saved activations
  (:func:`~noisylabels.meta.graph_jvp.graph_jvp`, about half the cost of :func:`torch.func.jvp`,
  which re-runs the forward and is the fallback for layers without a rule). Only the loss layer
  is differentiated twice (``dL_train/dz`` with ``create_graph=True``, then into phi). The
  ``1/n`` is inside ``dL_train/dz`` because ``L_train`` is the batch *mean*.
* Per-example weights (L2RW, L2B): ``L_train(theta, eps) = (1/n) sum_i eps_i l_i(theta)`` and::

      w_i = -dL_meta(theta_hat(eps))/d eps_i  at eps = 0
          = (1/n) sum_p s_p < grad_p l_i(theta), v_p >
          = (1/n) (dl_i/dz) . u

  (positive when up-weighting example ``i`` lowers the meta loss). L2RW's official code uses the
  *sum* ``sum_i eps_i l_i`` and plain SGD, which differs from ``w`` by the factor ``n``; both
  methods normalise the weights, which removes it. At ``eps = 0`` the virtual step keeps only the
  weight-decay / momentum part of the real step.

Dropout: the graph walk uses the masks the training forward saved, and the torch.func fallback
replays the random state of the training forward, so both see the same masks (``u`` is the
derivative of the very ``z`` that was used). The global RNG afterwards is as
if only the training and meta forwards had run (as in the double-backward reference).

BatchNorm: the virtual, meta and JVP forwards never touch the model's running statistics
(:mod:`noisylabels.meta.functional`). The training forward at ``theta`` also leaves them alone
unless ``keep_graph=True``, where it is the model's own forward (updating them once, as the real
step's forward would) and its logits keep their graph so the caller's real step reuses them::

    res = meta_gradient_jvp(model, opt, x, y, loss_layer, mx, my, ce, phi, keep_graph=True)
    assign_grads(phi, res.meta_grads); meta_opt.step()          # update phi
    ctx.backward_and_step(loss_layer(res.train_logits, y).mean())  # real step, new phi, no 2nd forward

Everything runs on the tensors' device; results are tensors (no host synchronisation). The
virtual step does not clip gradients (``train.clip_grad_norm`` applies to the real step only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError
from .functional import functional_logits, params_and_buffers
from .graph_jvp import UnsupportedGraph, graph_jvp, warn_unsupported_once
from .virtual_step import VirtualStep, _check_sgd, optimizer_virtual_step

__all__ = [
    "MetaStepResult",
    "ExampleWeights",
    "JVP_BACKENDS",
    "jvp_logits",
    "meta_gradient_jvp",
    "meta_gradient_double_backward",
    "per_example_weights",
    "assign_grads",
]

Tensor = torch.Tensor
LossLayer = Callable[[Tensor, Tensor], Tensor]


@dataclass
class MetaStepResult:
    """What a meta-gradient computation returns (all tensors; nothing is synchronised to the host).

    Attributes
    ----------
    meta_grads:
        ``dL_meta(theta_hat(phi))/dphi``, one tensor per entry of ``phi_params`` (zeros where
        phi does not reach the meta loss). Not applied: see :func:`assign_grads`.
    meta_loss:
        ``L_meta(theta_hat)``, 0-dim, detached.
    train_losses:
        ``l_i(z_i; phi)`` at ``theta`` and the current phi, shape ``(n,)``, detached.
    train_logits:
        ``z = f(x; theta)``; with ``keep_graph=True`` it keeps its graph to the model's
        parameters (for the real step), otherwise detached.
    train_grads:
        ``grad_theta L_train(theta, phi)`` at the *pre-update* phi, by parameter name (the
        gradient the virtual step used; ``None`` entries for parameters it does not reach).
        A "delayed" real step (MLC's approximation) applies it instead of recomputing the
        gradient with the updated phi.
    """

    meta_grads: list[Tensor]
    meta_loss: Tensor
    train_losses: Tensor
    train_logits: Tensor
    train_grads: dict[str, Tensor | None] | None = None


@dataclass
class ExampleWeights:
    """Result of :func:`per_example_weights`.

    Attributes
    ----------
    weights:
        ``w_i = -dL_meta/d eps_i`` at ``eps = 0``, shape ``(n,)`` or ``(n, k)`` like the per-sample
        loss (one ``eps`` vector per column, e.g. L2B's ``alpha`` and ``beta``).
    meta_loss:
        ``L_meta(theta_hat(0))``, 0-dim, detached.
    train_losses:
        The per-sample losses at ``theta``, ``(n,)`` or ``(n, k)``, detached.
    train_logits:
        As :attr:`MetaStepResult.train_logits`.
    """

    weights: Tensor
    meta_loss: Tensor
    train_losses: Tensor
    train_logits: Tensor


# -- helpers ---------------------------------------------------------------------------------------
def _rng_snapshot(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda, device


@contextmanager
def _replayed_rng(snapshot: tuple) -> Iterator[None]:
    """Run a block from the RNG state ``snapshot``; restore the current state afterwards."""
    cpu, cuda, device = snapshot
    with torch.random.fork_rng(devices=[device] if cuda is not None else []):
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
        yield


def _mean(values: Tensor) -> Tensor:
    return values.mean() if values.ndim > 0 else values


def _per_sample(values: Tensor, n: int, what: str, *, allow_columns: bool = False) -> Tensor:
    ok = values.ndim == 1 or (allow_columns and values.ndim == 2)
    if not ok or values.shape[0] != n:
        want = "(n,) or (n, k)" if allow_columns else "(n,)"
        raise UserError(f"{what} must return per-sample losses of shape {want} with n={n}; "
                        f"got {tuple(values.shape)}")
    return values


def _check_phi(phi_params: Sequence[Tensor]) -> list[Tensor]:
    phi = list(phi_params)
    if not phi:
        raise UserError("phi_params is empty: pass the meta-parameters (e.g. the weight net's parameters)")
    if not all(p.requires_grad for p in phi):
        raise UserError("every tensor in phi_params must require grad")
    return phi


def _train_forward(model: torch.nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor,
                   keep_graph: bool) -> Tensor:
    """Training-batch logits at theta: the module's forward (BN stats updated once) or functional."""
    return model(x) if keep_graph else functional_logits(model, params, buffers, x)


def _meta_tangent(model: torch.nn.Module, buffers: dict[str, Tensor], vs: VirtualStep, meta_x: Tensor,
                  meta_y: Tensor, meta_loss_fn: LossLayer) -> tuple[Tensor, dict[str, Tensor]]:
    """Meta forward at theta_hat; returns ``(L_meta, t)`` with ``t_p = s_p * grad_p L_meta``."""
    theta_hat = {n: (t.detach().requires_grad_() if n in vs.scale else t.detach())
                 for n, t in vs.params.items()}
    names = list(vs.scale)
    with torch.enable_grad():
        meta_loss = _mean(meta_loss_fn(functional_logits(model, theta_hat, buffers, meta_x), meta_y))
        v = torch.autograd.grad(meta_loss, [theta_hat[n] for n in names], allow_unused=True)
    tangent = {n: g.mul(vs.scale[n]) for n, g in zip(names, v) if g is not None}
    return meta_loss.detach(), tangent


JVP_BACKENDS = ("auto", "graph", "func")


def _check_backend(backend: str) -> None:
    if backend not in JVP_BACKENDS:
        raise UserError(f"jvp_backend must be one of {', '.join(JVP_BACKENDS)}; got {backend!r}")


def _jvp_u(model: torch.nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor,
           z: Tensor, tangent: dict[str, Tensor], rng: tuple, backend: str) -> Tensor:
    """``u = J z . tangent``: on ``z``'s recorded graph when every node has a rule, else torch.func."""
    if not tangent:  # nothing the meta loss sees is stepped
        return torch.zeros_like(z)
    if backend != "func":
        try:
            return graph_jvp(z, {params[n]: t for n, t in tangent.items()})
        except UnsupportedGraph as err:
            if backend == "graph":
                raise UserError(f"jvp_backend='graph': {err}") from None
            warn_unsupported_once(err)
    with torch.no_grad(), _replayed_rng(rng):
        _, u = jvp_logits(model, params, buffers, x, tangent)
    return u


# -- public API ------------------------------------------------------------------------------------
def jvp_logits(model: torch.nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor,
               tangent: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """``(f(x; params), J_params f(x; params) . tangent)`` in one forward-mode pass.

    Parameters
    ----------
    model, params, buffers, x:
        As :func:`~noisylabels.meta.functional.functional_logits` (buffers are cloned: BatchNorm
        running statistics are not updated).
    tangent:
        ``name -> direction`` for a subset of ``params``; the others are held fixed.

    Returns
    -------
    tuple
        ``(logits, u)``, both without a reverse-mode graph.
    """
    names = list(tangent)
    fixed = {n: p.detach() for n, p in params.items() if n not in tangent}

    def f(*primals: Tensor) -> Tensor:
        p = dict(fixed)
        p.update(zip(names, primals))
        return functional_logits(model, p, buffers, x)

    return torch.func.jvp(f, tuple(params[n].detach() for n in names), tuple(tangent[n] for n in names))


def meta_gradient_jvp(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                      loss_layer: LossLayer, meta_x: Tensor, meta_y: Tensor, meta_loss_fn: LossLayer,
                      phi_params: Sequence[Tensor], *, keep_graph: bool = False,
                      jvp_backend: str = "auto") -> MetaStepResult:
    """``dL_meta(theta_hat(phi))/dphi`` through one virtual SGD step, with one JVP pass.

    Meta-Weight-Net's meta step (Shu et al. 2019, Eqs. 4-5) with the real optimiser's step, via
    the identity in the module docstring. Steps: (1) training forward at theta; (2)
    ``g = grad_theta L_train`` (plain backward); (3) ``theta_hat`` = the SGD step (no graph); (4)
    meta forward at ``theta_hat``, ``v = grad L_meta``; (5) ``u = J z . (s v)`` by
    :func:`~noisylabels.meta.graph_jvp.graph_jvp` on the graph of step (1) (its saved primals reused;
    :func:`torch.func.jvp` for layers without a rule); (6) ``-d/dphi sum_i (dL_train/dz_i) . u_i``
    (double backward through the loss layer only). Equals :func:`meta_gradient_double_backward`
    up to rounding.

    Parameters
    ----------
    model:
        The network (in its current mode; train mode in training).
    optimizer:
        The run's :class:`torch.optim.SGD` (read only; other optimisers raise :class:`UserError`).
    x, y:
        Training batch.
    loss_layer:
        ``(z, y) -> (n,)`` per-sample losses ``l_i(z; phi)``, phi reached through a closure (e.g.
        ``w(CE.detach()) * CE``); ``L_train`` is their mean.
    meta_x, meta_y:
        Meta batch.
    meta_loss_fn:
        ``(z, y) -> (m,)`` per-sample (or already averaged) meta loss, e.g. cross-entropy.
    phi_params:
        The meta-parameters to differentiate (tensors requiring grad).
    keep_graph:
        Forward the training batch with the model's own forward (BatchNorm running statistics
        updated once, like the real step) and return logits with their graph for the real step.
    jvp_backend:
        How ``u`` is computed: ``'auto'`` (default: :func:`~noisylabels.meta.graph_jvp.graph_jvp`
        on the training forward's graph, :func:`torch.func.jvp` if a node has no rule),
        ``'graph'`` (the graph walk or :class:`UserError`) or ``'func'`` (always
        :func:`torch.func.jvp`, which re-runs the forward).

    Returns
    -------
    MetaStepResult
    """
    _check_sgd(optimizer)
    _check_backend(jvp_backend)
    phi = _check_phi(phi_params)
    params, buffers = params_and_buffers(model)
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    rng = _rng_snapshot(x.device)
    with torch.enable_grad():
        z = _train_forward(model, params, buffers, x, keep_graph)
        zd = z.detach().requires_grad_()
        losses = _per_sample(loss_layer(zd, y), len(z), "loss_layer")
        gz, = torch.autograd.grad(losses.mean(), zd, create_graph=True)  # (1/n) dl_i/dz_i (phi)
        g = torch.autograd.grad(z, list(trainable.values()), grad_outputs=gz.detach(),
                                retain_graph=keep_graph or jvp_backend != "func", allow_unused=True)
    with torch.no_grad():
        vs = optimizer_virtual_step(optimizer, params, dict(zip(trainable, g)),
                                    values={n: p.detach() for n, p in params.items()})
    meta_loss, tangent = _meta_tangent(model, buffers, vs, meta_x, meta_y, meta_loss_fn)
    u = _jvp_u(model, params, buffers, x, z, tangent, rng, jvp_backend)
    with torch.enable_grad():
        obj = (gz * u).sum().neg()
        if obj.requires_grad:
            mg = torch.autograd.grad(obj, phi, allow_unused=True)
        else:
            mg = (None,) * len(phi)
    grads = [torch.zeros_like(p) if gi is None else gi for p, gi in zip(phi, mg)]
    return MetaStepResult(meta_grads=grads, meta_loss=meta_loss, train_losses=losses.detach(),
                          train_logits=z if keep_graph else z.detach(), train_grads=dict(zip(trainable, g)))


def meta_gradient_double_backward(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                                  loss_layer: LossLayer, meta_x: Tensor, meta_y: Tensor, meta_loss_fn: LossLayer,
                                  phi_params: Sequence[Tensor], *, keep_graph: bool = False) -> MetaStepResult:
    """Reference path: ``theta_hat(phi)`` built with ``create_graph=True``, then ``L_meta.backward``.

    What the official Meta-Weight-Net code does (Shu et al. 2019, Eq. 4-5: a differentiable copy
    of the step, then backpropagation through it, i.e. a double backward through the whole
    network), here with the real optimiser's step (:func:`optimizer_virtual_step`). Same
    arguments and result as :func:`meta_gradient_jvp`; several times more expensive, kept for
    tests and benchmarks.
    """
    _check_sgd(optimizer)
    phi = _check_phi(phi_params)
    params, buffers = params_and_buffers(model)
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    with torch.enable_grad():
        z = _train_forward(model, params, buffers, x, keep_graph)
        losses = _per_sample(loss_layer(z, y), len(z), "loss_layer")
        g = torch.autograd.grad(losses.mean(), list(trainable.values()), create_graph=True, allow_unused=True)
        vs = optimizer_virtual_step(optimizer, params, dict(zip(trainable, g)))
        meta_loss = _mean(meta_loss_fn(functional_logits(model, vs.params, buffers, meta_x), meta_y))
        if meta_loss.requires_grad:
            mg = torch.autograd.grad(meta_loss, phi, allow_unused=True, retain_graph=keep_graph)
        else:
            mg = (None,) * len(phi)
    grads = [torch.zeros_like(p) if gi is None else gi for p, gi in zip(phi, mg)]
    return MetaStepResult(meta_grads=grads, meta_loss=meta_loss.detach(), train_losses=losses.detach(),
                          train_logits=z if keep_graph else z.detach())


def _cross_entropy(z: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(z, y, reduction="none")


def per_example_weights(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                        meta_x: Tensor, meta_y: Tensor, meta_loss_fn: LossLayer, *,
                        per_sample_loss: LossLayer | None = None, keep_graph: bool = False,
                        jvp_backend: str = "auto") -> ExampleWeights:
    """Per-example weights ``w_i = -dL_meta(theta_hat(eps))/d eps_i`` at ``eps = 0``, all at once.

    L2RW (Ren et al. 2018, Eqs. 3-5 and 12: the meta-gradient with respect to perturbation
    weights ``eps`` initialised at zero) and L2B (Zhou et al. 2022: ``alpha_i`` and
    ``beta_i`` on the given-label and pseudo-label losses). With
    ``L_train(theta, eps) = (1/n) sum_i eps_i l_i`` and ``theta_hat`` the real SGD step::

        w_i = (1/n) sum_p lr_p c_p < grad_p l_i(theta), grad_p L_meta(theta_hat(0)) >

    computed for every ``i`` from one JVP ``u = J z . (s v)`` as ``(1/n) (dl_i/dz) . u`` (a
    forward-mode pass through the loss layer only). No per-sample loop and no backward through
    the network on the training batch.

    Parameters
    ----------
    model, optimizer, x, y, meta_x, meta_y, meta_loss_fn, keep_graph, jvp_backend:
        As :func:`meta_gradient_jvp`.
    per_sample_loss:
        ``(z, y) -> (n,)`` or ``(n, k)`` losses ``l_i`` (default: cross-entropy); each column gets
        its own ``eps`` vector and column of weights (e.g. L2B: ``CE(z, y)`` and ``CE(z, y_hat)``).
        Must support forward-mode AD.

    Returns
    -------
    ExampleWeights
        Raw weights (before any clamping / normalisation the method applies).
    """
    _check_sgd(optimizer)
    _check_backend(jvp_backend)
    loss_fn = per_sample_loss or _cross_entropy
    params, buffers = params_and_buffers(model)
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    rng = _rng_snapshot(x.device)
    with torch.set_grad_enabled(keep_graph or jvp_backend != "func"):  # the graph walk needs the graph
        z = _train_forward(model, params, buffers, x, keep_graph)
    zd = z.detach()
    with torch.no_grad():
        zero = {n: torch.zeros_like(p) for n, p in trainable.items()}  # grad of L_train at eps = 0
        vs = optimizer_virtual_step(optimizer, params, zero, values={n: p.detach() for n, p in params.items()})
    meta_loss, tangent = _meta_tangent(model, buffers, vs, meta_x, meta_y, meta_loss_fn)
    u = _jvp_u(model, params, buffers, x, z if z.grad_fn is not None else zd, tangent, rng, jvp_backend)
    with torch.no_grad():
        losses, dl = torch.func.jvp(lambda t: loss_fn(t, y), (zd,), (u,))
    _per_sample(losses, len(zd), "per_sample_loss", allow_columns=True)
    return ExampleWeights(weights=dl / len(zd), meta_loss=meta_loss, train_losses=losses,
                          train_logits=z if keep_graph else zd)


def assign_grads(params: Sequence[Tensor], grads: Sequence[Tensor], *, accumulate: bool = False) -> None:
    """Store ``grads`` in ``p.grad`` (as ``backward`` would), ready for the meta optimiser's step."""
    for p, g in zip(params, grads, strict=True):
        if accumulate and p.grad is not None:
            p.grad.add_(g)
        else:
            p.grad = g.detach().clone()
