"""Runs on the user's own labels (issue 10): no simulated noise unless asked for, no "clean" meta
set drawn from labels nobody verified (``data.options.trusted_csv`` gives one), no ground-truth
metrics or plots without ground truth, forward correction that estimates T-hat."""

import json

import numpy as np
import pytest
from PIL import Image

from noisylabels.cli import main
from noisylabels.config import resolve_config
from noisylabels.errors import UserError
from noisylabels.train import build_context, fit

from tests.helpers import run_cfg


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A flat folder of 200 digit images, a labels CSV with about 30% wrong labels (no class
    folders: no ground truth) and a CSV of 30 verified labels."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("photos")
    folder = root / "photos"
    folder.mkdir()
    d = load_digits()
    rng = np.random.default_rng(0)
    rows, trusted = ["path,label"], ["path,label"]
    for i in range(200):
        Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
        y = int(d.target[i]) if rng.random() > 0.3 else int(rng.integers(10))
        rows.append(f"{i:04d}.png,{y}")
        if i % 7 == 0 and len(trusted) <= 30:
            trusted.append(f"{i:04d}.png,{int(d.target[i])}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "trusted.csv").write_text("\n".join(trusted) + "\n")
    return root


def _over(photos, **extra):
    return {"data.name": "imagefolder", "data.dir": str(photos / "photos"),
            "data.options": {"labels_csv": str(photos / "labels.csv"), **extra.pop("options", {})}, **extra}


def test_user_labels_get_no_simulated_noise_unless_asked_for(photos):
    cfg = resolve_config(overrides=_over(photos))
    assert cfg["noise"]["type"] == "none" and cfg["noise"]["rate"] == 0.0
    asked = resolve_config(overrides=_over(photos, **{"noise.type": "pair"}))
    assert asked["noise"]["type"] == "pair" and asked["noise"]["rate"] == 0.4
    assert resolve_config(overrides={"data.name": "cifar10n"})["noise"]["type"] == "none"
    assert resolve_config()["noise"] == {"type": "symmetric", "rate": 0.4, "options": {}}  # simulated data: as before
    assert resolve_config(overrides={"noise.type": "none"})["noise"]["rate"] == 0.0


def test_without_ground_truth_only_what_is_known_is_printed(photos, tmp_path, capsys, monkeypatch):
    import noisylabels.eval.plots as plots

    labels = []
    real = plots.plot_curves
    monkeypatch.setattr(plots, "plot_curves", lambda *a, **k: (labels.append(k.get("test_label")), real(*a, **k)))
    code = main(["train", "--dataset", "imagefolder", "--data-dir", str(photos / "photos"), "--set",
                 f"data.options.labels_csv={photos / 'labels.csv'}", "--epochs", "2", "--quiet",
                 "--out", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert code == 0, err
    header = out.splitlines()[0]
    assert "no simulated noise" in header and "noise 0.4" not in header and "labels from" in header
    for absent in ("realised noise rate", "noisy-label detection AUROC", " 0.00%", "nan"):
        assert absent not in out, absent
    assert "carved from your (noisy) labels" in out
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["ground_truth"] is False and s["test_carved"] is True and s["realized_noise_rate"] is None
    assert "detection_auroc" not in s and "train_accuracy_clean" not in s
    assert labels == ["test (carved from your labels)"]  # curves.png: no "test (clean)"


def test_a_clean_meta_set_needs_trusted_labels(photos, tmp_path):
    cfg = run_cfg(tmp_path, epochs=1, **_over(photos, **{"method.name": "mwnet"}))
    with pytest.raises(UserError, match="trusted_csv.*--meta-set noisy"):
        build_context(cfg)
    # the robust alternative the message names runs
    build_context(run_cfg(tmp_path, epochs=1, **_over(photos, **{"method.name": "rmnw-net"})))


def test_trusted_csv_is_the_clean_meta_set(photos, tmp_path):
    cfg = run_cfg(tmp_path, epochs=1, **_over(photos, **{"method.name": "mwnet"},
                                              options={"trusted_csv": str(photos / "trusted.csv")}))
    ctx = build_context(cfg)
    data = ctx.data
    meta = data.splits["meta"].numpy()
    trusted = [ln.split(",") for ln in (photos / "trusted.csv").read_text().splitlines()[1:]]
    want = {p: int(y) for p, y in trusted}
    assert sorted(data.paths[i] for i in meta) == sorted(want)
    assert all(int(data.labels[i]) == want[data.paths[i]] for i in meta)
    assert not set(meta) & set(data.splits["train"].numpy()) and not set(meta) & set(data.splits["val"].numpy())


def test_forward_without_simulated_noise_estimates_t_hat(tmp_path):
    base = {"noise.type": "none", "method.name": "forward", "data.train_subset": 300}
    ctx = build_context(run_cfg(tmp_path, epochs=2, **base))
    assert ctx.method.mode == "estimate" and ctx.method.ce_epochs == 1
    with pytest.raises(UserError, match="transition=true.*identity.*estimate"):
        build_context(run_cfg(tmp_path, epochs=2, **base, **{"method.transition": "true"}))
    noisy = build_context(run_cfg(tmp_path, epochs=2, **{**base, "noise.type": "symmetric"}))
    assert noisy.method.mode == "true"


def test_suspects_score_column_says_what_the_score_is(tmp_path):
    fit(run_cfg(tmp_path, "ce", epochs=1, **{"data.train_subset": 300}))
    head = (tmp_path / "ce" / "suspects.csv").read_text().splitlines()[0]
    assert head.endswith(",score_1_minus_p_given")
    fit(run_cfg(tmp_path, "mw", epochs=1, **{"data.train_subset": 200, "method.name": "mwnet",
                                              "method.meta_interval": 5}))
    head = (tmp_path / "mw" / "suspects.csv").read_text().splitlines()[0]
    assert head.endswith(",score_loss")  # MW-Net: the weight net's input (issue 20)


@pytest.mark.parametrize("method", ["emlc", "mlc"])
def test_label_correction_on_user_labels_with_trusted_labels(photos, tmp_path, method):
    """Teacher learned from the verified subset; no label recovery or detection metric without
    ground truth, but the corrected labels are written by file."""
    s = fit(run_cfg(tmp_path, method, epochs=1, **_over(photos, **{"method.name": method, "model.name": "mlp"},
                                                        options={"trusted_csv": str(photos / "trusted.csv")})))
    assert "label_recovery" not in s and "detection_auroc" not in s
    rows = (tmp_path / method / "corrected_labels.csv").read_text().splitlines()
    assert rows[0].startswith("index,") and "path" in rows[0] and len(rows) > 100
