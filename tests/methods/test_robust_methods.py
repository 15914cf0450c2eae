"""Truncated Lq with alternating pruning (GCE paper, Algorithm 1) and forward correction (Patrini et al.)."""

import functools
import pytest
import torch

from noisylabels.errors import UserError
from noisylabels.losses.functional import gce_loss, truncated_lq_weighted
from noisylabels.methods import create_method
from noisylabels.train import build_context, fit

from tests.helpers import run_cfg

_cfg = functools.partial(run_cfg, epochs=4)  # these tests train 4 epochs by default


TLQ = {"method.name": "truncated-lq", "method.warmup_epochs": 1, "method.prune_every": 1}


def test_pruning_keeps_exactly_p_y_above_k_from_the_current_model(tmp_path):
    cfg = _cfg(tmp_path, **TLQ)
    fit(cfg, stop_after=1)  # epoch 0 trains on everything
    theta0 = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"]
    fit(cfg, resume=True, stop_after=1)  # epoch 1 starts with a pruning pass
    weights = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["method"]["weights"]

    ctx = build_context(cfg)
    ctx.model.load_state_dict(theta0)  # the model being trained when the pass ran
    idx = ctx.data.splits["train"]
    p_y = ctx.predict(idx).gather(1, ctx.data.labels[idx][:, None]).squeeze(1)
    expected = (p_y > 0.5).float()
    assert 0 < expected.sum() < len(idx)
    assert torch.equal(weights[idx], expected)
    # samples outside the training split are never used; they keep weight 1
    others = torch.ones(len(weights), dtype=torch.bool)
    others[idx] = False
    assert torch.all(weights[others] == 1)


def test_pruning_pass_changes_no_weights_or_batchnorm_statistics(tmp_path):
    ctx = build_context(_cfg(tmp_path, **{**TLQ, "model.name": "resnet8"}))
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    ctx.model.train()
    ctx.method.prune(ctx)
    after = ctx.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert ctx.model.training  # the loop's mode is restored


def test_truncated_objective_is_eq_11(tmp_path):
    ctx = build_context(_cfg(tmp_path, **TLQ))
    m = ctx.method
    torch.manual_seed(0)
    z = torch.randn(6, 10, dtype=torch.float64)
    y = torch.randint(0, 10, (6,))
    idx = ctx.data.splits["train"][:6]
    m.weights[idx] = torch.tensor([1.0, 0, 1, 0, 1, 1])
    got = m.per_sample_loss(z, y, idx)
    lq = gce_loss(z, y, q=0.7, reduction="none")
    lq_k = (1 - 0.5 ** 0.7) / 0.7
    w = m.weights[idx].double()
    assert torch.allclose(got, w * lq - lq_k * w)
    assert torch.allclose(got, truncated_lq_weighted(z, y, w, q=0.7, k=0.5, reduction="none"))


def test_prune_schedule():
    m = create_method("truncated-lq", warmup_epochs=40, prune_every=10)
    m.warmup_epochs, m.prune_every = 40, 10
    assert [e for e in range(120) if m.is_prune_epoch(e)] == [40, 50, 60, 70, 80, 90, 100, 110]


@pytest.mark.parametrize("opts", [{"q": 0.0}, {"k": 1.0}, {"prune_every": 0}])
def test_truncated_bad_options(opts):
    with pytest.raises(UserError):
        create_method("truncated-lq", **opts)


def test_resume_equals_uninterrupted_across_pruning(tmp_path, assert_resume_exact):
    assert_resume_exact(lambda name: _cfg(tmp_path, name, **TLQ), stop_after=2)


def test_forward_true_uses_the_simulators_matrix(tmp_path):
    ctx = build_context(_cfg(tmp_path, **{"method.name": "forward", "noise.type": "pair", "noise.rate": 0.3}))
    T = ctx.method.T
    assert torch.allclose(T.double(), torch.as_tensor(ctx.data.transition))
    assert T[0, 1] == pytest.approx(0.3) and T[0, 0] == pytest.approx(0.7)


def test_forward_estimate_two_stages(tmp_path):
    cfg = _cfg(tmp_path, **{"method.name": "forward", "method.transition": "estimate", "method.ce_epochs": 2,
                            "train.epochs": 4, "noise.type": "pair", "noise.rate": 0.3, "optim.schedule": "none"})
    s = fit(cfg)
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    T_hat = ck["method"]["T"]
    assert T_hat.shape == (10, 10) and torch.allclose(T_hat.sum(1), torch.ones(10), atol=1e-5)
    # the estimate puts the pair-flip mass right of the diagonal more often than anywhere else
    off = T_hat.clone()
    off.fill_diagonal_(0)
    assert (off.argmax(1) == (torch.arange(10) + 1) % 10).float().mean() >= 0.5
    assert s["best_epoch"] >= 2  # selection only over the corrected stage
    assert ck["schedule_start_epoch"] == 2


def test_forward_estimate_reinitialises_and_resumes_exactly(tmp_path):
    over = {"method.name": "forward", "method.transition": "estimate", "method.ce_epochs": 2, "train.epochs": 4}
    fit(_cfg(tmp_path, "full", **over))
    part = _cfg(tmp_path, "part", **over)
    fit(part, stop_after=2)
    theta_ce = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)["model"]
    fit(part, resume=True, stop_after=1)
    rows = [line for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert '"lr": ' in rows[2]
    fit(part, resume=True)
    read = lambda d: (tmp_path / d / "metrics.jsonl").read_text()  # noqa: E731
    assert read("full") == read("part")
    # the corrected stage starts from a fresh network, not the CE one
    ctx = build_context(part)
    ctx.epoch = 2
    ctx.reinit_model()
    fresh = ctx.model.state_dict()
    assert not all(torch.equal(fresh[k], theta_ce[k]) for k in fresh)


def test_forward_bad_mode():
    with pytest.raises(UserError, match="transition"):
        create_method("forward", transition="maybe")
