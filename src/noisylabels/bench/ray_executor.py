"""Bench runs as Ray tasks: ``noisylabels bench SUITE --executor ray [--address ADDR]``.

Each (cell, seed) is one ``ray.remote`` task with ``num_cpus=--cpus-per-run`` and
``num_gpus=--gpus-per-run`` (fractions share a GPU: ``0.25`` puts four runs on each). The task
trains in a temporary folder on whichever node runs it and *returns* its summary and its small
records (``config.yaml``, ``metrics.jsonl``, ``summary.json``, ``labels.csv``, ``splits.npz``,
``suspects.csv``, weights and plots: every file but the ``*.pt`` model and checkpoint files); the
driver writes them into ``OUT/<cell>/seed-<s>-<hash>/`` exactly where the local executor would,
so no shared file system is needed and a rerun skips the finished runs the same way. A run that
was stopped part-way starts again from scratch (its checkpoint stayed on the worker node).

Failures: a task that raises, or whose worker dies, is submitted once more; a second failure is
reported as the run's error (the table shows ``err``, the bench exits non-zero). Ctrl-C / SIGTERM
cancel every outstanding task (``ray.cancel(force=True)``) and, if the call started a local Ray,
shut it down.

Cluster: ``address=None`` uses an already initialised Ray (``ray.init`` in a notebook), else the
cluster in ``$RAY_ADDRESS``, else starts a local one for the call; ``address='auto'`` joins the
running cluster of this machine, ``ray://host:10001`` a remote one through Ray Client. Workers
need ``noisylabels`` importable and the data under their own ``data.dir`` / ``../shared/data``.
Ray is an optional extra: ``pip install "noisylabels[ray]"``.
"""

from __future__ import annotations

import copy
import os
import socket
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from .pool import Job, error_result, resolve_function, terminating_signals

__all__ = ["run_ray", "collect_records", "write_records", "MAX_RECORD_BYTES"]

#: records larger than this stay on the worker (a suspects.csv of a million samples is ~60 MB)
MAX_RECORD_BYTES = 64 * 2**20


def collect_records(run_dir: str | os.PathLike[str]) -> dict[str, bytes]:
    """The run's record files (relative path -> bytes), without ``*.pt`` files and oversized ones."""
    root = Path(run_dir)
    out: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.suffix == ".pt" or p.name.startswith("."):
            continue
        if p.stat().st_size <= MAX_RECORD_BYTES:
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def write_records(run_dir: str | os.PathLike[str], files: Mapping[str, bytes]) -> None:
    """Write returned records into ``run_dir`` atomically, ``summary.json`` last (it marks the run done)."""
    root = Path(run_dir).resolve()
    names = sorted(files, key=lambda n: n == "summary.json")
    for name in names:
        dest = (root / name).resolve()
        if root not in dest.parents:
            raise UserError(f"a Ray task returned a record outside its run folder: {name!r}")
        from ..io import atomic_write_bytes
        from ..train.rundir import register

        atomic_write_bytes(dest, files[name], on_write=register)  # registered in the run's manifest


def _ray_task(fn_path: str, cfg: dict[str, Any], threads: int) -> dict[str, Any]:
    """On a Ray worker: run ``fn(cfg, threads)`` in a temporary ``out``; summary and records back."""
    node = socket.gethostname()
    with tempfile.TemporaryDirectory(prefix="noisylabels-ray-") as tmp:
        cfg = copy.deepcopy(cfg)
        cfg["out"] = str(Path(tmp) / "run")
        try:
            summary = resolve_function(fn_path)(cfg, threads)
        except Exception as exc:  # noqa: BLE001  (returned to the driver, which retries once)
            res = error_result(exc)
            res["error"] = f"{res['error']} (on {node})"
            return res
        return {"status": "ok", "summary": summary, "files": collect_records(cfg["out"]), "node": node}


def run_ray(jobs: Sequence[Job], on_result: Callable[[Job, str, Any], None], *, address: str | None = None,
            gpus_per_run: float = 0.0, cpus_per_run: float = 1.0, retries: int = 1,
            verbose: bool = True) -> None:
    """Run bench jobs (``job.args = (cfg,)``, ``job.fn`` the run function) as Ray tasks.

    ``on_result(job, status, value)`` is called once per job as in
    :meth:`noisylabels.bench.pool.WorkerPool.run` (``value``: the summary, or the error of the
    last attempt); see the module docstring for retries, records and interrupts.
    """
    try:
        import ray
    except ImportError:
        raise UserError('--executor ray needs Ray: pip install "noisylabels[ray]"') from None
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=address) if address else ray.init(include_dashboard=False)
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise UserError(f"cannot connect to Ray at {address or 'a new local cluster'}: "
                            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
        started = True
    threads = max(1, int(cpus_per_run))
    task = ray.remote(_ray_task).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
    pending: dict[Any, Job] = {}

    def submit(job: Job) -> None:
        job.attempts += 1
        pending[task.remote(job.fn, job.args[0], threads)] = job

    try:
        with terminating_signals():
            for job in jobs:
                submit(job)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in done:
                    job = pending.pop(ref)
                    try:
                        res = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # worker died, task cancelled, ...
                        res = error_result(exc)
                    if res.get("status") == "ok":
                        write_records(job.args[0]["out"], res["files"])
                        on_result(job, "ok", res["summary"])
                    elif job.attempts <= retries:
                        if verbose:
                            print(f"  run {Path(job.args[0]['out']).relative_to(Path(job.args[0]['out']).parents[1])}"
                                  f" failed ({res['error']}); retrying once", flush=True)
                        submit(job)
                    else:
                        res["error"] = f"{res['error']} (failed {job.attempts} times)"
                        on_result(job, "error", res)
    except KeyboardInterrupt:
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001  (already finished)
                pass
        for job in pending.values():
            on_result(job, "interrupted", None)
        raise
    finally:
        if started:
            ray.shutdown()
