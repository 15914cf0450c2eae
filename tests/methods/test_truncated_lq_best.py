"""Truncated Lq prunes with the best-validation model (GCE paper, Sec. 4.2) or, as an option, the
current one: the two options prune different samples, the trained model is untouched, and runs
resume exactly."""

import json

import pytest
import torch

from noisylabels.errors import UserError
from noisylabels.methods import create_method
from noisylabels.train import build_context, fit

from tests.helpers import run_cfg

TLQ = {"method.name": "truncated-lq", "method.warmup_epochs": 1, "method.prune_every": 1, "method.k": 0.5}


def _cfg(tmp_path, name="run", **over):
    return run_cfg(tmp_path, name, epochs=4, **{**TLQ, **over})


def _p_y(ctx, state):
    """p(given label) on the training split under the parameters ``state``."""
    saved = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    ctx.model.load_state_dict(state)
    idx = ctx.data.splits["train"]
    p = ctx.predict(idx).gather(1, ctx.data.labels[idx][:, None]).squeeze(1)
    ctx.model.load_state_dict(saved)
    return p


def _train_epoch(ctx):
    gen = torch.Generator().manual_seed(ctx.epoch)
    for b in ctx.loader("train", shuffle=True, augment=True, generator=gen):
        ctx.method.train_step(ctx, b.x, b.y, b.index)
        ctx.scheduler.step()
    ctx.epoch += 1


def test_best_and_current_prune_different_samples(tmp_path, one_thread):
    """A sample the best-validation model prunes (p_y <= k) but the current model keeps (p_y > k)
    gets weight 0 with prune_model='best' and 1 with 'current'; both masks are exactly
    1[p_y > k] of their model, and the pass leaves the trained model as it was."""
    ctx = build_context(_cfg(tmp_path, **{"method.prune_model": "best", "noise.rate": 0.2}))
    _train_epoch(ctx)                                   # an early model: the "best-validation" one
    best_state = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    ctx.recorder.save_best_model(best_state)
    ctx.best.update(epoch=0, val_accuracy=0.5, test_accuracy=0.5)
    for _ in range(3):                                  # the current model fits more samples
        _train_epoch(ctx)
    current_state = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    idx = ctx.data.splits["train"]
    p_best, p_cur = _p_y(ctx, best_state), _p_y(ctx, current_state)
    only_best_prunes = (p_best <= 0.5) & (p_cur > 0.5)
    assert only_best_prunes.sum() >= 5, "the two models must disagree on some samples"

    ctx.model.train()
    ctx.method.prune(ctx)
    w_best = ctx.method.weights[idx].clone()
    assert all(torch.equal(v, current_state[k]) for k, v in ctx.model.state_dict().items())
    assert ctx.model.training
    assert ctx.method.pruned_with_epoch == 0

    current = create_method("truncated-lq", warmup_epochs=1, prune_every=1, prune_model="current")
    current.setup(ctx)
    current.prune(ctx)
    w_cur = current.weights[idx]

    assert torch.equal(w_best, (p_best > 0.5).float())
    assert torch.equal(w_cur, (p_cur > 0.5).float())
    assert torch.all(w_best[only_best_prunes] == 0) and torch.all(w_cur[only_best_prunes] == 1)


def test_before_any_validated_epoch_the_current_model_prunes(tmp_path, one_thread):
    ctx = build_context(_cfg(tmp_path, **{"method.prune_model": "best", "method.warmup_epochs": 0}))
    idx = ctx.data.splits["train"]
    ctx.method.prune(ctx)
    p = _p_y(ctx, ctx.model.state_dict())
    assert torch.equal(ctx.method.weights[idx], (p > 0.5).float())
    assert ctx.method.pruned_with_epoch is None


def test_fit_prunes_with_the_best_validation_epoch_so_far(tmp_path, one_thread):
    """In a run, each pruning pass reads the model of the epoch with the highest validation
    accuracy among those before it (ties: the earliest), as the loop selects models."""
    fit(_cfg(tmp_path, **{"train.epochs": 6, "noise.rate": 0.6, "optim.lr": 0.3}))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for e in range(1, len(rows)):
        prev = [r["val_accuracy"] for r in rows[:e]]
        assert rows[e]["pruned_with_epoch"] == prev.index(max(prev)), e


@pytest.mark.parametrize("option", ["best", "current"])
def test_pruning_runs_resume_exactly(assert_resume_exact, tmp_path, one_thread, option):
    assert_resume_exact(lambda name: _cfg(tmp_path, name, **{"method.prune_model": option, "noise.rate": 0.6,
                                                             "optim.lr": 0.3}), stop_after=2)


def test_unknown_prune_model():
    with pytest.raises(UserError, match="prune_model must be one of best, current"):
        create_method("truncated-lq", prune_model="latest")
