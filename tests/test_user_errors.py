"""Issue 19, second half: inputs that used to end in a traceback or a cryptic line are one-line
errors (exit 2), reported before any data are loaded where the input is not data."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import noisylabels.data.registry as data_registry
from noisylabels.cli import main
from noisylabels.config import resolve_config
from noisylabels.errors import UserError


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("noisylabels: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_data(monkeypatch):
    """Any dataset construction fails the test: the error must come before data are loaded."""
    def refuse(*args, **kwargs):
        raise AssertionError("data were loaded before the bad input was reported")

    monkeypatch.setattr(data_registry, "create_dataset", refuse)
    import noisylabels.data as data_pkg
    import noisylabels.train.prepare as prepare

    monkeypatch.setattr(data_pkg, "create_dataset", refuse)
    monkeypatch.setattr(prepare, "create_dataset", refuse, raising=False)


# ----------------------------------------------------------------------- config values

@pytest.mark.parametrize("argv, needles", [
    (["--seed", str(10**20)], ["seed must be an integer in [0, 9223372036854775807]", str(10**20)]),
    (["--seed", "-1"], ["seed must be an integer in [0,"]),
    (["--set", "model.num_classes=3"], ["model.num_classes cannot be set", "from the data"]),
    (["--set", "model.in_channels=3"], ["model.in_channels cannot be set"]),
    (["--set", "optim=5"], ["'optim' is a section", "--set optim.name=", "got 5"]),
    (["--set", "method=mlc"], ["'method' is a section", "got 'mlc'"]),
    (["--set", "data.options=[1]"], ["'data.options' is a section"]),
    (["--set", "optim.lr=1e400"], ["optim.lr must be a number"]),
    (["--set", "optim.momentum=abc"], ["optim.momentum must be a number"]),
    (["--set", f"train.clip_grad_norm={10**400}"], ["train.clip_grad_norm"]),
    (["--set", "data.augment={crop_padding: x}"], ["data.augment.crop_padding"]),
])
def test_bad_config_values_are_one_line_errors_before_any_data(argv, needles, tmp_path, capsys, no_data):
    code, _, err = run(["train", "--out", tmp_path / "r", *argv], capsys)
    one_line_error(code, err, *needles)
    assert not (tmp_path / "r").exists()


def test_unknown_model_option_does_not_offer_the_options_taken_from_the_data(tmp_path, capsys, no_data):
    code, _, err = run(["train", "--out", tmp_path / "r", "--set", "model.hiden=3"], capsys)
    line = one_line_error(code, err, "'hiden'", "valid options: hidden, dropout, init_checkpoint")
    assert "num_classes" not in line and "in_channels" not in line and "image_size" not in line


def test_yaml_booleans_reach_options_that_take_the_word():
    """``--set method.transition=true``: YAML reads ``true`` as a boolean; forward's option wants the word."""
    from noisylabels.methods import create_method

    cfg = resolve_config(assignments=["method.name=forward", "method.transition=true"])
    assert cfg["method"]["transition"] is True  # what YAML gives
    assert create_method("forward", transition=True).mode == "true"
    with pytest.raises(UserError, match="transition must be 'auto', 'true' or 'estimate', got 'false'"):
        create_method("forward", transition=False)
    from noisylabels.models import create_model

    with pytest.raises(UserError, match="must"):  # a bool option stays a bool (no word for it)
        create_model("mlp", num_classes=2, in_channels=1, image_size=4, dropout="true")


# ----------------------------------------------------------------------- files a user hands us

def _text(p):
    p.write_text("hello, this is not a checkpoint\n")
    return p


def _one_byte(p):
    p.write_bytes(b"x")
    return p


def _cut(p):
    torch.save({"w": torch.zeros(100)}, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


@pytest.mark.parametrize("make, why", [(_text, "it is a text file"), (_one_byte, "it is a text file"),
                                       (_cut, "truncated or damaged")])
@pytest.mark.parametrize("method, key", [("erm", "model.init_checkpoint"), ("emlc", "method.teacher_init")])
def test_weight_files_that_are_not_checkpoints_are_one_line_errors_before_any_data(
        make, why, method, key, tmp_path, capsys, no_data):
    path = make(tmp_path / "w.pt")
    code, _, err = run(["train", "--method", method, "--set", f"{key}={path}", "--out", tmp_path / "r"], capsys)
    line = one_line_error(code, err, key, f"is not a readable state dict ({why}")
    assert "Re-running" not in line and "weights_only` set to `False" not in line and "101" not in line


@pytest.mark.parametrize("argv, needles", [
    (["--method", "emlc", "--set", "method.teacher_init=missing-simclr.pt"], ["method.teacher_init: file not found"]),
    (["--set", "model.init_checkpoint=missing.pt"], ["model.init_checkpoint: file not found"]),
    (["--set", "noise.options.include_true_clas=true"], ["'include_true_clas'", "valid options: include_true_class"]),
    (["--noise", "custom", "--set", "noise.options.matrix_path=missing.csv"], ["matrix_path: file not found"]),
    (["--method", "mlc", "--set", "method.teacher_init=x.pt"], ["method 'mlc' has no option(s) 'teacher_init'"]),
    (["--method", "t-narl", "--set", "method.adjuster=missing.pt"], ["adjuster file not found"]),
    (["--method", "mwnet", "--set", "train.compile=true"], ["train.compile is not supported", "torch.compile"]),
])
def test_files_and_options_are_checked_before_any_data_are_loaded(argv, needles, tmp_path, capsys, no_data,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["train", "--out", tmp_path / "r", *argv], capsys)
    line = one_line_error(code, err, *needles)
    assert "loading data" not in out
    if "compile" in line:
        assert "fp16" not in line  # the compile refusal gives the compile reason only


def test_narl_train_checks_its_options_before_any_data(tmp_path, capsys, no_data):
    code, _, err = run(["narl-train", "--set", "model.init_checkpoint=missing.pt", "--out", tmp_path / "r"], capsys)
    one_line_error(code, err, "model.init_checkpoint: file not found")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_weight_file_names_the_refused_global_and_runs_nothing(tmp_path, capsys, no_data):
    marker = tmp_path / "ran"
    path = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(1), "x": _Payload(marker)}, path)
    code, _, err = run(["train", "--set", f"model.init_checkpoint={path}", "--out", tmp_path / "r"], capsys)
    line = one_line_error(code, err, "weights_only load", "refused without running them", "GLOBAL")
    assert "Re-running" not in line and not marker.exists()


@pytest.mark.parametrize("content, why", [(b"epoch 3\n", "it is a text file"), (b"", "it is an empty file"),
                                          (b"\x80\x02", "truncated or damaged")])
def test_a_run_checkpoint_that_is_not_one_says_what_it_is(tmp_path, content, why):
    from noisylabels.train.records import RunRecorder

    (tmp_path / "checkpoint.pt").write_bytes(content)
    with pytest.raises(UserError) as info:
        RunRecorder(tmp_path).load_checkpoint()
    text = str(info.value)
    assert text.startswith(f"cannot resume from {tmp_path / 'checkpoint.pt'}: not a readable noisylabels checkpoint")
    assert why in text
    assert "(101)" not in text and "Re-running" not in text and "\n" not in text


# ----------------------------------------------------------------------- run directories read by detect / export

def _fake_run(d, n=6, k=3):
    d.mkdir()
    rows = ["index,split,observed_label,clean_label,is_noisy"]
    rows += [f"{i},{'train' if i < 4 else 'test'},{i % k},{i % k},0" for i in range(n)]
    (d / "labels.csv").write_text("\n".join(rows) + "\n")
    np.save(d / "pred_probs.npy", np.full((n, k), 1 / k, dtype=np.float32))
    np.save(d / "held_out.npy", np.arange(n) >= 4)
    return d


@pytest.mark.parametrize("tamper, needles", [
    (lambda p: np.save(p, np.zeros((2, 2))), ["must hold 6 booleans", "float64 (2, 2)"]),
    (lambda p: np.save(p, np.ones(5, bool)), ["must hold 6 booleans"]),
    (lambda p: p.write_text("1,0,1\n"), ["is a text file (CSV?), not a .npy array"]),
    (lambda p: p.write_bytes(p.read_bytes()[:70]), ["damaged .npy"]),
    (lambda p: np.save(p, np.array([{"a": 1}] * 6, dtype=object), allow_pickle=True), ["object array"]),
])
@pytest.mark.parametrize("command", ["detect", "export"])
def test_a_tampered_held_out_file_is_a_one_line_error(tamper, needles, command, tmp_path, capsys):
    d = _fake_run(tmp_path / "run")
    tamper(d / "held_out.npy")
    argv = ["detect", "--run", d] if command == "detect" else ["export", "--run", d, "--relabel", "--out", tmp_path / "x.csv"]
    code, _, err = run(argv, capsys)
    one_line_error(code, err, "held_out.npy", *needles)


def test_a_csv_of_probabilities_is_read_not_called_pickled_data(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("label\n" + "\n".join(str(i % 3) for i in range(9)) + "\n")
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=9)
    (tmp_path / "p.csv").write_text("a,b,c\n" + "\n".join(",".join(f"{v:.6f}" for v in r) for r in probs) + "\n")
    from noisylabels.detect.report import load_user_inputs

    got = load_user_inputs(labels, tmp_path / "p.csv")
    np.testing.assert_allclose(got.pred_probs, probs, atol=1e-6)
    (tmp_path / "bad.csv").write_text("0.1,0.9\n0.5,oops\n")
    with pytest.raises(UserError) as info:
        load_user_inputs(labels, tmp_path / "bad.csv")
    assert "line 2: not a row of numbers" in str(info.value) and "pickled" not in str(info.value)
    (tmp_path / "p.npy").write_text("0.1,0.9\n")  # a CSV under a .npy name
    with pytest.raises(UserError):
        load_user_inputs(labels, tmp_path / "p.npy")


# ----------------------------------------------------------------------- messages

def test_non_finite_loss_without_a_checkpoint_does_not_claim_one_was_kept(tmp_path, capsys):
    from noisylabels.train.loop import _kept_text

    line = _kept_text(tmp_path / "checkpoint.pt", 0)
    assert "no checkpoint (no epoch had finished)" in line and "checkpoint of the last" not in line
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert "the checkpoint of the last finished epoch are kept" in _kept_text(tmp_path / "checkpoint.pt", 3)
    code, _, err = run(["train", "--epochs", "2", "--lr", "1e30", "--set", "data.train_subset=200", "--quiet",
                        "--out", tmp_path / "r"], capsys)
    one_line_error(code, err, "non-finite loss", "there is no checkpoint")
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_fp16_refusal_for_meta_methods_gives_its_own_reason(tmp_path, capsys, no_data):
    code, _, err = run(["train", "--method", "mwnet", "--set", "train.amp=fp16", "--out", tmp_path / "r"], capsys)
    line = one_line_error(code, err, "train.amp=fp16 is not supported", "gradient scaler")
    assert "compile" not in line


def test_a_flat_image_folder_without_labels_says_a_labels_csv_is_needed(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(folder / f"img{i}.png")
    code, _, err = run(["train", "--dataset", "imagefolder", "--set", f"data.options.path={folder}",
                        "--out", tmp_path / "r", "--quiet"], capsys)
    one_line_error(code, err, "holds 3 image(s) but no class folders", "data.options.labels_csv")


def test_config_load_errors_are_one_line(tmp_path):
    (tmp_path / "c.yaml").write_text("optim: 5\n")
    with pytest.raises(UserError, match="'optim' is a section"):
        resolve_config(config_file=tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text("seed: 1.5\n")
    with pytest.raises(UserError, match="seed must be an integer"):
        resolve_config(config_file=tmp_path / "c.yaml")


def test_noise_command_checks_option_names_before_loading_data(capsys, no_data):
    code, _, err = run(["noise", "--set", "include_true_clas=1"], capsys)
    one_line_error(code, err, "'include_true_clas'", "valid options: include_true_class")
