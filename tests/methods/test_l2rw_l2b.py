"""L2RW and L2B on the meta-method base: the papers' identities, warm-up, records, and direction
(corrupted samples get lower weight on their observed label)."""

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noisylabels.errors import UserError
from noisylabels.losses.functional import bootstrap_hard_loss
from noisylabels.meta import per_example_weights
from noisylabels.methods import L2B, create_method, meta_loss_fn, normalize_weights
from noisylabels.methods.context import MetaBatch
from noisylabels.train import build_context, fit

from tests.helpers import auroc_by_pairs, drive_one_epoch_by_hand, run_cfg, tiny_problem

# -- L2B identities --------------------------------------------------------------------------------
def test_l2b_alpha_plus_beta_one_is_hard_bootstrapping():
    """With alpha_i + beta_i = 1 the L2B loss is Reed's hard bootstrapping loss with per-sample beta = alpha_i
    (L2B appendix B.1)."""
    torch.manual_seed(0)
    m = L2B(ablation="alpha+beta=1")
    raw = torch.randn(16, 2, dtype=torch.float64).abs()
    w = m.normalize(raw)
    n = len(raw)
    assert torch.allclose(w.sum(1) * n, torch.ones(n, dtype=torch.float64))
    z = torch.randn(n, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (n,))
    l2b_loss = (w * m.example_losses(z, y)).sum()
    boot = bootstrap_hard_loss(z, y, beta=w[:, 0] * n, reduction="mean")
    assert torch.allclose(l2b_loss, boot)


def test_l2b_beta_zero_gives_l2rw_weights():
    model, opt, x, y, mx, my = tiny_problem(1)
    ce = meta_loss_fn("ce")
    l2rw = per_example_weights(model, opt, x=x, y=y, meta_x=mx, meta_y=my, meta_loss_fn=ce, reuse_forward=False)
    w_l2rw = create_method("l2rw").normalize(l2rw.weights)
    m = L2B(ablation="beta=0")
    res = per_example_weights(model, opt, x=x, y=y, meta_x=mx, meta_y=my, meta_loss_fn=ce,
                              per_sample_loss=m.example_losses, reuse_forward=False)
    w = m.normalize(res.weights)
    assert torch.allclose(w[:, 0], w_l2rw, rtol=1e-10, atol=1e-15)
    assert torch.all(w[:, 1] == 0)
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


@pytest.mark.parametrize("how", ["jvp-func", "double-backward"])
def test_every_hypergradient_option_gives_the_same_example_weights(how):
    """One option, one set of values, for every meta method: L2RW/L2B's weights by the graph JVP, by
    torch.func.jvp and by the official codes' double backward agree."""
    model, opt, x, y, mx, my = tiny_problem(2)
    m = L2B()
    kw = dict(x=x, y=y, meta_x=mx, meta_y=my, meta_loss_fn=meta_loss_fn("ce"), per_sample_loss=m.example_losses,
              reuse_forward=False)
    ref = per_example_weights(model, opt, how="jvp", **kw).weights
    torch.testing.assert_close(per_example_weights(model, opt, how=how, **kw).weights, ref, rtol=1e-9, atol=1e-14)


# -- the step ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["l2rw", "l2b", "mwnet"])
def test_warmup_epochs_are_plain_ce_steps(tmp_path, name):
    """During ``warmup_epochs`` a meta method takes exactly the plain mean-CE step; afterwards it does not."""
    ctx = build_context(run_cfg(tmp_path, name, **{"method.name": name, "method.warmup_epochs": 1}))
    ref = copy.deepcopy(ctx.model)
    ref_opt = torch.optim.SGD(ref.parameters(), **{k: ctx.optimizer.defaults[k] for k in ("lr", "momentum",
                                                                                          "weight_decay")})
    ctx.method.start_epoch(ctx)
    b = next(iter(ctx.loader("train", shuffle=False, augment=False)))
    for epoch in (0, 1):
        ctx.epoch = epoch
        ctx.method.train_step(ctx, b.x, b.y, b.index)
        ref_opt.zero_grad()
        F.cross_entropy(ref(b.x), b.y).backward()
        ref_opt.step()
        same = all(torch.allclose(p, q) for p, q in zip(ctx.model.parameters(), ref.parameters()))
        assert same == (epoch == 0), epoch
    with pytest.raises(UserError, match="warmup_epochs"):
        create_method(name, warmup_epochs=-1)


def test_example_weighting_step_is_the_weighted_real_step(tmp_path):
    """One L2B step of the base equals: raw weights from the engine, normalised, then one SGD step on
    sum_i alpha_i CE(z_i, y_i) + beta_i CE(z_i, yhat_i)."""
    ctx = build_context(run_cfg(tmp_path, **{"method.name": "l2b", "method.warmup_epochs": 0}))
    m = ctx.method
    m.start_epoch(ctx)
    b = next(iter(ctx.loader("train", shuffle=False, augment=False)))
    model = copy.deepcopy(ctx.model)
    opt = torch.optim.SGD(model.parameters(), lr=ctx.lr, momentum=0.9, weight_decay=ctx.optimizer.defaults["weight_decay"])
    seen = []
    draw = ctx.next_meta_batch
    ctx.next_meta_batch = lambda bs=None: seen.append(draw(bs)) or seen[-1]  # type: ignore[method-assign]
    m.train_step(ctx, b.x, b.y, b.index)
    res = per_example_weights(model, opt, x=b.x, y=b.y, meta_x=seen[0].x, meta_y=seen[0].y,
                              meta_loss_fn=meta_loss_fn("ce"), per_sample_loss=m.example_losses)
    raw = res.weights * len(b.y)
    w = raw.clamp_min(0) / (raw.clamp_min(0).sum() + 1e-10)
    z = res.train_logits
    loss = (w[:, 0] * F.cross_entropy(z, b.y, reduction="none")
            + w[:, 1] * F.cross_entropy(z, z.detach().argmax(1), reduction="none")).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    for a, bb in zip(ctx.model.parameters(), model.parameters()):
        torch.testing.assert_close(a, bb, rtol=1e-5, atol=1e-7)


# -- records and direction -------------------------------------------------------------------------
def _last_row(path):
    return json.loads((path / "metrics.jsonl").read_text().splitlines()[-1])


@pytest.mark.parametrize("name", ["l2rw", "l2b"])
def test_corrupted_samples_get_lower_weight_on_their_observed_label(tmp_path, name):
    """Direction: on a short digits run at 40% symmetric noise the corrupted samples' mean weight (L2RW)
    or alpha (L2B) is below the clean samples'; for L2B, the observed-label share alpha / beta is lower
    on corrupted samples too (a method that flipped the sign of its raw weights, or recorded beta as
    alpha, fails this)."""
    s = fit(run_cfg(tmp_path, name, epochs=2, **{"method.name": name, "method.warmup_epochs": 0,
                                                  "data.train_subset": 800}))
    row = _last_row(tmp_path / name)
    key = "weight" if name == "l2rw" else "alpha"
    assert row[f"mean_{key}_noisy"] < 0.8 * row[f"mean_{key}_clean"]
    assert s[f"{key}_detection_auroc"] > 0.6  # -weight / -alpha at the selected epoch (clean meta set)
    assert s["detection_auroc"] > 0.6  # suspects ranked by the per-sample CE
    if name == "l2b":
        assert row["mean_alpha_noisy"] / row["mean_beta_noisy"] < row["mean_alpha_clean"] / row["mean_beta_clean"]


@pytest.mark.parametrize("method,records", [("mwnet", ["weight", "loss"]), ("l2rw", ["weight", "loss"]),
                                            ("l2b", ["alpha", "beta", "loss"])])
def test_named_records_file_plots_and_detection(tmp_path, method, records):
    s = fit(run_cfg(tmp_path, epochs=2, **{"method.name": method, "data.train_subset": 600}))
    out = tmp_path / "run"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("detection_auroc" in r and "detection_ap" in r for r in rows)
    assert s["detection_auroc"] == pytest.approx(rows[s["best_epoch"]]["detection_auroc"], abs=1e-9)
    paper = f"{records[0]}_detection_auroc"  # the weight's own AUROC, per epoch and at the selected one
    assert all(paper in r for r in rows) and s[paper] == pytest.approx(rows[s["best_epoch"]][paper], abs=1e-9)
    with np.load(out / "sample_records.npz", allow_pickle=False) as z:
        assert sorted(set(z.files) - {"epochs", "index"}) == sorted(records)
        assert z["epochs"].tolist() == [0, 1]
        assert np.array_equal(z["index"], build_context(run_cfg(tmp_path, "again", epochs=2, **{
            "method.name": method, "data.train_subset": 600})).data.splits["train"].numpy())
        for r in records:
            assert z[r].shape == (2, s["num_train"])
            assert (out / f"{r}_hist.png").is_file()
    header = (out / "suspects.csv").read_text().splitlines()[0]
    assert header.endswith(",score_loss")
    if method == "l2b":
        assert (out / "alpha_beta.png").is_file()
    if method == "mwnet":
        assert (out / "weight_function.png").is_file()


def test_l2b_resume_equals_uninterrupted(tmp_path, assert_resume_exact):
    over = {"method.name": "l2b", "data.train_subset": 600}
    assert_resume_exact(lambda name: run_cfg(tmp_path, name, epochs=3, **over), stop_after=2)


def test_bad_options():
    with pytest.raises(UserError, match="normalize"):
        create_method("l2b", normalize="max")
    with pytest.raises(UserError, match="ablation"):
        create_method("l2b", ablation="gamma=0")
    with pytest.raises(UserError, match="meta_gradient"):
        create_method("l2rw", meta_gradient="reverse")


# -- detection: by each sample's loss, whichever samples the meta set favours (issue 20) --------------
@pytest.mark.parametrize("method", ["l2rw", "l2b"])
@pytest.mark.parametrize("meta_of", ["clean", "corrupted"])
def test_detection_ranks_by_the_loss_whichever_samples_the_meta_set_favours(tmp_path, method, meta_of):
    """The weights follow the meta set: a meta batch made of the batch's corrupted samples (with
    their wrong labels) up-weights exactly those, and -weight ranks them *last* (with a noisy meta
    set L2B's -alpha ranked digits' wrong labels at 0.42-0.52). The score is each sample's CE at its
    step, computed here by hand; the weight's own AUROC is reported apart and flips."""
    ctx = build_context(run_cfg(tmp_path, **{"method.name": method, "data.train_subset": 300,
                                             "method.warmup_epochs": 0}))
    m = ctx.method
    noisy_of = ctx.data.is_noisy

    def meta_batch(b):
        sel = noisy_of[b.index] if meta_of == "corrupted" else ~noisy_of[b.index]
        return MetaBatch(x=b.x[sel], y=b.y[sel], index=b.index[sel])

    idx, ce = drive_one_epoch_by_hand(ctx, meta_batch)
    out = m.end_epoch(ctx)
    pos = {int(i): k for k, i in enumerate(ctx.data.splits["train"])}
    rows = [pos[int(i)] for i in idx]
    scores = m.sample_scores(ctx, torch.zeros(len(pos), 10), ctx.data.labels[ctx.data.splits["train"]]).numpy()
    np.testing.assert_allclose(scores[rows], ce, rtol=1e-5, atol=1e-6)
    assert m.score_column == "score_loss"
    name = "weight" if method == "l2rw" else "alpha"
    noisy = noisy_of[idx].numpy()
    weight_auroc = auroc_by_pairs(-m.selected_record(name)[rows].astype(np.float64), noisy)
    assert out[f"{name}_detection_auroc"] == pytest.approx(weight_auroc, abs=1e-6)
    assert (weight_auroc > 0.5) == (meta_of == "clean")  # the weights' direction follows the meta set
    assert out["detection_auroc"] == pytest.approx(auroc_by_pairs(ce, noisy), abs=1e-6)
