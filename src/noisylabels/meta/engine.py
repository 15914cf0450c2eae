r"""Meta-gradients through one virtual SGD step, by one forward-mode (JVP) pass.

The bilevel methods (Meta-Weight-Net, Shu et al. 2019, Eqs. 2-5; L2RW, Ren et al. 2018,
Eqs. 3-5 and 12-13; L2B, Zhou et al. 2022; RMNW-Net, Ghosh & Lan 2021, Eq. 4) share one
computation. On a training batch ``(x_i, y_i), i = 1..n`` with logits ``z_i = f(x_i; theta)``,
meta-parameters ``phi`` act only at the loss layer: ``L_train(theta, phi) = (1/n) sum_i l_i(z; phi)``.
The virtual step ``theta_hat(phi)`` is one step of the run's real :class:`torch.optim.SGD` on
``L_train`` (:mod:`noisylabels.meta.virtual_step`), and the meta-objective is ``L_meta(theta_hat)``,
the mean meta loss on a meta batch.

Conventions (used by every function here)
-----------------------------------------
* ``d theta_hat_p / d phi = -s_p * d g_p / d phi`` with ``g = grad_theta L_train`` and the
  per-parameter *scale* ``s_p = lr_p * c_p`` (``c`` from
  :func:`~noisylabels.meta.virtual_step.sgd_direction_scale`). Weight decay and the old momentum
  buffer do not depend on phi.
* With ``v = grad_theta_hat L_meta(theta_hat)`` (held constant) and the tangent ``t_p = s_p v_p``::

      dL_meta/dphi = -d/dphi [ t . grad_theta L_train(theta, phi) ]
                   = -d/dphi sum_i (dL_train/dz_i)(z, phi) . u_i,      u = J_theta z . t

  The two halves are public: :func:`meta_tangent` ("the tangent at theta_hat") and
  :func:`batch_contribution` ("one training batch's contribution", ``u`` by one forward-mode
  pass plus a backward through the loss layer only). :func:`meta_gradient_jvp` composes them
  for one step; a k-step look-ahead (EMLC, Taraday & Baskin 2023, Eq. 11) composes one tangent
  with k contributions. ``u`` is by default evaluated on the graph the training forward
  recorded (:func:`~noisylabels.meta.graph_jvp.graph_jvp`, saved activations reused); layers
  without a rule fall back to :func:`torch.func.jvp`, which re-runs the forward.
* Per-example weights (L2RW, L2B): ``L_train(theta, eps) = (1/n) sum_i eps_i l_i(theta)`` and::

      w_i = -dL_meta(theta_hat(eps))/d eps_i  at eps = 0  =  (1/n) (dl_i/dz) . u

  (positive when up-weighting example ``i`` lowers the meta loss). L2RW's official code uses the
  *sum* ``sum_i eps_i l_i``, which differs by the factor ``n``; both methods normalise the
  weights, which removes it. At ``eps = 0`` the virtual step keeps only the weight-decay /
  momentum part of the real step.

Every function takes the model and the optimiser positionally and everything else by keyword
(swapping ``loss_layer`` and ``meta_loss_fn``, or the training and meta batches, would otherwise
run silently with wrong numbers). All return a :class:`MetaStep`: a :class:`MetaGradientStep`
(:class:`JVPMetaGradientStep` with the tangent it was built from) or an :class:`ExampleWeightsStep`.

Reusing the training forward (``reuse_forward=True``, the default): the training batch goes
through the model's own forward (BatchNorm running statistics updated once, as the real step's
forward would) and :attr:`MetaStep.train_logits` keeps its graph, so the caller's real step
reuses it::

    res = meta_gradient_jvp(model, opt, x=x, y=y, loss_layer=layer, meta_x=mx, meta_y=my,
                            meta_loss_fn=ce, phi=list(wnet.parameters()))
    assign_grads(wnet.parameters(), res.meta_grads); meta_opt.step()   # update phi
    ctx.backward_and_step(layer(res.train_logits, y).mean())           # real step, no 2nd forward

``reuse_forward=False`` forwards functionally on cloned buffers: nothing about the model changes.

Mixed precision (``train.amp: bf16``; the caller's :func:`torch.autocast`): the training forward, its
recorded graph and the meta forward at ``theta_hat`` run in the autocast dtype like the real step;
the virtual step, the tangent and the parameters stay float32; the graph walk applies each node's
rule to the tensors it saved (bf16 activations); the loss layer is differentiated in float32
(losses upcast the logits); the torch.func fallback runs the whole JVP in float32 (dual tensors do
not mix with autocast's casts). On a ResNet-8 the bf16 meta-gradient's cosine similarity with the
float32 one is above 0.999 (tests: ``tests/meta/test_engine.py``).

Dropout: the graph walk uses the masks the training forward saved, and the torch.func fallback
replays the random state of the training forward, so ``u`` is the derivative of the very ``z``
that was used (except with ``channels_last`` activations, where torch.func may draw the masks in
another memory order: the graph walk, which has rules for every registered model, is exact there). The virtual, meta and JVP forwards never touch BatchNorm running statistics
(:mod:`noisylabels.meta.functional`).

Data-parallel BatchNorm (``train.sync_batchnorm``, ``noisylabels.train.syncbn``): the training
forward normalises with the global batch's statistics through an all-reduce whose backward and
forward-mode rules are all-reduces too, so the virtual step's gradient (after ``grad_reduce``),
the graph walk's ``u`` (each process's rows of the 1-process ``u``), ``torch.func.jvp`` and the
double-backward path are the 1-process ones; the meta batch (every process holds all of it) is
forwarded inside :func:`~noisylabels.meta.functional.replicated_batch` with its own statistics.
Everything runs on the tensors' device; results are tensors
(no host synchronisation). The virtual step does not clip gradients (``train.clip_grad_norm``
applies to the real step only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError
from .functional import functional_logits, params_and_buffers, replicated_batch
from .graph_jvp import UnsupportedGraph, graph_jvp, warn_unsupported_once
from .results import ExampleWeightsStep, JVPMetaGradientStep, MetaGradientStep, MetaStep
from .virtual_step import (SGDStepSetting, VirtualStep, check_sgd, lookahead_weights, optimizer_virtual_step,
                           sgd_step_settings)

__all__ = [
    "MetaStep",
    "MetaGradientStep",
    "JVPMetaGradientStep",
    "ExampleWeightsStep",
    "StoredStep",
    "JVP_BACKENDS",
    "META_GRADIENTS",
    "assign_grads",
    "batch_contribution",
    "functional_jvp",
    "logits_jvp",
    "lookahead_contributions",
    "meta_gradient",
    "meta_gradient_double_backward",
    "meta_gradient_jvp",
    "meta_tangent",
    "per_example_weights",
    "per_example_weights_jvp",
]

Tensor = torch.Tensor
LossLayer = Callable[[Tensor, Tensor], Tensor]
#: data-parallel runs: per-process mean gradients -> the global batch's mean (``None`` entries stay)
GradReduce = Callable[[list], list]

#: how ``u = J z . t`` is computed: graph walk with fallback, graph walk only, torch.func only
JVP_BACKENDS = ("auto", "graph", "func")
#: the hypergradient options every meta method takes (``method.meta_gradient``): the same
#: gradient up to rounding, at different cost (``double-backward`` is the official codes' path)
META_GRADIENTS = ("jvp", "jvp-func", "double-backward")


# -- helpers ---------------------------------------------------------------------------------------
RngState = tuple


def _rng_snapshot(device: torch.device) -> RngState:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda, device


@contextmanager
def _replayed_rng(snapshot: RngState | None) -> Iterator[None]:
    """Run a block from the RNG state ``snapshot`` (if any); restore the current state afterwards."""
    if snapshot is None:
        yield
        return
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


def _check_phi(phi: Iterable[Tensor]) -> list[Tensor]:
    out = list(phi)
    if not out:
        raise UserError("phi is empty: pass the meta-parameters (e.g. the weight net's parameters)")
    if not all(p.requires_grad for p in out):
        raise UserError("every tensor in phi must require grad")
    return out


def _check_backend(backend: str) -> None:
    if backend not in JVP_BACKENDS:
        raise UserError(f"jvp_backend must be one of {', '.join(JVP_BACKENDS)}; got {backend!r}")


@dataclass
class _Setup:
    params: dict[str, Tensor]
    buffers: dict[str, Tensor]
    trainable: dict[str, Tensor]
    rng: RngState


def _setup(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: Tensor,
           jvp_backend: str | None = None) -> _Setup:
    """Checks and bookkeeping shared by every entry point."""
    check_sgd(optimizer)
    if jvp_backend is not None:
        _check_backend(jvp_backend)
    params, buffers = params_and_buffers(model)
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    return _Setup(params, buffers, trainable, _rng_snapshot(x.device))


def _train_forward(model: torch.nn.Module, s: _Setup, x: Tensor, reuse_forward: bool) -> Tensor:
    """Training-batch logits at theta: the module's forward (BN stats updated once) or functional."""
    return model(x) if reuse_forward else functional_logits(model, s.params, s.buffers, x)


def _zeros_for_missing(phi: Sequence[Tensor], grads: Sequence[Tensor | None]) -> list[Tensor]:
    return [torch.zeros_like(p) if g is None else g for p, g in zip(phi, grads)]


# -- the two halves of a meta step -----------------------------------------------------------------
def meta_tangent(model: torch.nn.Module, at: VirtualStep, *, meta_x: Tensor, meta_y: Tensor,
                 meta_loss_fn: LossLayer, buffers: Mapping[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The tangent at ``theta_hat``: ``t_p = s_p * grad_p L_meta(theta_hat)``.

    One meta forward and backward at the virtual parameters ``at.params`` (functional, BatchNorm
    statistics untouched), scaled per parameter by ``at.scale`` (``lr * c``, see
    :func:`~noisylabels.meta.virtual_step.optimizer_virtual_step`). For a k-step look-ahead pass a
    :class:`~noisylabels.meta.virtual_step.VirtualStep` holding the current parameters and the
    scale of the k steps (EMLC, Eq. 11: ``t = eta * grad_w L_clean(w_k)``).

    Parameters
    ----------
    model:
        The network (its mode decides BatchNorm and dropout behaviour).
    at:
        Parameters to evaluate the meta loss at, and the scale of each differentiated parameter
        (parameters without a scale are held fixed).
    meta_x, meta_y, meta_loss_fn:
        Meta batch and per-sample (or already averaged) meta loss ``(z, y) -> (m,)``.
    buffers:
        The model's buffers (default: its own, cloned inside the forward).

    Returns
    -------
    tuple
        ``(L_meta(theta_hat) detached, name -> t_p)``.
    """
    bufs = dict(model.named_buffers()) if buffers is None else dict(buffers)
    theta_hat = {n: (t.detach().requires_grad_() if n in at.scale else t.detach()) for n, t in at.params.items()}
    names = list(at.scale)
    with torch.enable_grad():
        with replicated_batch():
            meta_z = functional_logits(model, theta_hat, bufs, meta_x)
        meta_loss = _mean(meta_loss_fn(meta_z, meta_y))
        v = torch.autograd.grad(meta_loss, [theta_hat[n] for n in names], allow_unused=True)
    tangent = {n: g.mul(at.scale[n]) for n, g in zip(names, v) if g is not None}
    return meta_loss.detach(), tangent


def logits_jvp(model: torch.nn.Module, *, x: Tensor, logits: Tensor, tangent: Mapping[str, Tensor],
               jvp_backend: str = "auto", params: Mapping[str, Tensor] | None = None,
               buffers: Mapping[str, Tensor] | None = None, rng: RngState | None = None) -> Tensor:
    """``u = J_theta z . t``: the logits' directional derivative along ``tangent``.

    Parameters
    ----------
    model, x:
        The network and the batch ``logits`` came from.
    logits:
        ``z = f(x; params)``; with ``jvp_backend`` ``'auto'``/``'graph'`` its recorded autograd graph
        is walked (:func:`~noisylabels.meta.graph_jvp.graph_jvp`, saved activations reused).
    tangent:
        ``name -> direction`` for a subset of the parameters.
    jvp_backend:
        ``'auto'`` (graph walk, :func:`torch.func.jvp` for nodes without a rule), ``'graph'`` (the
        walk or :class:`UserError`) or ``'func'`` (always :func:`torch.func.jvp`).
    params, buffers:
        The tensors ``logits`` were computed from (default: the model's own).
    rng:
        RNG state at the forward that produced ``logits`` (the torch.func fallback replays it so
        dropout masks agree).
    """
    _check_backend(jvp_backend)
    if not tangent:  # nothing the meta loss sees is stepped
        return torch.zeros_like(logits)
    params = dict(model.named_parameters()) if params is None else dict(params)
    buffers = dict(model.named_buffers()) if buffers is None else dict(buffers)
    if jvp_backend != "func":
        try:
            return graph_jvp(logits, {params[n]: t for n, t in tangent.items()})
        except UnsupportedGraph as err:
            if jvp_backend == "graph":
                raise UserError(f"jvp_backend='graph': {err}") from None
            warn_unsupported_once(err)  # once per node type: the fast path is not taken
    with torch.no_grad(), _replayed_rng(rng):
        _, u = functional_jvp(model, params=params, buffers=buffers, x=x, tangent=dict(tangent))
    return u


def batch_contribution(model: torch.nn.Module, *, x: Tensor, logits: Tensor, loss_grad: Tensor,
                       tangent: Mapping[str, Tensor], phi: Sequence[Tensor], jvp_backend: str = "auto",
                       params: Mapping[str, Tensor] | None = None, buffers: Mapping[str, Tensor] | None = None,
                       rng: RngState | None = None) -> list[Tensor]:
    """One training batch's contribution ``-d/dphi sum_i (dL_train/dz_i)(phi) . u_i``.

    ``u = J z . t`` by :func:`logits_jvp`; ``loss_grad`` is ``dL_train/dz`` built with
    ``create_graph=True`` so that it depends on phi (only the loss layer is differentiated twice).
    With ``t`` from :func:`meta_tangent` at the virtual step this *is* the meta-gradient
    (:func:`meta_gradient_jvp`); summed over k stored steps with discounts it is EMLC's Eq. 11.

    Returns
    -------
    list
        One tensor per entry of ``phi`` (zeros where phi does not reach ``loss_grad``).
    """
    phi = _check_phi(phi)
    u = logits_jvp(model, x=x, logits=logits, tangent=tangent, jvp_backend=jvp_backend, params=params,
                   buffers=buffers, rng=rng)
    with torch.enable_grad():
        obj = (loss_grad * u).sum().neg()
        mg = torch.autograd.grad(obj, phi, allow_unused=True) if obj.requires_grad else (None,) * len(phi)
    return _zeros_for_missing(phi, mg)


# -- k-step look-ahead: stored inner steps (EMLC, Taraday & Baskin 2023, Eq. 11 / Algorithm 2) -------
@dataclass
class StoredStep:
    """One inner (student) step kept for a k-step look-ahead: the batch and the parameters it was
    taken *from* (``w^(tau)`` of EMLC's Algorithm 2), detached copies.

    Attributes
    ----------
    x, y, index:
        The training batch of the step (inputs as the step saw them, augmentation included).
    params:
        ``name -> w^(tau)`` (every parameter of the model, detached clones).
    rng:
        The RNG state at the step's training forward (dropout masks are replayed), or ``None``.
    sgd:
        ``name ->`` the optimiser's setting for this step
        (:func:`~noisylabels.meta.virtual_step.sgd_step_settings`: lr, momentum, ..., whether the
        momentum buffer was empty), or ``None`` when captured without the optimiser.
    """

    x: Tensor
    y: Tensor
    index: Tensor
    params: dict[str, Tensor]
    rng: RngState | None = None
    sgd: dict[str, SGDStepSetting] | None = None

    @classmethod
    def capture(cls, model: torch.nn.Module, *, x: Tensor, y: Tensor, index: Tensor,
                optimizer: torch.optim.Optimizer | None = None) -> "StoredStep":
        """The step about to be taken: the model's current parameters (cloned), RNG state and, with
        ``optimizer``, the setting of the step it is about to take (for exact FPMG discounts)."""
        named = dict(model.named_parameters())
        params = {n: p.detach().clone() for n, p in named.items()}
        sgd = None if optimizer is None else sgd_step_settings(optimizer, named)
        return cls(x=x.detach(), y=y.detach(), index=index.detach(), params=params, rng=_rng_snapshot(x.device),
                   sgd=sgd)


def lookahead_contributions(model: torch.nn.Module, *, steps: Sequence[StoredStep], tangent: Mapping[str, Tensor],
                            loss_layer: Callable[[Tensor, StoredStep], Tensor], phi: Sequence[Tensor],
                            gamma: float | None = None, offset: int = 0, optimizer: torch.optim.Optimizer | None = None,
                            buffers: Mapping[str, Tensor] | None = None) -> list[Tensor]:
    r"""FPMG (EMLC Algorithm 2): ``sum_j a_j * contribution(steps[-1 - j])``, discounted for the real optimiser.

    EMLC's Eq. 11 (Taraday & Baskin 2023, Corollary 3.1 with Proposition 2) for the stored steps:
    newest first, step ``tau`` contributes :func:`batch_contribution` at its own parameters
    ``w^(tau)`` and batch, along the one tangent ``t = s * grad_w L_meta(w^(t+1))`` of the last
    step, discounted by ``gamma^(t - tau)`` (EMLC: ``gamma = 1 - eta``). ``u = J_{w^(tau)} z . t``
    is one :func:`torch.func.jvp` pass re-running the forward at ``w^(tau)`` (the stored graphs are
    not kept: memory is the k parameter copies, as the paper says); the loss layer is
    differentiated twice at the re-forwarded logits (the meta-parameters' forward, e.g. EMLC's
    teacher, runs again on the stored batch).

    Discounts. EMLC derives Eq. 11 for plain SGD: ``dw^(tau+1)/dphi = (I - eta H_ww^(tau))
    dw^(tau)/dphi - eta H_wphi^(tau)`` with ``H_ww`` replaced by the identity gives ``a_j = gamma^j``,
    ``gamma = 1 - eta`` (the ``gamma`` argument). The student here steps with ``torch.optim.SGD``
    (momentum, dampening, Nesterov, weight decay, per-step learning rates): with steps captured
    with their optimiser (:meth:`StoredStep.capture`) and ``gamma=None``, the discount of each step
    and parameter is the response of that recursion through the momentum buffer
    (:func:`~noisylabels.meta.virtual_step.lookahead_weights`), exact when ``H_ww = I`` for every
    SGD setting (tests: float64 against autograd through k unrolled SGD steps); momentum 0.9 makes
    ``gamma^j`` up to 56% wrong at k = 4 even then.

    What remains **approximate**: the student's Hessian ``H_ww`` (its curvature in w) is dropped
    (taken as the identity) in the look-back; the buffer and the weights at the window's start are
    held constant in phi (as in the one-step meta-gradient); the meta-parameters are held fixed over
    the window (Algorithm 1).

    Parameters
    ----------
    model:
        The network (its current mode; buffers: ``buffers`` or its own, cloned in the forward).
    steps:
        Stored steps, oldest first (:meth:`StoredStep.capture`).
    tangent:
        ``name -> t_p`` (:attr:`JVPMetaGradientStep.tangent` or :func:`meta_tangent`).
    loss_layer:
        ``(z, step) -> (n,)`` per-sample training losses ``l_i(z; phi)`` of that step's batch.
    phi:
        Meta-parameters.
    gamma:
        Plain-SGD Eq. 11: step ``steps[-1 - j]`` is weighted ``gamma ** (j + offset)``. ``None``
        (default): the exact torch-SGD discounts from the steps' captured settings.
    offset:
        ``1`` when the newest step, weight 1, is the live one computed by :func:`meta_gradient_jvp`
        after ``steps`` (its setting is read from ``optimizer`` before it is taken); ``0`` when
        ``tangent`` was built with the scale of ``steps[-1]``. The exact discounts take 0 or 1.
    optimizer:
        The run's SGD (``gamma=None`` with ``offset=1``: the live step's setting).

    Returns
    -------
    list
        One tensor per entry of ``phi``.
    """
    phi = _check_phi(phi)
    total = [torch.zeros_like(p) for p in phi]
    if not tangent:
        return total
    steps = list(steps)
    weights = None if gamma is not None else _exact_discounts(model, steps, tangent, offset, optimizer)
    bufs = dict(model.named_buffers()) if buffers is None else dict(buffers)
    for j, st in enumerate(reversed(steps)):
        if weights is None:
            weight, t_j = float(gamma) ** (j + offset), {n: t for n, t in tangent.items() if n in st.params}
        else:  # per-parameter discounts: scale the tangent (the contribution is linear in it)
            w_j = weights[len(steps) - 1 - j]
            weight, t_j = 1.0, {n: t * w_j[n] for n, t in tangent.items() if n in st.params and w_j[n] != 0}
            if not t_j:
                continue
        with torch.no_grad(), _replayed_rng(st.rng):
            z, u = functional_jvp(model, params=st.params, buffers=bufs, x=st.x, tangent=t_j)
        with torch.enable_grad():
            zd = z.detach().requires_grad_()
            losses = _per_sample(loss_layer(zd, st), len(zd), "loss_layer")
            gz, = torch.autograd.grad(losses.mean(), zd, create_graph=True)
            obj = (gz * u).sum().neg()
            mg = torch.autograd.grad(obj, phi, allow_unused=True) if obj.requires_grad else (None,) * len(phi)
        for acc, g in zip(total, mg):
            if g is not None:
                acc.add_(g, alpha=weight)
    return total


def _exact_discounts(model: torch.nn.Module, steps: Sequence[StoredStep], tangent: Mapping[str, Tensor], offset: int,
                     optimizer: torch.optim.Optimizer | None) -> list[dict[str, float]]:
    """Per stored step (oldest first), ``name -> discount`` (:func:`lookahead_weights`) for the tangent's parameters."""
    if offset not in (0, 1):
        raise UserError(f"lookahead_contributions: the exact SGD discounts take offset 0 or 1, got {offset}")
    if any(st.sgd is None for st in steps):
        raise UserError("lookahead_contributions: capture the steps with their optimizer "
                        "(StoredStep.capture(..., optimizer=opt)) or pass gamma (plain-SGD Eq. 11)")
    live: dict[str, SGDStepSetting] = {}
    if offset == 1:
        if optimizer is None:
            raise UserError("lookahead_contributions: offset=1 needs the optimizer (the live step's setting)")
        live = sgd_step_settings(optimizer, dict(model.named_parameters()))
    cache: dict[tuple, list[float]] = {}
    out: list[dict[str, float]] = [{} for _ in steps]
    for n in tangent:
        seq = tuple(st.sgd.get(n) for st in steps) + ((live.get(n),) if offset == 1 else ())  # type: ignore[union-attr]
        if any(v is None for v in seq):
            raise UserError(f"lookahead_contributions: parameter {n!r} was not stepped by the optimiser in every step "
                            f"of the window")
        if seq not in cache:
            cache[seq] = lookahead_weights(seq)  # type: ignore[arg-type]
        for j in range(len(steps)):
            out[j][n] = cache[seq][j]
    return out


# -- one-step meta-gradients -----------------------------------------------------------------------
def functional_jvp(model: torch.nn.Module, *, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
                   x: Tensor, tangent: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """``(f(x; params), J_params f(x; params) . tangent)`` by :func:`torch.func.jvp` (re-runs the forward;
    :func:`logits_jvp` gives the JVP alone, from a recorded forward where it can).

    ``tangent`` maps a subset of ``params`` to directions; the others are held fixed. Buffers are
    cloned (BatchNorm running statistics untouched). Both outputs carry no reverse-mode graph.
    """
    names = list(tangent)
    fixed = {n: p.detach() for n, p in params.items() if n not in tangent}

    def f(*primals: Tensor) -> Tensor:
        p = dict(fixed)
        p.update(zip(names, primals))
        return functional_logits(model, p, buffers, x)

    # torch.func's dual tensors do not mix with autocast's casts: the fallback runs in float32
    with torch.autocast(device_type=x.device.type, enabled=False):
        return torch.func.jvp(f, tuple(params[n].detach() for n in names), tuple(tangent[n] for n in names))


def meta_gradient_jvp(model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, x: Tensor, y: Tensor,
                      loss_layer: LossLayer, meta_x: Tensor, meta_y: Tensor, meta_loss_fn: LossLayer,
                      phi: Sequence[Tensor], reuse_forward: bool = True,
                      jvp_backend: str = "auto", grad_reduce: GradReduce | None = None) -> JVPMetaGradientStep:
    """``dL_meta(theta_hat(phi))/dphi`` through one virtual SGD step, with one JVP pass.

    Meta-Weight-Net's meta step (Shu et al. 2019, Eqs. 4-5) with the real optimiser's step, via the
    identity in the module docstring: (1) training forward at theta; (2) ``g = grad_theta L_train``
    (plain backward); (3) ``theta_hat`` = the SGD step (no graph); (4) :func:`meta_tangent`; (5)
    :func:`batch_contribution` on the graph of step (1). Equals
    :func:`meta_gradient_double_backward` up to rounding.

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
    phi:
        The meta-parameters to differentiate (tensors requiring grad).
    reuse_forward:
        Forward the training batch with the model's own forward and return logits with their graph
        for the real step (default); ``False``: a functional forward that changes nothing.
    jvp_backend:
        See :func:`logits_jvp`.
    grad_reduce:
        Data-parallel runs: maps this process's training gradient (the mean over its slice of the
        global batch) to the real step's, the mean over the global batch (an all-reduce); the
        virtual step and ``train_grads`` use it. ``meta_grads`` stay this process's contribution
        (mean-based over its slice, like the gradient): the caller reduces them the same way.
    """
    s = _setup(model, optimizer, x, jvp_backend)
    phi = _check_phi(phi)
    with torch.enable_grad():
        z = _train_forward(model, s, x, reuse_forward)
        zd = z.detach().requires_grad_()
        losses = _per_sample(loss_layer(zd, y), len(z), "loss_layer")
        gz, = torch.autograd.grad(losses.mean(), zd, create_graph=True)  # (1/n) dl_i/dz_i (phi)
        g = torch.autograd.grad(z, list(s.trainable.values()), grad_outputs=gz.detach(),
                                retain_graph=reuse_forward or jvp_backend != "func", allow_unused=True)
    if grad_reduce is not None:
        g = tuple(grad_reduce(list(g)))
    train_grads = dict(zip(s.trainable, g))
    with torch.no_grad():
        vs = optimizer_virtual_step(optimizer, s.params, train_grads,
                                    values={n: p.detach() for n, p in s.params.items()})
    meta_loss, tangent = meta_tangent(model, vs, meta_x=meta_x, meta_y=meta_y, meta_loss_fn=meta_loss_fn,
                                      buffers=s.buffers)
    grads = batch_contribution(model, x=x, logits=z, loss_grad=gz, tangent=tangent, phi=phi,
                               jvp_backend=jvp_backend, params=s.params, buffers=s.buffers, rng=s.rng)
    return JVPMetaGradientStep(meta_loss=meta_loss, train_logits=z if reuse_forward else z.detach(),
                               train_losses=losses.detach(), meta_grads=grads, train_grads=train_grads, tangent=tangent,
                               scale=dict(vs.scale))


def meta_gradient_double_backward(model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, x: Tensor,
                                  y: Tensor, loss_layer: LossLayer, meta_x: Tensor, meta_y: Tensor,
                                  meta_loss_fn: LossLayer, phi: Sequence[Tensor],
                                  reuse_forward: bool = True, grad_reduce: GradReduce | None = None) -> MetaGradientStep:
    """Reference path: ``theta_hat(phi)`` built with ``create_graph=True``, then ``L_meta`` backward.

    What the official Meta-Weight-Net / L2RW code does (a differentiable copy of the step, then
    backpropagation through it: a double backward through the whole network), here with the
    real optimiser's step. Same arguments and result as :func:`meta_gradient_jvp`; several times
    more expensive, kept for tests and benchmarks.
    """
    s = _setup(model, optimizer, x)
    phi = _check_phi(phi)
    with torch.enable_grad():
        z = _train_forward(model, s, x, reuse_forward)
        losses = _per_sample(loss_layer(z, y), len(z), "loss_layer")
        g = torch.autograd.grad(losses.mean(), list(s.trainable.values()), create_graph=True, allow_unused=True)
        if grad_reduce is not None:  # the global value; the graph (hence the meta-gradient) this process's part
            g = tuple(gi if r is None else gi + (r - gi).detach() for gi, r in zip(g, grad_reduce(list(g))))
        vs = optimizer_virtual_step(optimizer, s.params, dict(zip(s.trainable, g)))
        with replicated_batch():
            meta_z = functional_logits(model, vs.params, s.buffers, meta_x)
        meta_loss = _mean(meta_loss_fn(meta_z, meta_y))
        mg = (torch.autograd.grad(meta_loss, phi, allow_unused=True, retain_graph=reuse_forward)
              if meta_loss.requires_grad else (None,) * len(phi))
    train_grads = {n: (None if gi is None else gi.detach()) for n, gi in zip(s.trainable, g)}
    return MetaGradientStep(meta_loss=meta_loss.detach(), train_logits=z if reuse_forward else z.detach(),
                            train_losses=losses.detach(), meta_grads=_zeros_for_missing(phi, mg),
                            train_grads=train_grads)


def meta_gradient(model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, x: Tensor, y: Tensor,
                  loss_layer: LossLayer, meta_x: Tensor, meta_y: Tensor, meta_loss_fn: LossLayer,
                  phi: Sequence[Tensor], how: str = "jvp", reuse_forward: bool = True,
                  grad_reduce: GradReduce | None = None) -> MetaGradientStep:
    """:func:`meta_gradient_jvp` (``how='jvp'``: graph walk; ``'jvp-func'``: :func:`torch.func.jvp`) or
    :func:`meta_gradient_double_backward` (``'double-backward'``); the other arguments as those."""
    kwargs = dict(x=x, y=y, loss_layer=loss_layer, meta_x=meta_x, meta_y=meta_y, meta_loss_fn=meta_loss_fn,
                  phi=phi, reuse_forward=reuse_forward, grad_reduce=grad_reduce)
    if how == "double-backward":
        return meta_gradient_double_backward(model, optimizer, **kwargs)
    if how in ("jvp", "jvp-func"):
        return meta_gradient_jvp(model, optimizer, jvp_backend="auto" if how == "jvp" else "func", **kwargs)
    raise UserError(f"meta_gradient must be one of {', '.join(META_GRADIENTS)}; got {how!r}")


# -- per-example weights ---------------------------------------------------------------------------
def _cross_entropy(z: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(z, y, reduction="none")


def per_example_weights(model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, x: Tensor, y: Tensor,
                        meta_x: Tensor, meta_y: Tensor, meta_loss_fn: LossLayer,
                        per_sample_loss: LossLayer | None = None, reuse_forward: bool = True,
                        how: str = "jvp") -> ExampleWeightsStep:
    """Per-example weights ``w_i = -dL_meta(theta_hat(eps))/d eps_i`` at ``eps = 0``, all at once.

    L2RW (Ren et al. 2018, Eqs. 3-5 and 12: the meta-gradient with respect to perturbation weights
    ``eps`` initialised at zero) and L2B (Zhou et al. 2022: ``alpha_i`` and ``beta_i`` on the
    given-label and pseudo-label losses). With ``L_train(theta, eps) = (1/n) sum_i eps_i l_i``::

        w_i = (1/n) sum_p lr_p c_p < grad_p l_i(theta), grad_p L_meta(theta_hat(0)) >

    computed for every ``i`` from one JVP ``u = J z . t`` (:func:`meta_tangent` at the eps = 0
    step, then a forward-mode pass through the loss layer only): no per-sample loop and no
    backward through the network on the training batch.

    Parameters
    ----------
    model, optimizer, x, y, meta_x, meta_y, meta_loss_fn, reuse_forward:
        As :func:`meta_gradient_jvp`.
    per_sample_loss:
        ``(z, y) -> (n,)`` or ``(n, k)`` losses ``l_i`` (default: cross-entropy); each column gets its
        own ``eps`` vector and column of weights (e.g. L2B: ``CE(z, y)`` and ``CE(z, y_hat)``). Must
        support forward-mode AD.
    how:
        ``'jvp'`` (:func:`per_example_weights_jvp`, graph walk), ``'jvp-func'`` (the same by
        :func:`torch.func.jvp`) or ``'double-backward'`` (a differentiable virtual step and a
        backward into ``eps``: the official codes' path).

    Returns
    -------
    ExampleWeightsStep
        ``weights``: raw weights (before any clamping / normalisation the method applies).
    """
    if how == "double-backward":
        return _per_example_weights_double_backward(model, optimizer, x=x, y=y, meta_x=meta_x, meta_y=meta_y,
                                                    meta_loss_fn=meta_loss_fn, loss_fn=per_sample_loss or _cross_entropy,
                                                    reuse_forward=reuse_forward)
    if how not in ("jvp", "jvp-func"):
        raise UserError(f"meta_gradient must be one of {', '.join(META_GRADIENTS)}; got {how!r}")
    return per_example_weights_jvp(model, optimizer, x=x, y=y, meta_x=meta_x, meta_y=meta_y, meta_loss_fn=meta_loss_fn,
                                   per_sample_loss=per_sample_loss, reuse_forward=reuse_forward,
                                   jvp_backend="auto" if how == "jvp" else "func")


def per_example_weights_jvp(model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, x: Tensor, y: Tensor,
                            meta_x: Tensor, meta_y: Tensor, meta_loss_fn: LossLayer,
                            per_sample_loss: LossLayer | None = None, reuse_forward: bool = True,
                            jvp_backend: str = "auto") -> ExampleWeightsStep:
    """:func:`per_example_weights` by one forward-mode pass; ``jvp_backend`` as :func:`logits_jvp`."""
    loss_fn = per_sample_loss or _cross_entropy
    backend = jvp_backend
    s = _setup(model, optimizer, x, backend)
    with torch.set_grad_enabled(reuse_forward or backend != "func"):  # the graph walk needs the graph
        z = _train_forward(model, s, x, reuse_forward)
    zd = z.detach()
    with torch.no_grad():
        zero = {n: torch.zeros_like(p) for n, p in s.trainable.items()}  # grad of L_train at eps = 0
        vs = optimizer_virtual_step(optimizer, s.params, zero, values={n: p.detach() for n, p in s.params.items()})
    meta_loss, tangent = meta_tangent(model, vs, meta_x=meta_x, meta_y=meta_y, meta_loss_fn=meta_loss_fn,
                                      buffers=s.buffers)
    u = logits_jvp(model, x=x, logits=z if z.grad_fn is not None else zd, tangent=tangent, jvp_backend=backend,
                   params=s.params, buffers=s.buffers, rng=s.rng)
    with torch.no_grad():
        losses, dl = torch.func.jvp(lambda t: loss_fn(t, y), (zd,), (u,))
    _per_sample(losses, len(zd), "per_sample_loss", allow_columns=True)
    return ExampleWeightsStep(meta_loss=meta_loss, train_logits=z if reuse_forward else zd, train_losses=losses,
                              weights=dl / len(zd))


def _per_example_weights_double_backward(model, optimizer, *, x, y, meta_x, meta_y, meta_loss_fn, loss_fn,
                                         reuse_forward) -> ExampleWeightsStep:
    """``w = -dL_meta/d eps`` at ``eps = 0`` through a differentiable virtual step (the reference path)."""
    s = _setup(model, optimizer, x)
    with torch.enable_grad():
        z = _train_forward(model, s, x, reuse_forward)
        losses = _per_sample(loss_fn(z, y), len(z), "per_sample_loss", allow_columns=True)
        eps = torch.zeros_like(losses, requires_grad=True)
        g = torch.autograd.grad((eps * losses).sum() / len(z), list(s.trainable.values()), create_graph=True,
                                allow_unused=True)
        vs = optimizer_virtual_step(optimizer, s.params, dict(zip(s.trainable, g)))
        with replicated_batch():
            meta_z = functional_logits(model, vs.params, s.buffers, meta_x)
        meta_loss = _mean(meta_loss_fn(meta_z, meta_y))
        gw, = (torch.autograd.grad(meta_loss, [eps], allow_unused=True, retain_graph=reuse_forward)
               if meta_loss.requires_grad else (None,))
    weights = torch.zeros_like(eps) if gw is None else -gw
    return ExampleWeightsStep(meta_loss=meta_loss.detach(), train_logits=z if reuse_forward else z.detach(),
                              train_losses=losses.detach(), weights=weights.detach())


def assign_grads(params: Iterable[Tensor], grads: Sequence[Tensor]) -> None:
    """Store ``grads`` in ``p.grad`` (as ``backward`` would, in the parameter's memory layout, so a
    later ``backward`` accumulates into it without a layout warning), ready for the meta optimiser's step."""
    for p, g in zip(list(params), grads, strict=True):
        p.grad = torch.empty_like(p, memory_format=torch.preserve_format).copy_(g.detach())
