"""Meta-reweighting methods on the engine: MW-Net presets, L2RW, L2B (identities the papers state)."""

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from noisylabels.config import resolve_config
from noisylabels.errors import UserError
from noisylabels.losses.functional import bootstrap_hard_loss
from noisylabels.meta import meta_gradient_jvp, per_example_weights
from noisylabels.methods import L2B, MetaWeightNet, create_method, normalize_weights
from noisylabels.methods.mwnet import WeightNet
from noisylabels.methods.reweighting import meta_loss_fn
from noisylabels.train import build_context, fit


def _cfg(tmp_path, name="run", **over):
    base = {"out": str(tmp_path / name), "train.progress": False, "train.epochs": 3}
    base.update(over)
    return resolve_config(overrides=base)


def _tiny(seed=0, k=3, d=5, n=8, m=4):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, 6), nn.Tanh(), nn.Linear(6, k)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    x, y = torch.randn(n, d, dtype=torch.float64), torch.randint(0, k, (n,))
    mx, my = torch.randn(m, d, dtype=torch.float64), torch.randint(0, k, (m,))
    return model, opt, x, y, mx, my


# -- WACV Theorem 1 ----------------------------------------------------------------------------------
def _expected_meta_grad(model, opt, x, y, loss_layer, mx, my, meta_loss, phi, T):
    """E over meta labels y~_k ~ T[y_k] of the meta-gradient, exactly: the meta loss is a mean over
    meta samples, so the meta-gradient is (1/m) sum_k G_k(y~_k), with G_k from a one-sample meta batch."""
    k = T.shape[0]
    total = [torch.zeros_like(p) for p in phi]
    for s in range(len(mx)):
        for j in range(k):
            g = meta_gradient_jvp(model, opt, x, y, loss_layer, mx[s:s + 1], torch.tensor([j]), meta_loss, phi)
            for t, gi in zip(total, g.meta_grads):
                t += float(T[int(my[s]), j]) * gi / len(mx)
    return total


@pytest.mark.parametrize("eta", [0.3, 0.6])
def test_theorem1_mae_meta_gradient_scales_by_one_minus_eta_and_ce_does_not(eta):
    model, opt, x, y, mx, my = _tiny()
    wnet = WeightNet(hidden=4).double()
    phi = list(wnet.parameters())

    def loss_layer(z, yy):
        ce = F.cross_entropy(z, yy, reduction="none")
        return wnet(ce.detach()) * ce

    k = 3
    T = (1 - eta) * np.eye(k) + eta / k * np.ones((k, k))  # uniform noise, true class included
    for name, holds in (("mae", True), ("ce", False)):
        meta = meta_loss_fn(name)
        clean = meta_gradient_jvp(model, opt, x, y, loss_layer, mx, my, meta, phi).meta_grads
        expected = _expected_meta_grad(model, opt, x, y, loss_layer, mx, my, meta, phi, T)
        flat_c = torch.cat([g.reshape(-1) for g in clean])
        flat_e = torch.cat([g.reshape(-1) for g in expected])
        close = torch.allclose(flat_e, (1 - eta) * flat_c, rtol=1e-8, atol=1e-14)
        assert close == holds, name
        if not holds:
            assert (flat_e - (1 - eta) * flat_c).norm() > 1e-3 * flat_c.norm()


# -- L2B identities --------------------------------------------------------------------------------
def test_l2b_alpha_plus_beta_one_is_hard_bootstrapping():
    """With alpha_i + beta_i = 1 the L2B loss is Reed's hard bootstrapping loss with per-sample beta = alpha_i
    (L2B appendix B.1)."""
    torch.manual_seed(0)
    m = L2B(ablation="alpha+beta=1")
    raw = torch.randn(16, 2, dtype=torch.float64).abs()
    alpha, beta = m.alpha_beta(raw)
    n = len(raw)
    assert torch.allclose((alpha + beta) * n, torch.ones(n, dtype=torch.float64))
    z = torch.randn(n, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (n,))
    losses = m.per_sample_losses(z, y, z.argmax(1))
    l2b_loss = (alpha * losses[:, 0] + beta * losses[:, 1]).sum()
    boot = bootstrap_hard_loss(z, y, beta=alpha * n, reduction="mean")
    assert torch.allclose(l2b_loss, boot)


def test_l2b_beta_zero_gives_l2rw_weights():
    model, opt, x, y, mx, my = _tiny(1)
    ce = meta_loss_fn("ce")
    l2rw = per_example_weights(model, opt, x, y, mx, my, ce)
    w_l2rw = normalize_weights(l2rw.weights * len(y), mode="sum")
    m = L2B(ablation="beta=0")
    res = per_example_weights(model, opt, x, y, mx, my, ce,
                              per_sample_loss=lambda t, yy: m.per_sample_losses(t, yy, t.detach().argmax(1)))
    alpha, beta = m.alpha_beta(res.weights)
    assert torch.allclose(alpha, w_l2rw, rtol=1e-10, atol=1e-15)
    assert torch.all(beta == 0)
    # the observed-label column of the two-column weights is the L2RW raw weight itself
    assert torch.allclose(res.weights[:, 0], l2rw.weights, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("mode", ["sum", "sigmoid", "softmax"])
def test_l2b_normalisations_sum_to_one(mode):
    torch.manual_seed(0)
    raw = torch.randn(10, 2, dtype=torch.float64)
    w = normalize_weights(raw, mode=mode, temperature=10.0)
    assert torch.isclose(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    if mode == "sum":
        assert torch.all(w[raw <= 0] == 0)


# -- MW-Net step structure -------------------------------------------------------------------------
def test_mwnet_delayed_real_step_equals_the_virtual_step(tmp_path):
    """The delayed real step applies the virtual step's gradient, so the new weights are theta_hat(phi_old)."""
    ctx = build_context(_cfg(tmp_path, **{"method.name": "mwnet", "method.delayed": True, "model.name": "mlp"}))
    m = ctx.method
    m.on_epoch_start(ctx)
    batch = next(iter(ctx.loader("train", shuffle=False, augment=False)))
    ctx.optimizer.zero_grad()
    F.cross_entropy(ctx.model(batch.x), batch.y).backward()
    ctx.optimizer.step()  # create momentum buffers so the virtual step is non-trivial
    from noisylabels.meta import optimizer_virtual_step, params_and_buffers

    params, _ = params_and_buffers(ctx.model)
    phi_old = [p.detach().clone() for p in m.wnet.parameters()]
    z = ctx.model(batch.x)
    losses = m.loss_layer(z, batch.y)
    grads = torch.autograd.grad(losses.mean(), list(params.values()))
    theta_hat = optimizer_virtual_step(ctx.optimizer, params, dict(zip(params, grads)),
                                       values={k: v.detach() for k, v in params.items()}).params
    m.train_step(ctx, batch.x, batch.y, batch.index)
    for name, p in ctx.model.named_parameters():
        assert torch.allclose(p, theta_hat[name], atol=1e-6), name
    assert any(not torch.equal(a, b) for a, b in zip(phi_old, m.wnet.parameters()))


@pytest.mark.parametrize("name", ["l2rw", "l2b"])
def test_warmup_epochs_are_plain_ce_steps(tmp_path, name):
    """During ``warmup_epochs`` L2RW and L2B take exactly the plain mean-CE step; afterwards they reweight."""
    ctx = build_context(_cfg(tmp_path, name, **{"method.name": name, "method.warmup_epochs": 1, "model.name": "mlp"}))
    ref = copy.deepcopy(ctx.model)
    ref_opt = torch.optim.SGD(ref.parameters(), **{k: ctx.optimizer.defaults[k] for k in ("lr", "momentum",
                                                                                          "weight_decay")})
    ctx.method.on_epoch_start(ctx)
    batch = next(iter(ctx.loader("train", shuffle=False, augment=False)))
    ctx.method.train_step(ctx, batch.x, batch.y, batch.index)
    ref_opt.zero_grad()
    F.cross_entropy(ref(batch.x), batch.y).backward()
    ref_opt.step()
    for a, b in zip(ctx.model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)
    ctx.epoch = 1  # past the warm-up: the step now differs from plain CE
    ctx.method.train_step(ctx, batch.x, batch.y, batch.index)
    ref_opt.zero_grad()
    F.cross_entropy(ref(batch.x), batch.y).backward()
    ref_opt.step()
    assert any(not torch.allclose(a, b) for a, b in zip(ctx.model.parameters(), ref.parameters()))
    with pytest.raises(UserError, match="warmup_epochs"):
        create_method(name, warmup_epochs=-1)


def test_mwnet_meta_interval(tmp_path):
    ctx = build_context(_cfg(tmp_path, **{"method.name": "mwnet", "method.meta_interval": 3}))
    m = ctx.method
    m.on_epoch_start(ctx)
    changed = []
    for k, batch in enumerate(ctx.loader("train", shuffle=False, augment=False)):
        if k == 6:
            break
        before = [p.detach().clone() for p in m.wnet.parameters()]
        m.train_step(ctx, batch.x, batch.y, batch.index)
        ctx.step += 1
        changed.append(any(not torch.equal(a, b) for a, b in zip(before, m.wnet.parameters())))
    assert changed == [True, False, False, True, False, False]


def test_presets_and_bad_options(tmp_path):
    assert create_method("rmnw-net").meta_loss_name == "mae"
    assert create_method("mnw-net").meta_loss_name == "ce"
    assert isinstance(create_method("mwnet"), MetaWeightNet)
    with pytest.raises(UserError, match="noisy meta set"):
        fit(_cfg(tmp_path, **{"method.name": "rmnw-net"}))
    with pytest.raises(UserError, match="SGD"):
        fit(_cfg(tmp_path, **{"method.name": "l2rw", "optim.name": "adam"}))
    with pytest.raises(UserError, match="normalize"):
        create_method("l2b", normalize="max")
    with pytest.raises(UserError, match="unknown loss"):
        create_method("mwnet", meta_loss="nope")


def test_meta_size_auto(tmp_path):
    erm = build_context(_cfg(tmp_path))
    assert len(erm.data.splits["meta"]) == 0
    mw = build_context(_cfg(tmp_path, **{"method.name": "mwnet"}))
    n_pool = len(mw.data.labels)
    assert len(mw.data.splits["meta"]) == round(0.1 * n_pool)


# -- records and end-to-end ------------------------------------------------------------------------
@pytest.mark.parametrize("method,extra", [("mwnet", {}), ("l2b", {"method.warmup_epochs": 1}), ("l2rw", {})])
def test_reweighting_records(tmp_path, method, extra):
    s = fit(_cfg(tmp_path, **{"method.name": method, **extra}))
    out = tmp_path / "run"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("detection_auroc" in r and "detection_ap" in r for r in rows[-2:])
    assert "detection_auroc" in s and s["detection_auroc"] == pytest.approx(
        rows[s["best_epoch"]]["detection_auroc"], abs=1e-9)
    hist = np.load(out / "sample_weights.npz")
    assert hist["weights"].shape == (3, s["num_train"])
    assert (out / "weights_hist.png").is_file()
    assert (out / ("weight_function.png" if method == "mwnet" else "suspects.csv")).is_file()
    if method == "l2b":
        assert (out / "alpha_beta.png").is_file()


def test_mwnet_resume_equals_uninterrupted(tmp_path, assert_resume_exact):
    over = {"method.name": "mwnet", "train.epochs": 2, "data.train_subset": 800}
    assert_resume_exact(lambda name: _cfg(tmp_path, name, **over), stop_after=1)


def test_rmnw_net_beats_ce_on_digits_with_40pc_symmetric_noise(tmp_path):
    common = {"train.epochs": 15, "noise.type": "symmetric", "noise.rate": 0.4, "data.meta_size": 150}
    ce = fit(_cfg(tmp_path, "ce", **common))
    rm = fit(_cfg(tmp_path, "rm", **common, **{"method.name": "rmnw-net", "data.meta_set": "noisy"}))
    assert rm["test_accuracy"] > ce["test_accuracy"]
    assert rm["last_test_accuracy"] > ce["last_test_accuracy"]
    assert rm["detection_auroc"] > 0.9


def test_mwnet_default_weights_rank_corrupted_labels_low(tmp_path):
    """MW-Net* (default: weights normalised by their batch sum) gives corrupted samples lower weights.

    With ``normalize='none'`` this fails on short runs: the greedy one-step meta objective also
    rewards scaling all weights up and the sigmoid saturates with the noisy samples on top."""
    s = fit(_cfg(tmp_path, "mw", **{"train.epochs": 6, "noise.type": "symmetric", "noise.rate": 0.4,
                                    "data.meta_size": 150, "method.name": "mwnet"}))
    assert MetaWeightNet().normalize == "sum"
    assert s["detection_auroc"] > 0.9
    rows = [json.loads(r) for r in (tmp_path / "mw" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["mean_weight_noisy"] < 0.5 * rows[-1]["mean_weight_clean"]


def test_mwnet_jvp_and_double_backward_paths_train_identically(tmp_path):
    """The graph-walk JVP (default), torch.func.jvp and the official code's double backward give the same steps."""
    states = []
    for path in ("jvp", "jvp-func", "double-backward"):
        ctx = build_context(_cfg(tmp_path, path, **{"method.name": "mwnet", "method.meta_gradient": path}))
        m = ctx.method
        m.on_epoch_start(ctx)
        for k, batch in enumerate(ctx.loader("train", shuffle=False, augment=False)):
            if k == 3:
                break
            m.train_step(ctx, batch.x, batch.y, batch.index)
            ctx.step += 1
        states.append([p.detach().clone() for p in [*ctx.model.parameters(), *m.wnet.parameters()]])
    for other in states[1:]:
        for a, b in zip(states[0], other):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
