"""CLI: the main job, listings, the noise command, and every bad input exiting 2 with one line."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import noisylabels.methods as methods
from noisylabels.cli import main


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_main_job_defaults(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["train", "--quiet", "--epochs", "5"], capsys)
    assert code == 0, err
    assert "test accuracy @ best val" in out and "realised noise rate" in out
    s = json.loads((tmp_path / "runs" / "latest" / "summary.json").read_text())
    assert s["dataset"] == "digits" and s["noise"] == "symmetric" and s["noise_rate"] == 0.4
    assert s["loss"] == "ce" and s["model"] == "mlp"


@pytest.mark.parametrize("cmd,expect", [("datasets", "digits"), ("methods", "erm"), ("models", "resnet32"),
                                        ("losses", "gce")])
def test_listings(cmd, expect, capsys):
    code, out, _ = run([cmd], capsys)
    assert code == 0 and expect in out


def test_noise_command_prints_matrix_and_writes_csv(tmp_path, capsys):
    csv = tmp_path / "noisy.csv"
    code, out, err = run(["noise", "--dataset", "digits", "--noise", "pair", "--rate", "0.3", "--seed", "1",
                          "--csv", str(csv)], capsys)
    assert code == 0, err
    assert "transition matrix" in out and "realised noise rate" in out
    rows = csv.read_text().splitlines()
    assert len(rows) > 1000


def _imagefolder(tmp_path, corrupt=False):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            d = root / split / cls
            d.mkdir(parents=True)
            for k in range(6):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / f"{k}.png")
    if corrupt:
        (root / "train" / "a" / "3.png").write_bytes(b"not a png")
    return root


def _bad_inputs(tmp_path):
    folder = _imagefolder(tmp_path)
    bad_folder = tmp_path / "bad"
    bad_folder.mkdir()
    corrupt = _imagefolder(bad_folder, corrupt=True)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label\ntrain/a/0.png,a\ntrain/a/99.png,b\n")
    csv_class = tmp_path / "labels2.csv"
    csv_class.write_text("path,label\ntrain/a/0.png,zebra\n")
    csv_range = tmp_path / "labels3.csv"
    csv_range.write_text("path,label\ntrain/a/0.png,7\n")
    ifold = ["--dataset", "imagefolder", "--data-dir"]
    return {
        "unknown dataset": (["--dataset", "nope"], "unknown dataset 'nope'"),
        "unknown method": (["--method", "nope"], "unknown method 'nope'"),
        "unknown model": (["--model", "nope"], "unknown model 'nope'"),
        "unknown loss": (["--loss", "nope"], "unknown loss 'nope'"),
        "unknown noise": (["--noise", "nope"], "unknown noise type 'nope'"),
        "rate out of range": (["--noise-rate", "1.5"], "[0, 1)"),
        "rate above type": (["--noise", "pair", "--noise-rate", "0.6"], "0.6"),
        "meta too large": (["--meta-size", "5000"], "meta"),
        "missing data": (["--dataset", "mnist", "--data-dir", str(tmp_path / "nothing")], "nothing"),
        "corrupt image": ([*ifold, str(corrupt), "--noise", "none", "--noise-rate", "0"], "3.png"),
        "csv path": ([*ifold, str(folder), "--set", f"data.options.labels_csv={csv_path}"], "99.png"),
        "csv class": ([*ifold, str(folder), "--set", f"data.options.labels_csv={csv_class}"], "zebra"),
        "csv label range": ([*ifold, str(folder), "--set", f"data.options.labels_csv={csv_range}"], "7"),
        "bad option": (["--set", "loss.qq=3"], "qq"),
        "non-finite loss": (["--method", "test-nan-at-epoch-1", "--epochs", "3"], "non-finite loss"),
        "negative clip": (["--set", "train.clip_grad_norm=-1"], "train.clip_grad_norm must be a number > 0"),
        "no validation": (["--set", "data.val_fraction=0"], "data.val_fraction must be a number in (0, 1)"),
        "meta size without meta set": (["--meta-size", "100"], "method 'erm' uses no meta set"),
        "device tpu": (["--set", "device=tpu"], "device must be cpu, cuda, cuda:N or mps, got 'tpu'"),
        "unknown augment key": (["--set", "data.augment={crop: 4}"], "unknown data.augment key(s) crop"),
        "out is a file": (["--out", str(csv_path)], "is an existing file"),
    }


if "test-nan-at-epoch-1" not in methods.METHODS:
    @methods.register_method("test-nan-at-epoch-1", help="(tests) NaN loss in epoch 1")
    class _Nan(methods.Method):
        def per_sample_loss(self, logits, targets, indices):
            loss = super().per_sample_loss(logits, targets, indices)
            return loss * float("nan") if self.ctx.epoch == 1 else loss


BAD = ["unknown dataset", "unknown method", "unknown model", "unknown loss", "unknown noise", "rate out of range",
       "rate above type", "meta too large", "missing data", "corrupt image", "csv path", "csv class",
       "csv label range", "bad option", "non-finite loss", "negative clip", "no validation",
       "meta size without meta set", "device tpu", "unknown augment key", "out is a file"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_2_with_one_line(case, tmp_path, capsys):
    argv, expect = _bad_inputs(tmp_path)[case]
    code, out, err = run(["train", "--quiet", "--epochs", "2", "--out", str(tmp_path / "o"), *argv], capsys)
    assert code == 2, (out, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("noisylabels: error:")
    assert expect in lines[0], lines[0]


def test_non_finite_keeps_records(tmp_path, capsys):
    code, _, err = run(["train", "--quiet", "--epochs", "3", "--method", "test-nan-at-epoch-1",
                        "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["status"] == "diverged" and s["epochs_run"] == 1
    assert (tmp_path / "o" / "checkpoint.pt").is_file()


def test_console_script_bad_input_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "noisylabels", "train", "--dataset", "nope"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_one_line_error(tmp_path, capsys):
    code, _, err = run(["train", "--quiet", "--set", "device=cuda", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.count("\n") == 1 and "CUDA is not available" in err


@pytest.mark.parametrize("argv, message", [(["--model", "nope"], "unknown model 'nope'"),
                                           (["--loss", "nope"], "unknown loss 'nope'"),
                                           (["--noise", "nope"], "unknown noise type 'nope'"),
                                           (["--set", "device=cuda:7"], "device cuda:7")])
def test_names_and_device_are_checked_before_any_data_are_loaded(tmp_path, capsys, monkeypatch, argv, message):
    import noisylabels.train.loop as loop

    def no_data(*a, **k):
        raise AssertionError("data loaded before the names were checked")

    monkeypatch.setattr(loop, "prepare_data", no_data)
    code, out, err = run(["train", "--quiet", "--out", str(tmp_path / "o"), *argv], capsys)
    assert code == 2 and message in err and "loading data" not in out
    assert not (tmp_path / "o").exists()


def test_noise_help_names_the_columns_the_csv_has(tmp_path, capsys):
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        main(["noise", "--help"])
    text = " ".join(buf.getvalue().split())
    root = _imagefolder(tmp_path)
    for dataset, csv in ((["--dataset", "imagefolder", "--data-dir", str(root)], tmp_path / "img.csv"),
                         (["--dataset", "digits"], tmp_path / "digits.csv")):
        code, _, err = run(["noise", *dataset, "--rate", "0.2", "--csv", str(csv)], capsys)
        assert code == 0, err
        header = csv.read_text().splitlines()[0]
        assert header in text, (header, text)


def test_a_reader_that_leaves_early_gets_no_traceback():
    """``noisylabels ... | head``: once the reader has gone, the command stops quietly (exit 141,
    as a shell reports SIGPIPE), with nothing on stderr."""
    import os

    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first write
    try:
        proc = subprocess.run([sys.executable, "-m", "noisylabels", "methods"], stdout=w, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr
