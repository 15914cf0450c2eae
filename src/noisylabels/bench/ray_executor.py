"""Bench runs as Ray tasks: ``noisylabels bench SUITE --executor ray [--address ADDR]``.

Each (cell, seed) is one ``ray.remote`` task with ``num_cpus=--cpus-per-run`` and
``num_gpus=--gpus-per-run`` (fractions share a GPU: ``0.25`` puts four runs on each; a whole number
``N > 1`` gives one run ``N`` GPUs on one node, data-parallel: see :func:`run_resources`). The task
trains in a temporary folder on whichever node runs it and *returns* its summary and its small
records (``config.yaml``, ``metrics.jsonl``, ``summary.json``, ``labels.csv``, ``splits.npz``,
``suspects.csv``, weights and plots: every file but the ``*.pt`` model and checkpoint files, except a
pretraining run's ``backbone.pt``, which is its product); the driver writes them into ``OUT/<cell>/seed-<s>-<hash>/`` exactly where the local executor would,
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
The weight files a run starts from (``model.init_checkpoint``, ``method.teacher_init``: a suite's
pretrained backbones, or the user's) travel with the task: the driver reads each once into Ray's
object store, the task writes it into its temporary folder, and the returned ``config.yaml`` names
the driver's path again. Ray is an optional extra: ``pip install "noisylabels[ray]"``.

Data-parallel cells (``--gpus-per-run N``, or ``--nproc-per-run N`` on CPUs): Ray places the task
with ``N`` GPUs (and ``--cpus-per-run``, default ``N``: a process needs at least one CPU) on one
node; the task starts torchrun's agent there (:func:`noisylabels.bench.rank.run_data_parallel`),
``N`` ranks, one per GPU (Ray's ``CUDA_VISIBLE_DEVICES``), NCCL on CUDA and gloo on CPU. The run is
the one ``noisylabels train --nproc N`` trains with the cell's config (``train.batch_size`` is the
global batch and must divide by ``N``): the same records, written by rank 0 and returned like any
run's; a rank's user error is the run's one-line error.
"""

from __future__ import annotations

import copy
import os
import socket
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import weight_files
from ..errors import UserError
from .pool import Job, error_result, resolve_function, terminating_signals

__all__ = ["run_ray", "run_resources", "RunResources", "collect_records", "write_records", "MAX_RECORD_BYTES"]

#: records larger than this stay on the worker (a suspects.csv of a million samples is ~60 MB)
MAX_RECORD_BYTES = 64 * 2**20
#: the one ``*.pt`` file that comes back: what a pretraining run is for
RETURNED_WEIGHTS = "backbone.pt"


def collect_records(run_dir: str | os.PathLike[str]) -> dict[str, bytes]:
    """The run's record files (relative path -> bytes), without ``*.pt`` files (but a pretraining run's
    ``backbone.pt``) and oversized ones."""
    root = Path(run_dir)
    out: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or (p.suffix == ".pt" and p.relative_to(root).as_posix() != RETURNED_WEIGHTS) \
                or p.name.startswith("."):
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


@dataclass(frozen=True)
class RunResources:
    """What one bench run asks of Ray, and how it runs inside its task.

    Attributes
    ----------
    num_cpus, num_gpus:
        The task's Ray resources.
    nproc:
        Processes of the run (data-parallel over ``torch.distributed`` when > 1).
    threads:
        Torch threads per process.
    """

    num_cpus: float
    num_gpus: float
    nproc: int
    threads: int


def run_resources(*, gpus_per_run: float | None = None, cpus_per_run: float | None = None,
                  nproc_per_run: int | None = None) -> RunResources:
    """The Ray resources and processes of one run from ``--gpus-per-run`` / ``--cpus-per-run`` /
    ``--nproc-per-run``.

    * ``--gpus-per-run G`` with ``0 < G <= 1``: one process on a share of one GPU (``0.25``: four
      runs per GPU); an integer ``G > 1``: one data-parallel run over ``G`` GPUs of one node, one
      process per GPU; a non-integer ``G > 1`` is refused (a share of several GPUs means nothing).
    * ``--nproc-per-run N``: the run's processes (default ``G`` when ``G > 1``, else 1); with GPUs
      it must equal ``G`` (one GPU per process), without (``G = 0``) the processes share the
      task's CPUs (gloo).
    * ``--cpus-per-run C``: the task's CPUs (default ``N``); each process needs at least one
      (``C >= N``) and gets ``max(1, floor(C / N))`` torch threads.

    >>> run_resources(gpus_per_run=4)
    RunResources(num_cpus=4.0, num_gpus=4.0, nproc=4, threads=1)
    >>> run_resources(gpus_per_run=0.25, cpus_per_run=2)
    RunResources(num_cpus=2.0, num_gpus=0.25, nproc=1, threads=2)
    """
    g = float(gpus_per_run or 0.0)
    if g > 1 and not g.is_integer():
        raise UserError(f"--gpus-per-run {g:g}: a fraction (at most 1) shares one GPU between runs; above 1 it is "
                        "the number of whole GPUs of one data-parallel run: give an integer")
    if nproc_per_run is not None and (isinstance(nproc_per_run, bool) or not isinstance(nproc_per_run, int)
                                      or nproc_per_run < 1):
        raise UserError(f"--nproc-per-run must be an integer >= 1, got {nproc_per_run!r}")
    nproc = nproc_per_run if nproc_per_run is not None else (int(g) if g > 1 else 1)
    if g > 0 and (g > 1 or nproc > 1) and g != nproc:
        raise UserError(f"--nproc-per-run {nproc} with --gpus-per-run {g:g}: a data-parallel run takes one whole GPU "
                        f"per process: give --gpus-per-run {nproc} (or 0: processes on CPUs)")
    cpus = float(cpus_per_run) if cpus_per_run is not None else float(nproc)
    if cpus < nproc:
        raise UserError(f"--cpus-per-run {cpus:g} is fewer than the run's {nproc} processes: each process of a "
                        f"data-parallel run needs at least one CPU (give --cpus-per-run {nproc} or more)")
    return RunResources(num_cpus=cpus, num_gpus=g, nproc=nproc, threads=max(1, int(cpus // nproc)))


def _ray_task(fn_path: str, cfg: dict[str, Any], threads: int, nproc: int = 1, keys: Sequence[str] = (),
              *blobs: bytes) -> dict[str, Any]:
    """On a Ray worker: run ``fn(cfg, threads)`` in a temporary ``out`` (on ``nproc`` data-parallel
    processes when > 1); summary and records back. ``keys`` / ``blobs``: the weight files the run
    reads (config key and the file's bytes), written into the temporary folder for the run; the
    returned ``config.yaml`` names the driver's paths."""
    node = socket.gethostname()
    with tempfile.TemporaryDirectory(prefix="noisylabels-ray-") as tmp:
        cfg = copy.deepcopy(cfg)
        cfg["out"] = str(Path(tmp) / "run")
        moved: dict[str, str] = {}  # the task's copy -> the driver's path
        for i, (key, blob) in enumerate(zip(keys, blobs)):
            section, name = key.split(".")
            local = Path(tmp) / "inputs" / f"{i}-{Path(str(cfg[section][name])).name}"
            local.parent.mkdir(exist_ok=True)
            local.write_bytes(blob)
            moved[str(local)] = str(cfg[section][name])
            cfg[section][name] = str(local)
        try:
            if nproc > 1:
                from .rank import run_data_parallel

                summary = run_data_parallel(fn_path, cfg, threads, nproc=nproc)
            else:
                summary = resolve_function(fn_path)(cfg, threads)
        except Exception as exc:  # noqa: BLE001  (returned to the driver, which retries once)
            res = error_result(exc)
            res["traceback"] = getattr(exc, "rank_traceback", "") or res["traceback"]
            res["error"] = f"{res['error']} (on {node})"
            return res
        files = collect_records(cfg["out"])
        if moved and "config.yaml" in files:
            from ..config import save_config
            import yaml

            record = yaml.safe_load(files["config.yaml"].decode())
            for key in keys:
                section, name = key.split(".")
                record[section][name] = moved.get(str(record[section][name]), record[section][name])
            save_config(record, Path(tmp) / "config.yaml")
            files["config.yaml"] = (Path(tmp) / "config.yaml").read_bytes()
        return {"status": "ok", "summary": summary, "files": files, "node": node}


def run_ray(jobs: Sequence[Job], on_result: Callable[[Job, str, Any], None], *, address: str | None = None,
            gpus_per_run: float | None = None, cpus_per_run: float | None = None,
            nproc_per_run: int | None = None, retries: int = 1, verbose: bool = True) -> None:
    """Run bench jobs (``job.args = (cfg,)``, ``job.fn`` the run function) as Ray tasks.

    ``on_result(job, status, value)`` is called once per job as in
    :meth:`noisylabels.bench.pool.WorkerPool.run` (``value``: the summary, or the error of the
    last attempt); see the module docstring for retries, records and interrupts, and
    :func:`run_resources` for what ``gpus_per_run``, ``cpus_per_run`` and ``nproc_per_run`` ask.
    """
    need = run_resources(gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run, nproc_per_run=nproc_per_run)
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
    task = ray.remote(_ray_task).options(num_cpus=need.num_cpus, num_gpus=need.num_gpus, max_retries=0)
    pending: dict[Any, Job] = {}
    stored: dict[str, Any] = {}  # a weight file's path -> its bytes in the object store (read once)

    def submit(job: Job) -> None:
        job.attempts += 1
        files = weight_files(job.args[0])  # worker nodes need not share the driver's disk
        for path in files.values():
            if path not in stored:
                stored[path] = ray.put(Path(path).expanduser().read_bytes())
        keys = tuple(files)
        pending[task.remote(job.fn, job.args[0], need.threads, need.nproc, keys,
                            *(stored[files[k]] for k in keys))] = job

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
