"""The bench's Ray executor: same table as the local executor, records returned to the driver,
a failed run retried once and then reported, Ctrl-C cancels outstanding tasks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from noisylabels.bench import run_suite
from noisylabels.bench.pool import Job
from noisylabels.bench.ray_executor import RunResources, collect_records, run_resources, write_records
from noisylabels.config import resolve_config
from noisylabels.errors import UserError

TESTS = Path(__file__).resolve().parents[1]  # tests/ (the bench fixtures are in tests/bench)
SUITES = TESTS / "bench" / "suites"
SRC = TESTS.parent / "src"
ROOT = TESTS.parent


def test_ray_executor_without_ray_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UserError, match=r'--executor ray needs Ray: pip install "noisylabels\[ray\]"'):
        run_suite(SUITES / "one.yaml", out=tmp_path / "o", executor="ray", verbose=False)


def test_records_travel_without_model_files_and_stay_inside_the_run(tmp_path):
    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    for name, data in (("summary.json", b"{}"), ("metrics.jsonl", b"1\n"), ("checkpoint.pt", b"x"),
                       ("best_model.pt", b"x"), ("sub/plot.png", b"png"), (".tmp", b"x")):
        (run / name).write_bytes(data)
    files = collect_records(run)
    assert sorted(files) == ["metrics.jsonl", "sub/plot.png", "summary.json"]
    write_records(tmp_path / "dest", files)
    assert (tmp_path / "dest" / "sub" / "plot.png").read_bytes() == b"png"
    with pytest.raises(UserError, match="outside its run folder"):
        write_records(tmp_path / "dest", {"../evil.txt": b"x"})
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("given,expect", [
    ({}, RunResources(num_cpus=1.0, num_gpus=0.0, nproc=1, threads=1)),                       # today's default
    ({"gpus_per_run": 0.25, "cpus_per_run": 4}, RunResources(4.0, 0.25, 1, 4)),               # 4 runs share a GPU
    ({"gpus_per_run": 1}, RunResources(1.0, 1.0, 1, 1)),
    ({"gpus_per_run": 4}, RunResources(4.0, 4.0, 4, 1)),                                      # one run, 4 GPUs, 4 ranks
    ({"gpus_per_run": 4.0, "cpus_per_run": 10}, RunResources(10.0, 4.0, 4, 2)),               # floor(10 / 4) threads
    ({"gpus_per_run": 2, "nproc_per_run": 2}, RunResources(2.0, 2.0, 2, 1)),
    ({"nproc_per_run": 2, "cpus_per_run": 2}, RunResources(2.0, 0.0, 2, 1)),                  # CPU ranks (gloo)
    ({"nproc_per_run": 3}, RunResources(3.0, 0.0, 3, 1)),
])
def test_gpus_per_run_maps_to_the_tasks_resources_and_the_runs_processes(given, expect):
    assert run_resources(**given) == expect


@pytest.mark.parametrize("given,message", [
    ({"gpus_per_run": 1.5}, r"--gpus-per-run 1\.5: a fraction \(at most 1\) shares one GPU .* give an integer"),
    ({"gpus_per_run": 4, "nproc_per_run": 2}, "one whole GPU per process: give --gpus-per-run 2"),
    ({"gpus_per_run": 4, "nproc_per_run": 1}, "one whole GPU per process: give --gpus-per-run 1"),
    ({"gpus_per_run": 0.5, "nproc_per_run": 2}, "one whole GPU per process"),
    ({"gpus_per_run": 4, "cpus_per_run": 2}, "fewer than the run's 4 processes: each process .* at least one CPU"),
    ({"nproc_per_run": 0}, "--nproc-per-run must be an integer >= 1"),
])
def test_unusable_gpu_and_process_counts_are_one_line_errors(given, message):
    with pytest.raises(UserError, match=message):
        run_resources(**given)


@pytest.mark.parametrize("argv,message", [
    (["--executor", "ray", "--gpus-per-run", "2.5", "--set", "device=cuda"], "--gpus-per-run 2.5: a fraction"),
    (["--executor", "ray", "--nproc-per-run", "2", "--set", "train.batch_size=63"],
     "cell 0___CE: train.batch_size 63 is the global batch of the run's 2 processes and must be divisible by 2"),
    (["--nproc-per-run", "2"], "--nproc-per-run apply to --executor ray only"),
])
def test_data_parallel_cells_are_checked_before_ray_starts(tmp_path, monkeypatch, capsys, argv, message):
    from noisylabels.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # nothing reaches Ray
    assert main(["bench", str(SUITES / "tiny.yaml"), "--out", str(tmp_path / "b"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "b").exists()


def test_a_task_takes_its_weight_files_along_and_a_pretraining_returns_its_backbone(tmp_path):
    """Without Ray (the task function itself): the weight file travels as bytes, the run loads it
    from the task's folder, the returned config.yaml names the driver's path; a pretraining task
    returns its backbone.pt, no other ``.pt``."""
    import torch
    import yaml

    from noisylabels.bench.ray_executor import _ray_task
    from noisylabels.config import PRETRAIN_DEFAULTS

    fn = "noisylabels.bench.harness:_run_cell"
    quick = {"data.name": "digits", "data.train_subset": 200, "model.name": "mlp", "model.hidden": [32],
             "train.epochs": 1, "train.progress": False, "train.checkpoint": False}
    pre = resolve_config(overrides={**quick, "train.batch_size": 64, "method.knn_k": 5,
                                    "data.strong_augment": {"name": "simclr", "hflip": False}}, base=PRETRAIN_DEFAULTS)
    res = _ray_task(fn, pre, 1)
    assert res["status"] == "ok", res
    assert [n for n in res["files"] if n.endswith(".pt")] == ["backbone.pt"]
    blob = res["files"]["backbone.pt"]
    driver_path = str(tmp_path / "not-on-this-node" / "backbone.pt")  # the driver's path: absent here
    cell = resolve_config(overrides={**quick, "model.init_checkpoint": driver_path})
    res = _ray_task(fn, cell, 1, 1, ("model.init_checkpoint",), blob)
    assert res["status"] == "ok", res
    assert yaml.safe_load(res["files"]["config.yaml"])["model"]["init_checkpoint"] == driver_path
    assert not Path(driver_path).exists()  # the run read the shipped copy
    sd = torch.load(__import__("io").BytesIO(blob), weights_only=True)
    assert sd and not any(k.startswith("classifier") for k in sd)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    path = os.pathsep.join([str(SRC), str(ROOT), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "NOISYLABELS_CACHE": os.environ["NOISYLABELS_CACHE"]}})
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_gives_the_local_executors_table_and_skips_finished_runs(local_ray, tmp_path, capsys):
    local = run_suite(SUITES / "tiny.yaml", out=tmp_path / "local", workers=2, verbose=False)
    remote = run_suite(SUITES / "tiny.yaml", out=tmp_path / "ray", executor="ray", cpus_per_run=1)
    text = capsys.readouterr().out
    assert "4 runs, 0 already finished, 4 to run as Ray tasks" in text
    assert remote["failed"] == [] and remote["markdown"] == local["markdown"]
    for run in (tmp_path / "ray").glob("*/seed-*"):  # records came back; model files stayed behind
        names = {p.name for p in run.iterdir()}
        assert {"summary.json", "metrics.jsonl", "config.yaml", "suspects.csv", "labels.csv"} <= names
        assert not any(n.endswith(".pt") for n in names)
    local_dirs = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").glob("*/seed-*"))
    assert local_dirs == sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").glob("*/seed-*"))
    again = run_suite(SUITES / "tiny.yaml", out=tmp_path / "ray", executor="ray")
    assert "4 runs, 4 already finished, 0 to run" in capsys.readouterr().out
    assert again["markdown"] == local["markdown"]


@pytest.mark.slow
def test_ray_retries_a_failed_run_once_then_reports_it(local_ray, tmp_path, capsys):
    from noisylabels.bench.ray_executor import run_ray

    cfg = resolve_config(overrides={"train.epochs": 1, "train.progress": False, "out": str(tmp_path / "flaky"),
                                    "data.options": {"flaky_marker": str(tmp_path / "marker")}})
    got = {}
    run_ray([Job(0, "tests.bench._bench_jobs:flaky_run", (cfg,))], lambda job, s, v: got.__setitem__(job.id, (s, v, job.attempts)))
    status, summary, attempts = got[0]
    assert status == "ok" and summary["status"] == "finished" and attempts == 2
    assert "flaky failure on the first attempt" in capsys.readouterr().out
    assert (tmp_path / "flaky" / "summary.json").is_file()

    res = run_suite(SUITES / "broken.yaml", out=tmp_path / "broken", executor="ray")
    text = capsys.readouterr().out
    assert sorted(s for _, s, _ in res["failed"]) == [0, 1]
    assert all("non-finite loss" in e and "(failed 2 times)" in e for _, _, e in res["failed"])
    assert text.count("retrying once") == 2 and "| nope | err |" in res["markdown"]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_ctrl_c_cancels_outstanding_ray_tasks(tmp_path):
    pytest.importorskip("ray")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen([sys.executable, "-m", "noisylabels", "bench", str(SUITES / "slow.yaml"),
                               "--executor", "ray", "--out", str(tmp_path / "b")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def task_pids():
        pids = []
        for p in Path("/proc").iterdir():
            try:
                if p.name.isdigit() and b"ray::_ray_task" in (p / "cmdline").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                pass
        return pids

    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (tmp_path / "b" / "short").exists():
            time.sleep(0.5)  # the two short runs came back; the long ones are running
        assert (tmp_path / "b" / "short").exists()
        running = []
        while time.monotonic() < deadline and not running:  # polled, not a fixed sleep: a loaded machine is slower
            running = task_pids()
            time.sleep(0.2)
        assert running, "the long runs are executing as Ray tasks"
        driver.send_signal(signal.SIGINT)
        _, err = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130 and "bench interrupted (Ctrl-C)" in err
    assert len(list((tmp_path / "b").glob("short/seed-*/summary.json"))) == 2
    assert not list((tmp_path / "b").glob("long/seed-*/summary.json"))
    gone = time.monotonic() + 60  # cancelled tasks exit soon; how soon depends on the machine's load
    while time.monotonic() < gone and [p for p in running if Path(f"/proc/{p}").exists()]:
        time.sleep(0.2)
    assert not [p for p in running if Path(f"/proc/{p}").exists()]


@pytest.mark.slow
def test_a_data_parallel_cell_is_the_run_train_nproc_trains(local_ray, tmp_path, capsys):
    """``--nproc-per-run 2`` on CPUs (the path of ``--gpus-per-run 2``, with gloo): the records Ray
    returns are byte-for-byte those of ``noisylabels train --nproc 2`` with the same config."""
    from noisylabels.bench.ray_executor import run_ray

    got = {}
    run_ray([Job(0, "tests.bench._bench_jobs:world", ({"out": str(tmp_path / "w")},))],
            lambda job, s, v: got.__setitem__(job.id, (s, v)), nproc_per_run=2, cpus_per_run=2)
    assert got[0] == ("ok", {"world_size": 2, "rank": 0, "threads": 1})  # rank 0 of 2, one thread each

    res = run_suite(SUITES / "tiny.yaml", out=tmp_path / "ray", executor="ray", nproc_per_run=2, max_seeds=1)
    assert res["failed"] == [] and "2 to run as Ray tasks (each data-parallel over 2 processes)" in capsys.readouterr().out
    run = next((tmp_path / "ray").glob("60___CE/seed-0-*"))
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "noisylabels", "train", "--nproc", "2", "--quiet", "--config",
                    str(run / "config.yaml"), "--out", str(tmp_path / "local")], env=env, check=True,
                   capture_output=True)
    for name in ("metrics.jsonl", "suspects.csv", "labels.csv", "pred_probs.npy", "splits.npz"):
        assert (run / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name

    got.clear()  # a rank's user error is the run's one line (retried once, like any failed run)
    cfg = resolve_config(overrides={"train.epochs": 1, "train.progress": False, "model.name": "no-such-model",
                                    "out": str(tmp_path / "bad")})
    run_ray([Job(0, "noisylabels.bench.harness:_run_cell", (cfg,))],
            lambda job, s, v: got.__setitem__(job.id, (s, v)), nproc_per_run=2, retries=0)
    status, value = got[0]
    assert status == "error" and value["error"].startswith("unknown model 'no-such-model'"), value


@pytest.mark.slow
def test_a_suites_pretraining_runs_on_ray_and_its_cells_start_from_it(local_ray, tmp_path):
    """The backbones come back to the driver's OUT/_pretrain/ and travel to the cells' tasks."""
    out = tmp_path / "ray"
    res = run_suite(SUITES / "pretrain.yaml", out=out, executor="ray", cpus_per_run=1, verbose=False)
    assert res["failed"] == [], res["failed"]
    backbones = sorted((out / "_pretrain" / "ssl").glob("seed-*/backbone.pt"))
    assert len(backbones) == 2
    import yaml

    for run in (out / "scratch__CE_from_SimCLR").glob("seed-*"):
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert Path(cfg["model"]["init_checkpoint"]) in backbones
