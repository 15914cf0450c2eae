"""Graph-JVP rules for the nodes a CUDA forward records (cuDNN / MIOpen BatchNorm, fused dropout,
autocast casts), the engine's one-time fallback warning, and the same equality checks on every
available device (CUDA where present: ``benchmarks/gpu_check.py`` runs this file on a GPU)."""

from __future__ import annotations

import importlib
import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from noisylabels.errors import UserError
from noisylabels.meta import UnsupportedGraph
from noisylabels.meta.engine import meta_gradient_double_backward, meta_gradient_jvp
from noisylabels.meta.functional import functional_logits, params_and_buffers
from noisylabels.meta.graph_jvp import JVP_RULES, graph_jvp, supports_graph
from noisylabels.models import create_model, list_models

gj = importlib.import_module("noisylabels.meta.graph_jvp")  # the module (the package exports its function)

DT = torch.float64
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# -- cuDNN / MIOpen BatchNorm: the rule on nodes carrying the saved tensors derivatives.yaml names ------
def _fake_gpu_bn_node(kind: str, x, weight, running_mean, running_var, *, training: bool, eps: float):
    """An object with a ``CudnnBatchNormBackward0``'s saved attributes, from CPU statistics.

    Training: ``result1, result2`` = the batch mean and inverse std (what cuDNN saves). Eval: empty
    tensors (cuDNN's inference forward saves none), so the rule must use the running statistics.
    """
    if training:
        _, mean, invstd = torch.ops.aten.native_batch_norm(x, weight, None, running_mean.clone(),
                                                           running_var.clone(), True, 0.1, eps)
    else:
        mean, invstd = x.new_empty(0), x.new_empty(0)
    attrs = dict(_saved_input=x, _saved_weight=weight, _saved_running_mean=running_mean,
                 _saved_running_var=running_var, _saved_result1=mean, _saved_result2=invstd,
                 _saved_training=training, _saved_epsilon=eps)
    if kind == "CudnnBatchNormBackward0":
        attrs["_saved_result3"] = torch.empty(0, dtype=torch.uint8)
    return type(kind, (), attrs)()


def _bn_case(seed: int = 0, shape=(6, 3, 4, 5)):
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    x = torch.randn(shape, generator=g, dtype=DT)
    w, b = torch.randn(c, generator=g, dtype=DT), torch.randn(c, generator=g, dtype=DT)
    rm, rv = torch.randn(c, generator=g, dtype=DT), torch.rand(c, generator=g, dtype=DT) + 0.5
    tangents = [torch.randn_like(x), torch.randn_like(w), torch.randn_like(b)]
    return x, w, b, rm, rv, tangents


@pytest.mark.parametrize("kind", ["CudnnBatchNormBackward0", "MiopenBatchNormBackward0"])
@pytest.mark.parametrize("training", [True, False])
def test_gpu_batch_norm_rule_matches_torch_func_for_every_tangent_subset(kind, training):
    x, w, b, rm, rv, (tx, tw, tb) = _bn_case()
    eps = 1e-3
    node = _fake_gpu_bn_node(kind, x, w, rm, rv, training=training, eps=eps)

    def bn(xx, ww, bb):
        return F.batch_norm(xx, rm.clone(), rv.clone(), ww, bb, training, 0.1, eps)

    for mask in itertools.product([True, False], repeat=3):
        tin = [t if m else None for t, m in zip((tx, tw, tb), mask)]
        got = JVP_RULES[kind](node, tin)
        if not any(mask):
            assert got is None
            continue
        ref = torch.func.jvp(bn, (x, w, b), tuple(t if m else torch.zeros_like(t) for t, m in zip((tx, tw, tb), mask)))[1]
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_gpu_batch_norm_rule_equals_the_native_rule_on_the_same_saved_tensors():
    x, w, b, rm, rv, tangents = _bn_case(1)
    for training in (True, False):
        xr = x.clone().requires_grad_()
        wr, br = w.clone().requires_grad_(), b.clone().requires_grad_()
        out = F.batch_norm(xr, rm.clone(), rv.clone(), wr, br, training, 0.1, 1e-5)
        native = out.grad_fn
        assert type(native).__name__ == "NativeBatchNormBackward0"
        fake = _fake_gpu_bn_node("CudnnBatchNormBackward0", x, w, native._saved_running_mean,
                                 native._saved_running_var, training=training, eps=native._saved_eps)
        if training:  # the very statistics the native node saved
            fake._saved_result1, fake._saved_result2 = native._saved_result1, native._saved_result2
        torch.testing.assert_close(JVP_RULES["CudnnBatchNormBackward0"](fake, tangents),
                                   JVP_RULES["NativeBatchNormBackward0"](native, tangents), rtol=1e-12, atol=1e-13)


def test_gpu_batch_norm_in_eval_without_running_statistics_is_unsupported():
    x, w, _, rm, rv, tangents = _bn_case()
    node = _fake_gpu_bn_node("CudnnBatchNormBackward0", x, w, rm, rv, training=False, eps=1e-5)
    node._saved_running_mean = None
    with pytest.raises(UnsupportedGraph, match="eval mode without running statistics") as info:
        JVP_RULES["CudnnBatchNormBackward0"](node, tangents)
    assert info.value.node == "CudnnBatchNormBackward0"


# -- fused dropout (what F.dropout records on CUDA): real nodes, checked by the adjoint identity --------
@pytest.mark.parametrize("p", [0.3, 0.9])
def test_native_dropout_rule_by_the_adjoint_identity(p):
    """<J t, g> = <t, J^T g>, with J^T g from torch's own backward of the same node (same mask)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 7, generator=g, dtype=DT, requires_grad=True)
    out, mask = torch.native_dropout(x, p, True)
    assert type(out.grad_fn).__name__ == "NativeDropoutBackward0" and not bool(mask.all())
    t, cot = torch.randn(x.shape, generator=g, dtype=DT), torch.randn(x.shape, generator=g, dtype=DT)
    u = graph_jvp(out, {x: t})
    vjp, = torch.autograd.grad(out, x, cot)
    torch.testing.assert_close((u * cot).sum(), (t * vjp).sum(), rtol=1e-12, atol=0)
    torch.testing.assert_close(u, t * mask / (1 - p), rtol=1e-12, atol=0)
    out1, _ = torch.native_dropout(x, 1.0, True)
    assert torch.equal(graph_jvp(out1, {x: t}), torch.zeros_like(t))


class FusedDropoutNet(nn.Module):
    """conv-BN-ReLU, then the fused dropout kernel CUDA uses, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Linear(16, 3)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))
        if self.training:
            h = torch.native_dropout(h, 0.25, True)[0]
        return self.fc(h.flatten(1))


def test_fused_dropout_in_a_network_by_the_adjoint_identity():
    torch.manual_seed(0)
    model = FusedDropoutNet().to(DT).train()
    params, buffers = params_and_buffers(model)
    x = torch.randn(5, 2, 4, 4, dtype=DT)
    z = functional_logits(model, params, buffers, x)
    assert supports_graph(z)
    t = {n: torch.randn_like(p) for n, p in params.items()}
    cot = torch.randn_like(z)
    u = graph_jvp(z, {params[n]: t[n] for n in t})
    vjp = torch.autograd.grad(z, [params[n] for n in t], cot)
    torch.testing.assert_close((u * cot).sum(), sum((t[n] * v).sum() for n, v in zip(t, vjp)), rtol=1e-11, atol=0)


# -- autocast casts ----------------------------------------------------------------------------------
def test_to_copy_rule_casts_the_tangent():
    w = torch.randn(4, 3, dtype=DT, requires_grad=True)
    x = torch.randn(5, 4, dtype=torch.float32)
    z = x @ w.to(torch.float32)
    t = torch.randn_like(w)
    assert type(z.grad_fn.next_functions[1][0]).__name__ == "ToCopyBackward0"
    u = graph_jvp(z, {w: t})
    assert u.dtype == torch.float32
    torch.testing.assert_close(u, x @ t.to(torch.float32))


def test_cpu_bf16_autocast_forward_is_walked_and_follows_float32():
    """Under autocast every node of a CIFAR ResNet has a rule (its casts included) and the bf16
    tangent follows the float32 one. Only direction is checked (cosine > 0.97): on a random
    all-parameter direction the bf16 walk differs from float32 by about 10% in norm (BatchNorm's
    centring cancels in bf16); the engine's precision under autocast is stated where autocast is
    added to the engine."""
    model = create_model("resnet8", num_classes=5, seed=0).train()
    params, buffers = params_and_buffers(model)
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    t = {n: torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) for n, p in params.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = functional_logits(model, params, buffers, x)
    names = {type(n).__name__ for n in gj._forward_order(z.grad_fn)}
    assert "ToCopyBackward0" in names and supports_graph(z)
    u16 = graph_jvp(z, {params[n]: t[n] for n in t})
    assert u16.dtype == z.dtype == torch.bfloat16
    u32 = graph_jvp(functional_logits(model, params, buffers, x), {params[n]: t[n] for n in t})
    assert float(F.cosine_similarity(u16.float().flatten(), u32.flatten(), dim=0)) > 0.97


# -- the engine's one-time warning ------------------------------------------------------------------
def _softplus_case():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Softplus(), nn.Linear(4, 3)).to(DT)
    wnet = nn.Sequential(nn.Linear(1, 3), nn.Sigmoid(), nn.Linear(3, 1)).to(DT)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, mx = torch.randn(6, 3, dtype=DT), torch.randn(4, 3, dtype=DT)
    y, my = torch.randint(0, 3, (6,)), torch.randint(0, 3, (4,))

    def layer(z, yy):
        ce = F.cross_entropy(z, yy, reduction="none")
        return wnet(ce.detach()[:, None]).squeeze(1) * ce

    def ce(z, yy):
        return F.cross_entropy(z, yy, reduction="none")

    return model, opt, dict(x=x, y=y, loss_layer=layer, meta_x=mx, meta_y=my, meta_loss_fn=ce,
                            phi=list(wnet.parameters()), reuse_forward=False)


def test_auto_backend_falls_back_with_one_warning_naming_the_node(monkeypatch):
    monkeypatch.setattr(gj, "_WARNED", set())
    gj.fallback_counts(reset=True)
    model, opt, args = _softplus_case()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = meta_gradient_jvp(model, opt, **args)
        second = meta_gradient_jvp(model, opt, **args)
    ours = [w for w in caught if issubclass(w.category, RuntimeWarning) and "graph JVP" in str(w.message)]
    assert len(ours) == 1 and "SoftplusBackward0" in str(ours[0].message)
    assert gj.fallback_counts(reset=True) == {"SoftplusBackward0": 2}
    assert gj.fallback_counts() == {}
    ref = meta_gradient_double_backward(model, opt, **args)
    for a, b in zip(first.meta_grads, ref.meta_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(first.meta_grads, second.meta_grads, rtol=0, atol=0)
    with pytest.raises(UserError, match="SoftplusBackward0"):
        meta_gradient_jvp(model, opt, **args, jvp_backend="graph")


# -- the real nodes of every device: graph walk == torch.func.jvp, no fallback --------------------------
def _models(device: str) -> list[str]:
    if device == "cpu":  # test_graph_jvp.py covers every model on the CPU
        return ["resnet8", "wrn"]
    return [m for m in list_models() if m != "wrn28_10"]


CASES = [(d, m) for d in DEVICES for m in _models(d)]
INPUTS = {"lenet": (1, 28), "mlp": (1, 8)}
OPTIONS = {"wrn": {"depth": 10, "widen_factor": 2, "dropout": 0.3}}


@pytest.mark.parametrize("device, name", CASES)
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_device_forward_is_walked_without_fallback(device, name, mode, dtype):
    """float64: exact agreement; float32 (TF32 off): the dtype for which CUDA surely takes cuDNN's
    BatchNorm, so on a GPU the cuDNN node must be in the graph and walked."""
    channels, size = INPUTS.get(name, (3, 32 if device == "cuda" else 16))
    model = create_model(name, num_classes=5, in_channels=channels, image_size=size, seed=0,
                         **OPTIONS.get(name, {})).to(device=device, dtype=dtype).train(mode == "train")
    params, buffers = params_and_buffers(model)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, channels, size, size, generator=g, dtype=dtype).to(device)
    tangent = {n: torch.randn(p.shape, generator=g, dtype=dtype).to(device) for n, p in params.items()}
    forked = [device] if device == "cuda" else []
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.random.fork_rng(devices=forked):
            z = functional_logits(model, params, buffers, x)  # the recorded graph ...
        names = {type(n).__name__ for n in gj._forward_order(z.grad_fn)}
        assert supports_graph(z), f"no rule for {sorted(n for n in names if n not in JVP_RULES)}"
        has_bn2d = any(isinstance(m, nn.BatchNorm2d) and m.affine for m in model.modules())
        if device == "cuda" and dtype == torch.float32 and torch.backends.cudnn.is_available() and has_bn2d:
            assert "CudnnBatchNormBackward0" in names, names
        if device == "cuda" and mode == "train" and name == "wrn":
            assert "NativeDropoutBackward0" in names, names
        u = graph_jvp(z, {params[n]: t for n, t in tangent.items()})
        fixed = dict(params)

        def f(*ps):
            return functional_logits(model, {**fixed, **dict(zip(tangent, ps))}, buffers, x)

        with torch.random.fork_rng(devices=forked):  # ... the same dropout masks
            ref = torch.func.jvp(f, tuple(params[n].detach() for n in tangent), tuple(tangent.values()))[1]
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert ref.abs().max() > 1e-3
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(u, ref, **tol)


@pytest.mark.parametrize("device", DEVICES)
def test_engine_meta_gradient_on_device_equals_double_backward_without_fallback(device):
    gj.fallback_counts(reset=True)
    model = create_model("wrn", num_classes=4, depth=10, widen_factor=1, dropout=0.2, seed=0).to(device, DT).train()
    wnet = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1), nn.Sigmoid()).to(device, DT)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(3)
    x, mx = (torch.randn(n, 3, 16, 16, generator=g, dtype=DT).to(device) for n in (6, 5))
    y, my = (torch.randint(0, 4, (n,), generator=g).to(device) for n in (6, 5))

    def layer(z, yy):
        ce = F.cross_entropy(z, yy, reduction="none")
        return wnet(ce.detach()[:, None]).squeeze(1) * ce

    def ce(z, yy):
        return F.cross_entropy(z, yy, reduction="none")

    phi = list(wnet.parameters())
    rng = torch.random.fork_rng(devices=[device] if device == "cuda" else [])
    with rng:
        kw = dict(x=x, y=y, loss_layer=layer, meta_x=mx, meta_y=my, meta_loss_fn=ce, phi=phi, reuse_forward=False)
        fast = meta_gradient_jvp(model, opt, **kw, jvp_backend="graph")
    with torch.random.fork_rng(devices=[device] if device == "cuda" else []):
        ref = meta_gradient_double_backward(model, opt, **kw)
    assert gj.fallback_counts() == {}
    assert max(float(r.abs().max()) for r in ref.meta_grads) > 1e-8
    for a, b in zip(fast.meta_grads, ref.meta_grads):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-12)
