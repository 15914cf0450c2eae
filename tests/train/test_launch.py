"""``noisylabels train --nproc N`` and the bench's data-parallel cells start their ranks through
``train.launch``: a rank's user error ends the run with one line and exit status 2, never with
torchrun's traceback; a rank that fails only because another left stays silent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from noisylabels.train import launch as L

ROOT = Path(__file__).resolve().parents[2]


def _as_rank(monkeypatch, folder: Path, rank: int) -> None:
    monkeypatch.setenv(L.RANK_ERRORS_ENV, str(folder))
    monkeypatch.setenv("RANK", str(rank))


def test_outside_a_launch_a_rank_prints_its_own_error(monkeypatch):
    monkeypatch.delenv(L.RANK_ERRORS_ENV, raising=False)
    assert L.report_rank_error("bad input") is False and L.another_rank_failed() is False
    monkeypatch.setenv(L.RANK_ERRORS_ENV, "/nonexistent")
    monkeypatch.delenv("RANK", raising=False)  # the launcher process itself is no rank
    assert L.launched_rank() is None


def test_the_root_cause_is_rank_0s_user_error_else_the_first_reported(tmp_path, monkeypatch):
    _as_rank(monkeypatch, tmp_path, 1)
    assert L.report_rank_error("rank 1 line\nsecond line")
    assert not L.another_rank_failed()  # its own report is no other rank's
    cause = L._root_cause(tmp_path)
    assert cause["message"] == "rank 1 line" and cause["rank"] == 1 and cause["user"]
    _as_rank(monkeypatch, tmp_path, 2)
    assert L.another_rank_failed()  # rank 2 now knows its failure is a consequence
    time.sleep(0.01)
    L.report_rank_error("rank 2, later", user=False, traceback="Traceback ...")
    assert L._root_cause(tmp_path)["rank"] == 1  # a user error before any other failure
    _as_rank(monkeypatch, tmp_path, 3)
    time.sleep(0.01)
    L.report_rank_error("rank 3, later")
    assert L._root_cause(tmp_path)["rank"] == 1  # the first written
    _as_rank(monkeypatch, tmp_path, 0)
    time.sleep(0.01)
    L.report_rank_error("rank 0's run folder")  # rank 0's names the run's own --out: preferred
    assert L._root_cause(tmp_path)["message"] == "rank 0's run folder"


def test_nothing_reported_means_no_root_cause(tmp_path):
    assert L._root_cause(tmp_path) is None


@pytest.mark.slow
def test_a_user_error_during_training_on_two_processes_is_one_line_and_exit_2(tmp_path):
    """A learning rate of 1e30 makes the loss non-finite in the first epoch, on both ranks."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    env.pop(L.RANK_ERRORS_ENV, None)
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "noisylabels", "train", "--nproc", "2", "--quiet", "--epochs", "2",
                          "--set", "data.train_subset=300", "--set", "train.num_threads=1", "--lr", "1e30",
                          "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "ChildFailedError" not in res.stderr, res.stderr[-3000:]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("noisylabels: error: non-finite loss") and str(out) in lines[0]  # rank 0's line
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"


@pytest.mark.slow
def test_a_rank_failing_because_another_left_stays_silent(tmp_path, monkeypatch, capfd):
    """Rank 1 raises a user error; rank 0, waiting for it in an all-reduce, fails only as a consequence."""
    from noisylabels.bench.rank import run_data_parallel
    from noisylabels.errors import UserError

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with pytest.raises(UserError, match="^rank 1 found a bad input$"):
        run_data_parallel("tests.bench._bench_jobs:user_error_on_rank_1", {}, 1, nproc=2)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "rank 1 found" not in err, err[-3000:]  # the caller reports it, once


@pytest.mark.slow
def test_through_the_cli_only_the_failing_ranks_line_is_reported(monkeypatch, capfd):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    import signal

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    env = dict(os.environ)
    res = L.launch(["tests.train._rank_fails"], nproc=2)
    err = capfd.readouterr().err
    assert {s: signal.getsignal(s) for s in handlers} == handlers and dict(os.environ) == env  # the agent's changes undone
    assert (res.returncode, res.error) == (2, "rank 1 found a bad input")
    assert "Traceback" not in err and "rank 1 found" not in err, err[-3000:]  # the launcher's caller prints it
