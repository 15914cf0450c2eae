"""GPU-style run options on the CPU: bf16/fp16 autocast, channels_last, compile guards; the meta
engine under bf16 autocast stays within the stated tolerance of float32."""

import json

import pytest
import torch
import torch.nn.functional as F

from noisylabels.errors import UserError
from noisylabels.meta import per_example_weights
from noisylabels.meta.engine import meta_gradient_jvp
from noisylabels.methods.mwnet import WeightNet
from noisylabels.models import create_model
from noisylabels.train import build_context, fit

from tests.helpers import run_cfg


def _problem(seed=0, n=16):
    torch.manual_seed(seed)
    model = create_model("resnet8", num_classes=10, in_channels=3, image_size=32).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    wnet = WeightNet(16)
    g = torch.Generator().manual_seed(seed + 1)
    x, mx = torch.randn(n, 3, 32, 32, generator=g), torch.randn(n, 3, 32, 32, generator=g)
    y, my = torch.randint(0, 10, (n,), generator=g), torch.randint(0, 10, (n,), generator=g)

    def layer(z, t):
        ce = F.cross_entropy(z.float(), t, reduction="none")
        return wnet(ce.detach()) * ce

    kw = dict(x=x, y=y, loss_layer=layer, meta_x=mx, meta_y=my, phi=list(wnet.parameters()), reuse_forward=False,
              meta_loss_fn=lambda z, t: F.cross_entropy(z.float(), t, reduction="none"))
    return model, opt, kw


def _flat(grads):
    return torch.cat([g.reshape(-1).float() for g in grads])


@pytest.mark.parametrize("backend", ["graph", "func"])
def test_bf16_autocast_meta_gradient_within_tolerance_of_float32(backend, one_thread):
    """The stated tolerance (engine docstring): cosine similarity > 0.999 and relative error < 2% on a
    ResNet-8 with BatchNorm, for the graph walk and the torch.func fallback (which runs in float32)."""
    model, opt, kw = _problem()
    ref = _flat(meta_gradient_jvp(model, opt, **kw, jvp_backend=backend).meta_grads)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _flat(meta_gradient_jvp(model, opt, **kw, jvp_backend=backend).meta_grads)
    assert float(F.cosine_similarity(got, ref, dim=0)) > 0.999
    assert float((got - ref).norm() / ref.norm()) < 0.02
    pe = {k: v for k, v in kw.items() if k not in ("loss_layer", "phi")}
    w_ref = per_example_weights(model, opt, **pe).weights
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = per_example_weights(model, opt, **pe).weights
    assert float(F.cosine_similarity(w.float(), w_ref, dim=0)) > 0.999


def test_channels_last_gives_the_same_meta_gradient(one_thread):
    model, opt, kw = _problem(2)
    ref = _flat(meta_gradient_jvp(model, opt, **kw, jvp_backend="graph").meta_grads)
    model = model.to(memory_format=torch.channels_last)
    kw = dict(kw, x=kw["x"].contiguous(memory_format=torch.channels_last))
    got = _flat(meta_gradient_jvp(model, opt, **kw, jvp_backend="graph").meta_grads)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("method,amp", [("erm", "bf16"), ("mwnet", "bf16"), ("erm", "fp16")])
def test_amp_runs_train_like_float32_and_resume_exactly(tmp_path, assert_resume_exact, method, amp):
    over = {"method.name": method, "train.amp": amp, "data.train_subset": 400}
    assert_resume_exact(lambda name: run_cfg(tmp_path, name, epochs=2, **over), stop_after=1)
    low = json.loads((tmp_path / "full" / "summary.json").read_text())
    full = fit(run_cfg(tmp_path, "fp32", epochs=2, **{**over, "train.amp": "none"}))
    # fp16's scaler skips the first steps (overflowing gradients at the initial scale): looser there
    tol = 0.15 if amp == "fp16" else 0.06
    assert low["status"] == "finished" and abs(low["test_accuracy"] - full["test_accuracy"]) < tol


def test_channels_last_run_and_option_guards(tmp_path):
    ctx = build_context(run_cfg(tmp_path, **{"model.name": "resnet8", "train.channels_last": True,
                                             "data.train_subset": 200}))
    conv = next(m for m in ctx.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    for over, match in (({"method.name": "mwnet", "train.compile": True}, "compile"),
                        ({"method.name": "l2b", "train.amp": "fp16"}, "fp16"),
                        ({"train.amp": "fp8"}, "train.amp"), ({"train.compile": "yes"}, "true or false")):
        with pytest.raises(UserError, match=match):
            build_context(run_cfg(tmp_path, "bad", **over))


@pytest.mark.slow
def test_compiled_model_trains_erm(tmp_path):
    s = fit(run_cfg(tmp_path, epochs=1, **{"train.compile": True, "data.train_subset": 300}))
    assert s["status"] == "finished"


@pytest.mark.parametrize("name,options", [("resnet8", {}), ("preact_resnet18", {}), ("lenet", {}),
                                          ("wrn", {"depth": 10, "widen_factor": 1, "dropout": 0.3})])
def test_graph_jvp_in_channels_last_equals_torch_func(name, options, one_thread):
    """channels_last forwards record restrides (AsStridedBackward1): the graph walk still equals torch.func."""
    from noisylabels.meta.engine import functional_jvp
    from noisylabels.meta.functional import params_and_buffers
    from noisylabels.meta.graph_jvp import graph_jvp

    channels, size = (1, 28) if name == "lenet" else (3, 32)
    torch.manual_seed(3)
    model = create_model(name, num_classes=10, in_channels=channels, image_size=size, **options).double().train()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(4, channels, size, size, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    params, buffers = params_and_buffers(model)
    tangent = {n: torch.randn_like(p) for n, p in params.items()}
    state = torch.get_rng_state()
    z = model(x)
    u = graph_jvp(z, {params[n]: t for n, t in tangent.items()})
    # the adjoint identity <J t, g> = <t, J^T g> on the same recorded graph (same dropout masks)
    g = torch.randn_like(z)
    vjp = torch.autograd.grad(z, list(params.values()), g)
    rhs = sum((tangent[n] * v).sum() for n, v in zip(params, vjp))
    torch.testing.assert_close((u * g).sum(), rhs, rtol=1e-10, atol=1e-10)
    if not options.get("dropout"):  # torch.func draws channels_last dropout masks in another order
        torch.set_rng_state(state)
        _, ref = functional_jvp(model, params=params, buffers=buffers, x=x, tangent=tangent)
        torch.testing.assert_close(u, ref, rtol=1e-9, atol=1e-9)
