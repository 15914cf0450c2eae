"""NoisyLabelClassifier: a scikit-learn estimator over the library's loop for array data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from noisylabels.estimator import NoisyLabelClassifier


def _blobs(n=400, k=3, d=5, noise=0.25, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, d))
    y = rng.integers(0, k, n)
    X = centers[y] + rng.normal(size=(n, d))
    flip = rng.random(n) < noise
    noisy = y.copy()
    noisy[flip] = (y[flip] + 1 + rng.integers(0, k - 1, int(flip.sum()))) % k
    names = np.array(["ant", "bee", "cat"])[:k]
    return X, names[noisy], names[y], flip


def test_fit_predict_and_options_round_trip(one_thread):
    X, y_noisy, y_true, _ = _blobs(n=240)
    clf = NoisyLabelClassifier(epochs=10, batch_size=32, loss="gce", loss_q=0.7, model_hidden=(32,))
    assert clf.get_params()["loss_q"] == 0.7 and clone(clf).get_params() == clf.get_params()
    clf.fit(X, y_noisy)
    assert list(clf.classes_) == ["ant", "bee", "cat"] and clf.n_features_in_ == 5
    p = clf.predict_proba(X)
    assert p.shape == (len(X), 3)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    assert np.mean(clf.predict(X) == y_true) > 0.9  # robust loss, 25% noise, separable blobs
    again = NoisyLabelClassifier(epochs=10, batch_size=32, loss="gce", loss_q=0.7, model_hidden=(32,)).fit(X, y_noisy)
    np.testing.assert_allclose(again.predict_proba(X), p, atol=1e-6)  # seeded: the same model


def test_find_label_issues_finds_the_flipped_labels(one_thread):
    X, y_noisy, _, flip = _blobs(n=300)
    clf = NoisyLabelClassifier(epochs=6, folds=3)
    out = clf.find_label_issues(X, y_noisy)
    found = out["is_label_issue"]
    assert found.shape == flip.shape and set(out["given_label"]) <= {"ant", "bee", "cat"}
    precision = (found & flip).sum() / max(found.sum(), 1)
    recall = (found & flip).sum() / flip.sum()
    assert precision > 0.8 and recall > 0.6, (precision, recall)
    assert abs(int(out["num_issues_estimate"]) - flip.sum()) < 0.3 * flip.sum()
    assert np.mean(out["label_quality"][flip]) < np.mean(out["label_quality"][~flip])


def test_errors_are_sklearn_style():
    clf = NoisyLabelClassifier(epochs=1)
    with pytest.raises(Exception, match="not fitted"):
        clf.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="1 class"):
        clf.fit(np.zeros((10, 2)), np.zeros(10))
    with pytest.raises(ValueError, match="y is None"):
        clf.fit(np.zeros((10, 2)), None)


@pytest.mark.slow
def test_sklearn_estimator_checks(one_thread):
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(NoisyLabelClassifier(epochs=5), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert not failed, failed
    assert len(results) > 40
