"""Nothing a user owns is lost (issue 19): a folder is a run only if this library marked it; replacing
a run removes only its manifest (never ``.``, the home folder, a git project, a symlink's target);
a run that fails on a mistake keeps the previous one; one writer per run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from noisylabels.cli import main
from noisylabels.train.rundir import LOCK, MARKER, read_marker

SMALL = ["--set", "data.train_subset=300", "--epochs", "1", "--quiet"]


def _train(capsys, *argv):
    code = main(["train", *argv])
    _, err = capsys.readouterr()
    return code, err


def _one_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _snapshot(root):
    """Every path under ``root`` with its bytes (files) or ``None`` (folders), links not followed (the
    lock file, whose content is the pid of its last holder, left out)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + [f for f in filenames if f != LOCK]:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = None if os.path.isdir(p) and not os.path.islink(p) else (
                os.readlink(p) if os.path.islink(p) else open(p, "rb").read())
    return out


def _fake_project(root):
    """A git project whose files include every name the old rule took for a run."""
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "src").mkdir()
    (root / "src" / "main.py").write_text("print('mine')\n")
    (root / "paper.tex").write_text("\\documentclass{article}\n")
    for name in ("config.yaml", "summary.json", "metrics.jsonl", "checkpoint.pt", "error.txt"):
        (root / name).write_text("the user's own file\n")
    return _snapshot(root)


# -- what is a run, and what replacing one removes -------------------------------------------------

def test_out_dot_overwrite_in_a_git_project_deletes_nothing(tmp_path, capsys, monkeypatch):
    proj = tmp_path / "proj"
    before = _fake_project(proj)
    monkeypatch.chdir(proj)
    code, err = _train(capsys, "--out", ".", "--overwrite", *SMALL)
    assert code == 2 and "current folder" in _one_line(err)
    code, err = _train(capsys, "--out", str(proj), "--overwrite", *SMALL)  # the same folder by another name
    assert code == 2 and "current folder" in _one_line(err)
    monkeypatch.chdir(tmp_path)
    code, err = _train(capsys, "--out", str(proj), "--overwrite", *SMALL)
    assert code == 2 and ".git" in _one_line(err)
    assert _snapshot(proj) == before


def test_home_and_root_are_never_run_directories(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "summary.json").write_text("{}")
    monkeypatch.setenv("HOME", str(home))
    code, err = _train(capsys, "--out", str(home), "--overwrite", *SMALL)
    assert code == 2 and "home folder" in _one_line(err)
    code, err = _train(capsys, "--out", "/", "--overwrite", *SMALL)
    assert code == 2 and "root" in _one_line(err)
    assert (home / "summary.json").read_text() == "{}"


def test_an_unmarked_folder_with_run_file_names_is_never_cleared_not_even_runs_latest(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    latest = tmp_path / "runs" / "latest"
    latest.mkdir(parents=True)
    (latest / "config.yaml").write_text("mine\n")
    (latest / "thesis.tex").write_text("precious\n")
    before = _snapshot(latest)
    code, err = _train(capsys, *SMALL)  # the default --out, which replaces the latest run
    line = _one_line(err)
    assert code == 2 and "older noisylabels" in line and "remove it yourself" in line
    code, err = _train(capsys, "--out", str(latest), "--overwrite", *SMALL)
    assert code == 2 and "older noisylabels" in _one_line(err)
    assert _snapshot(latest) == before


def test_overwrite_removes_only_the_manifest_and_never_follows_symlinks(tmp_path, capsys):
    out = tmp_path / "r"
    assert _train(capsys, "--out", str(out), *SMALL)[0] == 0
    marker = read_marker(out)
    assert marker["library"] == "noisylabels" and marker["run_id"] and "summary.json" in marker["manifest"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (outside / "dir").mkdir()
    (outside / "dir" / "inner.txt").write_text("inner")
    # the user's files beside the run, a link to a folder, and a run file replaced by a link
    (out / "notes.txt").write_text("mine")
    (out / "mydata").mkdir()
    (out / "mydata" / "x.txt").write_text("mine too")
    (out / "linked").symlink_to(outside / "dir", target_is_directory=True)
    (out / "suspects.csv").unlink()
    (out / "suspects.csv").symlink_to(outside / "keep.txt")
    code, err = _train(capsys, "--out", str(out), "--overwrite", *SMALL)
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine" and (out / "mydata" / "x.txt").read_text() == "mine too"
    assert (out / "linked").is_symlink() and (outside / "dir" / "inner.txt").read_text() == "inner"
    assert (outside / "keep.txt").read_text() == "keep"  # the link was removed, not its target
    assert not (out / "suspects.csv").is_symlink() and (out / "suspects.csv").read_text().startswith("rank,")
    assert read_marker(out)["run_id"] != marker["run_id"]


def test_a_folder_the_run_marked_is_reusable_after_a_failure_before_any_record(tmp_path, capsys):
    # a bad path inside the labels CSV is found only when the data are read, after the folder is marked
    # (a missing weight file is refused earlier, before the folder is made)
    out = tmp_path / "r"
    folder = _tiny_images(tmp_path)
    code, _ = _train(capsys, "--out", str(out), *SMALL, "--dataset", "imagefolder", "--data-dir", str(folder),
                     "--set", f"data.options.labels_csv={tmp_path / 'bad.csv'}")
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, LOCK])
    assert _train(capsys, "--out", str(out), *SMALL)[0] == 0  # no --overwrite needed: it held no run


def test_overwrite_of_a_cross_fit_removes_its_folds_and_nothing_else(tmp_path, capsys):
    out = tmp_path / "cf"
    code = main(["train", "--out", str(out), "--folds", "2", *SMALL])
    assert code == 0, capsys.readouterr().err
    assert {"fold-0", "fold-1"} <= set(read_marker(out)["manifest"])
    (out / "fold-0" / "mine.txt").write_text("mine")
    code, err = _train(capsys, "--out", str(out), "--overwrite", *SMALL)
    assert code == 0, err
    assert (out / "fold-0" / "mine.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "fold-0").iterdir()) == ["mine.txt"]
    assert not (out / "fold-1").exists() and not (out / "folds.npz").exists()


# -- a failed run keeps the previous one ------------------------------------------------------------------

def _tiny_images(root):
    from PIL import Image

    folder = root / "imgs"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i:02d}.png")
        rows.append(f"{i:02d}.png,{i % 2}")
    rows.append("missing.png,0")  # a path that is not there
    (root / "bad.csv").write_text("\n".join(rows) + "\n")
    return folder


MISTAKES = {
    "init checkpoint": ["--set", "model.init_checkpoint=/no/such/init.pt"],
    "adjuster file": ["--method", "t-narl", "--set", "method.adjuster=/no/such/adjuster.pt"],
    "noise option": ["--set", "noise.options.no_such_option=1"],
    "csv path": "csv",
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
@pytest.mark.parametrize("where", ["runs/latest", "--overwrite"])
def test_a_run_failing_on_a_mistake_keeps_the_previous_run(tmp_path, capsys, monkeypatch, mistake, where):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / "latest" if where == "runs/latest" else tmp_path / "r"
    flags = [] if where == "runs/latest" else ["--out", str(out)]
    assert _train(capsys, *flags, *SMALL)[0] == 0
    before = _snapshot(out)
    bad = MISTAKES[mistake]
    if bad == "csv":
        folder = _tiny_images(tmp_path)
        bad = ["--dataset", "imagefolder", "--data-dir", str(folder), "--set",
               f"data.options.labels_csv={tmp_path / 'bad.csv'}"]
    code, err = _train(capsys, *flags, *(["--overwrite"] if where == "--overwrite" else []), *SMALL, *bad)
    assert code == 2, err
    _one_line(err)
    assert _snapshot(out) == before


# -- one writer per run directory ---------------------------------------------------------------------------

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)  # as noisylabels does: a shorter pid must not leave the last holder's digits
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_writer_is_refused_naming_the_holders_pid(tmp_path, capsys):
    out = tmp_path / "r"
    assert _train(capsys, "--out", str(out), *SMALL)[0] == 0
    before = _snapshot(out)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out / LOCK)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for extra in ([], ["--overwrite"]):
            code, err = _train(capsys, "--out", str(out), *SMALL, *extra)
            line = _one_line(err)
            assert code == 2 and "in use by another noisylabels process" in line and f"pid {holder.pid}" in line
        code, err = _train(capsys, "--out", str(out), "--resume", "--quiet")
        assert code == 2 and f"pid {holder.pid}" in _one_line(err)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert _snapshot(out) == before
    assert _train(capsys, "--out", str(out), *SMALL, "--overwrite")[0] == 0  # released with the process


def test_the_lock_is_held_while_the_run_trains(tmp_path):
    """A run in progress holds the lock: another process cannot take it (checked from inside an epoch)."""
    from noisylabels.methods import Method, register_method
    from noisylabels.train import fit

    from tests.helpers import run_cfg

    seen = []

    @register_method("test-probes-lock", help="(tests) tries the run's lock from another process")
    class _Probe(Method):
        def on_epoch_start(self, ctx):
            probe = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\n"
                     "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
                     "except BlockingIOError:\n    print('held')\n")
            res = subprocess.run([sys.executable, "-c", probe, str(ctx.recorder.out / LOCK)], capture_output=True,
                                 text=True, timeout=60)
            seen.append((res.stdout.strip(), (ctx.recorder.out / LOCK).read_text().strip()))

    fit(run_cfg(tmp_path, "r", epochs=1, **{"data.train_subset": 300, "method.name": "test-probes-lock"}))
    assert seen == [("held", str(os.getpid()))]


def test_the_marker_names_the_library_and_a_run_id(tmp_path, capsys):
    out = tmp_path / "r"
    assert _train(capsys, "--out", str(out), *SMALL)[0] == 0
    m = json.loads((out / MARKER).read_text())
    assert m["library"] == "noisylabels" and len(m["run_id"]) == 32
    # every file the run wrote is in the manifest, and nothing else is
    written = {p.name for p in out.iterdir()} - {MARKER, LOCK}
    assert written == {n for n in m["manifest"] if (out / n).exists()}


# -- a resume trains on the data it started with -------------------------------------------------------------

def _class_folders(root, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(30):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / c / f"{i:02d}.png")
    return root


def test_resume_on_other_data_is_refused_and_a_moved_copy_resumes(tmp_path, capsys):
    import shutil

    a, b = _class_folders(tmp_path / "A", 0), _class_folders(tmp_path / "B", 1)  # same names, other images
    out = tmp_path / "r"
    flags = ["--dataset", "imagefolder", "--quiet", "--set", "data.cache_dir=" + str(tmp_path / "cache")]
    assert _train(capsys, "--out", str(out), "--data-dir", str(a), "--epochs", "1", *flags)[0] == 0
    before = _snapshot(out)
    code, err = _train(capsys, "--out", str(out), "--resume", "--data-dir", str(b), "--quiet")
    line = _one_line(err)
    assert code == 2 and "trained on other data" in line, line
    assert _snapshot(out) == before  # pred_probs.npy, suspects.csv, summary.json untouched
    shutil.copytree(a, tmp_path / "A-moved")
    code, err = _train(capsys, "--out", str(out), "--resume", "--data-dir", str(tmp_path / "A-moved"), "--quiet")
    assert code == 0, err


def test_a_checkpoint_without_a_data_fingerprint_is_refused(tmp_path, capsys):
    import torch

    out = tmp_path / "r"
    assert _train(capsys, "--out", str(out), *SMALL[:2], "--epochs", "2", "--quiet")[0] == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    del state["data_fingerprint"]  # as an older noisylabels wrote it
    torch.save(state, out / "checkpoint.pt")
    code, err = _train(capsys, "--out", str(out), "--resume", "--quiet")
    assert code == 2 and "no data fingerprint" in _one_line(err)


@pytest.mark.slow
def test_two_train_processes_started_together_one_runs_and_one_is_refused(tmp_path):
    """End to end: two `noisylabels train` into one --out; one finishes, the other exits 2 naming its pid."""
    out = tmp_path / "r"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-m", "noisylabels", "train", "--out", str(out), "--set", "data.train_subset=300",
            "--epochs", "3", "--quiet", "--set", "train.num_threads=1"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [(p.pid, *p.communicate(timeout=300), p.returncode) for p in procs]
    codes = sorted(r[3] for r in results)
    assert codes == [0, 2], results
    (winner,) = [r for r in results if r[3] == 0]
    (loser,) = [r for r in results if r[3] == 2]
    assert f"pid {winner[0]}" in _one_line(loser[2]) and "Traceback" not in loser[2]
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "finished" and s["epochs_run"] == 3


def test_detect_rewrites_the_records_a_cross_fit_wrote(tmp_path, capsys):
    # train --folds writes label_issues.csv and joint.png; `detect --run` replaces them as the run's own
    out = tmp_path / "cf"
    assert main(["train", "--out", str(out), "--folds", "2", *SMALL]) == 0
    assert {"label_issues.csv", "joint.png"} <= set(read_marker(out)["manifest"])
    code = main(["detect", "--run", str(out)])
    assert code == 0, capsys.readouterr().err
