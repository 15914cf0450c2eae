"""Run directories you can trust (issue 10): a run writes only where ``--out`` points, never mixes
with an earlier run, resumes only its own checkpoint under its own config, says truthfully what
it is doing (``summary.json`` while running, SIGTERM / Ctrl-C messages, wall time) and loads no
code from a checkpoint."""

import json
import os
import shutil
import signal
import stat

import pytest
import torch

from noisylabels.cli import main
from noisylabels.errors import UserError
from noisylabels.methods import Method, register_method
from noisylabels.train import fit

from tests.helpers import run_cfg

SMALL = {"data.train_subset": 300}  # digits, 300 training-pool samples: about a second an epoch on 2 cores


def _cfg(tmp_path, name="run", **over):
    return run_cfg(tmp_path, name, epochs=over.pop("epochs", 2), **{**SMALL, **over})


def _cli(capsys, *argv):
    code = main(["train", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _small_flags(out, *extra):
    return ["--out", str(out), "--set", "data.train_subset=300", *extra]


def _one_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _metrics(path):
    return (path / "metrics.jsonl").read_text()


# -- files --------------------------------------------------------------------------------------------

def test_records_get_the_users_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        fit(_cfg(tmp_path, epochs=1))
    finally:
        os.umask(old)
    for name in ("summary.json", "config.yaml", "checkpoint.pt", "labels.csv", "suspects.csv", "curves.png"):
        mode = stat.S_IMODE((tmp_path / "run" / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


class _Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (str(self.marker), "w"))


def _fake_run(tmp_path, capsys):
    out = tmp_path / "r"
    assert _cli(capsys, *_small_flags(out, "--epochs", "1", "--quiet"))[0] == 0
    return out


def test_a_checkpoint_carrying_a_pickled_callable_is_refused_without_running_it(tmp_path, capsys):
    out = _fake_run(tmp_path, capsys)
    marker = tmp_path / "pwned"
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["method"] = {"payload": _Boom(marker)}
    torch.save(state, out / "checkpoint.pt")
    code, _, err = _cli(capsys, "--out", str(out), "--resume", "--quiet")
    assert code == 2 and "not a readable noisylabels checkpoint" in _one_line(err)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 100, "truncated"])
def test_empty_random_or_truncated_checkpoints_are_one_line_errors(tmp_path, capsys, content):
    out = _fake_run(tmp_path, capsys)
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:500] if content == "truncated" else content)
    code, _, err = _cli(capsys, "--out", str(out), "--resume", "--quiet")
    assert code == 2 and _one_line(err).startswith("noisylabels: error: cannot resume from")


# -- where a run writes ---------------------------------------------------------------------------------

def test_resume_of_a_copied_run_writes_only_to_the_copy(tmp_path, capsys):
    orig = tmp_path / "orig"
    fit(_cfg(tmp_path, "orig", epochs=2), stop_after=1)
    copy = tmp_path / "copy"
    shutil.copytree(orig, copy)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in orig.iterdir()}
    code, _, err = _cli(capsys, "--out", str(copy), "--resume", "--quiet")
    assert code == 0, err
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in orig.iterdir()} == before
    assert json.loads((copy / "summary.json").read_text())["status"] == "finished"
    assert f"out: {copy}" in (copy / "config.yaml").read_text()


def test_a_new_run_into_an_earlier_run_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "r"
    assert _cli(capsys, *_small_flags(out, "--epochs", "1", "--quiet"))[0] == 0
    (out / "notes.txt").write_text("the user's, not the run's")
    first = json.loads((out / ".noisylabels-run.json").read_text())
    code, _, err = _cli(capsys, *_small_flags(out, "--epochs", "1", "--quiet", "--lr", "0.05"))
    assert code == 2 and "already holds a run" in _one_line(err) and "--overwrite" in err
    assert (out / "notes.txt").exists()
    (out / "sample_records.npz").write_bytes(b"a file of the first run the second one does not write")
    from noisylabels.train.rundir import register

    register(out / "sample_records.npz")
    code, _, err = _cli(capsys, *_small_flags(out, "--epochs", "1", "--quiet", "--lr", "0.05", "--overwrite"))
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "the user's, not the run's"  # --overwrite removes only the run's files
    assert not (out / "sample_records.npz").exists()  # every file of the earlier run is gone, also those not rewritten
    assert "lr: 0.05" in (out / "config.yaml").read_text()
    second = json.loads((out / ".noisylabels-run.json").read_text())
    assert second["run_id"] != first["run_id"] and "notes.txt" not in second["manifest"]


def test_a_folder_that_is_not_a_run_is_never_cleared(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    code, _, err = _cli(capsys, *_small_flags(mine, "--epochs", "1", "--quiet", "--overwrite"))
    assert code == 2 and "holds no noisylabels run" in _one_line(err)
    assert (mine / "thesis.tex").read_text() == "precious"


def test_out_naming_an_existing_file_is_a_one_line_error(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    code, _, err = _cli(capsys, *_small_flags(f, "--epochs", "1", "--quiet"))
    assert code == 2 and "is an existing file" in _one_line(err)


def test_the_default_out_always_holds_the_latest_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for lr in ("0.1", "0.05"):
        code, _, err = _cli(capsys, "--epochs", "1", "--quiet", "--lr", lr, "--set", "data.train_subset=300")
        assert code == 0, err
    assert "lr: 0.05" in (tmp_path / "runs" / "latest" / "config.yaml").read_text()


# -- what a resume may change ---------------------------------------------------------------------------

def test_resume_with_differing_flags_is_refused_naming_them(tmp_path, capsys):
    out = tmp_path / "r"
    fit(_cfg(tmp_path, "r", epochs=2), stop_after=1)
    code, _, err = _cli(capsys, "--out", str(out), "--resume", "--quiet", "--lr", "0.01", "--loss", "mae",
                        "--set", "train.batch_size=32")
    line = _one_line(err)
    assert code == 2
    for flag in ("--lr 0.01", "--loss mae", "--set train.batch_size=32"):
        assert flag in line, line
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("optim:\n  lr: 0.2\n")
    code, _, err = _cli(capsys, "--out", str(out), "--resume", "--quiet", "--config", str(cfg_file))
    assert code == 2 and f"optim.lr=0.2 in --config {cfg_file} (saved: 0.1)" in _one_line(err)
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 1  # untouched


def test_resume_with_more_epochs_continues_exactly_where_the_schedule_allows(tmp_path, capsys):
    flat = {"optim.schedule": "none"}
    fit(_cfg(tmp_path, "full", epochs=3, **flat))
    fit(_cfg(tmp_path, "part", epochs=2, **flat))
    code, _, err = _cli(capsys, "--out", str(tmp_path / "part"), "--resume", "--quiet", "--epochs", "3")
    assert code == 0, err
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "part")
    # cosine spans the run: more epochs would change the rates already used
    fit(_cfg(tmp_path, "cos", epochs=2))
    code, _, err = _cli(capsys, "--out", str(tmp_path / "cos"), "--resume", "--quiet", "--epochs", "3")
    assert code == 2 and "cosine schedule" in _one_line(err)


def test_a_foreign_checkpoint_is_refused(tmp_path):
    a, b = _cfg(tmp_path, "a", epochs=2), _cfg(tmp_path, "b", epochs=2, **{"optim.lr": 0.05})
    fit(a, stop_after=1)
    fit(b, stop_after=1)
    shutil.copy(tmp_path / "b" / "checkpoint.pt", tmp_path / "a" / "checkpoint.pt")
    with pytest.raises(UserError, match="belongs to another run"):
        fit(a, resume=True)


# -- what the run says ----------------------------------------------------------------------------------

@register_method("test-reads-summary", help="(tests) notes summary.json at the start of each epoch")
class _ReadsSummary(Method):
    seen: list = []

    def on_epoch_start(self, ctx):
        s = json.loads(ctx.recorder.path("summary.json").read_text())
        type(self).seen.append((s["status"], s["epochs_run"]))


def test_summary_says_running_from_the_start_and_after_each_epoch(tmp_path):
    _ReadsSummary.seen = []
    s = fit(_cfg(tmp_path, epochs=3, **{"method.name": "test-reads-summary"}))
    assert _ReadsSummary.seen == [("running", 0), ("running", 1), ("running", 2)]
    assert s["status"] == "finished"


def test_seconds_are_this_process_and_the_total(tmp_path):
    """Exact by construction (no clock is compared with another): the resumed total is the first
    process's persisted total, time after its last checkpoint included, plus this process's."""
    cfg = _cfg(tmp_path, epochs=3)
    first = fit(cfg, stop_after=1)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["seconds_total"] == first["seconds_total"] == first["seconds"]
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["seconds"] <= first["seconds_total"]  # the checkpoint came before the final summary
    second = fit(cfg, resume=True, stop_after=1)
    assert second["seconds_total"] == first["seconds_total"] + second["seconds"]
    third = fit(cfg, resume=True)
    assert third["seconds_total"] == second["seconds_total"] + third["seconds"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["seconds_total"] == third["seconds_total"]


@register_method("test-signal-in-epoch-1", help="(tests) sends itself SIGTERM in epoch 1")
class _Sigterm(Method):
    def on_epoch_start(self, ctx):
        if ctx.epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_is_the_same_clean_stop_as_ctrl_c(tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = _cli(capsys, *_small_flags(out, "--epochs", "3", "--quiet", "--method", "test-signal-in-epoch-1"))
    assert code == 143
    line = _one_line(err)
    assert "SIGTERM" in line and "after 1 of 3 epochs" in line and "--resume" in line
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["epochs_run"] == 1
    assert signal.getsignal(signal.SIGTERM) is not None  # the handler was put back


@register_method("test-ctrl-c-in-epoch-0", help="(tests) Ctrl-C in epoch 0")
class _CtrlC(Method):
    def on_epoch_start(self, ctx):
        if ctx.epoch == 0:
            raise KeyboardInterrupt


@register_method("test-ctrl-c-in-epoch-1", help="(tests) Ctrl-C in epoch 1")
class _CtrlC1(Method):
    def on_epoch_start(self, ctx):
        if ctx.epoch == 1:
            raise KeyboardInterrupt


def test_ctrl_c_message_says_what_is_true(tmp_path, capsys, monkeypatch):
    code, _, err = _cli(capsys, *_small_flags(tmp_path / "a", "--epochs", "2", "--quiet",
                                              "--method", "test-ctrl-c-in-epoch-0"))
    assert code == 130 and "nothing to resume" in _one_line(err) and "--resume" not in err
    code, _, err = _cli(capsys, *_small_flags(tmp_path / "b", "--epochs", "3", "--quiet",
                                              "--method", "test-ctrl-c-in-epoch-1", "--set", "train.checkpoint=false"))
    assert code == 130 and "cannot be resumed" in _one_line(err)
    import noisylabels.train.loop as loop

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "prepare_data", interrupted)
    code, _, err = _cli(capsys, *_small_flags(tmp_path / "c", "--epochs", "2", "--quiet"))
    assert code == 130 and "while loading data" in _one_line(err)


def test_progress_off_a_terminal_is_one_line_per_epoch_after_a_loading_line(tmp_path, capsys):
    code, out, err = _cli(capsys, *_small_flags(tmp_path / "r", "--epochs", "2"))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].startswith("loading data (digits)")
    assert [ln.split(":")[0] for ln in lines if ln.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    assert "\r" not in out + err


@pytest.mark.slow
def test_sigterm_to_a_real_cli_run_stops_cleanly_and_resumes_to_the_same_numbers(tmp_path):
    """End to end: SIGTERM to `noisylabels train` mid-run; status interrupted, one line, exit 143;
    `--resume` then finishes with the numbers of an uninterrupted run."""
    import subprocess
    import sys
    import time

    flags = ["--epochs", "8", "--set", "data.train_subset=600", "--set", "train.num_threads=1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    full = subprocess.run([sys.executable, "-m", "noisylabels", "train", "--out", str(tmp_path / "full"), *flags],
                          capture_output=True, text=True, env=env, timeout=300)
    assert full.returncode == 0, full.stderr
    out = tmp_path / "part"
    proc = subprocess.Popen([sys.executable, "-m", "noisylabels", "train", "--out", str(out), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            s = json.loads((out / "summary.json").read_text())
        except (OSError, ValueError):
            s = {}
        if s.get("status") == "running" and s.get("epochs_run", 0) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "SIGTERM" in _one_line(err)
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "interrupted" and 2 <= s["epochs_run"] < 8
    res = subprocess.run([sys.executable, "-m", "noisylabels", "train", "--out", str(out), "--resume", "--quiet"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert _metrics(tmp_path / "full") == _metrics(out)
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


def test_a_cross_fit_into_another_run_is_refused_before_loading_data(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    fit(_cfg(tmp_path, "r", epochs=1))
    import noisylabels.train.crossfit as crossfit

    monkeypatch.setattr(crossfit, "prepare_data", lambda *a, **k: pytest.fail("data loaded"))
    code, _, err = _cli(capsys, *_small_flags(out, "--folds", "2", "--quiet"))
    assert code == 2 and "already holds a run" in _one_line(err)


def test_read_metrics_returns_the_epoch_rows(tmp_path):
    from noisylabels.train import RunRecorder, read_metrics

    rows = [{"epoch": 0, "test_accuracy": 0.5}, {"epoch": 1, "test_accuracy": 0.75}]
    RunRecorder(tmp_path).write_metrics(rows)
    assert read_metrics(tmp_path) == rows
