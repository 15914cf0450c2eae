"""DivideMix (Li, Socher & Hoi, ICLR 2020): every expected value here is computed from the paper's
equations in the test, never by calling the code under test."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noisylabels.errors import UserError
from noisylabels.methods import create_method
from noisylabels.methods.dividemix import (_Active, co_guess, co_refine, confidence_penalty, gmm_clean_probability,
                                           linear_rampup, mixmatch_losses, normalize_losses, sharpen)
from noisylabels.models import Ensemble
from noisylabels.seeding import derive_seed
from noisylabels.train import build_context, fit

from tests.helpers import run_cfg

#: a small DivideMix run on digits (40% symmetric noise, the MLP): warm-up 1 epoch
DMX = {"method.name": "dividemix", "method.warmup_epochs": 1, "data.train_subset": 500, "train.num_threads": 1,
       "train.batch_size": 32}


def _normal_pdf(x: np.ndarray, mu: float, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


# -- the division --------------------------------------------------------------------------------------------
def test_gmm_division_of_a_planted_bimodal_loss_gives_the_bayes_posteriors():
    rng = np.random.default_rng(0)
    n0, n1, (m0, s0), (m1, s1) = 1400, 600, (0.15, 0.05), (0.7, 0.1)
    loss = np.concatenate([rng.normal(m0, s0, n0), rng.normal(m1, s1, n1)])
    prior = n0 / (n0 + n1)
    a, b = prior * _normal_pdf(loss, m0, s0), (1 - prior) * _normal_pdf(loss, m1, s1)
    expected = a / (a + b)  # p(low-loss component | l_i) under the planted mixture
    w = gmm_clean_probability(loss, seed=3)
    assert np.abs(w - expected).max() < 0.05 and np.abs(w - expected).mean() < 1e-3
    assert ((w >= 0.5) == (expected >= 0.5)).mean() > 0.999
    assert w[:n0].mean() > 0.99 and w[n0:].mean() < 0.01  # the low-mean component is the clean one
    # min-max normalisation: any affine rescaling of the losses gives the same division
    np.testing.assert_allclose(gmm_clean_probability(normalize_losses(3.0 * loss + 2.0), seed=3),
                               gmm_clean_probability(normalize_losses(loss), seed=3), atol=1e-9)
    norm = normalize_losses(loss)
    assert norm.min() == 0.0 and norm.max() == 1.0
    assert (gmm_clean_probability(np.full(10, 0.3), seed=0) == 1.0).all()  # no spread: nothing to divide


def test_each_networks_division_comes_from_its_own_ce_over_the_unaugmented_training_split(tmp_path):
    ctx = build_context(run_cfg(tmp_path, **DMX))
    m, idx = ctx.method, ctx.data.splits["train"]
    ctx.epoch = 1
    m.co_divide(ctx)
    mean = torch.tensor(ctx.data.mean).view(1, -1, 1, 1)
    std = torch.tensor(ctx.data.std).view(1, -1, 1, 1)
    x = (ctx.data.images[idx].float() / 255 - mean) / std
    y = ctx.data.labels[idx]
    for col, model in enumerate([ctx.model, ctx.networks["peer"].model]):
        model.eval()
        with torch.no_grad():
            ce = F.cross_entropy(model(x), y, reduction="none").double().numpy()
        model.train()
        ce = (ce - ce.min()) / (ce.max() - ce.min())
        expected = gmm_clean_probability(ce, seed=derive_seed(ctx.seed, f"dividemix-gmm-1-{'ab'[col]}"))
        np.testing.assert_allclose(m.w[idx, col].numpy(), expected, atol=1e-4)
    assert not torch.allclose(m.w[idx, 0], m.w[idx, 1])  # two networks, two divisions


def test_the_labelled_set_of_network_a_comes_from_network_bs_division_and_vice_versa(tmp_path):
    ctx = build_context(run_cfg(tmp_path, **DMX))
    m, idx = ctx.method, ctx.data.splits["train"]
    n = len(idx)
    m.w[idx, 0] = (torch.arange(n) < n // 3).float()        # A's division: the first third is clean
    m.w[idx, 1] = (torch.arange(n) % 2 == 0).float() * 0.8  # B's division: the even positions are clean
    ctx.epoch = 1
    seen: dict[str, list[int]] = {"model": [], "peer": []}
    for batch in m.epoch_batches(ctx, torch.Generator().manual_seed(0)):
        assert len(batch.views) == 4  # x1, x2, u1, u2
        a = m._active
        seen[a.net] += batch.index.tolist()
    sets = m.labelled_sets(ctx)
    assert sorted(seen["model"]) == sorted(idx[torch.arange(n) % 2 == 0].tolist())  # B's clean, each once
    assert sorted(seen["peer"]) == sorted(idx[: n // 3].tolist())                    # A's clean, each once
    for net in ("model", "peer"):
        lab, unl = sets[net]
        assert set(lab.tolist()) | set(unl.tolist()) == set(idx.tolist()) and not set(lab.tolist()) & set(unl.tolist())


def test_a_warm_up_epoch_trains_each_network_once_over_the_split_in_batches_of_twice_the_batch(tmp_path):
    ctx = build_context(run_cfg(tmp_path, **DMX))
    m, idx = ctx.method, ctx.data.splits["train"]
    ctx.epoch = 0
    batches = m.epoch_batches(ctx, torch.Generator().manual_seed(0))
    seen: dict[str, list[int]] = {"model": [], "peer": []}
    sizes = []
    for batch in batches:
        seen[m._active.net] += batch.index.tolist()
        sizes.append(len(batch.index))
        assert m._active.kind == "warmup"
    assert sorted(seen["model"]) == sorted(seen["peer"]) == sorted(idx.tolist())
    assert seen["model"] != seen["peer"]  # each network its own shuffle
    assert max(sizes) == 64 and len(sizes) == len(batches) == 2 * math.ceil(len(idx) / 64)


# -- the equations ----------------------------------------------------------------------------------------------
def test_co_refinement_and_sharpening_are_eqs_3_and_4():
    y = torch.tensor([[0.0, 1.0, 0.0]])
    p1, p2, w = torch.tensor([[0.2, 0.5, 0.3]]), torch.tensor([[0.4, 0.3, 0.3]]), torch.tensor([0.7])
    ybar = co_refine(y, [p1, p2], w)
    # p = (p1 + p2) / 2 = (0.3, 0.4, 0.3); y_bar = 0.7 y + 0.3 p
    assert torch.allclose(ybar, torch.tensor([[0.09, 0.82, 0.09]]), atol=1e-7)
    sq = [0.09**2, 0.82**2, 0.09**2]  # T = 0.5: p^(1/T) = p^2, renormalised
    assert torch.allclose(sharpen(ybar, 0.5), torch.tensor([[v / sum(sq) for v in sq]]), atol=1e-7)
    assert torch.allclose(sharpen(ybar, 1.0), ybar / ybar.sum())  # T = 1: no sharpening
    assert torch.allclose(co_refine(y, [p1, p2], torch.ones(1)), y)  # w = 1: the given label
    assert torch.allclose(co_refine(y, [p1, p2], torch.zeros(1)), (p1 + p2) / 2)  # w = 0: the prediction
    q = co_guess([p1, p2, y, y])
    assert torch.allclose(q, (p1 + p2 + 2 * y) / 4)


def test_mixmatch_losses_are_eqs_9_to_11():
    torch.manual_seed(0)
    z, t = torch.randn(7, 4, dtype=torch.float64), torch.softmax(torch.randn(7, 4, dtype=torch.float64), 1)
    lx, lu, lreg = mixmatch_losses(z, t, num_labelled=3)
    p = torch.softmax(z, 1)
    exp_lx = -sum(sum(t[i, c] * math.log(p[i, c]) for c in range(4)) for i in range(3)) / 3
    exp_lu = sum(sum((p[i, c] - t[i, c]) ** 2 for c in range(4)) for i in range(3, 7)) / 4
    pm = p.mean(0)
    exp_reg = sum(0.25 * math.log(0.25 / pm[c]) for c in range(4))
    assert float(lx) == pytest.approx(float(exp_lx), rel=1e-6)
    assert float(lu) == pytest.approx(float(exp_lu), rel=1e-6)
    assert float(lreg) == pytest.approx(float(exp_reg), rel=1e-6)
    assert float(mixmatch_losses(z, t, num_labelled=3, lu_reduction="mean")[1]) == pytest.approx(float(exp_lu) / 4)
    assert float(mixmatch_losses(z, t, num_labelled=7)[1]) == 0.0  # no unlabelled inputs
    uniform = torch.zeros(5, 4)
    assert float(mixmatch_losses(uniform, torch.full((5, 4), 0.25), num_labelled=5)[2]) == pytest.approx(0.0, abs=1e-7)


def test_confidence_penalty_is_minus_the_entropy_and_the_ramp_is_the_codes():
    z = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    p = torch.softmax(z, 1)
    h = -(p * p.log()).sum(1)
    assert float(confidence_penalty(z)) == pytest.approx(float(-h.mean()), rel=1e-6)
    assert float(confidence_penalty(torch.zeros(1, 3))) == pytest.approx(-math.log(3), rel=1e-6)  # its minimum
    assert [linear_rampup(e, start=10, length=16) for e in (5, 10, 18, 26, 40)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert linear_rampup(3, start=10, length=0) == 1.0


# -- one step ---------------------------------------------------------------------------------------------------
def _planted_step(tmp_path, net: str, **over):
    """A MixMatch step of ``net`` by hand, with distinct planted divisions per network."""
    cfg = run_cfg(tmp_path, **{**DMX, "method.alpha": 0.0, "method.lambda_u": 7.0, "method.rampup_epochs": 4, **over})
    ctx = build_context(cfg)
    m, idx = ctx.method, ctx.data.splits["train"]
    lab, unl = idx[:6], idx[6:11]
    m.w[:, 0], m.w[:, 1] = 0.9, 0.2
    m.w[lab, 1] = torch.tensor([0.6, 0.7, 0.8, 0.9, 1.0, 0.55])
    m.w[lab, 0] = torch.tensor([0.95, 0.5, 0.65, 0.75, 0.85, 0.6])
    mean = torch.tensor(ctx.data.mean).view(1, -1, 1, 1)
    std = torch.tensor(ctx.data.std).view(1, -1, 1, 1)
    g = torch.Generator().manual_seed(1)
    img = lambda i: (ctx.data.images[i].float() / 255 - mean) / std + 0.1 * torch.randn(  # noqa: E731
        len(i), *ctx.data.images.shape[1:], generator=g)
    x = (img(lab), img(lab), img(unl), img(unl))
    ctx.epoch, ctx.step = 2, 5
    m._active = _Active(net, "mixmatch", 3, 10)
    return ctx, m, lab, x


@pytest.mark.parametrize("net", ["model", "peer"])
def test_a_mixmatch_step_minimises_eqs_3_to_12_with_the_other_networks_clean_probability(tmp_path, net):
    ctx, m, lab, x = _planted_step(tmp_path, net)
    a, b = ctx.model, ctx.networks["peer"].model
    own, other = (a, b) if net == "model" else (b, a)
    own0, other0 = copy.deepcopy(own), copy.deepcopy(other)
    y = ctx.data.labels[lab]
    w = m.w[lab, 1 if net == "model" else 0][:, None]  # A learns from B's division, B from A's
    with torch.no_grad():
        p = lambda f, v: torch.softmax(f(v), 1)  # noqa: E731  (the MLP has no BatchNorm: modes do not matter)
        ybar = w * F.one_hot(y, 10) + (1 - w) * (p(own0, x[0]) + p(own0, x[1])) / 2
        yhat = ybar**2 / (ybar**2).sum(1, keepdim=True)
        q = (p(own0, x[2]) + p(own0, x[3]) + p(other0, x[2]) + p(other0, x[3])) / 4
        qhat = q**2 / (q**2).sum(1, keepdim=True)
        t = torch.cat([yhat, yhat, qhat, qhat])
        zm = own0(torch.cat(x))  # alpha = 0: lam = 1, nothing mixed
        pm = torch.softmax(zm, 1)
        lx = -(t[:12] * torch.log_softmax(zm[:12], 1)).sum(1).mean()
        lu = ((pm[12:] - t[12:]) ** 2).mean()  # the default lu_reduction: mean over samples and classes
        lreg = (0.1 * torch.log(0.1 / pm.mean(0))).sum()
    ramp = (2 + 3 / 10 - 1) / 4  # epoch 2, batch 3 of the code's num_iter 10, warm-up 1, ramp over 4 epochs
    out = m.train_step(ctx, x, y, lab)
    assert float(out.loss) == pytest.approx(float(lx + 7.0 * ramp * lu + lreg), rel=1e-5)
    changed = lambda m1, m0: any(not torch.equal(u, v) for u, v in zip(m1.state_dict().values(),  # noqa: E731
                                                                       m0.state_dict().values()))
    assert changed(own, own0) and not changed(other, other0)  # only the network of the pass steps
    assert float(m.last_lambda) == 1.0


def test_the_mixup_weight_is_at_least_one_half(tmp_path):
    ctx, m, lab, x = _planted_step(tmp_path, "model", **{"method.alpha": 4.0})
    y = ctx.data.labels[lab]
    lams = []
    for step in range(24):
        ctx.step = step
        m.train_step(ctx, x, y, lab)
        lams.append(float(m.last_lambda))
    assert min(lams) >= 0.5 and max(lams) < 1.0 and len(set(lams)) == len(lams)


# -- the method on the loop ---------------------------------------------------------------------------------------
def _ckpt(path):
    return torch.load(path / "checkpoint.pt", weights_only=True)


def test_resume_across_epoch_boundaries_restores_the_division_both_networks_and_both_optimisers(tmp_path):
    """3 epochs (warm-up 1, then two divisions; the GMM of epoch 2 reads epoch 1's losses: loss_window 2)
    against 1 + 1 + 1 epochs in three processes' worth of resumes."""
    over = {**DMX, "method.loss_window": 2, "data.train_subset": 300}
    fit(run_cfg(tmp_path, "full", **over))
    part = run_cfg(tmp_path, "part", **over)
    fit(part, stop_after=1)
    fit(part, resume=True, stop_after=1)
    fit(part, resume=True)
    read = lambda d: (tmp_path / d / "metrics.jsonl").read_text()  # noqa: E731
    assert read("full") == read("part")
    a, b = _ckpt(tmp_path / "full"), _ckpt(tmp_path / "part")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for k, v in a["networks"]["peer"]["model"].items():
        assert torch.equal(v, b["networks"]["peer"]["model"][k]), k
    for opt_a, opt_b in ((a["optimizer"], b["optimizer"]), (a["networks"]["peer"]["optimizer"],
                                                            b["networks"]["peer"]["optimizer"])):
        for k, s in opt_a["state"].items():
            assert torch.equal(s["momentum_buffer"], opt_b["state"][k]["momentum_buffer"])
    for k in ("clean_prob", "loss_history"):
        assert torch.equal(a["per_sample"][k], b["per_sample"][k]), k
    assert a["method"] == b["method"] == {"divisions": 2}


@pytest.fixture(scope="module")
def noisy_digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dmx")
    summary = fit(run_cfg(out, "run", epochs=3, **{**DMX, "data.train_subset": 800}))
    return out / "run", summary


def test_detection_by_one_minus_clean_prob_ranks_wrong_labels_first(noisy_digits_run):
    out, summary = noisy_digits_run
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "detection_auroc" not in rows[0]  # no division during the warm-up
    assert all(r["detection_auroc"] > 0.85 for r in rows[1:])
    assert summary["detection_auroc"] > 0.85 and summary["confidence_detection_auroc"] is not None
    rec = np.load(out / "sample_records.npz")
    np.testing.assert_allclose(rec["clean_prob"], (rec["clean_prob_a"] + rec["clean_prob_b"]) / 2, atol=1e-6)
    header, *lines = (out / "suspects.csv").read_text().splitlines()
    assert "score_neg_clean_prob" in header
    labels = {int(r.split(",")[0]): r.split(",") for r in (out / "labels.csv").read_text().splitlines()[1:]}
    top = [int(r.split(",")[1]) for r in lines[: len(lines) // 5]]  # the fifth ranked most suspicious
    assert np.mean([labels[i][4] == "1" for i in top]) > 0.8
    for r in rows[1:]:
        for net in "ab":
            assert r[f"division_{net}_precision"] > 0.8 and r[f"division_{net}_recall"] > 0.6


def test_test_time_prediction_is_both_networks(noisy_digits_run, tmp_path):
    out, _ = noisy_digits_run
    best = torch.load(out / "best_model.pt", weights_only=True)
    assert any(k.startswith("members.1.") for k in best)
    ctx = build_context(run_cfg(tmp_path, **{**DMX, "method.ensemble": "logits"}))
    ens = ctx.method.eval_model(ctx)
    assert isinstance(ens, Ensemble) and ens.combine == "logits"
    assert ens.members[0] is ctx.model and ens.members[1] is ctx.networks["peer"].model


def test_folds_cross_fit_dividemix(tmp_path, capsys):
    from noisylabels.cli import main

    code = main(["train", "--method", "dividemix", "--folds", "2", "--epochs", "2", "--out", str(tmp_path / "cf"),
                 "--set", "method.warmup_epochs=1", "--set", "data.train_subset=300", "--set", "train.num_threads=1",
                 "--quiet"])
    assert code == 0, capsys.readouterr().err
    probs = np.load(tmp_path / "cf" / "pred_probs.npy")
    assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert (tmp_path / "cf" / "fold-1" / "sample_records.npz").is_file()


@pytest.mark.parametrize("opts", [{"p_threshold": 1.0}, {"temperature": 0.0}, {"lu_reduction": "max"},
                                  {"ensemble": "vote"}, {"loss_window": 0}, {"warmup_epochs": -1},
                                  {"lambda_u": -1.0}])
def test_bad_options_are_one_line_errors(opts):
    with pytest.raises(UserError):
        create_method("dividemix", **opts)
