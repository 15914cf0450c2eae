"""Forward-mode derivatives on the recorded graph (noisylabels.meta.graph_jvp) against torch.func.jvp
and central finite differences, rule by rule and on every registered model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from noisylabels.errors import UserError
from noisylabels.meta import UnsupportedGraph, register_jvp_rule
from noisylabels.meta.engine import meta_gradient_jvp, per_example_weights_jvp
from noisylabels.meta.functional import functional_logits, params_and_buffers
from noisylabels.meta.graph_jvp import JVP_RULES, graph_jvp, supports_graph
from noisylabels.models import create_model, list_models

DT = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def func_jvp(model: nn.Module, x: torch.Tensor, tangent: dict[str, torch.Tensor]) -> torch.Tensor:
    """Reference: torch.func.jvp of the functional forward along ``tangent`` (others fixed)."""
    params, buffers = params_and_buffers(model)
    names = list(tangent)
    fixed = {n: p.detach() for n, p in params.items() if n not in tangent}

    def f(*ps):
        return functional_logits(model, {**fixed, **dict(zip(names, ps))}, buffers, x)

    return torch.func.jvp(f, tuple(params[n].detach() for n in names), tuple(tangent[n] for n in names))[1]


def graph_and_reference(model: nn.Module, x: torch.Tensor, *, subset=None, seed: int = 0):
    """(graph_jvp on a recorded forward, torch.func.jvp) along a random tangent; same dropout masks."""
    params, buffers = params_and_buffers(model)
    g = torch.Generator().manual_seed(seed)
    tangent = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()
               if subset is None or n in subset}
    rng = torch.get_rng_state()
    z = functional_logits(model, params, buffers, x)
    u = graph_jvp(z, {params[n]: t for n, t in tangent.items()})
    torch.set_rng_state(rng)
    return u, func_jvp(model, x, tangent)


# -- every registered model, train and eval mode --------------------------------------------------------
MODEL_INPUTS = {"lenet": (1, 28), "mlp": (1, 8)}


#: the same layers as the defaults, fewer of them (wrn28_10 is wrn with its default depth and width)
MODEL_OPTIONS = {"wrn": {"depth": 10, "widen_factor": 2, "dropout": 0.3}}


#: models whose check takes more than a few seconds on 2 CPU cores (measured: resnet50 about 10 s,
#: resnet34 about 5 s)
SLOW_MODELS = {"resnet50", "resnet34"}  # resnet34: the same blocks as resnet18, about 5 s


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_MODELS else m
                                  for m in list_models() if m != "wrn28_10"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_every_registered_model_matches_torch_func(name, mode):
    channels, size = MODEL_INPUTS.get(name, (3, 32))
    opts = MODEL_OPTIONS.get(name, {})
    model = create_model(name, num_classes=5, in_channels=channels, image_size=size, seed=0, **opts).to(DT)
    model.train(mode == "train")
    x = torch.randn(3, channels, size, size, generator=torch.Generator().manual_seed(1), dtype=DT)
    z = model(x)
    assert supports_graph(z), "a registered model has a layer without a forward-mode rule (slow fallback)"
    u, ref = graph_and_reference(model, x)
    assert ref.abs().max() > 1e-3
    torch.testing.assert_close(u, ref, rtol=1e-10, atol=1e-12)


# -- rule by rule, on small modules (conv bias, transposed conv, pools, products, ...) ------------------
class Zoo(nn.Module):
    """Every op with a rule, in one forward (inputs chosen so each rule's every branch runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, bias=True)
        self.deconv = nn.ConvTranspose2d(3, 3, 2, stride=2)
        self.bn = nn.BatchNorm2d(3)
        self.bn_plain = nn.BatchNorm2d(3, affine=False)
        self.lin = nn.Linear(12, 4)
        self.lin_nobias = nn.Linear(4, 4, bias=False)
        self.scale = nn.Parameter(torch.randn(4))
        self.proj = nn.Parameter(torch.randn(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x))
        h = self.bn(self.deconv(h))                       # 8x8
        h = F.max_pool2d(F.leaky_relu(h, 0.1), 2)         # 4x4
        h = self.bn_plain(h) + 0.5 * F.gelu(h)
        h = F.avg_pool2d(torch.sigmoid(F.threshold(h, -0.5, -0.5)), 2)  # 2x2
        h = F.pad(h, (1, 0, 0, 1))[:, :, 1:, :-1] - F.silu(h)
        h = F.adaptive_avg_pool2d(F.dropout(h, 0.2, self.training), 1) * h.mean((2, 3), keepdim=True)
        s = h.sum((2, 3), keepdim=True)
        h = h / (1.5 + s * s)
        h = h.flatten(1).repeat(1, 4)                     # (n, 12); RepeatBackward0 has no rule
        return torch.matmul(h.view(len(h), 3, 4), self.proj).transpose(1, 2).flatten(1)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        z = self.lin(h)
        z = self.lin_nobias(F.relu(z)) * self.scale - z.sum(1, keepdim=True) / 4 + h.sum() / 10 + h.mean()
        return z.T.clone().T


class ZooNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.zoo = Zoo()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.zoo(x)
        return self.zoo.head(h.reshape(len(h), 12))


def zoo_model() -> nn.Module:
    torch.manual_seed(0)
    return ZooNet().to(DT)


def test_repeat_has_no_rule_then_a_registered_rule_makes_it_supported():
    model = zoo_model().train()
    x = torch.randn(4, 2, 4, 4, dtype=DT)
    z = model(x)
    assert not supports_graph(z)
    with pytest.raises(UnsupportedGraph, match="RepeatBackward0"):
        graph_jvp(z, {p: torch.ones_like(p) for p in model.parameters()})
    assert "RepeatBackward0" not in JVP_RULES

    @register_jvp_rule("RepeatBackward0")
    def _repeat(node, tin):
        return None if tin[0] is None else tin[0].repeat(*node._saved_repeats)

    try:
        assert supports_graph(model(x))
        for mode in ("train", "eval"):
            model.train(mode == "train")
            u, ref = graph_and_reference(model, x)
            torch.testing.assert_close(u, ref, rtol=1e-10, atol=1e-12)
    finally:
        del JVP_RULES["RepeatBackward0"]


def test_partial_tangent_and_inputs_that_require_grad():
    """Leaves outside the tangent (frozen parameters, an input that requires grad) are held fixed."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2)).to(DT)
    x = torch.randn(5, 1, 4, 4, dtype=DT, requires_grad=True)
    params, _ = params_and_buffers(model)
    for subset in (["1.weight"], ["0.weight", "4.bias"], ["1.bias"]):
        u, ref = graph_and_reference(model, x, subset=subset)
        torch.testing.assert_close(u, ref, rtol=1e-10, atol=1e-12)
    z = model(x)
    assert torch.equal(graph_jvp(z, {}), torch.zeros_like(z))


def test_graph_jvp_matches_central_finite_differences():
    """Independent of torch.func: (f(theta + h t) - f(theta - h t)) / 2h on a conv-BN-ReLU net in train mode."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 2 * 2, 3)).to(DT).train()
    params, buffers = params_and_buffers(model)
    x = torch.randn(6, 1, 6, 6, dtype=DT)
    t = {n: torch.randn_like(p) for n, p in params.items()}
    u = graph_jvp(functional_logits(model, params, buffers, x), {params[n]: t[n] for n in t})
    h = 1e-6
    with torch.no_grad():
        zp = functional_logits(model, {n: p + h * t[n] for n, p in params.items()}, buffers, x)
        zm = functional_logits(model, {n: p - h * t[n] for n, p in params.items()}, buffers, x)
    torch.testing.assert_close(u, (zp - zm) / (2 * h), rtol=1e-6, atol=1e-8)


def test_freed_graph_and_graphless_output_are_unsupported():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).to(DT)
    z = model(torch.randn(5, 3, dtype=DT))
    z.sum().backward()  # frees the saved tensors
    with pytest.raises(UnsupportedGraph):
        graph_jvp(z, {p: torch.ones_like(p) for p in model.parameters()})
    with pytest.raises(UnsupportedGraph, match="no autograd graph"):
        graph_jvp(z.detach(), {})
    assert not supports_graph(z.detach())


# -- the engine: graph walk, torch.func fallback and the backend switch ---------------------------------
def _engine_case(act: type[nn.Module]):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), act(), nn.Flatten(), nn.Linear(12, 3)).to(DT)
    wnet = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1), nn.Sigmoid()).to(DT)
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, nesterov=True, weight_decay=1e-3)
    g = torch.Generator().manual_seed(2)
    x, mx = torch.randn(8, 1, 4, 4, generator=g, dtype=DT), torch.randn(6, 1, 4, 4, generator=g, dtype=DT)
    y, my = torch.randint(0, 3, (8,), generator=g), torch.randint(0, 3, (6,), generator=g)

    def layer(z, yy):
        ce = F.cross_entropy(z, yy, reduction="none")
        return wnet(ce.detach()[:, None]).squeeze(1) * ce

    def ce(z, yy):
        return F.cross_entropy(z, yy, reduction="none")

    return model, wnet, opt, (x, y, layer, mx, my, ce)


@pytest.mark.parametrize("act", [nn.ReLU, nn.Softplus])  # Softplus has no rule: auto falls back
def test_engine_backends_agree_and_graph_backend_refuses_unsupported_layers(act):
    model, wnet, opt, (x, y, layer, mx, my, ce) = _engine_case(act)
    phi = list(wnet.parameters())
    res = {b: meta_gradient_jvp(model, opt, x=x, y=y, loss_layer=layer, meta_x=mx, meta_y=my, meta_loss_fn=ce,
                                phi=phi, jvp_backend=b, reuse_forward=False) for b in ("auto", "func")}
    torch.testing.assert_close(torch.cat([g.flatten() for g in res["auto"].meta_grads]),
                               torch.cat([g.flatten() for g in res["func"].meta_grads]), rtol=1e-10, atol=1e-14)
    w = {b: per_example_weights_jvp(model, opt, x=x, y=y, meta_x=mx, meta_y=my, meta_loss_fn=ce, jvp_backend=b,
                                    reuse_forward=False).weights for b in ("auto", "func")}
    torch.testing.assert_close(w["auto"], w["func"], rtol=1e-10, atol=1e-14)
    if act is nn.Softplus:
        with pytest.raises(UserError, match="SoftplusBackward0"):
            meta_gradient_jvp(model, opt, x=x, y=y, loss_layer=layer, meta_x=mx, meta_y=my, meta_loss_fn=ce, phi=phi,
                              jvp_backend="graph", reuse_forward=False)
    else:
        graph = meta_gradient_jvp(model, opt, x=x, y=y, loss_layer=layer, meta_x=mx, meta_y=my, meta_loss_fn=ce,
                                  phi=phi, jvp_backend="graph", reuse_forward=False)
        torch.testing.assert_close(graph.meta_grads, res["auto"].meta_grads, rtol=0, atol=0)
    with pytest.raises(UserError, match="jvp_backend"):
        meta_gradient_jvp(model, opt, x=x, y=y, loss_layer=layer, meta_x=mx, meta_y=my, meta_loss_fn=ce, phi=phi,
                          jvp_backend="fast", reuse_forward=False)
