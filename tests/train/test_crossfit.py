"""Cross-fitted probabilities: no sample is scored by a model that saw it; the count of
wrong labels from cross-fitted probabilities is close to the truth, from in-sample ones far too low."""

from __future__ import annotations

import json

import numpy as np
import pytest

from noisylabels.config import resolve_config
from noisylabels.detect import estimate_noise
from noisylabels.errors import UserError
from noisylabels.train import fit
from noisylabels.detect.crossfit import crossfit
from noisylabels.train.crossfit import fold_assignment

from tests.helpers import run_cfg


def _cfg(out, **over):
    """3 epochs, one thread, symmetric 30% noise, writing to ``out``."""
    return run_cfg(out.parent, out.name, **{"train.num_threads": 1, "noise.type": "symmetric", "noise.rate": 0.3,
                                            **over})


@pytest.fixture(scope="module")
def small_crossfit(tmp_path_factory):
    out = tmp_path_factory.mktemp("cf") / "run"
    summary = crossfit(_cfg(out, **{"data.train_subset": 450}), folds=3)
    return out, summary


def test_no_sample_is_scored_by_a_model_that_saw_it(small_crossfit, one_thread):
    out, summary = small_crossfit
    folds = np.load(out / "folds.npz")
    fold = folds["fold"]
    probs = np.load(out / "pred_probs.npy")
    splits = np.load(out / "splits.npz")
    train = splits["train"]
    assert (fold[train] >= 0).all() and (np.delete(fold, train) == -1).all()
    per_fold = [np.load(out / f"fold-{k}" / "pred_probs.npy") for k in range(3)]
    for k in range(3):
        trained = folds[f"train_{k}"]
        run_train = np.load(out / f"fold-{k}" / "splits.npz")["train"]
        np.testing.assert_array_equal(np.sort(trained), np.sort(run_train))  # what fold k's run trained on
        held = np.flatnonzero(fold == k)
        assert len(np.intersect1d(held, run_train)) == 0
        np.testing.assert_allclose(probs[held], per_fold[k][held], rtol=1e-5, atol=1e-6)
        assert len(np.intersect1d(run_train, np.delete(np.arange(len(fold)), train))) == 0  # never val/test
    # rows outside the training split: the mean of the fold models, none of which trained on them
    other = np.flatnonzero(fold == -1)
    np.testing.assert_allclose(probs[other], np.mean([p[other] for p in per_fold], axis=0), atol=1e-5)
    assert np.load(out / "held_out.npy").all()
    assert (out / "label_issues.csv").is_file() and (out / "joint.png").is_file()
    assert summary["num_train"] == len(train) and summary["folds"] == 3


def test_folds_are_stratified_seeded_and_cover():
    y = np.repeat(np.arange(4), 30)
    a = fold_assignment(y, folds=5, seed=3)
    assert np.array_equal(a, fold_assignment(y, folds=5, seed=3))
    assert not np.array_equal(a, fold_assignment(y, folds=5, seed=4))
    assert set(a) == set(range(5))
    for c in range(4):
        np.testing.assert_array_equal(np.bincount(a[y == c], minlength=5), [6] * 5)
    with pytest.raises(UserError, match="folds"):
        fold_assignment(y, folds=1, seed=0)
    with pytest.raises(UserError, match="largest class"):
        fold_assignment(y, folds=31, seed=0)


def test_ordinary_run_writes_pred_probs_for_every_sample(tmp_path, one_thread):
    cfg = _cfg(tmp_path / "r", **{"train.epochs": 2})
    fit(cfg)
    rows = (tmp_path / "r" / "labels.csv").read_text().splitlines()[1:]
    probs = np.load(tmp_path / "r" / "pred_probs.npy")
    held = np.load(tmp_path / "r" / "held_out.npy")
    assert len(probs) == len(rows) == len(held) == 1797  # pool and test: every digits image
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    split = np.array([r.split(",")[1] for r in rows])
    np.testing.assert_array_equal(held, split != "train")
    info = json.loads((tmp_path / "r" / "pred_probs.json").read_text())
    assert info["classes"] == [str(k) for k in range(10)]


def test_crossfit_counts_more_than_in_sample_fast(small_crossfit, tmp_path, one_thread):
    """Direction test on a small run: in-sample probabilities under-count the wrong labels."""
    out, summary = small_crossfit
    cfg = _cfg(tmp_path / "ins", **{"data.train_subset": 450, "train.epochs": 12})
    fit(cfg)
    probs = np.load(tmp_path / "ins" / "pred_probs.npy")
    rows = (tmp_path / "ins" / "labels.csv").read_text().splitlines()[1:]
    tr = np.array([r.split(",")[1] == "train" for r in rows])
    y = np.array([int(r.split(",")[3]) for r in rows])
    noisy = np.array([int(r.split(",")[4]) for r in rows], bool)
    in_sample = estimate_noise(y[tr], probs[tr]).num_issues
    true = int(noisy[tr].sum())
    crossfitted = summary["estimated_num_issues_train"]
    assert in_sample < 0.8 * crossfitted
    assert abs(crossfitted - summary["true_num_wrong_train"]) <= 0.4 * summary["true_num_wrong_train"]
    assert in_sample < 0.8 * true


@pytest.mark.slow
@pytest.mark.parametrize("noise", ["pair", "symmetric"])
def test_crossfit_count_within_20_percent_on_digits(noise, tmp_path, one_thread):
    """The issue's acceptance check: default model and schedule, 5 folds, 30% noise, seed 0."""
    cfg = resolve_config(overrides={"out": str(tmp_path / "cf"), "noise.type": noise, "noise.rate": 0.3,
                                    "train.progress": False, "train.num_threads": 1})
    s = crossfit(cfg, folds=5)
    true = s["true_num_wrong_train"]
    assert abs(s["estimated_num_issues_train"] - true) <= 0.2 * true, s


def test_crossfit_folds_use_the_presets_meta_set(tmp_path, monkeypatch, one_thread):
    """rmnw-net's folds carve a *noisy* meta set, as a plain run of the preset does."""
    import noisylabels.train.crossfit as cf

    seen = {}
    real = cf.prepare_data

    def spy(cfg, **kw):
        seen["meta_set"] = cfg["data"]["meta_set"]
        return real(cfg, **kw)

    monkeypatch.setattr(cf, "prepare_data", spy)
    crossfit(_cfg(tmp_path / "cf", **{"data.train_subset": 200, "train.epochs": 1, "method.name": "rmnw-net",
                                      "method.meta_interval": 5}), folds=2, detect=False)
    assert seen["meta_set"] == "noisy"
