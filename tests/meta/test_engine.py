"""Tests of the bilevel engine (noisylabels.meta): virtual SGD step, JVP meta-gradients, per-example weights."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from noisylabels.errors import UserError
from noisylabels.meta import assign_grads, meta_gradient, meta_tangent, per_example_weights
from noisylabels.meta.engine import (
    functional_jvp,
    meta_gradient_double_backward,
    meta_gradient_jvp,
    per_example_weights_jvp,
)
from noisylabels.meta.functional import functional_logits, params_and_buffers
from noisylabels.meta.virtual_step import (
    optimizer_virtual_step,
    sgd_direction_scale,
    sgd_hyperparams,
    sgd_virtual_step,
)

DT = torch.float64

# forward-mode AD loads torch's own jit-scripted decompositions on first use
pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
              pytest.mark.usefixtures("one_thread")]


# -- tiny models and data ------------------------------------------------------------------------
def mlp(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(5, 8), nn.Tanh()] + ([nn.Dropout(dropout)] if dropout else []) + [nn.Linear(8, 3)]
    return nn.Sequential(*layers).to(DT)


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Tanh(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3)).to(DT)


def weight_net(seed: int = 1) -> nn.Module:
    """Meta-Weight-Net's weight function: per-sample loss -> weight in (0, 1)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1), nn.Sigmoid()).to(DT)


def batch(kind: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (n, 5) if kind == "mlp" else (n, 1, 6, 6)
    return torch.randn(shape, generator=g, dtype=DT), torch.randint(0, 3, (n,), generator=g)


def mw_loss_layer(wnet: nn.Module, wparams: dict | None = None):
    """l_i = w(CE_i.detach()) * CE_i (Meta-Weight-Net, Shu et al. 2019, Eq. 2)."""
    def layer(z, y):
        ce = F.cross_entropy(z, y, reduction="none")
        inp = ce.detach()[:, None]
        w = (wnet(inp) if wparams is None else torch.func.functional_call(wnet, wparams, (inp,))).squeeze(1)
        return w * ce
    return layer


def ce_per_sample(z, y):
    return F.cross_entropy(z, y, reduction="none")


def setup(kind: str, *, warm: int = 0, groups: bool = False, frozen: bool = False, dropout: float = 0.0,
          **opt_kw):
    """Model + SGD after ``warm`` real CE steps (so momentum buffers exist when warm > 0)."""
    model = mlp(dropout=dropout) if kind == "mlp" else cnn()
    model.train()
    if frozen:
        next(iter(model.parameters())).requires_grad_(False)
    if groups:
        ps = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD([{"params": ps[:2], "lr": 0.3, "momentum": 0.5},
                               {"params": ps[2:]}], **opt_kw)
    else:
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], **opt_kw)
    for s in range(warm):
        x, y = batch(kind, 8, 100 + s)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt


def meta_loss_of_phi(model, opt, x, y, layer, mx, my) -> torch.Tensor:
    """phi -> L_meta(theta_hat(phi)) with theta_hat from the virtual step (no graph), for finite differences."""
    params, buffers = params_and_buffers(model)
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    z = functional_logits(model, params, buffers, x)
    g = torch.autograd.grad(layer(z, y).mean(), list(trainable.values()), allow_unused=True)
    with torch.no_grad():
        th = optimizer_virtual_step(opt, params, dict(zip(trainable, g)),
                                    values={n: p.detach() for n, p in params.items()}).params
        return F.cross_entropy(functional_logits(model, th, buffers, mx), my)


def flat(ts) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


# -- 1. the virtual step is torch.optim.SGD.step ----------------------------------------------------
SGD_CASES = {
    "plain": dict(kw=dict(lr=0.1), warm=0),
    "momentum-first": dict(kw=dict(lr=0.1, momentum=0.9), warm=0),
    "momentum-later": dict(kw=dict(lr=0.1, momentum=0.9), warm=3),
    "weight-decay": dict(kw=dict(lr=0.1, weight_decay=5e-2), warm=1),
    "nesterov-first": dict(kw=dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2), warm=0),
    "nesterov-later": dict(kw=dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2), warm=2),
    "dampening-later": dict(kw=dict(lr=0.1, momentum=0.8, dampening=0.3, weight_decay=1e-3), warm=2),
    "maximize": dict(kw=dict(lr=0.1, momentum=0.9, maximize=True), warm=2),
}


@pytest.mark.parametrize("case", list(SGD_CASES))
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_virtual_step_equals_sgd_step(case, kind):
    model, opt = setup(kind, warm=SGD_CASES[case]["warm"], **SGD_CASES[case]["kw"])
    x, y = batch(kind, 8, 7)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    params = dict(model.named_parameters())
    grads = {n: p.grad for n, p in params.items()}
    with torch.no_grad():
        vs = optimizer_virtual_step(opt, params, grads, values={n: p.detach() for n, p in params.items()})
        hp = sgd_hyperparams(opt)
        bufs = {n: opt.state[p].get("momentum_buffer") for n, p in params.items()}
        direct = sgd_virtual_step({n: p.detach() for n, p in params.items()}, grads, bufs, lr=hp.lr,
                                  momentum=hp.momentum, weight_decay=hp.weight_decay, nesterov=hp.nesterov,
                                  dampening=hp.dampening, maximize=hp.maximize)
    opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(vs.params[n], p.detach()), n
        assert torch.equal(direct[n], p.detach()), n


@pytest.mark.parametrize("sched", ["lambda", "multistep"])
def test_virtual_step_uses_scheduled_lr(sched):
    model, opt = setup("mlp", lr=0.2, momentum=0.9, nesterov=True, weight_decay=1e-3)
    if sched == "lambda":
        sc = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    else:
        sc = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1, 3], gamma=0.1)
    for s in range(4):
        x, y = batch("mlp", 8, 200 + s)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sc.step()
    assert sgd_hyperparams(opt).lr == pytest.approx(0.2 / 5 if sched == "lambda" else 0.2 * 0.01)
    x, y = batch("mlp", 8, 7)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    params = dict(model.named_parameters())
    with torch.no_grad():
        vs = optimizer_virtual_step(opt, params, {n: p.grad for n, p in params.items()},
                                    values={n: p.detach() for n, p in params.items()})
    opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(vs.params[n], p.detach())


@pytest.mark.parametrize("momentum,nesterov,dampening,warm", [
    (0.0, False, 0.0, 0), (0.9, False, 0.0, 0), (0.9, False, 0.0, 2), (0.9, True, 0.0, 0), (0.9, True, 0.0, 2),
    (0.8, False, 0.3, 0), (0.8, False, 0.3, 2),
])
def test_direction_scale_is_the_derivative_of_the_step(momentum, nesterov, dampening, warm):
    """theta_hat is affine in the gradient with slope -lr * c (c of sgd_direction_scale)."""
    model, opt = setup("mlp", warm=warm, lr=0.1, momentum=momentum, nesterov=nesterov, dampening=dampening,
                       weight_decay=1e-2)
    params = {n: p.detach() for n, p in model.named_parameters()}
    g0 = {n: torch.randn_like(p) for n, p in params.items()}
    delta = {n: torch.randn_like(p) for n, p in params.items()}
    g1 = {n: g0[n] + delta[n] for n in params}
    named = dict(model.named_parameters())
    a = optimizer_virtual_step(opt, named, g0, values=params)
    b = optimizer_virtual_step(opt, named, g1, values=params)
    c = sgd_direction_scale(momentum, nesterov, warm == 0, dampening=dampening)
    for n in params:
        torch.testing.assert_close(b.params[n] - a.params[n], -0.1 * c * delta[n], rtol=1e-10, atol=1e-12)
        assert a.scale[n] == pytest.approx(0.1 * c)
    assert sgd_direction_scale(0.9, True, True) == pytest.approx(1.9)
    assert sgd_direction_scale(0.9, False, False) == 1.0
    assert sgd_direction_scale(0.9, False, False, maximize=True) == -1.0


#: "graph": the walk over the training forward's recorded graph (strict: no fallback); "func": torch.func.jvp
BACKENDS = ["graph", "func"]


# -- 2. JVP meta-gradient == finite differences ----------------------------------------------------
FD_CASES = {
    "plain": dict(kw=dict(lr=0.5), warm=0),
    "momentum-buffer": dict(kw=dict(lr=0.5, momentum=0.9), warm=2),
    "nesterov-wd-first": dict(kw=dict(lr=0.5, momentum=0.9, nesterov=True, weight_decay=1e-2), warm=0),
    "nesterov-wd-buffer": dict(kw=dict(lr=0.5, momentum=0.9, nesterov=True, weight_decay=1e-2), warm=2),
    "two-groups-frozen": dict(kw=dict(lr=0.5, momentum=0.9, nesterov=True), warm=2, groups=True, frozen=True),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(FD_CASES))
def test_jvp_meta_gradient_matches_finite_differences(case, backend):
    cfg = FD_CASES[case]
    model, opt = setup("mlp", warm=cfg["warm"], groups=cfg.get("groups", False), frozen=cfg.get("frozen", False),
                       **cfg["kw"])
    wnet = weight_net()
    x, y = batch("mlp", 10, 1)
    mx, my = batch("mlp", 6, 2)
    phi = list(wnet.parameters())
    res = meta_gradient_jvp(model, opt, x=x, y=y, loss_layer=mw_loss_layer(wnet), meta_x=mx, meta_y=my,
                            meta_loss_fn=ce_per_sample, phi=phi, jvp_backend=backend, reuse_forward=False)
    got = flat(res.meta_grads)

    names = [n for n, _ in wnet.named_parameters()]
    base = {n: p.detach().clone() for n, p in wnet.named_parameters()}
    sizes = [base[n].numel() for n in names]
    h, fd = 1e-5, []
    for j in range(sum(sizes)):
        vals = []
        for sign in (1, -1):
            vec = flat([base[n] for n in names]).clone()
            vec[j] += sign * h
            wp = dict(zip(names, [c.view_as(base[n]) for n, c in zip(names, vec.split(sizes))]))
            vals.append(meta_loss_of_phi(model, opt, x, y, mw_loss_layer(wnet, wp), mx, my))
        fd.append((vals[0] - vals[1]) / (2 * h))
    fd = torch.stack(fd)
    assert fd.abs().max() > 1e-4  # the test is not vacuous
    torch.testing.assert_close(got, fd, rtol=1e-5, atol=1e-9 * float(fd.abs().max()))
    torch.testing.assert_close(res.meta_loss, meta_loss_of_phi(model, opt, x, y, mw_loss_layer(wnet), mx, my))


# -- 3. JVP == double-backward reference ------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("case", ["plain", "nesterov-wd-buffer", "two-groups-frozen"])
def test_jvp_equals_double_backward(kind, case, backend):
    cfg = FD_CASES[case]
    model, opt = setup(kind, warm=cfg["warm"], groups=cfg.get("groups", False), frozen=cfg.get("frozen", False),
                       **cfg["kw"])
    wnet = weight_net()
    x, y = batch(kind, 10, 1)
    mx, my = batch(kind, 6, 2)
    a = meta_gradient_jvp(model, opt, x=x, y=y, loss_layer=mw_loss_layer(wnet), meta_x=mx, meta_y=my,
                          meta_loss_fn=ce_per_sample, phi=list(wnet.parameters()), jvp_backend=backend,
                          reuse_forward=False)
    b = meta_gradient_double_backward(model, opt, x=x, y=y, loss_layer=mw_loss_layer(wnet), meta_x=mx, meta_y=my,
                                      meta_loss_fn=ce_per_sample, phi=list(wnet.parameters()), reuse_forward=False)
    assert flat(b.meta_grads).abs().max() > 1e-6
    torch.testing.assert_close(flat(a.meta_grads), flat(b.meta_grads), rtol=1e-8, atol=1e-14)
    torch.testing.assert_close(a.meta_loss, b.meta_loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(a.train_losses, b.train_losses, rtol=1e-12, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jvp_replays_dropout_masks(backend):
    """The JVP sees the training forward's dropout masks (saved in the graph, or replayed by torch.func);
    the RNG ends where the reference's does."""
    model, opt = setup("mlp", dropout=0.3, lr=0.5, momentum=0.9)
    wnet = weight_net()
    x, y = batch("mlp", 10, 1)
    mx, my = batch("mlp", 6, 2)
    torch.manual_seed(5)
    a = meta_gradient_jvp(model, opt, x=x, y=y, loss_layer=mw_loss_layer(wnet), meta_x=mx, meta_y=my,
                          meta_loss_fn=ce_per_sample, phi=list(wnet.parameters()), jvp_backend=backend,
                          reuse_forward=False)
    after_a = torch.rand(3)
    torch.manual_seed(5)
    b = meta_gradient_double_backward(model, opt, x=x, y=y, loss_layer=mw_loss_layer(wnet), meta_x=mx, meta_y=my,
                                      meta_loss_fn=ce_per_sample, phi=list(wnet.parameters()), reuse_forward=False)
    after_b = torch.rand(3)
    torch.testing.assert_close(flat(a.meta_grads), flat(b.meta_grads), rtol=1e-8, atol=1e-14)
    assert torch.equal(after_a, after_b)


def test_functional_jvp_matches_finite_differences():
    model, _ = setup("cnn")
    params, buffers = params_and_buffers(model)
    x, _ = batch("cnn", 6, 3)
    t = {n: torch.randn_like(p) for n, p in params.items() if n.startswith("0.")}
    z, u = functional_jvp(model, params=params, buffers=buffers, x=x, tangent=t)
    h = 1e-6
    with torch.no_grad():
        zp = functional_logits(model, {n: p + h * t[n] if n in t else p for n, p in params.items()}, buffers, x)
        zm = functional_logits(model, {n: p - h * t[n] if n in t else p for n, p in params.items()}, buffers, x)
    torch.testing.assert_close(u, (zp - zm) / (2 * h), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(z, functional_logits(model, params, buffers, x).detach())


# -- 4. per-example weights -------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["plain", "nesterov-wd-buffer"])
def test_per_example_weights_identity_and_finite_differences(case, backend):
    cfg = FD_CASES[case]
    model, opt = setup("mlp", warm=cfg["warm"], **cfg["kw"])
    x, y = batch("mlp", 10, 1)
    mx, my = batch("mlp", 6, 2)
    n = len(x)
    res = per_example_weights_jvp(model, opt, x=x, y=y, meta_x=mx, meta_y=my, meta_loss_fn=ce_per_sample,
                                  jvp_backend=backend, reuse_forward=False)
    assert res.weights.shape == (n,)

    # the dot-product identity with per-sample gradients (vmap over torch.func.grad)
    params, buffers = params_and_buffers(model)
    p0 = {k: v.detach() for k, v in params.items()}

    def loss_i(p, xi, yi):
        return F.cross_entropy(torch.func.functional_call(model, (p, buffers), (xi[None],)), yi[None])

    per_grads = torch.func.vmap(torch.func.grad(loss_i), in_dims=(None, 0, 0))(p0, x, y)
    zero = {k: torch.zeros_like(v) for k, v in p0.items()}
    vs = optimizer_virtual_step(opt, params, zero, values=p0)
    th = {k: v.clone().requires_grad_() for k, v in vs.params.items()}
    v = torch.autograd.grad(F.cross_entropy(functional_logits(model, th, buffers, mx), my), list(th.values()))
    ref = sum(vs.scale[k] * (per_grads[k].reshape(n, -1) @ vk.reshape(-1)) for k, vk in zip(th, v)) / n
    torch.testing.assert_close(res.weights, ref, rtol=1e-10, atol=1e-15)

    # finite differences in eps: L_train = (1/n) sum_i eps_i l_i, w_i = -dL_meta/d eps_i at 0
    def meta_of_eps(eps):
        return meta_loss_of_phi(model, opt, x, y, lambda z, yy: eps * ce_per_sample(z, yy), mx, my)

    h, fd = 1e-5, []
    for i in range(n):
        e = torch.zeros(n, dtype=DT)
        e[i] = h
        fd.append(-(meta_of_eps(e) - meta_of_eps(-e)) / (2 * h))
    fd = torch.stack(fd)
    assert fd.abs().max() > 1e-4
    torch.testing.assert_close(res.weights, fd, rtol=1e-5, atol=1e-9 * float(fd.abs().max()))


def test_per_example_weights_columns_and_meta_gradient_agree():
    """(n, k) losses (L2B's alpha/beta) give one weight column each; eps as phi gives the same numbers."""
    model, opt = setup("cnn", warm=2, lr=0.3, momentum=0.9, nesterov=True, weight_decay=1e-2)
    x, y = batch("cnn", 8, 1)
    mx, my = batch("cnn", 6, 2)
    y_hat = (y + 1) % 3

    def two(z, yy):
        return torch.stack([ce_per_sample(z, yy), ce_per_sample(z, y_hat)], 1)

    res = per_example_weights(model, opt, x=x, y=y, meta_x=mx, meta_y=my, meta_loss_fn=ce_per_sample,
                              per_sample_loss=two, reuse_forward=False)
    assert res.weights.shape == (8, 2)
    eps = torch.zeros(8, 2, dtype=DT, requires_grad=True)
    mg = meta_gradient_jvp(model, opt, x=x, y=y, loss_layer=lambda z, yy: (eps * two(z, yy)).sum(1), meta_x=mx,
                           meta_y=my, meta_loss_fn=ce_per_sample, phi=[eps], reuse_forward=False)
    db = meta_gradient_double_backward(model, opt, x=x, y=y, loss_layer=lambda z, yy: (eps * two(z, yy)).sum(1),
                                       meta_x=mx, meta_y=my, meta_loss_fn=ce_per_sample, phi=[eps],
                                       reuse_forward=False)
    torch.testing.assert_close(res.weights, -mg.meta_grads[0], rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(res.weights, -db.meta_grads[0], rtol=1e-8, atol=1e-15)
    torch.testing.assert_close(res.meta_loss, mg.meta_loss)


# -- 5. BatchNorm running statistics ------------------------------------------------------------------
def _bn_state(model):
    return {k: v.clone() for k, v in model.named_buffers()}


def test_batchnorm_statistics_untouched():
    model, opt = setup("cnn", warm=2, lr=0.3, momentum=0.9)
    before = _bn_state(model)
    params_before = {k: v.detach().clone() for k, v in model.named_parameters()}
    bufs_before = {id(p): opt.state[p]["momentum_buffer"].clone() for p in model.parameters()}
    opt.zero_grad(set_to_none=True)
    wnet = weight_net()
    x, y = batch("cnn", 8, 1)
    mx, my = batch("cnn", 6, 2)
    phi = list(wnet.parameters())
    meta_gradient_jvp(model, opt, x=x, y=y, loss_layer=mw_loss_layer(wnet), meta_x=mx, meta_y=my,
                      meta_loss_fn=ce_per_sample, phi=phi, reuse_forward=False)
    meta_gradient_double_backward(model, opt, x=x, y=y, loss_layer=mw_loss_layer(wnet), meta_x=mx, meta_y=my,
                                  meta_loss_fn=ce_per_sample, phi=phi, reuse_forward=False)
    per_example_weights(model, opt, x=x, y=y, meta_x=mx, meta_y=my, meta_loss_fn=ce_per_sample, reuse_forward=False)
    params, buffers = params_and_buffers(model)
    functional_jvp(model, params=params, buffers=buffers, x=x, tangent={n: torch.ones_like(p) for n, p in params.items()})
    functional_logits(model, params, buffers, mx)
    after = _bn_state(model)
    assert before.keys() == after.keys() and any("num_batches_tracked" in k for k in after)
    for k in before:
        assert torch.equal(before[k], after[k]), k
    for k, v in model.named_parameters():
        assert torch.equal(v.detach(), params_before[k])
        assert torch.equal(opt.state[v]["momentum_buffer"], bufs_before[id(v)])
        assert v.grad is None  # the engine never writes .grad
    assert all(p.grad is None for p in phi)


@pytest.mark.parametrize("fn", ["jvp", "double_backward", "per_example"])
def test_keep_graph_updates_bn_once_and_feeds_the_real_step(fn):
    model, opt = setup("cnn", warm=1, lr=0.3, momentum=0.9)
    twin = copy.deepcopy(model)
    wnet = weight_net()
    x, y = batch("cnn", 8, 1)
    mx, my = batch("cnn", 6, 2)
    opt.zero_grad(set_to_none=True)
    if fn == "per_example":
        res = per_example_weights(model, opt, x=x, y=y, meta_x=mx, meta_y=my, meta_loss_fn=ce_per_sample)
    else:
        f = meta_gradient_jvp if fn == "jvp" else meta_gradient_double_backward
        res = f(model, opt, x=x, y=y, loss_layer=mw_loss_layer(wnet), meta_x=mx, meta_y=my,
                meta_loss_fn=ce_per_sample, phi=list(wnet.parameters()))
    assert all(p.grad is None for p in model.parameters())
    z_twin = twin(x)  # one ordinary forward: the statistics the real step would leave
    for (k, a), (_, b) in zip(model.named_buffers(), twin.named_buffers()):
        assert torch.equal(a, b), k
    torch.testing.assert_close(res.train_logits, z_twin, rtol=0, atol=0)
    F.cross_entropy(res.train_logits, y).backward()
    F.cross_entropy(z_twin, y).backward()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-15)


def test_assign_grads_and_meta_step_lowers_meta_loss():
    model, opt = setup("mlp", warm=1, lr=0.5, momentum=0.9)
    wnet = weight_net()
    meta_opt = torch.optim.SGD(wnet.parameters(), lr=10.0)
    x, y = batch("mlp", 10, 1)
    mx, my = batch("mlp", 6, 2)
    res = meta_gradient_jvp(model, opt, x=x, y=y, loss_layer=mw_loss_layer(wnet), meta_x=mx, meta_y=my,
                            meta_loss_fn=ce_per_sample, phi=list(wnet.parameters()), reuse_forward=False)
    assign_grads(list(wnet.parameters()), res.meta_grads)
    meta_opt.step()
    after = meta_loss_of_phi(model, opt, x, y, mw_loss_layer(wnet), mx, my)
    assert after < res.meta_loss


# -- 6. errors -----------------------------------------------------------------------------------------
def test_non_sgd_optimizer_and_bad_shapes_raise_user_error():
    model = mlp()
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    wnet = weight_net()
    x, y = batch("mlp", 4, 1)
    phi = list(wnet.parameters())
    for call in (
        lambda: sgd_hyperparams(adam),
        lambda: meta_gradient_jvp(model, adam, x=x, y=y, loss_layer=mw_loss_layer(wnet), meta_x=x, meta_y=y,
                                  meta_loss_fn=ce_per_sample, phi=phi, reuse_forward=False),
        lambda: meta_gradient_double_backward(model, adam, x=x, y=y, loss_layer=mw_loss_layer(wnet), meta_x=x,
                                              meta_y=y, meta_loss_fn=ce_per_sample, phi=phi, reuse_forward=False),
        lambda: per_example_weights(model, adam, x=x, y=y, meta_x=x, meta_y=y, meta_loss_fn=ce_per_sample,
                                    reuse_forward=False),
        lambda: optimizer_virtual_step(adam, dict(model.named_parameters()), {}),
    ):
        with pytest.raises(UserError, match="SGD"):
            call()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UserError, match="per-sample"):
        meta_gradient_jvp(model, sgd, x=x, y=y, loss_layer=lambda z, yy: ce_per_sample(z, yy).mean(), meta_x=x,
                          meta_y=y, meta_loss_fn=ce_per_sample, phi=phi, reuse_forward=False)
    with pytest.raises(UserError, match="phi is empty"):
        meta_gradient_jvp(model, sgd, x=x, y=y, loss_layer=mw_loss_layer(wnet), meta_x=x, meta_y=y,
                          meta_loss_fn=ce_per_sample, phi=[], reuse_forward=False)


def test_engine_arguments_after_the_optimizer_are_keyword_only():
    """The old positional order (x, y, loss_layer, meta_x, ...) must raise instead of running silently."""
    model, opt = setup("mlp", lr=0.1)
    wnet = weight_net()
    x, y = batch("mlp", 4, 1)
    mx, my = batch("mlp", 4, 2)
    layer = mw_loss_layer(wnet)
    phi = list(wnet.parameters())
    with pytest.raises(TypeError):
        meta_gradient_jvp(model, opt, x, y, layer, mx, my, ce_per_sample, phi)
    with pytest.raises(TypeError):
        meta_gradient_double_backward(model, opt, x, y, layer, mx, my, ce_per_sample, phi)
    with pytest.raises(TypeError):
        per_example_weights(model, opt, x, y, mx, my, ce_per_sample)
    with pytest.raises(TypeError):  # one choice, one argument: the backend lives on the jvp function only
        per_example_weights(model, opt, x=x, y=y, meta_x=mx, meta_y=my, meta_loss_fn=ce_per_sample, jvp_backend="func")
    with pytest.raises(TypeError):
        per_example_weights_jvp(model, opt, x, y, mx, my, ce_per_sample)
    with pytest.raises(TypeError):
        meta_tangent(model, None, mx, my, ce_per_sample)
    with pytest.raises(TypeError):
        meta_gradient(model, opt, x, y, layer, mx, my, ce_per_sample, phi)
    with pytest.raises(TypeError):  # a misspelt option is an error, not swallowed by **kwargs
        meta_gradient(model, opt, x=x, y=y, loss_layer=layer, meta_x=mx, meta_y=my, meta_loss_fn=ce_per_sample,
                      phi=phi, reuse_foward=False)
    params, buffers = params_and_buffers(model)
    with pytest.raises(TypeError):
        functional_jvp(model, params, buffers, x, {})


def test_each_engine_function_returns_the_result_kind_it_fills():
    """One result type per producer, every field filled (no ``None`` fields for another producer's
    values), constructed by keyword only."""
    import dataclasses

    from noisylabels.meta import ExampleWeightsStep, JVPMetaGradientStep, MetaGradientStep, MetaStep

    model, opt = setup("mlp", lr=0.1)
    wnet = weight_net()
    x, y = batch("mlp", 4, 1)
    mx, my = batch("mlp", 4, 2)
    common = dict(x=x, y=y, meta_x=mx, meta_y=my, meta_loss_fn=ce_per_sample, reuse_forward=False)
    mg = dict(common, loss_layer=mw_loss_layer(wnet), phi=list(wnet.parameters()))
    for res, kind in ((meta_gradient(model, opt, how="jvp", **mg), JVPMetaGradientStep),
                      (meta_gradient(model, opt, how="jvp-func", **mg), JVPMetaGradientStep),
                      (meta_gradient(model, opt, how="double-backward", **mg), MetaGradientStep),
                      (per_example_weights(model, opt, how="jvp", **common), ExampleWeightsStep),
                      (per_example_weights(model, opt, how="double-backward", **common), ExampleWeightsStep)):
        assert type(res) is kind and isinstance(res, MetaStep)
        assert all(getattr(res, f.name) is not None for f in dataclasses.fields(res)), kind.__name__
    assert not hasattr(per_example_weights(model, opt, **common), "meta_grads")
    with pytest.raises(TypeError):
        MetaStep(torch.zeros(()), torch.zeros(1, 2), torch.zeros(1))
