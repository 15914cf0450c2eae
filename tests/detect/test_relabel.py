"""The relabel rule of ``export --relabel`` and the scoring-accuracy warning of ``detect`` (issue 20),
checked against their definitions on arrays built here: per-class out-of-sample precision, the
calibrated confidence threshold (isotonic fit of "arg-max right" > 1/2), never relabelling to a class
the models get wrong at least as often as right, and the warning below the reliable accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from noisylabels.detect.relabel import (RELIABLE_ACCURACY, UNSUPPORTED_DEFAULT, calibrated_threshold, class_precision,
                                        reference_rows,
                                        relabel_decisions, relabel_rule)
from noisylabels.detect.report import DetectInputs, format_summary, run_detection
from noisylabels.errors import UserError

K = 4


def _row(pred: int, conf: float) -> np.ndarray:
    """A probability row with arg-max ``pred`` at ``conf``, the rest spread evenly."""
    r = np.full(K, (1 - conf) / (K - 1))
    r[pred] = conf
    return r


def _rows(spec):
    """``spec``: (pred, conf, label) triples -> (labels, pred_probs)."""
    return np.array([s[2] for s in spec]), np.stack([_row(s[0], s[1]) for s in spec])


def test_class_precision_counts_hits_among_rows_predicted_each_class():
    spec = [(0, .9, 0)] * 3 + [(0, .9, 1)] + [(1, .8, 1)] * 2 + [(1, .8, 2)] * 3 + [(2, .7, 2)] * 2 + [(2, .7, 3)] * 2
    y, p = _rows(spec)
    prec = class_precision(y, p)
    np.testing.assert_allclose(prec[:3], [3 / 4, 2 / 5, 2 / 4])
    assert np.isnan(prec[3])  # never predicted: no evidence


def test_calibrated_threshold_is_where_the_arg_max_becomes_right_more_often_than_wrong():
    # three confidence blocks, right 30% / 60% / 90% of the time; inside a block the right rows sit
    # at the lower confidences, so the increasing fit pools each block to its rate
    spec = []
    for lo, rate in ((0.30, 0.3), (0.50, 0.6), (0.80, 0.9)):
        confs = lo + np.arange(10) * 0.005
        spec += [(1, c, 1 if j < 10 * rate else 2) for j, c in enumerate(confs)]
    y, p = _rows(spec)
    assert calibrated_threshold(y, p) == pytest.approx(0.50)  # the first block above 1/2 starts there
    assert calibrated_threshold(y, p, target=0.75) == pytest.approx(0.80)
    y_wrong = np.full_like(y, 3)  # never right: no threshold
    assert calibrated_threshold(y_wrong, p) == np.inf
    with pytest.raises(UserError):
        calibrated_threshold(y, p, target=1.5)


def test_reference_rows_prefer_a_trusted_test_split():
    split = np.array(["train"] * 20 + ["test"] * 10)
    held = np.ones(30, bool)
    ref, _, trusted = reference_rows(split, held, K, test_trusted=True)
    assert trusted and list(ref) == list(range(20, 30))
    ref, _, trusted = reference_rows(split, held, K, test_trusted=False)  # carved from the user's labels
    assert not trusted and len(ref) == 30
    ref, _, trusted = reference_rows(split, held, 6, test_trusted=True)  # fewer than 2K test rows
    assert not trusted and len(ref) == 30


def test_relabel_rule_never_to_a_class_wrong_at_least_as_often_as_right():
    # reference (test) rows: class 0 right 4/5, class 1 right 3/6 (= 1/2: refused), class 2 right 2/5
    ref = [(0, .95, 0)] * 4 + [(0, .95, 1)] + [(1, .95, 1)] * 3 + [(1, .95, 0)] * 3 + [(2, .95, 2)] * 2 + \
          [(2, .95, 3)] * 3 + [(3, .95, 3)] * 2
    y_ref, p_ref = _rows(ref)
    # training rows to decide on: flagged, suggestion 0 / 1 / 2 / 3, high and low confidence
    train = [(0, .9, 1), (1, .9, 0), (2, .9, 0), (3, .9, 0), (0, .3, 1), (0, .9, 0)]
    y_tr, p_tr = _rows(train)
    y = np.concatenate([y_tr, y_ref])
    p = np.concatenate([p_tr, p_ref])
    split = ["train"] * len(train) + ["test"] * len(ref)
    rule = relabel_rule(y, p, split=split, held_out=np.ones(len(y), bool), min_confidence=0.5, test_trusted=True)
    assert list(rule.allowed) == [True, False, False, True]
    assert rule.accuracy == pytest.approx(11 / 18) and not rule.calibrated and rule.threshold == 0.5
    flagged = np.array([1, 1, 1, 1, 1, 0], bool)
    acts = relabel_decisions(p_tr, flagged, rule, unsupported="drop")
    assert list(acts) == ["relabel", "drop", "drop", "relabel", "drop", "keep"]
    acts = relabel_decisions(p_tr, flagged, rule, unsupported="keep")  # unsupported: the given label stays
    assert list(acts) == ["relabel", "keep_flagged", "keep_flagged", "relabel", "keep_flagged", "keep"]
    with pytest.raises(UserError, match="unsupported must be one of keep, drop"):
        relabel_decisions(p_tr, flagged, rule, unsupported="ignore")


def test_default_threshold_is_the_calibrated_one():
    spec = [(1, 0.3 + 0.005 * j, 1 if j < 3 else 2) for j in range(10)] + \
           [(1, 0.6 + 0.005 * j, 1 if j < 8 else 2) for j in range(10)]
    y, p = _rows(spec)
    rule = relabel_rule(y, p, split=None, held_out=np.ones(len(y), bool))
    assert rule.calibrated and rule.threshold == pytest.approx(0.6)
    assert rule.threshold == calibrated_threshold(y, p)
    acts = relabel_decisions(np.stack([_row(1, 0.55), _row(1, 0.62)]), np.ones(2, bool), rule, unsupported="drop")
    assert list(acts) == ["drop", "relabel"]
    assert UNSUPPORTED_DEFAULT == "keep"
    assert list(relabel_decisions(np.stack([_row(1, 0.55), _row(1, 0.62)]), np.ones(2, bool), rule)) == \
        ["keep_flagged", "relabel"]


def _inputs(acc: float, n: int = 400, seed: int = 0, trusted: bool = True) -> DetectInputs:
    """Held-out probabilities whose arg-max equals the label on a fraction ``acc`` of the rows."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    right = rng.permutation(n) < int(round(acc * n))
    pred = np.where(right, y, (y + 1) % K)
    p = np.stack([_row(int(c), 0.7) for c in pred])
    split = ["train"] * (n // 2) + ["test"] * (n - n // 2)
    return DetectInputs(labels=y, pred_probs=p, classes=[str(k) for k in range(K)], held_out=np.ones(n, bool),
                        index=np.arange(n), split=split, test_trusted=trusted)


@pytest.mark.parametrize("acc", [0.5, 0.8, 0.9, 0.97])
def test_detect_reports_the_out_of_sample_accuracy_and_warns_below_the_reliable_one(acc):
    inp = _inputs(acc)
    res = run_detection(inp)
    test = np.asarray(inp.split) == "test"
    want = float((inp.pred_probs[test].argmax(1) == inp.labels[test]).mean())
    assert res.scoring_accuracy == pytest.approx(want)
    warned = any(n.startswith("warning:") and "accuracy" in n for n in res.notes)
    assert warned == (want < RELIABLE_ACCURACY)
    assert f"{100 * want:.2f}% out-of-sample" in format_summary(res)


def test_without_trusted_labels_the_warning_says_it_measured_agreement():
    res = run_detection(_inputs(0.6, trusted=False))
    note = next(n for n in res.notes if n.startswith("warning:"))
    assert "agreement with the given labels is 60.0%" in note
