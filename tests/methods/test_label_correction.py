"""What every label-correction method shares: soft-target CE, the gate's limits, label recovery."""

import torch
import torch.nn.functional as F

from noisylabels.methods.label_correction import gate_mix, label_recovery, soft_cross_entropy


def test_soft_target_ce_equals_ce_for_one_hot_targets():
    torch.manual_seed(0)
    z, y = torch.randn(7, 4, dtype=torch.float64), torch.randint(0, 4, (7,))
    torch.testing.assert_close(soft_cross_entropy(z, F.one_hot(y, 4).double()), F.cross_entropy(z, y, reduction="none"))
    q = torch.softmax(torch.randn(7, 4, dtype=torch.float64), 1)
    torch.testing.assert_close(soft_cross_entropy(z, q), F.cross_entropy(z, q, reduction="none"))


def test_gate_mix_is_on_the_simplex_with_the_two_limits():
    torch.manual_seed(1)
    pred = torch.softmax(torch.randn(6, 5, dtype=torch.float64), 1)
    y = torch.randint(0, 5, (6,))
    q = gate_mix(torch.rand(6, dtype=torch.float64), y, pred)
    assert bool((q >= 0).all()) and torch.allclose(q.sum(1), torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(gate_mix(torch.ones(6, dtype=torch.float64), y, pred), F.one_hot(y, 5).double())
    torch.testing.assert_close(gate_mix(torch.zeros(6, dtype=torch.float64), y, pred), pred)


def test_label_recovery_splits_kept_and_repaired_labels():
    clean = torch.tensor([0, 1, 2, 0, 1])
    given = torch.tensor([0, 2, 2, 1, 1])             # samples 1 and 3 corrupted
    q = F.one_hot(torch.tensor([0, 1, 0, 1, 1]), 3).float()  # recovers 0, 1, (not 2), (not 3), 4
    seen = torch.tensor([True, True, True, True, False])
    out = label_recovery(q, seen, torch.arange(5), given=given, clean=clean)
    assert out["label_recovery"] == 0.5
    assert out["label_recovery_given_right"] == 0.5 and out["label_recovery_given_wrong"] == 0.5


def test_corrected_labels_csv_has_paths_for_file_backed_data(tmp_path):
    """``corrected_labels.csv``: one row per visited training sample, the file path column when the
    run's data has paths (as ``suspects.csv``)."""
    import csv
    from types import SimpleNamespace

    from noisylabels.methods.label_correction import CORRECTED_LABELS_FILE, LabelCorrectionMethod

    m = LabelCorrectionMethod.__new__(LabelCorrectionMethod)
    m.q_table = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.0, 0.0]])
    m.q_seen = torch.tensor([True, True, False, False])
    data = SimpleNamespace(splits={"train": torch.tensor([0, 1, 3])}, labels=torch.tensor([0, 0, 1, 1]),
                           paths=["a.png", "b,c.png", "x.png", "d.png"])
    ctx = SimpleNamespace(data=data, recorder=SimpleNamespace(path=lambda name: tmp_path / name))
    m.write_corrected_labels(ctx)
    with open(tmp_path / CORRECTED_LABELS_FILE) as f:
        rows = list(csv.DictReader(f))
    assert [r["index"] for r in rows] == ["0", "1"]  # sample 3 never got a soft label
    assert rows[1] == {"index": "1", "given": "0", "corrected": "1", "confidence": "0.8", "path": "b,c.png"}
