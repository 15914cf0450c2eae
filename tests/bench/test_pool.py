"""The bench's local worker processes: results, errors, dead workers, GPU pinning, and faults
injected into the parent (SIGINT, SIGTERM, SIGKILL): no worker outlives it by more than a few seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from noisylabels.bench.pool import Job, WorkerPool, gpu_groups, visible_gpus
from noisylabels.errors import UserError

TESTS = Path(__file__).resolve().parents[1]  # tests/ (the bench fixtures are in tests/bench)
SRC = TESTS.parent / "src"
ROOT = TESTS.parent
linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def run_jobs(workers: int, jobs: list[Job], **kw) -> dict:
    got: dict = {}
    WorkerPool(workers, **kw).run(jobs, lambda job, status, value: got.__setitem__(job.id, (status, value)))
    return got


def test_pool_results_errors_and_dead_workers():
    jobs = [Job(0, "tests.bench._bench_jobs:echo", (5,)), Job(1, "tests.bench._bench_jobs:fail", ("boom",)),
            Job(2, "tests.bench._bench_jobs:die", (3,)), Job(3, "tests.bench._bench_jobs:kill_self"), Job(4, "tests.bench._bench_jobs:echo", (7,))]
    got = run_jobs(2, jobs)
    assert got[0][0] == "ok" and got[0][1]["value"] == 5 and got[0][1]["pid"] != os.getpid()
    status, err = got[1]
    assert status == "error" and err["error"] == "RuntimeError: boom" and "second line" in err["traceback"]
    assert got[2] == ("error", {"status": "error", "traceback": "", "error": "worker process died (exit code 3)"})
    assert got[3][1]["error"] == "worker process died (killed by SIGKILL)"
    assert got[4][0] == "ok" and got[4][1]["value"] == 7  # dead workers were replaced


def test_each_worker_group_sees_its_gpu():
    assert [e["CUDA_VISIBLE_DEVICES"] for e in gpu_groups(["0", "3"], 2)] == ["0", "0", "3", "3"]
    with pytest.raises(UserError, match="no GPU is visible"):
        gpu_groups([], 1)
    envs = gpu_groups(["3", "5"], 1)
    got = run_jobs(2, [Job(i, "tests.bench._bench_jobs:env_var", ("CUDA_VISIBLE_DEVICES", 1.0)) for i in range(2)], envs=envs)
    assert sorted(v for _, v in got.values()) == ["3", "5"]


def test_visible_gpus_reads_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 7")
    assert visible_gpus() == ["2", "7"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


# -- faults injected into the parent ------------------------------------------------------------------
def _state(pid: int) -> str | None:
    """Process state letter from /proc (None: gone; 'Z': exited, not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _children(ppid: int) -> list[int]:
    """Live child processes of ``ppid`` that are multiprocessing workers (or its resource tracker)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (p / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == ppid and fields[0] != "Z" and b"multiprocessing" in cmd:
            out.append(int(p.name))
    return out


def _workers(ppid: int, n: int) -> list[int]:
    """The spawned workers of ``ppid`` once ``n`` of them run (else [])."""
    found = []
    for p in _children(ppid):
        try:
            if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes():
                found.append(p)
        except OSError:
            pass
    return found if len(found) >= n else []


def _wait_for(pred, timeout: float, step: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


def _alive(pids) -> list[int]:
    return [p for p in pids if _state(p) not in (None, "Z")]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(ROOT), os.environ.get("PYTHONPATH", "")])}


POOL_PARENT = """
import sys
from noisylabels.bench.pool import Job, WorkerPool
jobs = [Job(i, "tests.bench._bench_jobs:sleep_then_mark", (0 if i == 0 else 60, sys.argv[1] + f"/job{i}")) for i in range(6)]
try:
    WorkerPool(2, grace=3.0).run(jobs, lambda j, s, v: print("result", j.id, s, flush=True))
except KeyboardInterrupt as exc:
    print("interrupted", type(exc).__name__, flush=True)
    sys.exit(130)
"""


@linux_only
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_parent_signal_stops_every_worker_within_seconds(tmp_path, sig):
    parent = subprocess.Popen([sys.executable, "-c", POOL_PARENT, str(tmp_path)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        workers = _wait_for(lambda: _workers(parent.pid, 2), 20)
        assert len(workers) == 2, "two workers should be running"
        assert _wait_for(lambda: (tmp_path / "job0").exists(), 20), "the quick job finished"
        time.sleep(0.5)  # the workers are inside jobs 1 and 2 (sleeping)
        os.kill(parent.pid, sig)
        # polled with a deadline well under the jobs' 60 s sleep (not a wall-clock claim: a loaded
        # machine is slower): workers still alive then were not stopped by the parent
        left = _wait_for(lambda: not _alive(workers), 30.0)
        assert left, f"workers {_alive(workers)} outlived the parent's {sig.name}"
        out, _ = parent.communicate(timeout=30)
    finally:
        for p in _alive(workers):
            os.kill(p, signal.SIGKILL)
        parent.kill()
    if sig != signal.SIGKILL:  # the parent reported the two running jobs and dropped the queued four
        kind = "BenchInterrupted" if sig == signal.SIGTERM else "KeyboardInterrupt"
        assert parent.returncode == 130 and out.splitlines()[-1] == f"interrupted {kind}"
        assert sorted(out.splitlines()[:-1]) == ["result 0 ok", "result 1 interrupted", "result 2 interrupted"]
    assert [p.name for p in tmp_path.glob("job*")] == ["job0"], "only the quick job ran to its end"


@linux_only
def test_a_sigkilled_parent_leaves_one_line_per_stopped_worker_in_the_log_not_a_traceback(tmp_path):
    """The bench's log (its stderr, which the workers share) after ``kill -9`` of the bench."""
    log = tmp_path / "bench.log"
    with open(log, "w") as fh:
        parent = subprocess.Popen([sys.executable, "-c", POOL_PARENT, str(tmp_path)], env=_env(),
                                  stdout=fh, stderr=subprocess.STDOUT, text=True)
    workers: list[int] = []
    try:
        workers = _wait_for(lambda: _workers(parent.pid, 2), 20)
        assert len(workers) == 2
        assert _wait_for(lambda: (tmp_path / "job0").exists(), 20)
        time.sleep(0.5)  # both workers inside a 60 s job
        os.kill(parent.pid, signal.SIGKILL)
        assert _wait_for(lambda: not _alive(workers), 8.0), f"{_alive(workers)} outlived the parent"
    finally:
        for p in _alive(workers):
            os.kill(p, signal.SIGKILL)
        parent.kill()
        parent.wait(timeout=10)
    text = log.read_text()
    assert "Traceback" not in text, text
    said = [line for line in text.splitlines() if line.startswith("noisylabels bench worker")]
    assert len(said) == 2 and all("the bench process" in line and "is gone" in line for line in said), text


@linux_only
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_a_bench_parent_leaves_no_worker(tmp_path, sig):
    """``noisylabels bench`` (two workers starting long runs) killed by SIGKILL / SIGTERM."""
    parent = subprocess.Popen([sys.executable, "-m", "noisylabels", "bench", str(TESTS / "bench" / "suites" / "slow.yaml"),
                               "--workers", "2", "--out", str(tmp_path / "b")], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        workers = _wait_for(lambda: _workers(parent.pid, 2), 30)
        assert len(workers) == 2
        os.kill(parent.pid, sig)
        assert _wait_for(lambda: not _alive(workers), 30.0), f"{_alive(workers)} outlived the bench parent"
        _, err = parent.communicate(timeout=30)
    finally:
        for p in _alive(workers):
            os.kill(p, signal.SIGKILL)
        parent.kill()
    if sig == signal.SIGTERM:
        assert parent.returncode == 143 and "bench interrupted (SIGTERM)" in err


@linux_only
@pytest.mark.slow
def test_sigterm_mid_training_keeps_finished_runs_and_marks_running_ones_interrupted(tmp_path):
    """Workers well inside their runs: SIGTERM stops them within seconds, each running run writes
    its ``interrupted`` summary and keeps its checkpoint (resumable), the finished runs stay finished."""
    out = tmp_path / "b"
    parent = subprocess.Popen([sys.executable, "-m", "noisylabels", "bench", str(TESTS / "bench" / "suites" / "slow.yaml"),
                               "--workers", "2", "--out", str(out)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: len(list(out.glob("long/seed-*/metrics.jsonl"))) >= 2, 120, 0.2)
        workers = _children(parent.pid)
        parent.send_signal(signal.SIGTERM)
        _, err = parent.communicate(timeout=60)
        assert parent.returncode == 143
        assert _wait_for(lambda: not _alive(workers), 30.0)
    finally:
        parent.kill()
    import json

    status = {p.parent.parent.name + p.parent.name[:6]: json.loads(p.read_text())["status"]
              for p in out.glob("*/seed-*/summary.json")}
    assert status == {"shortseed-0": "finished", "shortseed-1": "finished",
                      "longseed-0": "interrupted", "longseed-1": "interrupted"}
    assert len(list(out.glob("long/seed-*/checkpoint.pt"))) == 2
    assert "bench interrupted (SIGTERM)" in err
