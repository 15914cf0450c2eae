"""`detect --labels` never guesses which probability column a class name is (issue 19): names need
--classes or the run's pred_probs.json beside the probabilities; otherwise only 0..K-1."""

from __future__ import annotations

import json

import numpy as np

from noisylabels.cli import main


def _setup(tmp_path):
    # columns in the order dog, cat, bird (not alphabetical); every label agrees with its confident column
    order = ["dog", "cat", "bird"]
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=60)
    probs = np.full((60, 3), 0.05)
    probs[np.arange(60), y] = 0.9
    np.save(tmp_path / "p.npy", probs)
    (tmp_path / "named.csv").write_text("path,label\n" + "".join(f"{i}.png,{order[k]}\n" for i, k in enumerate(y)))
    (tmp_path / "ids.csv").write_text("label\n" + "".join(f"{k}\n" for k in y))
    return order


def _detect(capsys, *argv):
    code = main(["detect", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _summary(folder):
    return json.loads((folder / "detect_summary.json").read_text())


def test_class_names_without_their_column_order_are_refused(tmp_path, capsys):
    _setup(tmp_path)
    code, _, err = _detect(capsys, "--labels", tmp_path / "named.csv", "--pred-probs", tmp_path / "p.npy",
                           "--out", tmp_path / "d")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "--classes" in lines[0] and "column" in lines[0], err
    assert not (tmp_path / "d").exists()


def test_class_names_with_classes_or_pred_probs_json_are_mapped_by_column(tmp_path, capsys):
    order = _setup(tmp_path)
    code, _, err = _detect(capsys, "--labels", tmp_path / "named.csv", "--pred-probs", tmp_path / "p.npy",
                           "--classes", ",".join(order), "--out", tmp_path / "d1")
    assert code == 0, err
    # every label is its row's most confident column: no issue when the names map to the right columns
    assert _summary(tmp_path / "d1")["num_flagged"] == 0 and _summary(tmp_path / "d1")["classes"] == order
    (tmp_path / "pred_probs.json").write_text(json.dumps({"classes": order}))
    code, _, err = _detect(capsys, "--labels", tmp_path / "named.csv", "--pred-probs", tmp_path / "p.npy",
                           "--out", tmp_path / "d2")
    assert code == 0, err
    assert _summary(tmp_path / "d2")["num_flagged"] == 0 and _summary(tmp_path / "d2")["classes"] == order


def test_integer_labels_need_no_names(tmp_path, capsys):
    _setup(tmp_path)
    code, _, err = _detect(capsys, "--labels", tmp_path / "ids.csv", "--pred-probs", tmp_path / "p.npy",
                           "--out", tmp_path / "d")
    assert code == 0, err
    assert _summary(tmp_path / "d")["num_flagged"] == 0
