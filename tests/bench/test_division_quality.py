"""The division-quality reader (``benchmarks/division_quality.py``, issue 23) on tiny run directories
written by hand: expected values are worked out here from the fixture's numbers."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from noisylabels.errors import UserError

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
dq = importlib.import_module("division_quality")

#: per epoch (val accuracy, test accuracy); epochs 2 and 4 tie on the best val accuracy: the first wins
VAL_TEST = [(0.30, 0.50), (0.40, 0.55), (0.60, 0.70), (0.50, 0.72), (0.60, 0.80), (0.45, 0.60), (0.55, 0.66)]
WARMUP = 2


def _division(w: np.ndarray, clean: np.ndarray, threshold: float = 0.5) -> tuple[float, float, float]:
    """Labelled fraction, precision and recall of ``w > threshold`` against ``clean`` (Algorithm 1's
    labelled set), counted by hand."""
    picked = [i for i in range(len(w)) if w[i] > threshold]
    true_clean = [i for i in range(len(w)) if clean[i]]
    hits = len([i for i in picked if clean[i]])
    return len(picked) / len(w), hits / len(picked), hits / len(true_clean)


def _write_run(path: Path, *, status: str, n_epochs: int = len(VAL_TEST)) -> dict[int, dict[str, float]]:
    """A run directory with ``n_epochs`` metric rows (DivideMix-like: divisions from epoch WARMUP),
    its summary, and the divisions it planted (epoch -> field -> value)."""
    path.mkdir()
    rng = np.random.default_rng(0)
    clean = rng.random(40) < 0.7
    planted: dict[int, dict[str, float]] = {}
    with open(path / "metrics.jsonl", "w") as fh:
        for epoch, (val, test) in enumerate(VAL_TEST[:n_epochs]):
            row = {"epoch": epoch, "train_loss": 1.0, "val_accuracy": val, "test_accuracy": test}
            if epoch >= WARMUP:
                planted[epoch] = {}
                for net in ("a", "b"):
                    w = np.clip(np.where(clean, 0.8, 0.2) + rng.normal(0, 0.3, 40), 0, 1)
                    frac, prec, rec = _division(w, clean)
                    planted[epoch].update({f"{net}_labelled_fraction": frac, f"{net}_precision": prec,
                                           f"{net}_recall": rec})
                    row.update({f"division_{net}_labelled_fraction": frac, f"division_{net}_precision": prec,
                                f"division_{net}_recall": rec})
                row["detection_auroc"] = 0.80 + 0.01 * epoch
            fh.write(json.dumps(row) + "\n")
    (path / "summary.json").write_text(json.dumps({
        "status": status, "method": "dividemix", "dataset": "toy", "realized_noise_rate": 0.25,
        "detection_auroc": 0.99, "epochs_run": n_epochs}))
    return planted


def test_summary_row_of_a_finished_run(tmp_path):
    _write_run(tmp_path / "run", status="finished")
    s = dq.summarize(tmp_path / "run")
    assert (s.status, s.epochs, s.method) == ("finished", 7, "dividemix")
    # best noisy val: 0.60 first reached at epoch 2 (test 0.70), not the tie at epoch 4
    assert s.best_epoch == 2 and s.best_val_test_accuracy == pytest.approx(0.70)
    assert s.last_test_accuracy == pytest.approx(0.66)
    assert s.last5_test_accuracy == pytest.approx((0.70 + 0.72 + 0.80 + 0.60 + 0.66) / 5)
    # a finished run: the summary's AUROC of the final scores
    assert s.detection_auroc == pytest.approx(0.99) and not s.auroc_from_epoch
    assert s.clean_fraction == pytest.approx(0.75)


def test_summary_row_of_a_stopped_run(tmp_path):
    _write_run(tmp_path / "run", status="running", n_epochs=4)
    s = dq.summarize(tmp_path / "run")
    assert s.status == "running" and s.epochs == 4
    assert s.best_epoch == 2 and s.last_test_accuracy == pytest.approx(0.72)
    assert s.last5_test_accuracy is None                  # fewer than 5 epochs
    # stopped: the summary's AUROC is not of final scores; the last epoch's (epoch 3) is taken
    assert s.detection_auroc == pytest.approx(0.83) and s.auroc_from_epoch
    assert "*" in dq.format_summaries([s])


def test_epoch_rows_carry_each_networks_division(tmp_path):
    planted = _write_run(tmp_path / "run", status="finished")
    rows = dq.epoch_rows(dq.read_run(tmp_path / "run")[0])
    assert [r["epoch"] for r in rows] == list(range(7))
    assert [r["test_accuracy"] for r in rows] == pytest.approx([t for _, t in VAL_TEST])
    for r in rows[:WARMUP]:                               # warm-up: no division
        assert all(r[f"{n}_{f}"] is None for n in ("a", "b") for f in dq.DIVISION_FIELDS)
    for r in rows[WARMUP:]:
        for key, value in planted[r["epoch"]].items():
            assert r[key] == pytest.approx(value), key
    assert planted[3]["a_precision"] != planted[3]["b_precision"]  # the networks are told apart
    table = dq.format_epochs("run", dq.read_run(tmp_path / "run")[0])
    line = next(ln for ln in table.splitlines() if ln.startswith("| 3 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "72.0"
    assert cells[2:8] == [f"{100 * planted[3][f'{n}_{f}']:.1f}" for n in ("a", "b") for f in dq.DIVISION_FIELDS]
    assert cells[8] == "0.830"                            # the epoch's AUROC of 1 - w


def test_mean_over_seeds(tmp_path):
    _write_run(tmp_path / "s0", status="finished")
    _write_run(tmp_path / "s1", status="running", n_epochs=4)
    (group,) = dq.mean_rows([dq.summarize(tmp_path / "s0"), dq.summarize(tmp_path / "s1")])
    dataset, method, n, means = group
    assert (dataset, method, n) == ("toy", "dividemix", 2)
    assert means["last_test_accuracy"] == pytest.approx((0.66 + 0.72) / 2)
    assert means["detection_auroc"] == pytest.approx((0.99 + 0.83) / 2)
    assert means["last5_test_accuracy"] is None           # one run has no last-5


def test_not_a_run_directory(tmp_path):
    with pytest.raises(UserError, match="metrics.jsonl"):
        dq.read_run(tmp_path)
    assert dq.main([str(tmp_path)]) == 2


def test_top_precision_from_sample_records(tmp_path):
    run = tmp_path / "run"
    _write_run(run, status="finished")
    # labels.csv: the val sample (index 2) is not in the records; train samples 0, 1, 3, 4, 5, 6
    lines = ["index,split,clean_label,observed_label,is_noisy,path"]
    noisy = {0: 0, 1: 1, 2: 0, 3: 0, 4: 1, 5: 0, 6: 1}
    lines += [f"{i},{'val' if i == 2 else 'train'},0,{n},{n}," for i, n in noisy.items()]
    (run / "labels.csv").write_text("\n".join(lines) + "\n")
    index = np.array([0, 1, 3, 4, 5, 6])
    w = np.array([[0.9, 0.8, 0.7, 0.6, 0.2, 0.1],     # epoch 2: top 3 = 0, 1, 3 -> clean 0, 3: 2/3
                  [0.1, 0.9, 0.5, 0.5, 0.4, 0.95]])   # epoch 3: top 3 = 6, 1, then 3 (tie with 4: lower index) -> 1/3
    np.savez(run / "sample_records.npz", epochs=np.array([2, 3]), index=index, clean_prob=w)
    top = dq.top_precision(run, 0.5)
    assert top == pytest.approx({2: 2 / 3, 3: 1 / 3})
    assert dq.top_precision(run, 1.0) == pytest.approx({2: 0.5, 3: 0.5})   # all six: 3 clean
    table = dq.format_epochs("run", dq.read_run(run)[0], top=top, fraction=0.5)
    line = next(ln for ln in table.splitlines() if ln.startswith("| 2 |"))
    assert line.rstrip(" |").endswith("0.820 | 66.7")  # the epoch's w AUROC, then the top-50% precision
    with pytest.raises(UserError, match="--top"):
        dq.top_precision(run, 0.0)
    (run / "sample_records.npz").unlink()
    assert dq.top_precision(run, 0.5) == {}
