"""noisylabels.detect: confident learning's scores, counts and filters.

Identities that hold without cleanlab (perfect probabilities recover exactly the flipped
labels; calibration keeps the class counts; scores move the right way), input validation
(one-line errors), and agreement with cleanlab on the same inputs when the extra is installed.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from noisylabels import detect
from noisylabels.errors import UserError


def _make(n: int, k: int, seed: int, *, noise: float = 0.3, sharp: float = 3.0, dtype=np.float64):
    """Labels with a fraction flipped at random, and probabilities peaked at the true class."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    true[:k] = np.arange(k)  # every class present
    y = true.copy()
    flip = rng.random(n) < noise
    y[flip] = rng.integers(0, k, int(flip.sum()))
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), true] += sharp
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    return y, p.astype(dtype), true


def _perfect(n=300, k=4, flips=30, seed=0):
    rng = np.random.default_rng(seed)
    true = np.arange(n) % k
    y = true.copy()
    idx = rng.choice(n, flips, replace=False)
    y[idx] = (true[idx] + 1 + rng.integers(0, k - 1, flips)) % k
    p = np.full((n, k), 0.02 / (k - 1))
    p[np.arange(n), true] = 0.98
    return y, p, idx


# ------------------------------------------------------------------------------ identities

@pytest.mark.parametrize("filter_by", detect.FILTER_METHODS)
def test_perfect_probabilities_flag_exactly_the_flipped_labels(filter_by):
    y, p, flipped = _perfect()
    mask = detect.find_label_issues(y, p, filter_by=filter_by)
    assert set(np.flatnonzero(mask)) == set(flipped)


def test_perfect_probabilities_give_the_true_joint_and_count():
    y, p, flipped = _perfect()
    true = np.arange(len(y)) % 4
    est = detect.estimate_noise(y, p)
    assert est.num_issues == len(flipped) == detect.num_label_issues(y, p)
    empirical = np.zeros((4, 4))
    np.add.at(empirical, (y, true), 1)
    np.testing.assert_allclose(est.joint, empirical / len(y))
    assert est.noise_rate == pytest.approx(len(flipped) / len(y))


def test_calibration_keeps_class_counts_and_total():
    y, p, _ = _make(500, 5, 1)
    cal = detect.compute_confident_joint(y, p, calibrate=True)
    np.testing.assert_array_equal(cal.sum(axis=1), np.bincount(y, minlength=5))
    assert cal.sum() == len(y)
    joint = detect.estimate_joint(y, p)
    assert joint.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(joint.sum(axis=1), np.bincount(y) / len(y), atol=1e-12)


def test_scores_direction_and_range():
    y, p, true = _make(400, 6, 2, noise=0.0)
    wrong = (y + 1) % 6
    for method in detect.SCORE_METHODS:
        good = detect.label_quality_scores(y, p, method=method)
        bad = detect.label_quality_scores(wrong, p, method=method)
        assert np.all((good >= 0) & (good <= 1)), method
        assert np.mean(good > bad) > 0.95, method
    np.testing.assert_array_equal(detect.label_quality_scores(y, p), p[np.arange(len(y)), y])


def test_ranked_indices_are_the_mask_sorted_by_score():
    y, p, _ = _make(600, 5, 3)
    mask = detect.find_label_issues(y, p)
    ranked = detect.find_label_issues(y, p, return_indices_ranked_by="normalized_margin")
    assert set(ranked) == set(np.flatnonzero(mask))
    s = detect.label_quality_scores(y, p, method="normalized_margin")[ranked]
    assert np.all(np.diff(s) >= 0)


def test_frac_noise_and_num_to_remove_per_class():
    y, p, _ = _make(800, 4, 4)
    full = detect.find_label_issues(y, p, filter_by="prune_by_class")
    half = detect.find_label_issues(y, p, filter_by="prune_by_class", frac_noise=0.5)
    assert half.sum() < full.sum() and not (half & ~full).any()
    fixed = detect.find_label_issues(y, p, filter_by="prune_by_class", num_to_remove_per_class=[3, 3, 3, 3])
    assert fixed.sum() <= 12


def test_in_sample_probabilities_count_fewer_issues_than_held_out():
    """A model that fitted the wrong labels (probabilities pulled to the given label) hides them."""
    y, p, _ = _make(1000, 5, 5, noise=0.3)
    fitted = 0.6 * p + 0.4 * np.eye(5)[y]
    assert detect.estimate_noise(y, fitted).num_issues < 0.6 * detect.estimate_noise(y, p).num_issues


# ------------------------------------------------------------------------------ validation

BAD = {
    "probs 1-D": (lambda y, p: (y, p[:, 0]), "2-D"),
    "length mismatch": (lambda y, p: (y[:-1], p), "rows"),
    "rows not summing to 1": (lambda y, p: (y, p * 0.9), "sum to 1"),
    "negative probability": (lambda y, p: (y, np.where(np.eye(len(p), p.shape[1], dtype=bool), -0.5, p)), "[0, 1]"),
    "nan": (lambda y, p: (y, np.where(np.eye(len(p), p.shape[1], dtype=bool), np.nan, p)), "not finite"),
    "label out of range": (lambda y, p: (np.where(np.arange(len(y)) == 3, 9, y), p), "outside [0, 4)"),
    "negative label": (lambda y, p: (np.where(np.arange(len(y)) == 3, -1, y), p), "outside [0, 4)"),
    "missing class": (lambda y, p: (np.where(y == 2, 1, y), p), "no sample"),
    "string labels": (lambda y, p: (y.astype(str), p), "integer"),
    "fractional labels": (lambda y, p: (y + 0.5, p), "integer"),
    "integer probs": (lambda y, p: (y, (p > 0.5).astype(int)), "floating"),
    "one column": (lambda y, p: (np.zeros(len(y), int), np.ones((len(y), 1))), "at least 2"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("fn", ["find_label_issues", "estimate_noise", "num_label_issues"])
def test_bad_inputs_one_line_user_error(case, fn):
    y, p, _ = _make(60, 4, 0)
    make, expect = BAD[case]
    yy, pp = make(y, p)
    with pytest.raises(UserError) as err:
        getattr(detect, fn)(yy, pp)
    assert "\n" not in str(err.value) and expect in str(err.value), str(err.value)


def test_bad_options_are_user_errors():
    y, p, _ = _make(60, 4, 0)
    for kw, expect in [({"filter_by": "nope"}, "filter_by"), ({"return_indices_ranked_by": "x"}, "ranked"),
                       ({"frac_noise": 2}, "frac_noise"), ({"min_examples_per_class": -1}, "min_examples"),
                       ({"filter_by": "confident_learning", "num_to_remove_per_class": [1, 1, 1, 1]}, "num_to_remove")]:
        with pytest.raises(UserError, match=expect):
            detect.find_label_issues(y, p, **kw)
    with pytest.raises(UserError, match="label quality method"):
        detect.label_quality_scores(y, p, method="nope")


def test_missing_class_allowed_when_asked():
    y, p, _ = _make(200, 4, 0)
    y = np.where(y == 2, 1, y)
    mask = detect.find_label_issues(y, p, allow_missing_classes=True)
    assert mask.dtype == bool and len(mask) == len(y)
    assert detect.label_quality_scores(y, p).shape == (200,)  # scores need no class present


# ------------------------------------------------------------------------------ cleanlab

def _cases():
    out = []
    for seed in range(6):
        for n, k in [(300, 3), (1000, 10), (150, 2), (1500, 20)]:
            out.append((n, k, seed, np.float32 if seed % 2 else np.float64))
    return out


@pytest.fixture(scope="module")
def cleanlab():
    return pytest.importorskip("cleanlab")


@pytest.mark.parametrize("n,k,seed,dtype", _cases())
def test_agrees_with_cleanlab(cleanlab, n, k, seed, dtype):
    from cleanlab import count as cc
    from cleanlab import filter as cf
    from cleanlab import rank as cr

    y, p, _ = _make(n, k, seed, dtype=dtype)
    for method in detect.SCORE_METHODS:
        for adjust in ([False, True] if method != "confidence_weighted_entropy" else [False]):
            ref = cr.get_label_quality_scores(y, p, method=method, adjust_pred_probs=adjust)
            ours = detect.label_quality_scores(y, p, method=method, adjust_pred_probs=adjust)
            assert ours.dtype == ref.dtype
            np.testing.assert_array_equal(ours, ref, err_msg=f"{method} adjust={adjust}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for filter_by in detect.FILTER_METHODS:
            options = [{}, {"min_examples_per_class": 40}]
            if filter_by in ("prune_by_noise_rate", "prune_by_class", "both"):
                options += [{"frac_noise": 0.5}, {"num_to_remove_per_class": [2] * k}]
            for kw in options:
                ref = cf.find_label_issues(y, p, filter_by=filter_by, n_jobs=1, **kw)
                np.testing.assert_array_equal(detect.find_label_issues(y, p, filter_by=filter_by, **kw), ref,
                                              err_msg=f"{filter_by} {kw}")
        cj = cc.compute_confident_joint(y, p, calibrate=False)
        ref = cf.find_label_issues(y, p, confident_joint=cj, n_jobs=1)
        np.testing.assert_array_equal(detect.find_label_issues(y, p, confident_joint=cj), ref)
        for em in detect.ESTIMATION_METHODS:
            assert detect.num_label_issues(y, p, estimation_method=em) == cc.num_label_issues(y, p,
                                                                                              estimation_method=em)
    np.testing.assert_array_equal(detect.compute_confident_joint(y, p), cc.compute_confident_joint(y, p))
    np.testing.assert_array_equal(detect.compute_confident_joint(y, p, calibrate=False),
                                  cc.compute_confident_joint(y, p, calibrate=False))
    np.testing.assert_array_equal(detect.estimate_joint(y, p), cc.estimate_joint(y, p))
    np.testing.assert_array_equal(detect.confident_thresholds(y, p), cc.get_confident_thresholds(y, p))
    py, nm, inv, _ = cc.estimate_py_and_noise_matrices_from_probabilities(y, p, converge_latent_estimates=False)
    est = detect.estimate_noise(y, p)
    np.testing.assert_allclose(est.py, py)
    np.testing.assert_allclose(est.noise_matrix, nm)
    np.testing.assert_allclose(est.inverse_noise_matrix, inv)
    for rank_by in detect.SCORE_METHODS:
        ref = cf.find_label_issues(y, p, return_indices_ranked_by=rank_by, n_jobs=1)
        ours = detect.find_label_issues(y, p, return_indices_ranked_by=rank_by)
        assert set(ours) == set(ref)  # same flagged set; order equal up to ties
        s = detect.label_quality_scores(y, p, method=rank_by)
        np.testing.assert_array_equal(s[ours], s[ref])


def test_agrees_with_cleanlab_on_ties_and_missing_classes(cleanlab):
    from cleanlab import filter as cf
    from cleanlab import rank as cr

    y, p, _ = _perfect(200, 5, 25, seed=1)  # many exactly tied probabilities
    y = np.where(y == 4, 3, y)  # class 4 absent from the labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for filter_by in detect.FILTER_METHODS:
            np.testing.assert_array_equal(
                detect.find_label_issues(y, p, filter_by=filter_by, allow_missing_classes=True),
                cf.find_label_issues(y, p, filter_by=filter_by, n_jobs=1), err_msg=filter_by)
    np.testing.assert_array_equal(detect.label_quality_scores(y, p, method="normalized_margin"),
                                  cr.get_label_quality_scores(y, p, method="normalized_margin"))
