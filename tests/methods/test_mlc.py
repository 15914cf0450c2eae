"""MLC (Zheng et al. 2021) on the meta base: the LCN on the student's detached features, the exact
one-step meta-gradient, MLC's k-step accumulation, records and resume."""

import json

import pytest
import torch

from noisylabels.errors import UserError
from noisylabels.meta import meta_gradient
from noisylabels.methods.mlc import MLC, LabelCorrectionNet
from noisylabels.train import build_context, fit

from tests.helpers import run_cfg

QUICK = {"method.name": "mlc", "data.train_subset": 300, "train.num_threads": 1}


def _batch(ctx, i=0):
    gen = torch.Generator().manual_seed(0)
    return list(ctx.loader("train", shuffle=True, augment=True, generator=gen))[i]


def test_lcn_outputs_a_distribution_from_features_and_label():
    torch.manual_seed(0)
    net = LabelCorrectionNet(7, 4)
    net.xavier_init()
    q = net(torch.randn(5, 7), torch.randint(0, 4, (5,)))
    assert q.shape == (5, 4) and torch.allclose(q.sum(1), torch.ones(5)) and bool((q > 0).all())
    assert net.embedding.embedding_dim == 128


def test_lcn_reads_the_training_forwards_detached_features_without_a_second_forward(tmp_path, one_thread):
    ctx = build_context(run_cfg(tmp_path, **QUICK))
    m, b = ctx.method, _batch(ctx)
    calls = []
    hook = ctx.model.register_forward_hook(lambda *a: calls.append(1))
    z = ctx.model(b.x)
    h = m.tap.features(b.x)
    with torch.no_grad():
        want = ctx.model.features(b.x)
    hook.remove()
    assert h is not None and not h.requires_grad and torch.allclose(h, want)
    q = m.soft_labels(z, b.y, x=b.x, index=b.index)
    assert len(calls) == 1 and torch.allclose(q.sum(1), torch.ones(len(q)))
    assert m.tap.features(b.x.clone()) is None  # another tensor: not confused with this batch


def test_mlc_meta_gradient_jvp_equals_double_backward(tmp_path, one_thread):
    ctx = build_context(run_cfg(tmp_path, **QUICK, **{"model.name": "lenet"}))
    m, b = ctx.method, _batch(ctx)
    ctx.start_epoch(0)
    mb = ctx.next_meta_batch()

    def layer(z, t):
        return m.loss_layer(z, t, x=b.x, index=b.index)

    out = {}
    for how in ("jvp", "double-backward"):
        out[how] = meta_gradient(ctx.model, ctx.optimizer, how=how, x=b.x, y=b.y, loss_layer=layer, meta_x=mb.x,
                                 meta_y=mb.y, meta_loss_fn=m.meta_loss, phi=m.phi, reuse_forward=False).meta_grads
    for a, c in zip(out["jvp"], out["double-backward"]):
        torch.testing.assert_close(a, c, rtol=1e-3, atol=1e-6)
    assert any(float(a.abs().sum()) > 0 for a in out["jvp"])


def test_mlc_k_step_updates_the_lcn_every_k_th_step_with_the_discounted_sum(tmp_path, one_thread, monkeypatch):
    """MLC's k-step (public step_hmlc_K): A_t = G_t + gamma_t A_(t-1), LCN step on A at (t + 1) mod k = 0."""
    from noisylabels.meta.schedule import DiscountedAccumulation
    from noisylabels.methods.meta import MetaNetMethod

    ctx = build_context(run_cfg(tmp_path, **QUICK, **{"method.k": 2}))
    m = ctx.method
    assert isinstance(m.schedule, DiscountedAccumulation)
    stepped, given, gammas = [], [], []
    real_apply, real_discount = MetaNetMethod.apply_meta_gradient, DiscountedAccumulation.discount
    real_acc = DiscountedAccumulation.accumulate
    monkeypatch.setattr(MetaNetMethod, "apply_meta_gradient",
                        lambda self, c, grads, res, mb: (stepped.append((c.step, [g.clone() for g in grads])),
                                                         real_apply(self, c, grads, res, mb)))
    monkeypatch.setattr(DiscountedAccumulation, "discount",
                        lambda self, res, device=None: gammas.append(real_discount(self, res, device)) or gammas[-1])
    monkeypatch.setattr(DiscountedAccumulation, "accumulate",
                        lambda self, step, grads, res, **kw: (given.append([g.clone() for g in grads]),
                                                              real_acc(self, step, grads, res, **kw))[1])
    ctx.start_epoch(0)
    ctx.model.train()
    m.start_epoch(ctx)
    before = [p.detach().clone() for p in m.phi]
    for t in range(4):
        b = _batch(ctx, t)
        m.train_step(ctx, b.x, b.y, b.index)
        changed = any(not torch.equal(a, p) for a, p in zip(before, m.phi))
        assert changed == ((t + 1) % 2 == 0), t
        before = [p.detach().clone() for p in m.phi]
        ctx.step += 1
    assert [s for s, _ in stepped] == [1, 3] and len(given) == 4
    for a, g1, g0 in zip(stepped[0][1], given[1], given[0]):
        torch.testing.assert_close(a, g1 + gammas[1] * g0)
    assert 0.0 < float(gammas[1]) < 1.5  # a projection of (1 - s) g(w_t+1) on g(w_t)


def test_mlc_run_records_recovery_and_corrected_labels(tmp_path):
    s = fit(run_cfg(tmp_path, epochs=2, **QUICK))
    assert s["status"] == "finished" and s["loss"] == "soft-ce"
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("label_recovery_given_wrong" in r and "mean_q_given_noisy" in r and "meta_loss" in r for r in rows)
    assert (tmp_path / "run" / "corrected_labels.csv").is_file()
    assert "q_table" in torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["method"]


def test_mlc_k_step_resume_equals_an_uninterrupted_run(tmp_path, assert_resume_exact):
    assert_resume_exact(lambda name: run_cfg(tmp_path, name, epochs=2, **QUICK, **{"method.k": 3}), stop_after=1)


def test_mlc_bad_options(tmp_path):
    for over in ({"method.k": 0}, {"method.lookahead": 2}, {"method.k": 2, "method.meta_gradient": "double-backward"}):
        with pytest.raises(UserError):
            build_context(run_cfg(tmp_path, "bad", **QUICK, **over))


def test_clean_in_student_mixes_half_the_clean_batch_into_the_student_step(tmp_path, one_thread):
    """The public MLC code's default (hmlc_K_mix): one forward over noisy + half the clean batch, the
    clean rows with hard labels, the other half for the meta-gradient; records see the noisy rows only."""
    ctx = build_context(run_cfg(tmp_path, **QUICK, **{"method.clean_in_student": True}))
    m, b = ctx.method, _batch(ctx)
    ctx.start_epoch(0)
    ctx.model.train()
    m.start_epoch(ctx)
    seen = {}
    orig = m.apply_meta_gradient
    m.apply_meta_gradient = lambda c, g, res, mb: (seen.update(n=len(res.train_losses), mb=len(mb.y)), orig(c, g, res, mb))
    calls = []
    hook = ctx.model.register_forward_hook(lambda mod, a, out: calls.append(len(a[0])))
    out = m.train_step(ctx, b.x, b.y, b.index)
    hook.remove()
    half = seen["mb"]  # the meta batch (here the whole small meta set, 30) split in halves
    assert half >= 10 and out.logits.shape[0] == len(b.y) and seen["n"] == len(b.y) + half
    assert calls[0] == len(b.y) + half  # one training forward over both parts
    assert bool(m.q_seen[b.index].all())
    with pytest.raises(UserError, match="clean_in_student"):
        build_context(run_cfg(tmp_path, "bad", **QUICK, **{"method.clean_in_student": True, "method.k": 2,
                                                          "method.meta_interval": 2}))


def test_mlc_k_step_discount_from_the_identity_hessian_look_ahead():
    """MLC's k-step discount (H_w = I): d L(w_{t+1}) / d w_t = (1 - s) g(w_{t+1}), projected on g(w_t):
    gamma = <(1 - s) g(w_{t+1}), g(w_t)> / ||g(w_t)||^2. Hand numbers: two parameters with their own
    scales s (0.1 and 0.5), g(w_t) = ([1, 2], [2]) (squared norm 9), g(w_{t+1}) = ([3, 0], [3])."""
    from types import SimpleNamespace

    m = MLC(k=2).schedule
    m.g_prev = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([2.0])}
    scale = {"a": 0.1, "b": 0.5}
    res = SimpleNamespace(tangent={"a": torch.tensor([3.0, 0.0]) * 0.1, "b": torch.tensor([3.0]) * 0.5}, scale=scale)
    want = ((1 - 0.1) * 3.0 + (1 - 0.5) * 6.0) / 9.0  # = 0.6333...
    assert float(m.discount(res)) == pytest.approx(want, rel=1e-6)
