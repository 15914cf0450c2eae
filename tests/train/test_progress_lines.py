"""Off a terminal (a log, a pipe) progress is one plain line per epoch / fold / task-epoch / run,
never a carriage-return bar; on a terminal a bar."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from noisylabels.cli import main
from noisylabels.config import resolve_config
from noisylabels.progress import progress_mode

TESTS = Path(__file__).resolve().parents[1]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_mode_follows_the_stream():
    assert progress_mode(True, stream=io.StringIO()) == "lines"
    assert progress_mode(True, stream=_Tty()) == "bar"
    assert progress_mode("lines", stream=_Tty()) == "lines"
    assert progress_mode(False, stream=_Tty()) is None and progress_mode(None) is None
    closed = io.StringIO()
    closed.close()
    assert progress_mode(True, stream=closed) == "lines"


def _small(tmp_path, name, *extra):
    return ["--out", str(tmp_path / name), "--set", "data.train_subset=300", "--set", "model.hidden=[16]", *extra]


def test_fit_off_a_terminal_prints_one_line_per_epoch_and_no_bar(tmp_path, capsys, one_thread):
    from noisylabels.train import fit

    cfg = resolve_config(overrides={"out": str(tmp_path / "r"), "train.epochs": 2, "data.train_subset": 300,
                                    "model.hidden": [16], "train.checkpoint": False})
    assert cfg["train"]["progress"] is True  # the default: a bar on a terminal
    fit(cfg)  # pytest's captured stderr is not a terminal
    out, err = capsys.readouterr()
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert "\r" not in err and "\r" not in out and "it/s" not in err


def test_train_folds_off_a_terminal_reports_every_fold_and_epoch(tmp_path, capsys, one_thread):
    code = main(["train", "--folds", "2", "--epochs", "2", *_small(tmp_path, "cf")])
    out, err = capsys.readouterr()
    assert code == 0, err
    folds = [line.split(":")[0] for line in out.splitlines() if line.startswith("fold ")]
    assert folds == ["fold 1/2", "fold 2/2"]
    assert sum(line.startswith("epoch ") for line in out.splitlines()) == 4  # 2 folds x 2 epochs
    assert "\r" not in err


def test_narl_train_off_a_terminal_prints_one_line_per_epoch_with_every_task(tmp_path, capsys, one_thread):
    code = main(["narl-train", "--task", "symmetric:0.2", "--task", "pair:0.2", "--epochs", "2",
                 *_small(tmp_path, "narl", "--set", "data.meta_size=50")])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all("task-0-symmetric-0.2" in line and "task-1-pair-0.2" in line for line in lines)
    assert "\r" not in err


def test_bench_off_a_terminal_prints_one_line_per_run(tmp_path, capsys, one_thread):
    from noisylabels.bench import run_suite

    run_suite(TESTS / "bench" / "suites" / "one.yaml", out=tmp_path / "b", executor="inline")
    out, err = capsys.readouterr()
    assert "one: run 1/1 done (CE seed 0: test accuracy" in out, out
    assert "\r" not in err and "run/s" not in err


@pytest.mark.parametrize("quiet", [True, False])
def test_quiet_prints_no_epoch_lines(tmp_path, capsys, quiet, one_thread):
    code = main(["train", "--epochs", "1", *_small(tmp_path, "q"), *(["--quiet"] if quiet else [])])
    out, _ = capsys.readouterr()
    assert code == 0
    assert any(line.startswith("epoch 1/1") for line in out.splitlines()) is not quiet
