"""The shared training loop: learning, records, seeding, exact resume, non-finite losses."""

import functools
import json
import math

import numpy as np
import pytest
import torch

from noisylabels.errors import NonFiniteLossError
from noisylabels.methods import Method, register_method
from noisylabels.train import fit, lr_factor, prepare_data

from tests.helpers import run_cfg

_cfg = functools.partial(run_cfg, epochs=4)  # these tests train 4 epochs by default


def _metrics(path):
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return rows


def test_learns_clean_digits(tmp_path):
    cfg = _cfg(tmp_path, **{"noise.type": "none", "noise.rate": 0.0, "train.epochs": 15})
    s = fit(cfg)
    assert s["status"] == "finished"
    assert s["test_accuracy"] > 0.90
    assert s["realized_noise_rate"] == 0.0


def test_records_written(tmp_path):
    cfg = _cfg(tmp_path, **{"train.epochs": 3})
    s = fit(cfg)
    out = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "labels.csv", "splits.npz", "checkpoint.pt",
                 "best_model.pt", "curves.png", "suspects.csv"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    for key in ("test_accuracy", "last_test_accuracy", "best_val_accuracy", "realized_noise_rate", "method",
                "seed", "seconds", "version", "detection_auroc"):
        assert key in summary, key
    assert len(_metrics(out)) == 3
    # the realised rate of 40% symmetric noise on ~1300 samples is near 0.4
    assert abs(s["realized_noise_rate"] - 0.4) < 0.05
    # suspects: one row per training sample, ranked by score
    lines = (out / "suspects.csv").read_text().splitlines()
    assert len(lines) - 1 == s["num_train"]
    scores = [float(line.split(",")[-1]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)
    # noisy samples are detected better than chance by 1 - p(given label)
    assert s["detection_auroc"] > 0.6
    splits = np.load(out / "splits.npz")
    assert set(splits.files) == {"train", "val", "meta"}


def test_selection_uses_validation_only(tmp_path):
    fit(_cfg(tmp_path, **{"train.epochs": 5}))
    rows = _metrics(tmp_path / "run")
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    best = max(rows, key=lambda r: (r["val_accuracy"], -r["epoch"]))
    assert s["best_epoch"] == best["epoch"]
    assert s["test_accuracy"] == best["test_accuracy"]


def test_same_seed_same_numbers_different_seed_differs(tmp_path):
    a = _metrics_of(fit(_cfg(tmp_path, "a", **{"train.epochs": 2})), tmp_path / "a")
    b = _metrics_of(fit(_cfg(tmp_path, "b", **{"train.epochs": 2})), tmp_path / "b")
    c = _metrics_of(fit(_cfg(tmp_path, "c", **{"train.epochs": 2, "seed": 1})), tmp_path / "c")
    assert a == b
    assert a != c


def _metrics_of(_summary, path):
    return [{k: v for k, v in r.items()} for r in _metrics(path)]


@pytest.mark.parametrize("over", [{}, {"model.name": "lenet", "optim.schedule": "multistep",
                                       "optim.milestones": [2], "optim.nesterov": True}])
def test_resume_equals_uninterrupted(tmp_path, over):
    full = _cfg(tmp_path, "full", **over)
    fit(full)
    part = _cfg(tmp_path, "part", **over)
    first = fit(part, stop_after=2)
    assert first["status"] == "stopped" and first["epochs_run"] == 2
    fit(part, resume=True)
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "part")
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@register_method("test-nan-at-epoch-2", help="(tests) returns a NaN loss in epoch 2")
class _NanMethod(Method):
    def per_sample_loss(self, logits, targets, indices):
        loss = super().per_sample_loss(logits, targets, indices)
        return loss * float("nan") if self.ctx.epoch == 2 else loss


def test_non_finite_loss_stops_and_keeps_records(tmp_path):
    cfg = _cfg(tmp_path, **{"method.name": "test-nan-at-epoch-2"})
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 2"):
        fit(cfg)
    out = tmp_path / "run"
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "diverged" and s["epochs_run"] == 2
    assert len(_metrics(out)) == 2
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] == 1


def test_meta_set_clean_and_noisy(tmp_path):
    clean = prepare_data(_cfg(tmp_path, **{"data.meta_size": 100, "data.meta_set": "clean"}))
    noisy = prepare_data(_cfg(tmp_path, **{"data.meta_size": 100, "data.meta_set": "noisy"}))
    m = clean.splits["meta"]
    assert len(m) == 100
    assert torch.equal(clean.labels[m], clean.clean_labels[m])
    mn = noisy.splits["meta"]
    assert (noisy.labels[mn] != noisy.clean_labels[mn]).float().mean() > 0.2
    for d in (clean, noisy):
        sets = [set(d.splits[k].tolist()) for k in ("train", "val", "meta")]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_schedules():
    cfg = {"schedule": "multistep", "milestones": [2, 4], "gamma": 0.1, "warmup_epochs": 0}
    f = [lr_factor(s, steps_per_epoch=10, epochs=6, cfg=cfg) for s in (0, 19, 20, 39, 40, 59)]
    assert f == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cfg = {"schedule": "cosine", "milestones": [], "gamma": 0.1, "warmup_epochs": 1}
    assert lr_factor(0, steps_per_epoch=10, epochs=5, cfg=cfg) == pytest.approx(0.1)
    assert lr_factor(9, steps_per_epoch=10, epochs=5, cfg=cfg) == pytest.approx(1.0)
    assert lr_factor(10, steps_per_epoch=10, epochs=5, cfg=cfg) == pytest.approx(1.0)
    assert lr_factor(30, steps_per_epoch=10, epochs=5, cfg=cfg) == pytest.approx(0.5)
    assert math.isclose(lr_factor(49, steps_per_epoch=10, epochs=5, cfg=cfg), 0.5 * (1 + math.cos(math.pi * 39 / 40)))
