"""`export`, `detect` and `narl-train` refuse an existing output unless --overwrite, and never write
over an input of the same command, with or without it (issue 19)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from noisylabels.cli import main


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def file_run(tmp_path_factory):
    """A finished run on a flat folder of images with the user's labels CSV (paths, so export works)."""
    root = tmp_path_factory.mktemp("files")
    folder = root / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for i in range(60):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i:02d}.png")
        rows.append(f"{i:02d}.png,{'ab'[i % 2]}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    code = main(["train", "--quiet", "--dataset", "imagefolder", "--data-dir", str(folder), "--set",
                 f"data.options.labels_csv={root / 'labels.csv'}", "--epochs", "1", "--set", "train.num_threads=1",
                 "--out", str(root / "run")])
    assert code == 0
    return root


def _bytes(*paths):
    return [p.read_bytes() for p in paths]


def test_export_refuses_an_existing_file_unless_overwrite(file_run, tmp_path, capsys):
    target = tmp_path / "clean.csv"
    target.write_text("the user's file\n")
    code, _, err = _run(capsys, "export", "--run", file_run / "run", "--drop-issues", "--out", target)
    assert code == 2 and "--overwrite" in _one_line(err)
    assert target.read_text() == "the user's file\n"
    code, _, err = _run(capsys, "export", "--run", file_run / "run", "--drop-issues", "--out", target, "--overwrite")
    assert code == 0, err
    assert target.read_text().startswith("path,label,")


@pytest.mark.parametrize("victim", ["the labels csv", "labels.csv of the run", "suspects.csv of the run"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_export_never_writes_over_an_input(file_run, capsys, victim, overwrite):
    run = file_run / "run"
    target = {"the labels csv": file_run / "labels.csv", "labels.csv of the run": run / "labels.csv",
              "suspects.csv of the run": run / "suspects.csv"}[victim]
    before = _bytes(target, file_run / "labels.csv", run / "labels.csv")
    code, _, err = _run(capsys, "export", "--run", run, "--relabel", "--out", target,
                        *(["--overwrite"] if overwrite else []))
    assert code == 2, err
    _one_line(err)
    assert _bytes(target, file_run / "labels.csv", run / "labels.csv") == before


def _probs(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=30)
    p = np.full((30, 3), 0.1)
    p[np.arange(30), y] = 0.8
    np.save(tmp_path / "p.npy", p)
    return y


@pytest.mark.parametrize("overwrite", [False, True])
def test_detect_never_overwrites_its_own_input(tmp_path, capsys, overwrite):
    y = _probs(tmp_path)
    given = tmp_path / "label_issues.csv"  # the input bears the name of detect's output
    given.write_text("label\n" + "".join(f"{k}\n" for k in y))
    before = given.read_bytes()
    code, _, err = _run(capsys, "detect", "--labels", given, "--pred-probs", tmp_path / "p.npy",
                        *(["--overwrite"] if overwrite else []))
    assert code == 2 and "input" in _one_line(err)
    assert given.read_bytes() == before


def test_detect_refuses_existing_outputs_that_are_not_a_runs_unless_overwrite(tmp_path, capsys):
    y = _probs(tmp_path)
    (tmp_path / "y.csv").write_text("label\n" + "".join(f"{k}\n" for k in y))
    out = tmp_path / "d"
    out.mkdir()
    (out / "joint.png").write_bytes(b"the user's picture")
    code, _, err = _run(capsys, "detect", "--labels", tmp_path / "y.csv", "--pred-probs", tmp_path / "p.npy",
                        "--out", out)
    assert code == 2 and "--overwrite" in _one_line(err)
    assert (out / "joint.png").read_bytes() == b"the user's picture" and not (out / "label_issues.csv").exists()
    code, _, err = _run(capsys, "detect", "--labels", tmp_path / "y.csv", "--pred-probs", tmp_path / "p.npy",
                        "--out", out, "--overwrite")
    assert code == 0, err


def test_detect_rewrites_a_runs_own_records(file_run, capsys):
    """detect --run twice: its outputs are the run's records (in its manifest), no flag needed."""
    for _ in range(2):
        code, _, err = _run(capsys, "detect", "--run", file_run / "run")
        assert code == 0, err


# -- narl-train -------------------------------------------------------------------------------------------

NARL = ["narl-train", "--epochs", "1", "--set", "data.train_subset=200", "--set", "method.meta_interval=2",
        "--set", "train.num_threads=1"]


def test_narl_train_refuses_an_existing_adjuster_and_never_mixes_two_invocations(tmp_path, capsys):
    out = tmp_path / "narl"
    code, _, err = _run(capsys, *NARL, "--out", out, "--task", "symmetric:0.4")
    assert code == 0, err
    first = sorted(p.name for p in out.iterdir() if p.name.startswith("task-"))
    assert first == ["task-0-symmetric-0.4"]
    adjuster = out / "adjuster.pt"
    before = adjuster.read_bytes()
    # another invocation into the same folder: refused, with or without --resume
    code, _, err = _run(capsys, *NARL, "--out", out, "--task", "pair:0.3")
    assert code == 2 and "already holds a run" in _one_line(err)
    code, _, err = _run(capsys, *NARL, "--out", out, "--task", "pair:0.3", "--resume")
    assert code == 2 and "task-0-symmetric-0.4" in _one_line(err)
    # an explicit adjuster file that exists
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"the user's adjuster")
    code, _, err = _run(capsys, *NARL, "--out", tmp_path / "other", "--task", "pair:0.3", "--adjuster-out", mine)
    assert code == 2 and "--overwrite" in _one_line(err)
    assert mine.read_bytes() == b"the user's adjuster" and adjuster.read_bytes() == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("task-")) == first
    # --overwrite replaces the earlier invocation entirely: no task folder of it is left
    (out / "notes.txt").write_text("mine")
    code, _, err = _run(capsys, *NARL, "--out", out, "--task", "pair:0.3", "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("task-")) == ["task-0-pair-0.3"]
    assert (out / "notes.txt").read_text() == "mine" and adjuster.read_bytes() != before
