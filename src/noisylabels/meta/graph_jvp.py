r"""Forward-mode derivatives evaluated on a recorded autograd graph, reusing its saved primals.

:func:`torch.func.jvp` carries tangents beside primals, so it re-runs the whole forward. In the
meta step the training batch has *already* been forwarded at ``theta`` with autograd recording
(the real step reuses that graph), and the graph holds every primal value a tangent rule needs:
convolution inputs, BatchNorm batch statistics, ReLU outputs, pooling indices, dropout masks.
:func:`graph_jvp` walks the graph in forward order and applies one linear tangent rule per node,
so the JVP costs only the tangent arithmetic (two convolutions per convolution layer instead of
three, fused kernels for BatchNorm and ReLU): about half of :func:`torch.func.jvp` on CIFAR
ResNet-32 (``benchmarks/meta_speed.py``).

The rules (``JVP_RULES``, by autograd node name) are exact: each is the derivative of its op
along the input tangents, e.g. for a convolution ``d(x * W + b) = dx * W + x * dW + db``. Two
identities keep them cheap:

* BatchNorm in training mode: ``y = gamma * xhat + beta`` with ``xhat = (x - mean_B) * invstd_B``;
  per channel, ``d xhat / d x = invstd (I - 11^T/N - xhat xhat^T/N)`` is *symmetric*, so the
  JVP along ``dx`` equals the VJP with ``grad_out = dx``: one fused
  ``native_batch_norm_backward`` call. The ``gamma``/``beta`` part is
  ``xhat * dgamma + dbeta``, one ``addcmul`` with the saved statistics. In eval mode the running
  statistics play the same role (the Jacobian is diagonal).
* Elementwise activations (ReLU, tanh, sigmoid, leaky ReLU, GELU, SiLU) have diagonal Jacobians,
  so their JVP is their backward kernel applied to the tangent, e.g. ReLU's
  ``dy = dx * [y > 0]`` is ``threshold_backward(dx, y, 0)``: one kernel.

A graph with a node that has no rule, a consumer of a secondary output (e.g. BatchNorm's saved
mean), or saved tensors that were already freed raises :class:`UnsupportedGraph`; the engine then
falls back to :func:`torch.func.jvp` (same numbers up to rounding). Register a rule for a new
layer with :func:`register_jvp_rule`; :func:`warn_unsupported_once` is the engine's one-time
warning naming the node that forced a fallback.

Backends: a CUDA ResNet / WRN forward records the same nodes as on the CPU except BatchNorm
(``CudnnBatchNormBackward0``; ``MiopenBatchNormBackward0`` on ROCm: same saved tensors, same
rule as the native one; bf16 inputs and affine-free layers take the native kernel) and dropout
(``NativeDropoutBackward0``: the fused kernel, its saved mask and ``1 / (1 - p)``). Autocast adds
``ToCopyBackward0`` casts. The CPU tests apply the GPU BatchNorm rule to nodes with the same saved
attributes built from CPU batch statistics and the dropout rule to real ``native_dropout`` nodes;
``benchmarks/gpu_check.py`` checks the CUDA nodes themselves.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = ["UnsupportedGraph", "JVP_RULES", "graph_jvp", "register_jvp_rule", "supports_graph",
           "warn_unsupported_once", "fallback_counts"]

Tensor = torch.Tensor
Node = torch.autograd.graph.Node
#: rule(node, tangents of the node's differentiable inputs (None = zero)) -> tangent of output 0
JvpRule = Callable[[Node, Sequence[Tensor | None]], Tensor | None]

JVP_RULES: dict[str, JvpRule] = {}


class UnsupportedGraph(Exception):
    """The graph cannot be differentiated forward by :data:`JVP_RULES` (the caller falls back).

    ``node`` names the autograd node at fault (``None`` when the graph as a whole is missing).
    """

    def __init__(self, message: str, *, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


def register_jvp_rule(*names: str) -> Callable[[JvpRule], JvpRule]:
    """Decorator: use the function as the tangent rule of the autograd nodes ``names``."""
    def deco(fn: JvpRule) -> JvpRule:
        for name in names:
            JVP_RULES[name] = fn
        return fn
    return deco


# -- helpers ---------------------------------------------------------------------------------------
def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _signed(d: int) -> int:
    """Saved ``int[]`` dims come back as unsigned 64-bit values; map them back to negatives."""
    return d - (1 << 64) if d >= (1 << 63) else d


def _signed_opt(d: int | None) -> int | None:
    return None if d is None else _signed(d)


def _name(node: Node) -> str:
    return type(node).__name__  # Node.name() spells leaves "torch::autograd::AccumulateGrad"


def _saved(node: Node, attr: str) -> Tensor:
    """A saved tensor the rule needs; autograd saves some only when another input requires grad."""
    value = getattr(node, attr)
    if value is None:
        raise UnsupportedGraph(f"{_name(node)} did not save {attr.removeprefix('_saved_')}", node=_name(node))
    return value


def _out_shape(node: Node) -> torch.Size:
    """Shape of the node's (forward) output 0: the metadata of its backward input 0."""
    return torch.Size(node._input_metadata[0].shape)


def _channel_view(t: Tensor, ndim: int) -> Tensor:
    return t.view((1, -1) + (1,) * (ndim - 2))


def _unary(fn: Callable[[Node, Tensor], Tensor]) -> JvpRule:
    """A rule for a node with one differentiable input whose tangent map is linear."""
    def rule(node: Node, tin: Sequence[Tensor | None]) -> Tensor | None:
        return None if tin[0] is None else fn(node, tin[0])
    return rule


# -- rules -----------------------------------------------------------------------------------------
@register_jvp_rule("ConvolutionBackward0")
def _convolution(node: Node, tin: Sequence[Tensor | None]) -> Tensor | None:
    """``d conv(x, W) + db = conv(dx, W) + conv(x, dW) + db`` (inputs: x, W, b)."""
    dx, dw = tin[0], tin[1]
    db = tin[2] if len(tin) > 2 else None
    args = (node._saved_stride, node._saved_padding, node._saved_dilation, node._saved_transposed,
            node._saved_output_padding, node._saved_groups)
    out = None
    if dx is not None:
        out = torch.ops.aten.convolution(dx, _saved(node, "_saved_weight"), None, *args)
    if dw is not None:
        o = torch.ops.aten.convolution(_saved(node, "_saved_input"), dw, None, *args)
        out = o if out is None else out.add_(o)
    if db is not None:
        o = _channel_view(db, len(_out_shape(node)))
        out = o.expand(_out_shape(node)).clone() if out is None else out.add_(o)
    return out


@register_jvp_rule("NativeBatchNormBackward0")
def _batch_norm(node: Node, tin: Sequence[Tensor | None]) -> Tensor | None:
    """``d(gamma * xhat + beta)``; the ``dx`` part by the self-adjointness identity (module docstring)."""
    dx, dgamma, dbeta = (list(tin) + [None, None])[:3]
    x = node._saved_input
    training = node._saved_training
    eps = node._saved_eps
    if training:
        mean, invstd = node._saved_result1, node._saved_result2
    else:
        mean, invstd = node._saved_running_mean, (node._saved_running_var + eps).rsqrt()
    out = None
    if dx is not None:
        out = torch.ops.aten.native_batch_norm_backward(
            dx, x, node._saved_weight, node._saved_running_mean, node._saved_running_var,
            node._saved_result1, node._saved_result2, training, eps, [True, False, False])[0]
    if dgamma is not None:  # xhat * dgamma + dbeta = x * a + c, a = invstd dgamma, c = dbeta - mean a
        a = invstd * dgamma
        c = -mean * a if dbeta is None else dbeta - mean * a
        if out is None:
            out = torch.addcmul(_channel_view(c, x.ndim), x, _channel_view(a, x.ndim))
        else:
            out.addcmul_(x, _channel_view(a, x.ndim)).add_(_channel_view(c, x.ndim))
    elif dbeta is not None:
        out = _add(out, _channel_view(dbeta, x.ndim).expand(x.shape))
    return out


def _batch_norm_stats(node: Node, tin: Sequence[Tensor | None], *, eps: float, training: bool) -> Tensor | None:
    """BatchNorm's tangent from the saved input, weight and statistics (any backend's node).

    Training: ``mean, invstd`` are the batch statistics the forward saved (``result1``,
    ``result2``: cuDNN's "saved inverse variance" is ``1 / sqrt(var + eps)``, the same quantity as
    the native kernel's ``invstd``) and the ``dx`` part is the self-adjoint
    ``native_batch_norm_backward`` call of the native rule. Eval: the running statistics define a
    per-channel affine map (cuDNN's inference forward saves no statistics), so
    ``dy = dx * gamma * invstd + (x - mean) * invstd * dgamma + dbeta`` directly.
    """
    dx, dgamma, dbeta = (list(tin) + [None, None])[:3]
    x = _saved(node, "_saved_input")
    weight = node._saved_weight
    if training:
        mean, invstd = _saved(node, "_saved_result1"), _saved(node, "_saved_result2")
    else:
        rm, rv = node._saved_running_mean, node._saved_running_var
        if rm is None or rv is None:
            raise UnsupportedGraph(f"{_name(node)} in eval mode without running statistics", node=_name(node))
        mean, invstd = rm, (rv + eps).rsqrt()
    out = None
    if dx is not None:
        if training:
            out = torch.ops.aten.native_batch_norm_backward(
                dx, x, weight, node._saved_running_mean, node._saved_running_var, mean, invstd, True, eps,
                [True, False, False])[0]
        else:
            scale = invstd if weight is None else weight * invstd
            out = dx * _channel_view(scale.to(dx.dtype), x.ndim)
    if dgamma is not None:  # xhat * dgamma + dbeta = x * a + c, a = invstd dgamma, c = dbeta - mean a
        a = invstd * dgamma
        c = -mean * a if dbeta is None else dbeta - mean * a
        part = torch.addcmul(_channel_view(c, x.ndim), x, _channel_view(a, x.ndim))
        out = part if out is None else out.add_(part)
    elif dbeta is not None:
        out = _add(out, _channel_view(dbeta, x.ndim).expand(x.shape))
    return out


@register_jvp_rule("CudnnBatchNormBackward0", "MiopenBatchNormBackward0")
def _gpu_batch_norm(node: Node, tin: Sequence[Tensor | None]) -> Tensor | None:
    """``cudnn_batch_norm`` / ``miopen_batch_norm`` (CUDA / ROCm BatchNorm with affine parameters).

    Saved (``derivatives.yaml``): ``input, weight, running_mean, running_var, result1 = save_mean,
    result2 = save_invstd, training, epsilon``; the same tangent as the native rule.
    """
    return _batch_norm_stats(node, tin, eps=float(node._saved_epsilon), training=bool(node._saved_training))


@register_jvp_rule("NativeDropoutBackward0")
def _native_dropout(node: Node, tin: Sequence[Tensor | None]) -> Tensor | None:
    """``native_dropout`` (the fused kernel ``F.dropout`` uses on CUDA): ``dy = dx * mask / (1 - p)``.

    Saved: ``p`` and ``result1`` (the boolean keep-mask). The node does not expose its ``train``
    flag; ``F.dropout`` / ``nn.Dropout`` call ``native_dropout`` only when training (in eval they
    record nothing), which is what this rule assumes: a direct ``torch.native_dropout(x, p,
    train=False)`` (an identity) is outside it.
    """
    if tin[0] is None:
        return None
    p = float(node._saved_p)
    scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
    return torch.ops.aten.native_dropout_backward(tin[0], _saved(node, "_saved_result1"), scale)


@register_jvp_rule("ToCopyBackward0")
def _to_copy(node: Node, tin: Sequence[Tensor | None]) -> Tensor | None:
    """``x.to(dtype / device)`` (autocast's casts of weights and inputs): the tangent is cast alike."""
    if tin[0] is None:
        return None
    meta = node._input_metadata[0]
    return tin[0].to(device=meta.device, dtype=meta.dtype)


@register_jvp_rule("AddmmBackward0")
def _addmm(node: Node, tin: Sequence[Tensor | None]) -> Tensor | None:
    """``d(beta b + alpha m1 @ m2)`` (a linear layer: ``m2`` is the transposed weight)."""
    db, dm1, dm2 = tin
    out = None
    if dm1 is not None:
        out = dm1 @ _saved(node, "_saved_mat2")
    if dm2 is not None:
        out = _add(out, _saved(node, "_saved_mat1") @ dm2)
    if out is not None and node._saved_alpha != 1:
        out = out * node._saved_alpha
    if db is not None:
        out = _add(out, db * node._saved_beta if node._saved_beta != 1 else db)
    return out


@register_jvp_rule("MmBackward0")
def _mm(node: Node, tin: Sequence[Tensor | None]) -> Tensor | None:
    da, db = tin
    out = None if da is None else da @ _saved(node, "_saved_mat2")
    return out if db is None else _add(out, _saved(node, "_saved_self") @ db)


@register_jvp_rule("AddBackward0", "SubBackward0")
def _add_sub(node: Node, tin: Sequence[Tensor | None]) -> Tensor | None:
    da, db = tin
    alpha = node._saved_alpha
    if _name(node) == "SubBackward0":
        alpha = -alpha
    if db is not None and alpha != 1:
        db = db * alpha
    return _add(da, db)


@register_jvp_rule("MulBackward0")
def _mul(node: Node, tin: Sequence[Tensor | None]) -> Tensor | None:
    """``d(a * b) = da * b + a * db`` (dropout: ``b`` is the scaled mask, ``db = None``)."""
    da, db = tin
    out = None if da is None else da * _saved(node, "_saved_other")
    return out if db is None else _add(out, _saved(node, "_saved_self") * db)


@register_jvp_rule("DivBackward0")
def _div(node: Node, tin: Sequence[Tensor | None]) -> Tensor | None:
    """``d(a / b) = da / b - a db / b^2``."""
    da, db = tin
    b = _saved(node, "_saved_other")
    out = None if da is None else da / b
    return out if db is None else _add(out, -_saved(node, "_saved_self") * db / (b * b))


# Elementwise activations have diagonal Jacobians, so the JVP is the op's own backward kernel
# applied to the tangent (one fused kernel each).
_aten = torch.ops.aten
JVP_RULES.update({
    "ReluBackward0": _unary(lambda node, t: _aten.threshold_backward(t, node._saved_result, 0)),
    "ThresholdBackward0": _unary(lambda node, t: _aten.threshold_backward(t, node._saved_self,
                                                                           node._saved_threshold)),
    "TanhBackward0": _unary(lambda node, t: _aten.tanh_backward(t, node._saved_result)),
    "SigmoidBackward0": _unary(lambda node, t: _aten.sigmoid_backward(t, node._saved_result)),
    "LeakyReluBackward0": _unary(lambda node, t: _aten.leaky_relu_backward(
        t, node._saved_self, node._saved_negative_slope, False)),
    "GeluBackward0": _unary(lambda node, t: _aten.gelu_backward(t, node._saved_self,
                                                                  approximate=node._saved_approximate)),
    "SiluBackward0": _unary(lambda node, t: _aten.silu_backward(t, node._saved_self)),
})


@register_jvp_rule("AsStridedBackward1")
def _as_strided(node: Node, tin: Sequence[Tensor | None]) -> Tensor | None:
    """A restride that covers its (contiguous) input exactly once, e.g. the ``(N, C, 1, 1)`` result
    of a pooling seen in ``channels_last`` strides: the same restride of the contiguous tangent.
    Any other ``as_strided`` (overlapping or partial views) has no rule."""
    if tin[0] is None:
        return None
    t = tin[0].contiguous()
    size, stride = tuple(node._saved_size), tuple(node._saved_stride)
    offset = node._saved_storage_offset
    spans = sorted((st, sz) for st, sz in zip(stride, size) if sz > 1)
    dense, expect = True, 1
    for st, sz in spans:  # strides of a permutation of a contiguous block
        dense &= st == expect
        expect *= sz
    if offset not in (None, 0) or not dense or expect != t.numel():
        raise UnsupportedGraph(f"no forward-mode rule for this as_strided view (size {size}, stride {stride})",
                               node="AsStridedBackward1")
    return t.as_strided(size, stride)


@register_jvp_rule("MaxPool2DWithIndicesBackward0")
def _max_pool2d(node: Node, tin: Sequence[Tensor | None]) -> Tensor | None:
    """The tangent at the arg-max of each window (the saved indices)."""
    if tin[0] is None:
        return None
    idx = node._saved_result1
    return tin[0].flatten(-2).gather(-1, idx.flatten(-2)).view_as(idx)


JVP_RULES.update({
    "AccumulateGrad": _unary(lambda node, t: t),  # never called: leaves are handled by graph_jvp
    "TBackward0": _unary(lambda node, t: t.t()),
    "PermuteBackward0": _unary(lambda node, t: t.permute([_signed(d) for d in node._saved_dims])),
    "TransposeBackward0": _unary(lambda node, t: t.transpose(_signed(node._saved_dim0), _signed(node._saved_dim1))),
    "CloneBackward0": _unary(lambda node, t: t),
    "ViewBackward0": _unary(lambda node, t: t.reshape(_out_shape(node))),
    "UnsafeViewBackward0": _unary(lambda node, t: t.reshape(_out_shape(node))),
    "MeanBackward0": _unary(lambda node, t: t.mean()),
    "MeanBackward1": _unary(lambda node, t: t.mean([_signed(d) for d in node._saved_dim], node._saved_keepdim)),
    "SumBackward0": _unary(lambda node, t: t.sum()),
    "SumBackward1": _unary(lambda node, t: t.sum([_signed(d) for d in node._saved_dim], node._saved_keepdim)),
    "AdaptiveAvgPool2DBackward0": _unary(lambda node, t: F.adaptive_avg_pool2d(t, _out_shape(node)[-2:])),
    "AvgPool2DBackward0": _unary(lambda node, t: F.avg_pool2d(
        t, node._saved_kernel_size, node._saved_stride, node._saved_padding, node._saved_ceil_mode,
        node._saved_count_include_pad, node._saved_divisor_override)),
    "ConstantPadNdBackward0": _unary(lambda node, t: F.pad(t, node._saved_pad)),
    "SliceBackward0": _unary(lambda node, t: torch.ops.aten.slice.Tensor(
        t, _signed(node._saved_dim), _signed_opt(node._saved_start), _signed_opt(node._saved_end),
        node._saved_step)),
})


# -- the fallback: one warning per node, counts for reports --------------------------------------------
_WARNED: set[str] = set()
_FALLBACKS: dict[str, int] = {}


def warn_unsupported_once(err: UnsupportedGraph) -> None:
    """Record that a JVP fell back to :func:`torch.func.jvp` because of ``err``; warn the first time.

    One :class:`RuntimeWarning` per process and node name (e.g. ``CudnnBatchNormBackward0`` on a
    torch without its rule), so a long run is told once which layer makes the meta step slower;
    every call is counted (:func:`fallback_counts`).
    """
    key = err.node or str(err)
    _FALLBACKS[key] = _FALLBACKS.get(key, 0) + 1
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(f"graph JVP not available ({err}): falling back to torch.func.jvp, which gives the same "
                  "numbers but re-runs the forward (about twice the JVP cost); "
                  "noisylabels.meta.register_jvp_rule adds a rule", RuntimeWarning, stacklevel=3)


def fallback_counts(*, reset: bool = False) -> dict[str, int]:
    """How often each node (or reason) made :func:`warn_unsupported_once` fall back, since the last reset."""
    out = dict(_FALLBACKS)
    if reset:
        _FALLBACKS.clear()
    return out


# -- the graph walk --------------------------------------------------------------------------------
def _forward_order(root: Node) -> list[Node]:
    """Nodes reachable from ``root`` with every node after all of its inputs (iterative DFS)."""
    order: list[Node] = []
    seen: set[Node] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        stack.extend((f, False) for f, _ in node.next_functions if f is not None and f not in seen)
    return order


def _check(order: Sequence[Node]) -> dict[Node, int]:
    """Raise :class:`UnsupportedGraph` unless every node has a rule; return consumer counts."""
    uses: dict[Node, int] = {}
    for node in order:
        name = _name(node)
        if name not in JVP_RULES:
            raise UnsupportedGraph(f"no forward-mode rule for autograd node {name}", node=name)
        for f, nr in node.next_functions:
            if f is None:
                continue
            if nr != 0:
                raise UnsupportedGraph(f"{name} consumes output {nr} of {_name(f)}", node=_name(f))
            uses[f] = uses.get(f, 0) + 1
    return uses


def supports_graph(output: Tensor) -> bool:
    """Whether :func:`graph_jvp` has a rule for every node of ``output``'s graph."""
    if output.grad_fn is None:
        return False
    try:
        _check(_forward_order(output.grad_fn))
    except UnsupportedGraph:
        return False
    return True


def graph_jvp(output: Tensor, tangents: Mapping[Tensor, Tensor]) -> Tensor:
    """``J_theta output . tangent`` on ``output``'s recorded graph, without re-running the forward.

    Parameters
    ----------
    output:
        A tensor computed with autograd recording (e.g. the training logits ``z = f(x; theta)``);
        its graph must still hold its saved tensors (backward with ``retain_graph=True``).
    tangents:
        ``leaf tensor -> direction`` (e.g. ``{parameter: s_p v_p}``), keyed by the tensor objects
        the forward used; other leaves are held fixed.

    Returns
    -------
    torch.Tensor
        The tangent of ``output`` (no graph), zeros if no tangent reaches it.

    Raises
    ------
    UnsupportedGraph
        If a node has no rule in :data:`JVP_RULES`, or the saved tensors were freed or modified
        in place (use :func:`torch.func.jvp` instead).
    """
    root = output.grad_fn
    if root is None:
        raise UnsupportedGraph("the output has no autograd graph")
    order = _forward_order(root)
    uses = _check(order)
    by_id = {id(leaf): t for leaf, t in tangents.items()}
    tan: dict[Node, Tensor | None] = {}
    with torch.no_grad():
        for node in order:
            name = _name(node)
            if name == "AccumulateGrad":
                tan[node] = by_id.get(id(node.variable))
                continue
            inputs = []
            for f, _ in node.next_functions:
                if f is None:
                    inputs.append(None)
                    continue
                inputs.append(tan[f])
                uses[f] -= 1
                if uses[f] == 0 and f is not root:  # free tangents nobody reads again
                    del tan[f]
            try:
                tan[node] = JVP_RULES[name](node, inputs)
            except RuntimeError as err:  # saved tensors freed or modified in place
                raise UnsupportedGraph(f"{name}: {err}".splitlines()[0], node=name) from err
    out = tan[root]
    return torch.zeros_like(output) if out is None else out.reshape(output.shape)
