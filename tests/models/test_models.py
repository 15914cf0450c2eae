"""Tests for noisylabels.models: shapes, parameter counts, options, torch.func compatibility."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, jvp, vjp

from noisylabels.errors import UserError
from noisylabels.models import (
    MODELS,
    Classifier,
    count_parameters,
    create_model,
    describe_model,
    list_models,
)

# torch's forward-AD decompositions call the deprecated torch.jit.script on first use.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

# Small variants keep the generic ``wrn`` cheap; ``wrn28_10`` is tested at full size.
OPTIONS = {"wrn": {"depth": 10, "widen_factor": 2}}
EXPECTED = {
    "mlp", "lenet", "resnet8", "resnet20", "resnet32", "resnet44", "resnet56",
    "resnet18", "resnet34", "preact_resnet18", "wrn", "wrn28_10",
}


def build(name: str, **kw) -> Classifier:
    kw.setdefault("num_classes", 7)
    return create_model(name, seed=0, **{**OPTIONS.get(name, {}), **kw})


def test_list_models() -> None:
    assert EXPECTED <= set(list_models())
    assert list_models() == sorted(list_models())
    assert all(describe_model(n) for n in list_models())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_forward_and_features_cifar(name: str) -> None:
    model = build(name)
    assert isinstance(model, Classifier)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        model.eval()
        feats = model.features(x)
        assert torch.allclose(model.classifier(feats), model(x), atol=1e-6)
    assert out.shape == (2, 7)
    assert feats.shape == (2, model.num_features)
    assert model.classifier.in_features == model.num_features
    assert model.classifier.out_features == model.num_classes == 7


@pytest.mark.parametrize("name", ["mlp", "lenet", "resnet8"])
@pytest.mark.parametrize("size", [8, 28])
def test_small_grey_images(name: str, size: int) -> None:
    model = build(name, num_classes=10, in_channels=1, image_size=size)
    x = torch.randn(3, 1, size, size)
    out = model(x)
    assert out.shape == (3, 10)
    assert model.features(x).shape == (3, model.num_features)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_lenet_is_classic_on_mnist() -> None:
    model = build("lenet", in_channels=1, image_size=28)
    assert model.fc1.in_features == 16 * 5 * 5


@pytest.mark.parametrize(
    "name, expected",
    [
        ("resnet20", 269_722),  # He et al. 2016, Table 6: 0.27M
        ("resnet32", 464_154),  # 0.46M
        ("resnet44", 658_586),  # 0.66M
        ("resnet56", 853_018),  # 0.85M
        ("preact_resnet18", 11_171_146),
        ("resnet18", 11_173_962),
        ("resnet34", 21_282_122),
        ("resnet50", 23_520_842),  # the usual CIFAR-style ResNet-50 (3x3 stem, no max-pool)
        ("wrn28_10", 36_479_194),  # Zagoruyko & Komodakis 2016: 36.5M
    ],
)
def test_parameter_counts(name: str, expected: int) -> None:
    assert count_parameters(build(name, num_classes=10)) == expected


def test_shortcut_b_adds_projections() -> None:
    a = build("resnet20", num_classes=10)
    b = build("resnet20", num_classes=10, shortcut="b")
    # two 1x1 projections (16->32, 32->64) plus their BatchNorms
    assert count_parameters(b) - count_parameters(a) == 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64


def test_mlp_options() -> None:
    model = build("mlp", in_channels=1, image_size=8, hidden=[32, 16], dropout=0.5)
    assert model.num_features == 16
    assert count_parameters(model) == 64 * 32 + 32 + 32 * 16 + 16 + 16 * 7 + 7
    linear = build("mlp", hidden=())
    assert linear.num_features == 3 * 32 * 32
    with pytest.raises(UserError, match="1024 input values"):
        build("mlp", in_channels=1, image_size=32)(torch.zeros(1, 1, 28, 28))


def test_wrn_options() -> None:
    model = build("wrn", depth=16, widen_factor=4, dropout=0.3)
    assert model.num_features == 256
    assert len(model.block1) == 2


def test_seed_reproducible_and_leaves_global_rng() -> None:
    state = torch.get_rng_state()
    a = create_model("resnet8", num_classes=3, seed=5)
    b = create_model("resnet8", num_classes=3, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    "name, kw, match",
    [
        ("no_such_net", {}, "unknown model 'no_such_net'; valid names:"),
        ("resnet32", {"widen_factor": 2}, "no option"),
        ("mlp", {"shortcut": "A"}, "no option"),
        ("resnet32", {"shortcut": "C"}, "shortcut"),
        ("wrn", {"depth": 27}, "6n\\+4"),
        ("wrn", {"widen_factor": 0}, "widen_factor"),
        ("wrn28_10", {"dropout": 1.5}, "dropout"),
        ("mlp", {"hidden": "256"}, "hidden"),
        ("mlp", {"hidden": [0]}, "hidden"),
        ("lenet", {"num_classes": 0}, "num_classes"),
        ("lenet", {"in_channels": True}, "in_channels"),
        ("lenet", {"image_size": 2.5}, "image_size"),
    ],
)
def test_user_errors(name: str, kw: dict, match: str) -> None:
    kw.setdefault("num_classes", 10)
    with pytest.raises(UserError, match=match):
        create_model(name, **kw)


def test_resnet50_has_bottlenecks_and_2048_features() -> None:
    from noisylabels.models.resnet import Bottleneck

    m = create_model("resnet50", num_classes=10, seed=0)
    assert m.num_features == 2048 and sum(isinstance(b, Bottleneck) for b in m.modules()) == 16
    assert not any(getattr(x, "inplace", False) for x in m.modules())


def test_registry_is_case_insensitive() -> None:
    assert "ResNet32" in MODELS
    assert count_parameters(create_model("ResNet32", num_classes=10)) == 464_154


@pytest.mark.parametrize("name", sorted(EXPECTED - {"wrn28_10", "resnet34"}))
@pytest.mark.parametrize("train", [True, False])
def test_functional_call_matches_forward(name: str, train: bool) -> None:
    model = build(name).train(train)
    x = torch.randn(2, 3, 32, 32)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        expected = model(x)
        got = functional_call(model, (params, buffers), (x,))
    assert torch.allclose(got, expected, atol=1e-5)


def _jvp_setup(name: str, size: int = 16):
    model = build(name, num_classes=5, image_size=size).double().train()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    x = torch.randn(4, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f(p):
        # BatchNorm updates running stats in place: clone buffers inside the transform.
        return functional_call(model, (p, {k: b.clone() for k, b in buffers.items()}), (x,))

    g = torch.Generator().manual_seed(1)
    v = {k: torch.randn(t.shape, generator=g, dtype=t.dtype) for k, t in params.items()}
    norm = torch.sqrt(sum((t**2).sum() for t in v.values()))
    v = {k: t / norm for k, t in v.items()}
    return f, params, v


def test_jvp_resnet8_train_mode_matches_finite_differences() -> None:
    f, params, v = _jvp_setup("resnet8")
    out, tangent = jvp(f, (params,), (v,))
    assert torch.allclose(out, f(params))
    eps = 1e-6
    plus = f({k: params[k] + eps * v[k] for k in params})
    minus = f({k: params[k] - eps * v[k] for k in params})
    fd = (plus - minus) / (2 * eps)
    assert tangent.abs().max() > 1e-3
    assert torch.allclose(tangent, fd, rtol=1e-4, atol=1e-4 * fd.abs().max().item())
    # and agrees with reverse mode: <u, J v> == <J^T u, v>
    u = torch.randn_like(out)
    _, pullback = vjp(f, params)
    (grads,) = pullback(u)
    reverse = sum((grads[k] * v[k]).sum() for k in params)
    assert torch.allclose((u * tangent).sum(), reverse, rtol=1e-8)


@pytest.mark.parametrize("name", ["preact_resnet18", "wrn", "lenet", "mlp"])
def test_jvp_other_models_agree_with_vjp(name: str) -> None:
    f, params, v = _jvp_setup(name, size=8)
    out, tangent = jvp(f, (params,), (v,))
    u = torch.randn_like(out)
    _, pullback = vjp(f, params)
    (grads,) = pullback(u)
    reverse = sum((grads[k] * v[k]).sum() for k in params)
    assert torch.allclose((u * tangent).sum(), reverse, rtol=1e-8)


def test_no_inplace_relu_modules() -> None:
    for name in EXPECTED - {"wrn28_10", "resnet34"}:
        for m in build(name).modules():
            assert not getattr(m, "inplace", False), (name, m)
