"""ELR+ (Liu et al., NeurIPS 2020, and the official ELR_plus code): the ramp-ups by hand, one network's
step by hand (target from the other network's average, mixup of inputs, labels and targets, the
loss, the weight average), which average feeds which network, the ensemble at test time, direction
on planted wrong labels, exact resume."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from noisylabels.data import mixup
from noisylabels.errors import UserError
from noisylabels.methods import create_method
from noisylabels.methods.elr_plus import ema_decay, sigmoid_rampup
from noisylabels.seeding import derive_seed
from noisylabels.train import fit

from tests.helpers import run_cfg
from tests.methods.test_elr import _ctx, _method, _train_linear

DT = torch.float64


def test_rampups_by_hand():
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5.0))
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(10, 10) == sigmoid_rampup(99, 10) == sigmoid_rampup(3, 0) == 1.0
    assert ema_decay(4, decay=0.997, schedule="sigmoid", rampup_steps=10) == pytest.approx(0.997 * math.exp(-1.25))
    assert ema_decay(1, decay=0.997, schedule="mean-teacher", rampup_steps=10) == pytest.approx(0.5)
    assert ema_decay(3, decay=0.997, schedule="mean-teacher", rampup_steps=10) == pytest.approx(0.75)
    assert ema_decay(10**6, decay=0.997, schedule="mean-teacher", rampup_steps=10) == 0.997
    assert ema_decay(1, decay=0.9, schedule="constant", rampup_steps=10) == 0.9


def _problem(tmp_path, **options):
    g = torch.Generator().manual_seed(7)
    y_all = torch.randint(0, 4, (20,), generator=g)
    ctx = _ctx(tmp_path, torch.nn.Linear(5, 4).double(), y_all, lr=0.3)
    m = _method(ctx, "elr-plus", **options)
    with torch.no_grad():  # targets already on the way (0.51 of their mass) for the rows the batch visits
        m.target.copy_(0.51 * torch.softmax(torch.randn(20, 4, generator=g), 1))
    idx = torch.tensor([3, 11, 0, 17, 8, 5])
    x = torch.randn(len(idx), 5, generator=g, dtype=DT)
    return ctx, m, x, y_all[idx], idx


@pytest.mark.parametrize("options", [{}, {"weight_labels_by_target": True, "lambda_rampup_steps": 10, "clamp": 1e-2,
                                          "beta": 0.9, "lam": 7.0, "ema_schedule": "mean-teacher"}])
def test_one_network_step_by_hand(tmp_path, options):
    ctx, m, x, y, idx = _problem(tmp_path, ema_rampup_steps=10, **options)
    beta, lam, clamp = options.get("beta", 0.7), options.get("lam", 3.0), options.get("clamp", 0.0)
    ctx.step = step = 1  # a step whose Beta draw is below 1/2: the code's max(lam, 1 - lam) matters
    model0, ema0 = copy.deepcopy(ctx.model), copy.deepcopy(m.net("ema").model)
    table0 = m.target.clone()
    # 1. the target: the *peer's* weight average on the un-mixed batch
    t = beta * table0[idx] + (1 - beta) * torch.softmax(m.net("peer_ema").model(x), 1)
    # 2. mixup of inputs, one-hot labels and targets with the step's own generator
    both = torch.cat([F.one_hot(y, 4).to(DT), t], 1)
    seed = derive_seed(ctx.seed, f"elr-plus-{step}-model")
    raw = mixup(x, both, alpha=1.0, generator=torch.Generator().manual_seed(seed))
    mixed = mixup(x, both, alpha=1.0, generator=torch.Generator().manual_seed(seed), max_lambda=True)
    assert float(raw.lam[0]) < 0.5 and torch.allclose(mixed.lam, 1 - raw.lam)
    y_mix, q = mixed.targets[:, :4], mixed.targets[:, 4:]
    if options.get("weight_labels_by_target"):
        y_mix = y_mix * q / (y_mix * q).sum(1, keepdim=True)
    # 3. the loss at step + 1 (1-based): soft CE + ramp * lam * log(1 - <p, q>)
    z = model0(mixed.x)
    p = torch.softmax(z, 1)
    p = p.clamp(clamp, 1 - clamp) if clamp else p
    ramp = math.exp(-5 * (1 - (step + 1) / 10) ** 2) if options.get("lambda_rampup_steps") else 1.0
    expected = (-(y_mix * F.log_softmax(z, 1)).sum(1) + ramp * lam * torch.log(1 - (p * q).sum(1))).mean()
    grads = torch.autograd.grad(expected, list(model0.parameters()))
    out = m.network_step(ctx, "model", x, y, idx)
    torch.testing.assert_close(out["loss"], expected.detach())
    torch.testing.assert_close(m.target[idx], t.detach().float())  # the table is float32
    others = torch.ones(20, dtype=torch.bool)
    others[idx] = False
    assert torch.equal(m.target[others], table0[others])
    for after, before, g in zip(ctx.model.parameters(), model0.parameters(), grads):  # plain SGD, lr 0.3
        torch.testing.assert_close(after, before - 0.3 * g)
    # 4. the model's own weight average moves towards its new weights
    a = ema_decay(step + 1, decay=0.997, schedule=options.get("ema_schedule", "sigmoid"), rampup_steps=10)
    for e, e0, w in zip(m.net("ema").model.parameters(), ema0.parameters(), ctx.model.parameters()):
        torch.testing.assert_close(e, a * e0 + (1 - a) * w)
    given = m.target[idx].gather(1, y[:, None]).squeeze(1)
    assert out["target_given"].shape == (6,) and torch.equal(out["target_given"], given)


def test_each_network_learns_from_the_other_networks_average(tmp_path):
    ctx, m, x, y, idx = _problem(tmp_path, beta=0.0)
    peer_ema0 = copy.deepcopy(m.net("peer_ema").model)
    m.network_step(ctx, "model", x, y, idx)
    torch.testing.assert_close(m.target[idx], torch.softmax(peer_ema0(x), 1).float())
    ema_mid = copy.deepcopy(m.net("ema").model)  # the model's average after its step: the peer's teacher
    m.network_step(ctx, "peer", x, y, idx)
    torch.testing.assert_close(m.peer_target[idx], torch.softmax(ema_mid(x), 1).float())
    own = torch.softmax(m.net("peer_ema").model(x), 1).float()
    assert (m.peer_target[idx] - own).abs().max() > 1e-3  # its own average would have given other targets


def test_evaluation_averages_the_two_trained_networks_logits(tmp_path):
    ctx, m, x, y, idx = _problem(tmp_path, ema_schedule="constant", ema_decay=0.9)
    m.train_step(ctx, x, y, idx)  # the averages now lag behind the networks
    z = m.eval_model(ctx)(x)
    torch.testing.assert_close(z, ((ctx.model(x) + m.net("peer").model(x)) / 2).float())


def test_options_are_validated_in_one_line():
    for bad in ({"ema_decay": 1.0}, {"ema_schedule": "linear"}, {"ema_rampup_steps": -1}, {"ema_rampup_steps": 2.5},
                {"lambda_rampup_steps": True}, {"mixup_alpha": -1.0}, {"beta": 1.5}, {"clamp": 0.7}):
        with pytest.raises(UserError) as err:
            create_method("elr-plus", **bad)
        assert len(str(err.value).splitlines()) == 1 and "elr-plus" in str(err.value)


def test_direction_on_planted_wrong_labels(tmp_path):
    pred0, _, _, (given, clean, wrong) = _train_linear(tmp_path / "ce", "elr-plus", lam=0.0, ema_rampup_steps=50)
    pred, out, _, _ = _train_linear(tmp_path / "elr", "elr-plus", lam=3.0, ema_rampup_steps=50)
    memorised0 = float((pred0[wrong] == given[wrong]).float().mean())
    memorised = float((pred[wrong] == given[wrong]).float().mean())
    assert memorised < 0.1 < 0.5 < memorised0
    assert float((pred[wrong] == clean[wrong]).float().mean()) > 0.9
    assert out["detection_auroc"] > 0.99 and out["mean_target_given_noisy"] < out["mean_target_given_clean"]


def _cfg(tmp_path, name, **over):
    return run_cfg(tmp_path, name, **{"method.name": "elr-plus", "method.ema_rampup_steps": 20,
                                      "data.train_subset": 300, "train.num_threads": 1, **over})


def test_resume_is_exact_for_both_networks_their_averages_and_targets(tmp_path):
    fit(_cfg(tmp_path, "full"))
    fit(_cfg(tmp_path, "part"), stop_after=1)
    fit(_cfg(tmp_path, "part"), resume=True)
    lines = [(tmp_path / r / "metrics.jsonl").read_text() for r in ("full", "part")]
    assert lines[0] == lines[1] and len(lines[0].splitlines()) == 3
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for name in ("peer", "ema", "peer_ema"):
        for k, v in a["networks"][name]["model"].items():
            assert torch.equal(v, b["networks"][name]["model"][k]), (name, k)
    for name in ("target", "peer_target"):
        assert torch.equal(a["per_sample"][name], b["per_sample"][name]) and float(a["per_sample"][name].sum()) > 0
    best = torch.load(tmp_path / "full" / "best_model.pt", weights_only=True)
    assert any(k.startswith("members.1.") for k in best)  # the selected model is the two networks
    s = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert s["loss"] == "elr-plus" and s["detection_auroc"] is not None
