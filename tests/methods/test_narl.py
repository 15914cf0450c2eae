"""NARL-Adjuster (Ding et al.): margin and adjuster identities, A-* losses with constant hyperparameters,
exact meta-gradients for the four families, the meta-step cadence, direction, transfer (T-*) and files."""

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noisylabels.cli import main
from noisylabels.errors import UserError
from noisylabels.losses import get_loss_fn
from noisylabels.meta.engine import meta_gradient_double_backward, meta_gradient_jvp
from noisylabels.methods import NARL, Adjuster, TransferNARL, create_method, margin, meta_loss_fn, save_adjuster
from noisylabels.methods.narl import FAMILIES
from noisylabels.methods.narl_transfer import load_adjuster
from noisylabels.train import build_context, fit

from tests.helpers import run_cfg, tiny_problem

DT = torch.float64


# -- margin and adjuster ---------------------------------------------------------------------------------
def test_margin_identities():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 6, generator=g, dtype=DT, requires_grad=True)
    y = torch.randint(0, 6, (50,), generator=g)
    m = margin(z, y)
    assert not m.requires_grad  # detached: the adjuster's input carries no gradient to the classifier
    torch.testing.assert_close(margin(z + 3.7, y), m)  # shift-invariant
    misclassified = z.argmax(1) != y
    assert torch.equal(m < 0, misclassified)
    by_hand = torch.stack([z[i, y[i]] - torch.cat([z[i, :y[i]], z[i, y[i] + 1:]]).max() for i in range(50)])
    torch.testing.assert_close(m, by_hand.detach())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_adjuster_output_lies_in_zero_s_then_in_the_clamp_range(family):
    fam = FAMILIES[family]
    torch.manual_seed(1)
    net = Adjuster(len(fam.hparams), scale=fam.scale, low=fam.low, high=fam.high).double()
    m = torch.linspace(-50, 50, 401, dtype=DT)
    raw, out = net.raw(m), net(m)
    assert raw.shape == out.shape == (401, len(fam.hparams))
    s = torch.tensor(fam.scale, dtype=DT)
    assert bool((raw >= 0).all()) and bool((raw <= s).all())
    assert bool((out >= torch.tensor(fam.low, dtype=DT)).all()) and bool((out <= torch.tensor(fam.high, dtype=DT)).all())
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    torch.testing.assert_close(net.raw(m), (s / 2).expand(401, -1))  # zero weights and biases: s / 2


def _constant(net, values, fam):
    """Make the adjuster output the constant ``values`` (zero weights, bias = logit(value / s))."""
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        v = torch.tensor(values, dtype=net.fc2.bias.dtype) / torch.tensor(fam.scale, dtype=net.fc2.bias.dtype)
        net.fc2.bias.copy_(torch.log(v / (1 - v)))


@pytest.mark.parametrize("family,values,base", [
    ("gce", (0.7,), {"q": 0.7}), ("sl", (0.3, 0.8), {"alpha": 0.3, "beta": 0.8}),
    ("polysoft", (3.0, 2.5), {"lam": 3.0, "d": 2.5}), ("js", (0.4,), {"pi1": 0.4})])
def test_a_star_with_a_constant_adjuster_equals_the_base_loss(family, values, base):
    m = NARL(loss=family)
    m.meta_net.double()
    _constant(m.meta_net, values, FAMILIES[family])
    g = torch.Generator().manual_seed(2)
    z = torch.randn(20, 5, generator=g, dtype=DT) * 3
    y = torch.randint(0, 5, (20,), generator=g)
    got = m.loss_layer(z, y, x=z, index=torch.arange(20))
    want = get_loss_fn(FAMILIES[family].loss)(z, y, reduction="none", **base)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# -- the meta-gradient -------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_narl_meta_gradient_equals_double_backward_and_finite_differences(family):
    model, opt, x, y, mx, my = tiny_problem(3, n=10, m=6)
    m = NARL(loss=family)
    net = m.meta_net.double()
    torch.manual_seed(4)
    with torch.no_grad():  # a generic point where no clamp is active
        for p in net.parameters():
            p.normal_(0, 0.3)
    phi = list(net.parameters())

    def layer(z, t):
        return m.loss_layer(z, t, x=x, index=torch.arange(len(t)))

    kw = dict(x=x, y=y, loss_layer=layer, meta_x=mx, meta_y=my, meta_loss_fn=meta_loss_fn("ce"), phi=phi,
              reuse_forward=False)
    jvp = torch.cat([g.reshape(-1) for g in meta_gradient_jvp(model, opt, **kw).meta_grads])
    ref = torch.cat([g.reshape(-1) for g in meta_gradient_double_backward(model, opt, **kw).meta_grads])
    torch.testing.assert_close(jvp, ref, rtol=1e-9, atol=1e-12)
    assert float(ref.norm()) > 1e-8

    def meta_of(flat):  # L_meta(theta_hat(phi)) with theta_hat the first SGD step written out
        params = dict(model.named_parameters())
        shapes = [p.shape for p in phi]
        pieces = torch.split(flat, [p.numel() for p in phi])
        saved = [p.detach().clone() for p in phi]
        with torch.no_grad():
            for p, v, shp in zip(phi, pieces, shapes):
                p.copy_(v.reshape(shp))
        losses = layer(model(x), y).mean()
        g = torch.autograd.grad(losses, list(params.values()))
        th = {n: p - 0.5 * (gi + 1e-3 * p) for (n, p), gi in zip(params.items(), g)}
        out = F.cross_entropy(torch.func.functional_call(model, th, (mx,)), my)
        with torch.no_grad():
            for p, v in zip(phi, saved):
                p.copy_(v)
        return float(out.detach())

    flat0 = torch.cat([p.detach().reshape(-1) for p in phi])
    h = 1e-6
    picks = torch.linspace(0, len(flat0) - 1, 12).long()
    for j in picks.tolist():
        e = torch.zeros_like(flat0)
        e[j] = h
        fd = (meta_of(flat0 + e) - meta_of(flat0 - e)) / (2 * h)
        assert fd == pytest.approx(float(ref[j]), rel=1e-5, abs=1e-9), j


def test_theta_changes_only_on_meta_steps(tmp_path):
    ctx = build_context(run_cfg(tmp_path, **{"method.name": "narl", "method.meta_interval": 3}))
    m = ctx.method
    m.start_epoch(ctx)
    changed = []
    for k, b in enumerate(ctx.loader("train", shuffle=False, augment=False)):
        if k == 7:
            break
        before = [p.detach().clone() for p in m.meta_net.parameters()]
        m.train_step(ctx, b.x, b.y, b.index)
        ctx.step += 1
        changed.append(any(not torch.equal(a, c) for a, c in zip(before, m.meta_net.parameters())))
    assert changed == [t % 3 == 0 for t in range(7)]
    assert NARL().meta_interval == 10  # the paper's T_Meta


@pytest.mark.parametrize("family,name,noisy_higher", [("gce", "q", True), ("polysoft", "lam", False)])
def test_learned_hyperparameters_are_mae_like_on_corrupted_samples(tmp_path, family, name, noisy_higher):
    """Direction (the paper's oracle, Sec. 4.3): A-GCE learns larger q (MAE-like) on corrupted samples;
    A-PolySoft a smaller lambda (flat, zero-gradient part); detection by the hyperparameter works."""
    s = fit(run_cfg(tmp_path, family, epochs=4, **{"method.name": "narl", "method.loss": family,
                                                    "method.meta_interval": 1, "train.batch_size": 32}))
    row = json.loads((tmp_path / family / "metrics.jsonl").read_text().splitlines()[-1])
    clean, noisy = row[f"mean_{name}_clean"], row[f"mean_{name}_noisy"]
    assert (noisy > clean) == noisy_higher, (clean, noisy)
    assert s["detection_auroc"] > 0.8 and s["loss"] == f"a-{family}"
    assert (tmp_path / family / f"{name}_vs_margin.png").is_file()


def test_narl_resume_equals_uninterrupted(tmp_path, assert_resume_exact):
    over = {"method.name": "narl", "method.meta_interval": 2, "data.train_subset": 500}
    assert_resume_exact(lambda name: run_cfg(tmp_path, name, epochs=2, **over), stop_after=1)


def test_bad_narl_options():
    with pytest.raises(UserError, match="family"):
        create_method("narl", loss="mse")
    with pytest.raises(UserError, match="scale"):
        create_method("narl", loss="sl", scale=[1.0])
    with pytest.raises(UserError, match="low must not exceed"):
        create_method("narl", low=0.9, high=0.5)


# -- transfer (T-*) -------------------------------------------------------------------------------------------
def _adjuster_file(path, family="gce", seeds=(0, 1, 2)):
    fam = FAMILIES[family]
    snaps = []
    for s in seeds:
        torch.manual_seed(s)
        snaps.append(Adjuster(len(fam.hparams), scale=fam.scale, low=fam.low, high=fam.high).state_dict())
    net = Adjuster(len(fam.hparams), scale=fam.scale, low=fam.low, high=fam.high)
    save_adjuster(path, family=family, adjuster=net, snapshots=snaps, snapshot_epochs=[1, 2, 3], tasks=["t"])
    return snaps


def test_transfer_reads_no_meta_data_keeps_the_adjuster_and_switches_snapshots(tmp_path):
    snaps = _adjuster_file(tmp_path / "adj.pt")
    ctx = build_context(run_cfg(tmp_path, epochs=6, **{"method.name": "t-narl", "method.adjuster": str(tmp_path / "adj.pt"),
                                                        "data.train_subset": 400}))
    assert len(ctx.data.splits["meta"]) == 0  # no meta set carved
    ctx.next_meta_batch = lambda *a, **k: pytest.fail("t-narl read meta data")  # type: ignore[method-assign]
    m = ctx.method
    assert [m.snapshot_for_epoch(e, 6) for e in range(6)] == [0, 0, 1, 1, 2, 2]  # T/3 and 2T/3
    before = [copy.deepcopy(n.state_dict()) for n in m.snapshots]
    for epoch in range(6):
        ctx.start_epoch(epoch)
        m.start_epoch(ctx)
        assert m.active == [0, 0, 1, 1, 2, 2][epoch]
        for k, b in enumerate(ctx.loader("train", shuffle=True, augment=False)):
            if k == 2:
                break
            m.train_step(ctx, b.x, b.y, b.index)
    for net, sd, orig in zip(m.snapshots, before, snaps):
        for key, v in net.state_dict().items():
            assert torch.equal(v, sd[key]) and torch.equal(v.cpu(), orig[key])  # bit-identical


def test_transfer_run_end_to_end_and_resume(tmp_path, assert_resume_exact):
    _adjuster_file(tmp_path / "adj.pt", family="js")
    over = {"method.name": "t-narl", "method.adjuster": str(tmp_path / "adj.pt"), "data.train_subset": 400}
    assert_resume_exact(lambda name: run_cfg(tmp_path, name, epochs=3, **over), stop_after=1)
    s = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert s["loss"] == "t-js" and s["num_meta"] == 0
    rows = [json.loads(r) for r in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["adjuster_snapshot"] for r in rows] == [0, 1, 2]


def test_bad_adjuster_files_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(UserError, match="needs an adjuster file"):
        TransferNARL()
    with pytest.raises(UserError, match="not found"):
        load_adjuster(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="not a readable adjuster"):
        load_adjuster(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a noisylabels NARL adjuster"):
        load_adjuster(tmp_path / "other.pt")
    _adjuster_file(tmp_path / "gce.pt")
    state = torch.load(tmp_path / "gce.pt", weights_only=True)
    state["family"] = "sl"  # 1 hyperparameter in the file, SL needs 2
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="hyperparameters"):
        load_adjuster(tmp_path / "bad.pt")
    with pytest.raises(UserError, match="holds a gce adjuster"):
        TransferNARL(adjuster=str(tmp_path / "gce.pt"), loss="js")

    class Evil:
        def __reduce__(self):
            return (print, ("EXECUTED",))

    torch.save({"format": "noisylabels-narl-adjuster", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="not a readable adjuster"):
        load_adjuster(tmp_path / "evil.pt")
    assert "EXECUTED" not in capsys.readouterr().out
    rc = main(["train", "--method", "t-narl", "--set", f"method.adjuster={tmp_path / 'bad.pt'}", "--out",
               str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "hyperparameters" in err


@pytest.mark.slow
def test_narl_train_meta_trains_one_adjuster_over_tasks_and_resumes(tmp_path):
    from noisylabels.train.transfer import meta_train_adjuster

    base = run_cfg(tmp_path, "base", epochs=3, **{"method.name": "narl", "method.meta_interval": 2,
                                                    "data.train_subset": 400})
    full = meta_train_adjuster(base, ["symmetric:0.4", "pair:0.3"], out=tmp_path / "full")
    info, nets = load_adjuster(full["adjuster"])
    assert info["tasks"] == ["symmetric:0.4", "pair:0.3"] and info["snapshot_epochs"] == [1, 2, 3] and len(nets) == 3
    # interrupted after one epoch (every task checkpointed, the first snapshot saved), then resumed
    import noisylabels.train.transfer as tr

    orig = tr.fit_lockstep

    def stop_after_one(cfgs, **kw):
        cb = kw["on_epoch_end"]

        def end(epoch, runs):
            cb(epoch, runs)
            if epoch == 0:
                raise KeyboardInterrupt

        kw["on_epoch_end"] = end
        return orig(cfgs, **kw)

    tr.fit_lockstep = stop_after_one
    try:
        with pytest.raises(KeyboardInterrupt):
            meta_train_adjuster(base, ["symmetric:0.4", "pair:0.3"], out=tmp_path / "part")
    finally:
        tr.fit_lockstep = orig
    part = meta_train_adjuster(base, ["symmetric:0.4", "pair:0.3"], out=tmp_path / "part", resume=True)
    a, b = load_adjuster(full["adjuster"])[1], load_adjuster(part["adjuster"])[1]
    for na, nb in zip(a, b):
        for (k, va), vb in zip(na.state_dict().items(), nb.state_dict().values()):
            assert torch.equal(va, vb), k


def test_narl_train_bad_input_is_one_line(tmp_path, capsys):
    assert main(["narl-train", "--task", "symmetric", "--out", str(tmp_path / "x")]) == 2
    assert main(["narl-train", "--method", "mwnet", "--task", "symmetric:0.2", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "TYPE:RATE" in err[0] and "meta-trains the narl method" in err[1]


def test_narl_train_tie_every_task_meta_step_moves_the_one_shared_adjuster(tmp_path):
    """Issue 20: task k > 0's meta step must move the shared adjuster, through the one optimiser."""
    from noisylabels.train.transfer import tie_adjusters

    ctxs = [build_context(run_cfg(tmp_path, f"t{k}", epochs=1, **{"method.name": "narl", "method.meta_interval": 1,
                                                                   "data.train_subset": 200, "noise.rate": r}))
            for k, r in enumerate((0.2, 0.4, 0.6))]
    tie_adjusters(ctxs)
    shared = ctxs[0].method
    for ctx in ctxs:
        assert ctx.method.meta_net is shared.meta_net
        assert ctx.method.meta_opts is shared.meta_opts and ctx.method.meta_opt is shared.meta_opt
        assert ctx.method.meta_opt.state is shared.meta_opt.state  # one optimiser state
        # the optimiser holds exactly the shared parameters
        held = [p for g in ctx.method.meta_opt.param_groups for p in g["params"]]
        assert [id(p) for p in held] == [id(p) for p in shared.meta_net.parameters()]
    for k, ctx in enumerate(ctxs):
        ctx.start_epoch(0)
        ctx.method.start_epoch(ctx)
        b = next(iter(ctx.loader("train", shuffle=True, augment=False)))
        before = [p.detach().clone() for p in shared.meta_net.parameters()]
        ctx.method.train_step(ctx, b.x, b.y, b.index)  # step 0: a meta step
        moved = max(float((p.detach() - q).abs().max()) for p, q in zip(shared.meta_net.parameters(), before))
        assert moved > 0, f"task {k}'s meta step left the shared adjuster unchanged"
        steps = {int(st["step"]) for st in shared.meta_opt.state.values()}
        assert steps == {k + 1}  # Adam's one state counted every task's step


# -- the paper's semantics, each from its equation (issue 20) ------------------------------------------------
def _adjuster_by_hand(net, m):
    """Sec. 3.2 / Fig. 4 written out: clamp(s * sigmoid(W2 relu(W1 m + b1) + b2), low, high)."""
    W1, b1, W2, b2 = (t.detach().double() for t in (net.fc1.weight, net.fc1.bias, net.fc2.weight, net.fc2.bias))
    h = torch.relu(m.double()[:, None] @ W1.T + b1) @ W2.T + b2
    out = torch.tensor(net.scale.tolist(), dtype=DT) * torch.sigmoid(h)
    return out.clamp(min=net.low.item(), max=net.high.item())


def _gce_by_hand(z, y, q):
    """GCE (Zhang & Sabuncu 2018, Eq. 6): (1 - p_y^q) / q."""
    p = torch.softmax(z.double(), 1).gather(1, y[:, None]).squeeze(1)
    return (1 - p ** q) / q


def test_narl_adjuster_reads_the_logit_margin_not_probabilities(tmp_path):
    """Sec. 3.2: Lambda_i = h(z_y - max_{j != y} z_j; theta) on the *logits*; the loss layer is
    GCE with that q (Eq. 7)."""
    ctx = build_context(run_cfg(tmp_path, epochs=1, **{"method.name": "narl", "data.train_subset": 200}))
    m = ctx.method
    g = torch.Generator().manual_seed(0)
    z = 4 * torch.randn(32, ctx.data.num_classes, generator=g)
    y = torch.randint(0, ctx.data.num_classes, (32,), generator=g)
    with torch.no_grad():  # make the adjuster depend visibly on its input
        m.meta_net.fc1.weight.normal_(0, 1, generator=g)
        m.meta_net.fc2.weight.normal_(0, 1, generator=g)
    marg = torch.tensor([z[i, y[i]].item() - max(v for j, v in enumerate(z[i].tolist()) if j != y[i])
                         for i in range(32)], dtype=DT)
    q = _adjuster_by_hand(m.meta_net, marg)[:, 0]
    losses = m.loss_layer(z, y, x=torch.zeros(32, 1), index=torch.arange(32))
    torch.testing.assert_close(losses.double(), _gce_by_hand(z, y, q), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m._notes["margin"].double(), marg, rtol=1e-6, atol=1e-6)
    # discriminating: on probabilities the adjuster would give other q
    p = torch.softmax(z.double(), 1)
    pm = torch.tensor([p[i, y[i]].item() - max(v for j, v in enumerate(p[i].tolist()) if j != y[i])
                       for i in range(32)], dtype=DT)
    assert float((_adjuster_by_hand(m.meta_net, pm)[:, 0] - q).abs().max()) > 1e-2


def test_narl_real_step_uses_the_updated_adjuster_theta_t_plus_1(tmp_path):
    """Eq. 12 (Algorithm 1): w^(t+1) = w^(t) - eta grad_w mean_i L_robust(f(x_i; w^(t)), y_i;
    h(m_i; theta^(t+1))) with the adjuster *after* the meta step (not theta^(t): a delayed step)."""
    ctx = build_context(run_cfg(tmp_path, epochs=1, **{"method.name": "narl", "method.meta_interval": 1,
                                                        "method.meta_lr": 0.05, "data.train_subset": 200,
                                                        "train.num_threads": 1}))
    m, model = ctx.method, ctx.model
    ctx.start_epoch(0)
    m.start_epoch(ctx)
    model.train()
    b = next(iter(ctx.loader("train", shuffle=True, augment=False)))
    w0 = copy.deepcopy(model)
    hp = {k: ctx.optimizer.param_groups[0][k] for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov")}
    assert not ctx.optimizer.state  # the first step: no momentum buffer to copy
    theta_t = copy.deepcopy(m.meta_net)
    m.train_step(ctx, b.x, b.y, b.index)
    theta_t1 = m.meta_net
    assert any(not torch.equal(a, c) for a, c in zip(theta_t.parameters(), theta_t1.parameters()))

    def real_step(adjuster):
        mod = copy.deepcopy(w0)
        opt = torch.optim.SGD(mod.parameters(), **hp)
        z = mod(b.x)
        zd = z.detach()
        marg = (zd.gather(1, b.y[:, None]).squeeze(1) - zd.scatter(1, b.y[:, None], float("-inf")).amax(1))
        q = _adjuster_by_hand(adjuster, marg)[:, 0].to(z.dtype)
        p = torch.softmax(z, 1).gather(1, b.y[:, None]).squeeze(1)
        ((1 - p ** q) / q).mean().backward()
        opt.step()
        return [p.detach() for p in mod.parameters()]

    want, delayed = real_step(theta_t1), real_step(theta_t)
    got = [p.detach() for p in model.parameters()]
    for a, c in zip(got, want):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-7)
    assert max(float((a - c).abs().max()) for a, c in zip(want, delayed)) > 1e-5  # the test can tell them apart


@pytest.mark.parametrize("flip", [False, True])
def test_detection_ranks_low_margins_first_whichever_way_the_adjuster_points(tmp_path, flip):
    """Issue 20: the detection score must not depend on the direction the adjuster learned (A-GCE's q
    ranked human-label errors inversely on CIFAR-10N). The score is -margin, computed here by hand."""
    ctx = build_context(run_cfg(tmp_path, **{"method.name": "narl", "data.train_subset": 300}))
    m = ctx.method
    with torch.no_grad():  # an adjuster whose q increases (or, flipped, decreases) with the margin
        m.meta_net.fc1.weight.fill_(1.0)
        m.meta_net.fc1.bias.zero_()
        m.meta_net.fc2.weight.fill_(-0.05 if flip else 0.05)
        m.meta_net.fc2.bias.zero_()
    m.start_epoch(ctx)
    idx = ctx.data.splits["train"]
    g = torch.Generator().manual_seed(1)
    z = 3 * torch.randn(len(idx), ctx.data.num_classes, generator=g)
    y = ctx.data.labels[idx]
    m.loss_layer(z, y, x=torch.zeros(len(idx), 1), index=idx)
    m.record(idx, **m._notes)
    m.end_epoch(ctx)
    scores = m.sample_scores(ctx, torch.softmax(z, 1), y).numpy()
    by_hand = np.array([float(torch.cat([z[i, :y[i]], z[i, y[i] + 1:]]).max() - z[i, y[i]]) for i in range(len(idx))])
    np.testing.assert_allclose(scores, by_hand, rtol=1e-5, atol=1e-5)  # suspicion = max_{j != y} z_j - z_y
    q = m.selected_record("q")
    assert (np.corrcoef(q, -scores)[0, 1] < 0) == flip  # q's direction did flip; the score did not
    assert m.score_column == "score_neg_margin"
