"""ProMix (Xiao et al., IJCAI 2023): expected values are computed here from the paper's rules
(class-wise small-loss selection, matched high-confidence selection, debiased margin loss and
pseudo-labels, the auxiliary head's decoupled pseudo-label loss), never by calling the code under test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from noisylabels.errors import UserError
from noisylabels.methods import create_method
from noisylabels.methods.promix import (PseudoHeadModel, class_wise_small_loss, debiased_logits,
                                        debiased_pseudo_label, label_guessing_by_agreement, labelled_loss,
                                        matched_high_confidence, selection_ratio, unlabelled_loss, update_prior)
from noisylabels.models import Ensemble
from noisylabels.train import build_context, fit

from tests.helpers import run_cfg

#: a small ProMix run on digits (40% symmetric noise, the MLP): warm-up 1 epoch, ramps over 2
PMX = {"method.name": "promix", "method.warmup_epochs": 1, "method.rampup_epochs": 2, "data.train_subset": 500,
       "train.num_threads": 1, "train.batch_size": 32}


# -- selection ------------------------------------------------------------------------------------------------
def test_class_wise_small_loss_selects_the_same_budget_of_smallest_losses_in_every_class():
    # N = 12, C = 4 (class 3 empty): budget ceil(0.5 * 12 / 4) = 2 per class, capped by the class size
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 0, 1])
    losses = torch.tensor([0.9, 0.1, 0.5, 0.2, 0.8, 3.0, 2.0, 2.5, 4.0, 7.0, 0.3, 1.0])
    keep = class_wise_small_loss(losses, labels, num_classes=4, rho=0.5)
    # class 0 losses: idx 0:.9 1:.1 2:.5 3:.2 4:.8 10:.3 -> {1, 3}; class 1: 5:3 6:2 7:2.5 8:4 11:1 -> {11, 6};
    # class 2 has one sample (7.0, the largest loss of all): kept, k = min(2, 1)
    assert sorted(torch.nonzero(keep).reshape(-1).tolist()) == [1, 3, 6, 9, 11]
    # rho = 1: budget 3 -> class 0 {1 (.1), 3 (.2), 10 (.3)}, class 1 {11 (1), 6 (2), 7 (2.5)}, class 2 {9}
    keep = class_wise_small_loss(losses, labels, num_classes=4, rho=1.0)
    assert sorted(torch.nonzero(keep).reshape(-1).tolist()) == [1, 3, 6, 7, 9, 10, 11]
    # a global small-loss rule would take class 0's samples 2 and 4 (.5, .8) before any of class 1: not here


def test_class_wise_small_loss_budget_and_ties():
    labels = torch.tensor([0] * 7 + [1] * 3)
    losses = torch.zeros(10)  # all tied: the first positions win (stable)
    keep = class_wise_small_loss(losses, labels, num_classes=2, rho=0.3)  # ceil(0.3 * 10 / 2) = 2
    assert torch.nonzero(keep).reshape(-1).tolist() == [0, 1, 7, 8]
    keep = class_wise_small_loss(losses, labels, num_classes=2, rho=0.01)  # ceil(0.05) = 1
    assert torch.nonzero(keep).reshape(-1).tolist() == [0, 7]
    assert selection_ratio(10, rho_start=0.2, rho_end=0.6, rampup_epochs=50) == pytest.approx(0.2 + 0.4 * 10 / 50)
    assert selection_ratio(80, rho_start=0.2, rho_end=0.6, rampup_epochs=50) == pytest.approx(0.6)


def test_matched_high_confidence_needs_the_given_label_predicted_above_tau():
    probs = torch.tensor([[0.995, 0.004, 0.001],   # label 0: matched, confident
                          [0.995, 0.004, 0.001],   # label 1: confident but not matched
                          [0.60, 0.39, 0.01],      # label 0: matched, not confident
                          [0.001, 0.009, 0.99],    # label 2: exactly tau: not above it
                          [0.0, 0.001, 0.999]])    # label 2: matched, confident
    labels = torch.tensor([0, 1, 0, 2, 2])
    assert matched_high_confidence(probs, labels, tau=0.99).tolist() == [True, False, False, False, True]


def test_label_guessing_by_agreement_fills_the_batch_with_the_most_confident_agreeing_samples():
    sel = torch.tensor([True, False, False, False, False, False, False, False, False, False])
    pa = torch.full((10, 2), 0.5)
    pb = torch.full((10, 2), 0.5)
    conf = [0.0, 0.999, 0.995, 0.9999, 0.992, 0.6, 0.999, 0.999, 0.999, 0.999]
    for i, c in enumerate(conf):
        pa[i] = torch.tensor([c, 1 - c]) if i != 6 else torch.tensor([1 - c, c])  # 6: the networks disagree
        pb[i] = torch.tensor([c, 1 - c])
    # room: floor(0.5 * 10) - 1 = 4; candidates (both > 0.99, agreeing, unselected): 1, 2, 3, 4, 7, 8, 9
    out = label_guessing_by_agreement(sel, pa, pb, tau=0.99, threshold=0.5)
    assert torch.nonzero(out).reshape(-1).tolist() == [0, 1, 3, 7, 8]  # 3 (0.9999), then 1, 7, 8 (0.999)
    full = torch.ones(10, dtype=torch.bool)
    assert torch.equal(label_guessing_by_agreement(full, pa, pb, tau=0.99, threshold=0.5), full)


# -- debiasing ------------------------------------------------------------------------------------------------
def test_debiased_loss_and_pseudo_labels_are_the_prior_adjusted_softmaxes():
    z = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    pi = torch.tensor([0.6, 0.3, 0.1])
    p = torch.softmax(z, 1)
    # the loss's softmax: p_c pi_c^alpha / sum (logit adjustment); the pseudo-label: p_c pi_c^-beta / sum
    for a in (0.0, 0.8, 1.0):
        want = p * pi**a
        np.testing.assert_allclose(torch.softmax(debiased_logits(z, pi, a), 1), want / want.sum(1, keepdim=True),
                                   rtol=1e-6)
        want = p * pi ** (-a)
        np.testing.assert_allclose(debiased_pseudo_label(z, pi, a), want / want.sum(1, keepdim=True), rtol=1e-6)
    # the adjusted loss punishes a prediction of an over-predicted class more: CE at label 0 grows with alpha
    t = torch.tensor([[1.0, 0.0, 0.0]])
    ce = [float(-torch.log_softmax(z[:1] + a * pi.log(), 1)[0, 2]) for a in (0.0, 0.8)]
    got = [float(labelled_loss(z[:1], torch.tensor([[0.0, 0.0, 1.0]]), pi, a)) for a in (0.0, 0.8)]
    np.testing.assert_allclose(got, ce, rtol=1e-6)
    assert got[1] > got[0]  # the rare class (pi = 0.1) needs a larger margin
    assert float(labelled_loss(z[:0], t[:0], pi, 0.8)) == 0.0
    # the prior estimate: m pi + (1 - m) mean p; an empty set leaves it
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    np.testing.assert_allclose(update_prior(pi, probs, 0.9), 0.9 * pi + 0.1 * torch.tensor([0.5, 0.25, 0.25]),
                               rtol=1e-6)
    assert torch.equal(update_prior(pi, probs[:0], 0.9), pi)


def test_sum_reductions_add_over_a_batchs_parts_to_n_times_the_batch_mean():
    """Several processes add their parts' sums and divide by the global count: the sums of two parts
    are the per-sample terms written out (debiased CE, Sec. 3.2), and their total / n is the mean."""
    torch.manual_seed(3)
    z, zs, zp = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    t = torch.softmax(torch.randn(5, 3), 1)
    pi = torch.tensor([0.5, 0.3, 0.2])
    ce = lambda logits, q: -(q * torch.log_softmax(logits + 0.8 * pi.log(), 1)).sum(1)  # noqa: E731
    parts = [slice(0, 2), slice(2, 5)]
    total = sum(labelled_loss(z[sl], t[sl], pi, 0.8, reduction="sum") for sl in parts)
    torch.testing.assert_close(total, ce(z, t).sum())
    torch.testing.assert_close(total / 5, labelled_loss(z, t, pi, 0.8))
    kw = dict(debias_output=0.8, debias_pl=0.5, temperature=0.5, strong_weight=0.3)
    u_total = sum(unlabelled_loss(zp[sl], zs[sl], z[sl], pi, reduction="sum", **kw)[0] for sl in parts)
    q = unlabelled_loss(zp, zs, z, pi, **kw)[1]
    torch.testing.assert_close(u_total, ce(zp, q).sum() + 0.3 * ce(zs, q).sum())
    torch.testing.assert_close(u_total / 5, unlabelled_loss(zp, zs, z, pi, **kw)[0])


def test_the_auxiliary_heads_pseudo_labels_come_from_the_primary_head_and_never_train_it():
    """The U loss: targets = sharpen(softmax(z_primary - beta log pi_U)) from the primary head's weak view,
    detached; the loss trains the auxiliary head's weak and strong logits only."""
    g = torch.Generator().manual_seed(0)
    primary = torch.randn(5, 4, generator=g).requires_grad_(True)
    pw = torch.randn(5, 4, generator=g).requires_grad_(True)
    ps = torch.randn(5, 4, generator=g).requires_grad_(True)
    pi = torch.tensor([0.4, 0.3, 0.2, 0.1])
    loss, q = unlabelled_loss(pw, ps, primary, pi, debias_output=0.8, debias_pl=0.5, temperature=0.5,
                              strong_weight=0.3)
    d = torch.softmax(primary.detach(), 1) * pi**-0.5
    d = d / d.sum(1, keepdim=True)
    want_q = d**2 / (d**2).sum(1, keepdim=True)
    np.testing.assert_allclose(q.detach(), want_q, rtol=1e-5)
    ce = lambda z: -(want_q * torch.log_softmax(z.detach() + 0.8 * pi.log(), 1)).sum(1).mean()  # noqa: E731
    assert float(loss.detach()) == pytest.approx(float(ce(pw) + 0.3 * ce(ps)), rel=1e-5)
    loss.backward()
    assert primary.grad is None or float(primary.grad.abs().max()) == 0.0  # no gradient into the primary head
    assert float(pw.grad.abs().max()) > 0 and float(ps.grad.abs().max()) > 0
    # the targets do not depend on the auxiliary head (a swap of the roles would)
    _, q2 = unlabelled_loss(pw * 3.0, ps, primary, pi, debias_output=0.8, debias_pl=0.5, temperature=0.5,
                            strong_weight=0.3)
    assert torch.equal(q2, q)


def _step_ctx(tmp_path, **over):
    cfg = run_cfg(tmp_path, **{**PMX, "optim.weight_decay": 0.0, "optim.momentum": 0.0, **over})
    ctx = build_context(cfg)
    ctx.epoch, ctx.step = 5, 0  # past the warm-up and both ramps: w = 1, lambda_u at its value
    idx = ctx.data.splits["train"][:16]
    batch = next(iter(ctx.loader(idx, shuffle=False, augment=True, views=("weak", "strong"),
                                 generator=torch.Generator().manual_seed(0))))
    return ctx, ctx.method, tuple(v.to(ctx.device) for v in batch.views), batch.y, batch.index


def _params(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_on_unselected_samples_only_the_auxiliary_head_and_the_backbone_learn(tmp_path):
    """With nothing selected, the step's only loss is lambda_u L_U: the primary heads (classifier
    layers) must not move (no weight decay, no momentum), the auxiliary heads and the backbones must."""
    ctx, m, x, y, index = _step_ctx(tmp_path, **{"method.lambda_u": 1.0})
    m.css.zero_()
    nets = {"a": ctx.model, "b": ctx.networks["peer"].model}
    before = {n: _params(net) for n, net in nets.items()}
    heads = {n: _params(m.heads[n]) for n in "ab"}
    m.train_step(ctx, x, y, index)
    terms = {k: float(v) for k, v in m.last_terms.items()}
    assert terms["ce"] == 0.0 and terms["mix"] == 0.0 and terms["u"] > 0.0
    for n, net in nets.items():
        after = _params(net)
        for k in ("classifier.weight", "classifier.bias"):
            assert torch.equal(after[k], before[n][k]), (n, k)
        assert any(not torch.equal(after[k], before[n][k]) for k in after if not k.startswith("classifier")), n
        assert any(not torch.equal(v, heads[n][k]) for k, v in _params(m.heads[n]).items()), n
    assert (m.used[index] == 0).all()


def test_on_selected_samples_both_heads_learn_the_given_labels(tmp_path):
    """With everything selected (CSS) the U loss is absent: both heads train on the given labels."""
    ctx, m, x, y, index = _step_ctx(tmp_path, **{"method.lambda_u": 1.0})
    m.css.fill_(1.0)
    z0 = ctx.model(x[0]).detach()
    a0 = m.heads["a"](ctx.model.features(x[0])).detach()
    m.train_step(ctx, x, y, index)
    terms = {k: float(v) for k, v in m.last_terms.items()}
    assert terms["u"] == 0.0 and terms["ce"] > 0 and terms["ce_ph"] > 0
    lp = lambda z: torch.log_softmax(z, 1).gather(1, y[:, None]).mean()  # noqa: E731
    ctx.model.train()
    assert float(lp(ctx.model(x[0]).detach())) > float(lp(z0))
    assert float(lp(m.heads["a"](ctx.model.features(x[0])).detach())) > float(lp(a0))
    assert (m.used[index] == 1).all()


def test_each_network_selects_by_its_own_ce_over_the_unaugmented_split(tmp_path):
    ctx = build_context(run_cfg(tmp_path, **PMX))
    m, idx = ctx.method, ctx.data.splits["train"]
    ctx.epoch = 1
    m.select(ctx)
    labels = ctx.data.labels[idx]
    k, n = ctx.data.num_classes, len(idx)
    for col, model in enumerate((ctx.model, ctx.networks["peer"].model)):
        p = ctx.predict(idx, model=model)
        loss = -p.gather(1, labels[:, None]).squeeze(1).log()
        budget = math.ceil(0.5 * n / k)
        want = torch.zeros(n, dtype=torch.bool)
        for j in range(k):
            members = torch.nonzero(labels == j).reshape(-1)
            want[members[torch.argsort(loss[members])[: min(budget, len(members))]]] = True
        assert torch.equal(m.css[idx, col] > 0.5, want), col
    assert not torch.equal(m.css[idx, 0], m.css[idx, 1])  # two networks, two selections


# -- the method on the loop ------------------------------------------------------------------------------------
def test_resume_is_exact_with_both_networks_heads_priors_and_selection(tmp_path):
    over = {**PMX, "data.train_subset": 200}
    fit(run_cfg(tmp_path, "full", **over))
    part = run_cfg(tmp_path, "part", **over)
    fit(part, stop_after=1)
    fit(part, resume=True)
    read = lambda d: (tmp_path / d / "metrics.jsonl").read_text()  # noqa: E731
    assert read("full") == read("part")
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("full", "part"))
    for sa, sb in ((a["model"], b["model"]), (a["networks"]["peer"]["model"], b["networks"]["peer"]["model"]),
                   (a["modules"]["pseudo_head_a"], b["modules"]["pseudo_head_a"]),
                   (a["modules"]["pseudo_head_b"], b["modules"]["pseudo_head_b"])):
        for k, v in sa.items():
            assert torch.equal(v, sb[k]), k
    # the heads train with their network's optimiser (a second parameter group) and are checkpointed
    assert len(a["optimizer"]["param_groups"]) == 2 and len(a["networks"]["peer"]["optimizer"]["param_groups"]) == 2
    for k, v in a["method"]["priors"].items():
        assert torch.equal(v, b["method"]["priors"][k]), k
    assert not torch.equal(a["method"]["priors"]["aS"], torch.full_like(a["method"]["priors"]["aS"], 0.1))
    for k in ("css", "used"):
        assert torch.equal(a["per_sample"][k], b["per_sample"][k]), k


@pytest.fixture(scope="module")
def noisy_digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pmx")
    summary = fit(run_cfg(out, "run", epochs=3, **{**PMX, "data.train_subset": 800}))
    return out / "run", summary


def test_selection_prefers_clean_labels_and_detection_ranks_wrong_labels_first(noisy_digits_run):
    """Direction: planted (40% symmetric) wrong labels are selected less than clean ones, and
    1 - label_prob ranks them first."""
    out, summary = noisy_digits_run
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "detection_auroc" not in rows[0] and "css_a_precision" not in rows[0]  # warm-up: no selection
    for r in rows[1:]:
        assert r["detection_auroc"] > 0.85
        for net in "ab":  # the clean share of the selection far above the 60% of the whole split
            assert r[f"css_{net}_precision"] > 0.85 and r[f"selection_{net}_precision"] > 0.85
            assert r[f"selection_{net}_recall"] >= r[f"css_{net}_recall"] > 0.6  # MHCS only adds
    rec = np.load(out / "sample_records.npz")
    assert {"label_prob", "selected_a", "selected_b"} <= set(rec.files)
    header, *lines = (out / "suspects.csv").read_text().splitlines()
    assert "score_neg_label_prob" in header
    labels = {int(r.split(",")[0]): r.split(",") for r in (out / "labels.csv").read_text().splitlines()[1:]}
    top = [int(r.split(",")[1]) for r in lines[: len(lines) // 5]]
    assert np.mean([labels[i][4] == "1" for i in top]) > 0.8
    assert summary["detection_auroc"] > 0.85


def test_test_time_prediction_is_both_networks_primary_heads(noisy_digits_run, tmp_path):
    out, _ = noisy_digits_run
    best = torch.load(out / "best_model.pt", weights_only=True)
    assert any(k.startswith("members.1.") for k in best) and not any("head" in k for k in best)
    ctx = build_context(run_cfg(tmp_path, **{**PMX, "method.eval_head": "pseudo", "method.ensemble": "logits"}))
    ens = ctx.method.eval_model(ctx)
    assert isinstance(ens, Ensemble) and ens.combine == "logits"
    assert all(isinstance(e, PseudoHeadModel) for e in ens.members)
    assert ens.members[1].model is ctx.networks["peer"].model and ens.members[1].head is ctx.method.heads["b"]
    x = torch.randn(3, *ctx.data.images.shape[1:])
    ctx.model.eval()
    np.testing.assert_allclose(ens.members[0](x).detach(), ctx.method.heads["a"](ctx.model.features(x)).detach())


def test_folds_cross_fit_promix(tmp_path, capsys):
    from noisylabels.cli import main

    code = main(["train", "--method", "promix", "--folds", "2", "--epochs", "2", "--out", str(tmp_path / "cf"),
                 "--set", "method.warmup_epochs=1", "--set", "data.train_subset=200", "--set", "train.num_threads=1",
                 "--quiet"])
    assert code == 0, capsys.readouterr().err
    probs = np.load(tmp_path / "cf" / "pred_probs.npy")
    assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert (tmp_path / "cf" / "fold-1" / "sample_records.npz").is_file()


@pytest.mark.parametrize("opts", [{"rho_start": 0.0}, {"rho_end": 1.5}, {"tau": 1.0}, {"tau": 0.3},
                                  {"temperature": 0.0}, {"eval_head": "both"}, {"ensemble": "vote"},
                                  {"warmup_epochs": -1}, {"lambda_u": -1.0}, {"prior_momentum": 1.0},
                                  {"lga_start_epoch": -2}])
def test_bad_options_are_one_line_errors(opts):
    with pytest.raises(UserError):
        create_method("promix", **opts)
