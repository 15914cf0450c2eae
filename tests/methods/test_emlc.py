"""EMLC (Taraday & Baskin 2023) on the meta base: teacher, corruption, Algorithm 1's schedule, records,
resume, initialisation from a file, direction on digits, and the CLI."""

import csv
import json

import numpy as np
import pytest
import torch

from noisylabels.cli import main
from noisylabels.errors import UserError
from noisylabels.methods.emlc import Teacher, corrupt_half
from noisylabels.models.mlp import MLP
from noisylabels.train import build_context, fit

from tests.helpers import run_cfg

QUICK = {"method.name": "emlc", "data.train_subset": 300, "train.num_threads": 1}


# -- the teacher and the corruption -------------------------------------------------------------------
def test_teacher_soft_labels_are_on_the_simplex_and_gate_in_unit_interval():
    torch.manual_seed(0)
    t = Teacher(MLP(in_features=6, num_classes=4, hidden=(8,)), 4)
    x, y = torch.randn(10, 6), torch.randint(0, 4, (10,))
    q, w, logits = t(x, y)
    assert q.shape == (10, 4) and logits.shape == (10, 4) and w.shape == (10,)
    assert bool(((w > 0) & (w < 1)).all()) and torch.allclose(q.sum(1), torch.ones(10))
    assert t.embedding.embedding_dim == 128 and t.gate_mlp[0].out_features == 128  # the paper's / code's sizes


def test_adversarial_corruption_never_gives_the_true_label_and_corrupts_exactly_half():
    torch.manual_seed(1)
    for n in (8, 9, 64):
        y = torch.randint(0, 5, (n,))
        logits = torch.randn(n, 5)
        logits[:3] = 0.0
        logits[torch.arange(3), y[:3]] = 10.0  # top-1 is the true label: top-2 is used
        fake = corrupt_half(y, logits, mode="adversarial", num_classes=5)
        changed = fake != y
        assert int(changed.sum()) == n // 2 and bool(changed[0:2 * (n // 2):2].all()) and not bool(changed[1::2].any())
        top2 = logits.topk(2, dim=1).indices
        want = torch.where(top2[:, 0] != y, top2[:, 0], top2[:, 1])
        assert torch.equal(fake[changed], want[changed])
    rnd = corrupt_half(y, mode="random", num_classes=5, generator=torch.Generator().manual_seed(0))
    assert not bool((rnd != y)[1::2].any())  # only the corrupted half may differ (and may equal y)
    with pytest.raises(UserError):
        corrupt_half(y, mode="adversarial", num_classes=5)


# -- Algorithm 1: the teacher changes only when t mod k = k - 1 -------------------------------------------
def _drive(ctx, steps):
    """Run ``steps`` training steps of epoch 0 by hand; yield after each with the step index."""
    ctx.start_epoch(0)
    ctx.model.train()
    ctx.method.start_epoch(ctx)
    gen = torch.Generator().manual_seed(0)
    for t, batch in enumerate(ctx.loader("train", shuffle=True, augment=True, generator=gen)):
        if t == steps:
            return
        ctx.method.train_step(ctx, batch.x, batch.y, batch.index)
        ctx.step += 1
        yield t


@pytest.mark.parametrize("k", [1, 3])
def test_the_teacher_changes_only_when_t_mod_k_is_k_minus_1(tmp_path, k, one_thread):
    ctx = build_context(run_cfg(tmp_path, **QUICK, **{"method.k": k}))
    snap = lambda: [p.detach().clone() for p in ctx.method.meta_net.parameters()]  # noqa: E731
    before = snap()
    for t in _drive(ctx, 7):
        after = snap()
        changed = any(not torch.equal(a, b) for a, b in zip(before, after))
        assert changed == (t % k == k - 1), t
        assert len(getattr(ctx.method.schedule, "window", [])) == (0 if t % k == k - 1 else t % k + 1)
        before = after


def _heavy_ball_discounts(lrs, mom, wd):
    """Discounts of the k steps of a torch-SGD run's first window (momentum, no dampening, weight decay,
    the first step fills the buffer) with H_ww = I, relative to the last step, by the 2x2 matrices of
    the state (dw/dphi, dbuf/dphi): one step maps (W, M) to (W - lr M', M'), M' = mom M + (1 + wd) W + b."""
    out = []
    for tau in range(len(lrs)):
        state = torch.tensor([-lrs[tau], 1.0], dtype=torch.float64)  # step tau's impulse b = 1 (first or not)
        for t in range(tau + 1, len(lrs)):
            a = torch.tensor([[1 - lrs[t] * (1 + wd), -lrs[t] * mom], [1 + wd, mom]], dtype=torch.float64)
            state = a @ state
        out.append(float(state[0]) / -lrs[-1])
    return out


def test_k_step_meta_gradient_is_the_live_step_plus_the_discounted_stored_steps(tmp_path, one_thread):
    """The base's window at t = k - 1: grads = engine's live step + each stored step's contribution
    discounted for the run's SGD (momentum 0.9, weight decay; the first step fills the buffer)."""
    from noisylabels.meta import lookahead_contributions

    ctx = build_context(run_cfg(tmp_path, **QUICK, **{"method.k": 3}))
    m = ctx.method
    group = ctx.optimizer.param_groups[0]
    assert group["momentum"] == 0.9 and group["weight_decay"] > 0 and not group["nesterov"]
    seen, lrs = {}, []
    orig, orig_step = m.apply_meta_gradient, ctx.optimizer.step

    def step(*a, **kw):
        lrs.append(float(ctx.optimizer.param_groups[0]["lr"]))
        return orig_step(*a, **kw)

    def spy(c, grads, res, mb):  # before the teacher moves: its stored-step contributions, by hand
        disc = _heavy_ball_discounts(lrs, group["momentum"], group["weight_decay"])
        extra = [torch.zeros_like(g) for g in grads]
        for st, d in zip(seen["window"], disc[:2]):  # one stored step at a time, its tangent scaled here
            one = lookahead_contributions(c.model, steps=[st], tangent={n: d * v for n, v in res.tangent.items()},
                                          phi=m.phi, gamma=1.0,
                                          loss_layer=lambda z, s: m.loss_layer(z, s.y, x=s.x, index=s.index))
            extra = [e + o for e, o in zip(extra, one)]
        seen.update(grads=[g.clone() for g in grads], live=res.meta_grads, extra=extra)
        orig(c, grads, res, mb)

    ctx.optimizer.step = step
    m.apply_meta_gradient = spy
    for t in _drive(ctx, 3):
        if t == 1:
            seen["window"] = list(m.schedule.window)
    assert len(seen["window"]) == 2 and m.schedule.window == [] and len(lrs) == 3
    extra = seen["extra"]
    for g, a, b in zip(seen["grads"], seen["live"], extra):
        torch.testing.assert_close(g, a + b, rtol=1e-5, atol=1e-8)
    assert any(float(b.abs().sum()) > 0 for b in extra)


# -- records, files, checkpoints, resume ------------------------------------------------------------------
def test_emlc_run_records_recovery_detection_corrected_labels_and_weights_only_checkpoint(tmp_path):
    s = fit(run_cfg(tmp_path, epochs=2, **QUICK))
    assert s["status"] == "finished" and s["loss"] == "soft-ce" and "detection_auroc" in s
    assert {"clean_selected_test_accuracy", "label_recovery", "label_recovery_given_wrong"} <= set(s)
    out = tmp_path / "run"
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    for key in ("label_recovery", "label_recovery_given_right", "label_recovery_given_wrong", "meta_loss",
                "detection_auroc", "detection_ap", "mean_gate_clean", "mean_gate_noisy", "meta_accuracy"):
        assert all(key in r for r in rows), key
    with open(out / "corrected_labels.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["index", "given", "corrected", "confidence"] and len(table) == s["num_train"]
    assert all(0 < float(r["confidence"]) <= 1 for r in table)
    for name in ("gate_hist.png", "meta_loss.png", "suspects.csv"):
        assert (out / name).is_file(), name
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert "q_table" in state["method"] and len(state["method"]["meta_opts"]) == 1  # two teacher optimisers


def test_emlc_k_step_resume_equals_an_uninterrupted_run(tmp_path, assert_resume_exact):
    over = {**QUICK, "method.k": 3, "train.num_threads": 1}
    ctx = build_context(run_cfg(tmp_path, "probe", **over))
    assert ctx.steps_per_epoch % 3 != 0  # the window spans the epoch end (stored steps in the checkpoint)
    assert_resume_exact(lambda name: run_cfg(tmp_path, name, epochs=2, **over), stop_after=1)


def test_bad_options_are_one_line_errors(tmp_path, one_thread):
    for over, match in (({"method.k": 0}, "k"), ({"method.corruption": "mixup"}, "corruption"),
                        ({"method.meta_optimizer": "adam"}, "SGD"), ({"method.lookahead": 2}, "method.k"),
                        ({"method.teacher_model": "nope"}, "nope"),
                        ({"method.k": 2, "method.meta_gradient": "double-backward"}, "jvp")):
        with pytest.raises(UserError, match=match) as err:
            build_context(run_cfg(tmp_path, "bad", **QUICK, **over))
        assert "\n" not in str(err.value)


# -- initialisation from a file ------------------------------------------------------------------------------
def test_teacher_init_and_student_init_checkpoint_load_with_one_line_errors(tmp_path, one_thread):
    ctx = build_context(run_cfg(tmp_path, "a", **QUICK))
    good = tmp_path / "teacher.pt"
    sd = {k: torch.full_like(v, 0.25) for k, v in ctx.method.meta_net.backbone.state_dict().items()}
    torch.save(sd, good)
    ctx2 = build_context(run_cfg(tmp_path, "b", **QUICK, **{"method.teacher_init": str(good),
                                                             "model.init_checkpoint": str(good)}))
    for k, v in ctx2.method.meta_net.backbone.state_dict().items():
        assert torch.equal(v.cpu(), sd[k]), k
    for k, v in ctx2.model.state_dict().items():  # same architecture: the student loads the same file
        assert torch.equal(v.cpu(), sd[k]), k
    bad_shape = tmp_path / "shape.pt"
    torch.save({k: (v[:1] if v.ndim else v) for k, v in sd.items()}, bad_shape)
    extra = tmp_path / "extra.pt"
    torch.save({**sd, "junk.weight": torch.zeros(1)}, extra)
    for path, match in ((tmp_path / "missing.pt", "method.teacher_init: file not found"),
                        (bad_shape, "shape mismatch"), (extra, "unexpected key")):
        with pytest.raises(UserError, match=match) as err:
            build_context(run_cfg(tmp_path, "c", **QUICK, **{"method.teacher_init": str(path)}))
        assert "\n" not in str(err.value)


# -- direction: corrupted samples get a lower gate ----------------------------------------------------------
def test_corrupted_samples_get_a_lower_gate_on_digits_with_40_percent_noise(tmp_path):
    """Digits, symmetric 40%, MLP, 5 epochs, teacher lr 0.1. Measured: gate AUROC 0.94 (random
    corruption) and 0.65 (adversarial) at epoch 5; label recovery of the wrong labels 0.59 / 0.42."""
    base = {"method.name": "emlc", "method.meta_lr": 0.1, "train.num_threads": 1}
    s = fit(run_cfg(tmp_path, "random", epochs=5, **base, **{"method.corruption": "random"}))
    rows = [json.loads(r) for r in (tmp_path / "random" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["detection_auroc"] > 0.85 and rows[-1]["mean_gate_noisy"] < rows[-1]["mean_gate_clean"]
    assert rows[-1]["label_recovery_given_wrong"] > 0.3 and s["test_accuracy"] > 0.85


@pytest.mark.slow
def test_adversarial_gate_direction_on_digits(tmp_path):
    fit(run_cfg(tmp_path, "adv", epochs=5, **{"method.name": "emlc", "method.meta_lr": 0.1}))
    rows = [json.loads(r) for r in (tmp_path / "adv" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["detection_auroc"] > 0.58 and rows[-1]["mean_gate_noisy"] < rows[-1]["mean_gate_clean"]


# -- the CLI ------------------------------------------------------------------------------------------------
def test_cli_trains_emlc_with_k_steps_on_the_default_dataset(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--quiet", "--method", "emlc", "--epochs", "1", "--set", "method.k=2",
                 "--set", "data.train_subset=200", "--out", "runs/e"])
    out, err = capsys.readouterr()
    assert code == 0, err
    s = json.loads((tmp_path / "runs" / "e" / "summary.json").read_text())
    assert s["method"] == "emlc" and s["status"] == "finished"
    assert (tmp_path / "runs" / "e" / "corrected_labels.csv").is_file()
    assert np.isfinite(s["test_accuracy"])


# -- the paper's semantics, each from its equation (issue 20) ------------------------------------------------
def _teacher_by_hand(t, x, y):
    """Sec. 3.3 written out: teacher logits and features, gate w = sigmoid(MLP([h; emb(y~)])), and the
    soft label q = w onehot(y~) + (1 - w) softmax(teacher logits)."""
    h = t.backbone.features(x)
    logits = t.backbone.classifier(h)
    w = torch.sigmoid(t.gate_mlp(torch.cat([h, t.embedding.weight[y]], dim=1))).squeeze(1)
    k = logits.shape[1]
    onehot = (torch.arange(k)[None, :] == y[:, None]).to(logits.dtype)
    return logits, h, w, w[:, None] * onehot + (1 - w[:, None]) * torch.softmax(logits, 1)


def test_emlc_student_loss_is_soft_ce_on_the_gated_soft_label(tmp_path, one_thread):
    """Eq. 6 with Sec. 3.3's q: the student's loss is -sum_c q_c log p_c with q mixing the given label
    and the teacher's prediction by the gate; gate -> 1 gives CE on the given label, -> 0 the
    teacher's prediction (the gate is what separates EMLC from self-distillation)."""
    ctx = build_context(run_cfg(tmp_path, **QUICK))
    m = ctx.method
    b = next(iter(ctx.loader("train", shuffle=False, augment=False)))
    z = ctx.model(b.x).detach()
    losses = m.loss_layer(z, b.y, x=b.x, index=b.index).detach()
    logits, _, w, q = (t.detach() for t in _teacher_by_hand(m.meta_net, b.x, b.y))
    want = -(q * torch.log_softmax(z, 1)).sum(1)
    torch.testing.assert_close(losses, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m._notes["gate"], w, rtol=1e-5, atol=1e-6)
    assert float(w.min()) < 0.9 and float(w.max()) > 0.1  # neither limit: the mixture is tested
    assert float((want - (-(torch.softmax(logits, 1) * torch.log_softmax(z, 1)).sum(1))).abs().max()) > 1e-3
    with torch.no_grad():
        m.meta_net.gate_mlp[-1].bias.fill_(40.0)  # gate -> 1: the given label
    ce = torch.nn.functional.cross_entropy(z, b.y, reduction="none")
    torch.testing.assert_close(m.loss_layer(z, b.y, x=b.x, index=b.index).detach(), ce, rtol=1e-4, atol=1e-5)


def test_emlc_teacher_loss_is_ce_plus_gate_bce_on_the_half_corrupted_clean_batch(tmp_path, one_thread):
    """Eq. 12's supervised terms: CE of the teacher's classifier on the clean batch + BCE of the gate on
    that batch with every second label replaced by the teacher's strongest wrong class, target 1 for
    an unchanged label and 0 for a changed one."""
    from types import SimpleNamespace

    ctx = build_context(run_cfg(tmp_path, **QUICK))
    m = ctx.method
    b = next(iter(ctx.loader("train", shuffle=False, augment=False)))
    y = b.y.clone()
    got = float(m.meta_net_loss(ctx, SimpleNamespace(x=b.x, y=y, index=b.index)))
    logits, h, _, _ = _teacher_by_hand(m.meta_net, b.x, y)
    fake = y.clone()
    for i in range(0, 2 * (len(y) // 2), 2):
        order = logits[i].argsort(descending=True).tolist()
        fake[i] = order[0] if order[0] != y[i] else order[1]
    w = torch.sigmoid(m.meta_net.gate_mlp(torch.cat([h, m.meta_net.embedding.weight[fake]], 1))).squeeze(1)
    target = (fake == y).double()
    bce = -(target * torch.log(w.double()) + (1 - target) * torch.log(1 - w.double())).mean()
    ce = -torch.log_softmax(logits.double(), 1).gather(1, y[:, None]).mean()
    assert got == pytest.approx(float(ce + bce), rel=1e-5)


def test_a_window_checkpointed_without_sgd_settings_still_resumes(tmp_path, one_thread):
    """Checkpoints written before the stored steps kept their SGD setting: the optimiser's is used."""
    ctx = build_context(run_cfg(tmp_path, **QUICK, **{"method.k": 3}))
    m = ctx.method
    it = _drive(ctx, 3)
    next(it)
    next(it)  # two stored steps (the first one filled the momentum buffer)
    state = m.state_dict()
    for w in state["window"]:
        del w["sgd"]
    m.load_state_dict(state)
    assert all(st.sgd and not any(v[-1] for v in st.sgd.values()) for st in m.schedule.window)
    next(it)  # the window closes: the teacher's update runs
    assert m.schedule.window == []


@pytest.mark.parametrize("flip", [False, True])
def test_detection_is_the_teachers_probability_of_the_given_label_whatever_the_gate_learned(tmp_path, flip):
    """Issue 20: the gate's direction depends on the run (it ranked CIFAR-10N's wrong labels inversely);
    the detection score is minus the teacher classifier's p(given label), computed here by hand."""
    ctx = build_context(run_cfg(tmp_path, **QUICK))
    m = ctx.method
    with torch.no_grad():  # a gate pointing one way or the other
        last = m.meta_net.gate_mlp[-1]
        last.weight.mul_(-1.0 if flip else 1.0)
    m.start_epoch(ctx)
    b = next(iter(ctx.loader("train", shuffle=False, augment=False)))
    m.loss_layer(ctx.model(b.x), b.y, x=b.x, index=b.index)
    m.record(b.index, **m._notes)
    m.end_epoch(ctx)
    with torch.no_grad():
        logits, _ = m.meta_net.encode(b.x)
        p = torch.exp(logits - torch.logsumexp(logits, dim=1, keepdim=True))
        want = -p[torch.arange(len(b.y)), b.y].numpy()
    scores = m.sample_scores(ctx, torch.zeros(len(ctx.data.splits["train"]), 10), ctx.data.labels[ctx.data.splits["train"]])
    pos = {int(i): k for k, i in enumerate(ctx.data.splits["train"])}
    got = scores.numpy()[[pos[int(i)] for i in b.index]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert m.score_column == "score_neg_teacher_p_given"
