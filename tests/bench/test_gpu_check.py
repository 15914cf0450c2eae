"""The pure parts of ``benchmarks/gpu_check.py`` and ``benchmarks/gpu_prepare.py`` (the GPU phases
themselves run only on a GPU machine, or in the script's own ``--device cpu --quick`` rehearsal)."""

from __future__ import annotations

import importlib
import io
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
prep = importlib.import_module("gpu_prepare")
gc = importlib.import_module("gpu_check")

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_device_command_fits_the_tool_and_keeps_the_log_and_the_exit_status():
    cmd = prep.device_command()
    assert len(cmd) <= 2000
    assert cmd.startswith("set -o pipefail;")  # the status is the script's (or timeout's 124), not tee's
    assert "export PYTHONPATH=$PWD/src" in cmd  # the project without an install step
    assert "PYTHONUNBUFFERED=1 timeout 520 python3 benchmarks/gpu_check.py --prepared .gpu" in cmd
    assert cmd.endswith("2>&1 | tee $OUT/gpu_check.log")
    assert prep.carry_list() == [".gpu"]
    with pytest.raises(prep.PrepareError, match="at most 2000"):
        prep.device_command(extra="--phases 3 " * 200)


def test_first_line_of_exceptions_with_empty_or_blank_messages():
    assert gc.first_line(ValueError()) == "ValueError"
    assert gc.first_line(RuntimeError("\n  \n")) == "RuntimeError"
    assert gc.first_line(RuntimeError("\n  second\nthird")) == "RuntimeError: second"


def test_summary_is_written_after_every_check_and_marks_a_truncated_run(tmp_path):
    path = tmp_path / "summary.txt"
    s = gc.Summary(path, "torch x, cuda")
    assert "0 PASS, 0 FAIL, 0 SKIP" in path.read_text()
    s.add("pytest", True, "3 passed")
    on_disk = path.read_text()
    assert "PASS  pytest: 3 passed" in on_disk and "1 PASS, 0 FAIL, 0 SKIP" in on_disk
    assert not s.failed()
    s.add("resume", False, "metrics   DIFFERENT\n(5 s)")
    s.add("speed", None, "budget spent")
    lines = path.read_text().splitlines()
    assert lines[1:4] == ["PASS  pytest: 3 passed", "FAIL  resume: metrics DIFFERENT (5 s)", "SKIP  speed: budget spent"]
    assert lines[-1] == "== 1 PASS, 1 FAIL, 1 SKIP =="
    assert s.failed()
    t = gc.Summary(tmp_path / "t.txt", "x")
    t.add("pytest", True, "ok")
    t.note = "stopped by SIGTERM after 9 s"
    t.write()
    assert t.failed() and "INCOMPLETE  stopped by SIGTERM after 9 s" in (tmp_path / "t.txt").read_text()
    assert path.read_text() == s.block()


def _jpeg(value: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), value, dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _fake_cifar_zip(path: Path, split: str, per_class: int) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("cifar10/", b"")
        for c, name in enumerate(CLASSES):
            for k in range(per_class):
                z.writestr(f"cifar10/{split}/{name}/{k:04d}.jpg", _jpeg(10 * c + k))
        z.writestr(f"cifar10/{split}/README.txt", b"not an image")


def test_subset_zip_keeps_names_and_bytes_balanced_and_seeded_and_the_loader_reads_it(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _fake_cifar_zip(src / "cifar10-train-jpeg.zip", "train", 5)
    _fake_cifar_zip(src / "cifar10-test-jpeg.zip", "test", 3)
    out = tmp_path / "out"
    out.mkdir()
    assert prep.subset_zip(src / "cifar10-train-jpeg.zip", out / "cifar10-train-jpeg.zip", split="train",
                           per_class=2, seed=0) == 20
    assert prep.subset_zip(src / "cifar10-test-jpeg.zip", out / "cifar10-test-jpeg.zip", split="test",
                           per_class=1, seed=0) == 10
    with zipfile.ZipFile(src / "cifar10-train-jpeg.zip") as a, zipfile.ZipFile(out / "cifar10-train-jpeg.zip") as b:
        names = b.namelist()
        assert all(b.read(n) == a.read(n) for n in names)
    per = {c: sum(n.split("/")[2] == c for n in names) for c in CLASSES}
    assert set(per.values()) == {2}
    again = tmp_path / "again.zip"
    prep.subset_zip(src / "cifar10-train-jpeg.zip", again, split="train", per_class=2, seed=0)
    assert zipfile.ZipFile(again).namelist() == names
    others = [zipfile.ZipFile(prep.subset_zip(src / "cifar10-train-jpeg.zip", tmp_path / f"s{s}.zip", split="train",
                                              per_class=2, seed=s) and tmp_path / f"s{s}.zip").namelist()
              for s in (1, 2, 3)]
    assert any(o != names for o in others)
    with pytest.raises(prep.PrepareError, match="fewer than 6 train images"):
        prep.subset_zip(src / "cifar10-train-jpeg.zip", tmp_path / "x.zip", split="train", per_class=6, seed=0)
    from noisylabels.data import create_dataset

    raw = create_dataset("cifar10", data_dir=out, cache_dir=tmp_path / "cache")
    assert raw.x_train.shape == (20, 32, 32, 3) and raw.x_test.shape == (10, 32, 32, 3)
    assert np.bincount(raw.y_train).tolist() == [2] * 10 and np.bincount(raw.y_test).tolist() == [1] * 10


def _wheel(path: Path, package: str) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{package}/__init__.py", "CARRIED = True\n")


def test_only_wheels_of_missing_packages_are_unpacked(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels / "nl_carried_probe-1.0-py3-none-any.whl", "nl_carried_probe")
    _wheel(wheels / "numpy-0.1-py3-none-any.whl", "numpy")  # installed here: must not shadow it
    site = tmp_path / "site"
    assert prep.install_missing_wheels(wheels, site) == ["nl-carried-probe 1.0"]
    assert not (site / "numpy").exists()
    assert sys.path[0] == str(site) and os.environ["PYTHONPATH"] == os.pathsep.join([str(site), "/elsewhere"])
    mod = importlib.import_module("nl_carried_probe")
    assert mod.CARRIED
    sys.modules.pop("nl_carried_probe", None)


def test_prepare_refuses_a_folder_it_did_not_write(tmp_path):
    mine = tmp_path / prep.PREPARED / "notes.txt"
    mine.parent.mkdir()
    mine.write_text("the user's")
    with pytest.raises(prep.PrepareError, match="not written by --prepare"):
        prep.prepare(tmp_path, data_dir=str(tmp_path))
    assert mine.read_text() == "the user's"
    mine.unlink()
    (mine.parent / "out").mkdir()
    (mine.parent / "out" / "gpu_check_summary.txt").write_text("a check run without $OUT")
    with pytest.raises(prep.PrepareError, match="no cifar10-train-jpeg.zip"):  # ours: on to the data
        prep.prepare(tmp_path, data_dir=str(tmp_path))


def test_jvp_path_tells_no_jvp_from_a_graph_walk_and_names_fallback_nodes():
    assert gc.jvp_path({}, 0) == "no JVP (no meta-gradient step)"
    assert gc.jvp_path({}, 4) == "graph walk (4 graphs, every node had a rule)"
    assert gc.jvp_path({"FooBackward0": 2, "BarBackward0": 1}, 3) == \
        "torch.func.jvp fallback: BarBackward0 x1, FooBackward0 x2"


def test_readme_shows_the_device_command_the_script_prints():
    readme = (BENCH.parent / "README.md").read_text()
    assert prep.device_command() in readme


@pytest.mark.parametrize("name, extra", [
    ("dividemix", {"method.warmup_epochs": 1}),  # epoch 2 divides and trains by MixMatch
    ("promix", {"method.warmup_epochs": 1, "method.rampup_epochs": 1}),  # epoch 2 selects, trains both heads
    ("erm", {}),
])
def test_two_epoch_methods_run_past_their_warm_up(name, extra, tmp_path):
    assert gc.method_setup(name, tmp_path) == extra
