"""Local worker processes for the bench: stop on Ctrl-C / SIGTERM, never outlive their parent.

:class:`WorkerPool` runs jobs (a module-level function named by ``"module:function"`` and its
arguments) in ``n`` spawned worker processes, one job per worker at a time, and hands every
result to a callback as it arrives. It differs from :class:`concurrent.futures.ProcessPoolExecutor`
in what happens when things go wrong:

* **Interrupt.** Ctrl-C (SIGINT) or SIGTERM of the parent stops dispatching (queued jobs are
  cancelled), sends SIGTERM to the running workers (their handler raises
  :class:`KeyboardInterrupt`, so a training run writes its ``interrupted`` summary and keeps its
  last checkpoint), waits ``grace`` seconds, then SIGKILLs what is left. Workers ignore SIGINT
  themselves (a terminal's Ctrl-C reaches the whole process group; the parent decides).
* **Parent death.** Each worker asks the kernel for SIGTERM when its parent dies
  (``prctl(PR_SET_PDEATHSIG)`` on Linux) and also runs a watchdog thread that notices being
  re-parented (``os.getppid()`` changed) and terminates itself, escalating to ``os._exit`` after
  ``grace`` seconds; so a SIGKILLed bench leaves no worker behind for more than a few seconds.
* **Failures.** An exception in a job is caught in the worker and returned as an ``error`` result
  (its first line and the traceback); a worker that dies without answering (segfault, OOM kill)
  fails its job with the exit status and is replaced.
* **Environment.** Each worker slot may get its own environment variables, set before the job's
  imports (``CUDA_VISIBLE_DEVICES`` for ``--runs-per-gpu``).
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

__all__ = ["Job", "WorkerPool", "BenchInterrupted", "set_parent_death_signal", "error_result",
           "visible_gpus", "gpu_groups", "terminating_signals"]

PR_SET_PDEATHSIG = 1


class BenchInterrupted(KeyboardInterrupt):
    """The bench was stopped by SIGINT or SIGTERM (``signum`` says which)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


@dataclass
class Job:
    """One unit of work: ``fn(*args)`` with ``fn`` given as ``"package.module:function"``."""

    id: Any
    fn: str
    args: tuple = ()
    attempts: int = 0


def error_result(exc: BaseException) -> dict[str, Any]:
    """``{'status': 'error', 'error': first line, 'traceback': text}`` for a failed job."""
    if isinstance(exc, UserError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    first = (text.strip().splitlines() or [type(exc).__name__])[0]
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"status": "error", "error": first, "traceback": tb}


def resolve_function(path: str) -> Callable[..., Any]:
    """Import ``"module:function"``."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


# -- the worker side ---------------------------------------------------------------------------------
def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only).

    Returns ``False`` where ``prctl`` is unavailable (the watchdog thread still covers it).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise BenchInterrupted(signum)


def _watchdog(parent_pid: int, grace: float) -> None:
    """Terminate this worker soon after its parent dies (re-parenting changes ``getppid``)."""
    while os.getppid() == parent_pid:
        time.sleep(0.25)
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # a clean stop first (records written)
    finally:
        time.sleep(grace)
        os._exit(143)


def _say(text: str) -> None:
    """One line on the worker's stderr (the bench's log), never raising."""
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _worker_main(conn: mpc.Connection, parent_pid: int, env: Mapping[str, str], grace: float) -> None:
    """A worker's life; whatever ends it leaves at most one line in the log, never a traceback
    (a SIGKILLed bench sends each worker SIGTERM twice: the kernel's parent-death signal and the
    watchdog's)."""
    try:
        _serve(conn, parent_pid, env, grace)
    except BaseException as exc:  # noqa: BLE001  (the last word of a dying worker)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not isinstance(exc, (SystemExit, KeyboardInterrupt, EOFError, OSError)):
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            _say(f"noisylabels bench worker {os.getpid()}: stopped by {type(exc).__name__}: {first[:200]}")


def _serve(conn: mpc.Connection, parent_pid: int, env: Mapping[str, str], grace: float) -> None:
    os.environ.update(env)
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(143)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    threading.Thread(target=_watchdog, args=(parent_pid, grace), daemon=True, name="parent-watchdog").start()
    try:
        while True:
            msg = conn.recv()
            if msg is None:
                return
            job_id, fn_path, args = msg
            try:
                result: Any = resolve_function(fn_path)(*args)
                status = "ok"
            except KeyboardInterrupt:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough: no second interrupt
                if os.getppid() != parent_pid:  # the bench itself was killed: nobody to answer
                    _say(f"noisylabels bench worker {os.getpid()}: the bench process {parent_pid} is gone; "
                         f"run {job_id} stopped (its records and last checkpoint are kept)")
                    return
                try:
                    conn.send((job_id, "interrupted", None))
                except OSError:
                    _say(f"noisylabels bench worker {os.getpid()}: the bench process {parent_pid} is gone; "
                         f"run {job_id} stopped (its records and last checkpoint are kept)")
                return
            except BaseException as exc:  # noqa: BLE001  (reported to the parent, never lost)
                result, status = error_result(exc), "error"
            conn.send((job_id, status, result))
    except (KeyboardInterrupt, EOFError, OSError):
        return


# -- the parent side ---------------------------------------------------------------------------------
class _Worker:
    def __init__(self, ctx: Any, env: Mapping[str, str], grace: float) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, os.getpid(), dict(env), grace),
                                daemon=True, name="noisylabels-bench-worker")
        in_main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
        try:  # the child starts with SIGINT ignored (no traceback of its bootstrap on Ctrl-C)
            self.proc.start()
        finally:
            if in_main:
                signal.signal(signal.SIGINT, old)
        child.close()
        self.job: Job | None = None

    def alive(self) -> bool:
        return self.proc.is_alive()



@contextmanager
def terminating_signals() -> Iterator[None]:
    """While active (main thread only), SIGTERM raises :class:`BenchInterrupted` like Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class WorkerPool:
    """Run :class:`Job` s in ``workers`` spawned processes (see the module docstring).

    Parameters
    ----------
    workers:
        Number of worker processes (>= 1).
    envs:
        Environment variables per worker slot (``len(envs) == workers``), e.g.
        ``CUDA_VISIBLE_DEVICES``; ``None``: no change.
    grace:
        Seconds a worker gets to stop after SIGTERM before it is killed.
    """

    def __init__(self, workers: int, *, envs: Sequence[Mapping[str, str]] | None = None,
                 grace: float = 5.0) -> None:
        if int(workers) < 1:
            raise UserError(f"workers must be >= 1, got {workers}")
        self.workers = int(workers)
        self.envs = [dict(e) for e in envs] if envs is not None else [{} for _ in range(self.workers)]
        if len(self.envs) != self.workers:
            raise ValueError("envs needs one mapping per worker")
        self.grace = float(grace)
        self._ctx = mp.get_context("spawn")
        self._slots: list[_Worker | None] = [None] * self.workers

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return [w.proc.pid for w in self._slots if w is not None and w.alive()]

    def run(self, jobs: Iterable[Job], on_result: Callable[[Job, str, Any], None]) -> None:
        """Run every job; call ``on_result(job, status, value)`` as each ends.

        ``status`` is ``ok`` (``value`` = the function's return value), ``error`` (``value`` =
        :func:`error_result`) or ``interrupted``. On Ctrl-C / SIGTERM (see
        :func:`terminating_signals`) the queued jobs are dropped, the running ones stopped, and
        :class:`BenchInterrupted` is re-raised once every worker has exited.
        """
        queue = deque(jobs)
        try:
            with terminating_signals():
                self._loop(queue, on_result)
        except KeyboardInterrupt:
            self.stop(on_result)
            raise
        finally:
            self.close()

    def _loop(self, queue: deque[Job], on_result: Callable[[Job, str, Any], None]) -> None:
        while True:
            for k in range(self.workers):  # hand a job to every idle slot
                w = self._slots[k]
                if w is not None and w.job is None and not w.alive():
                    self._slots[k] = w = None
                if w is None and queue:
                    w = self._slots[k] = _Worker(self._ctx, self.envs[k], self.grace)
                if w is not None and w.job is None and queue:
                    job = queue.popleft()
                    job.attempts += 1
                    try:
                        w.conn.send((job.id, job.fn, job.args))
                        w.job = job
                    except OSError:  # died before its first job: try again with a new worker
                        job.attempts -= 1
                        queue.appendleft(job)
                        self._slots[k] = None
            busy = [w for w in self._slots if w is not None and w.job is not None]
            if not busy:
                return
            ready = set(mpc.wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=1.0))
            for w in busy:
                if w.conn not in ready and w.proc.sentinel not in ready:
                    continue
                msg = None
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):  # the worker died: its pipe closed
                        msg = None
                job, w.job = w.job, None
                if msg is not None:
                    on_result(job, msg[1], msg[2])
                    continue
                w.proc.join(5.0)
                on_result(job, "error", {"status": "error", "traceback": "",
                                         "error": f"worker process died ({_exit_text(w.proc.exitcode)})"})

    def stop(self, on_result: Callable[[Job, str, Any], None] | None = None) -> None:
        """SIGTERM every worker, wait up to ``grace`` seconds, SIGKILL the rest; report their jobs."""
        live = [w for w in self._slots if w is not None]
        for w in live:
            if w.alive():
                try:
                    os.kill(w.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + self.grace
        for w in live:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.alive():
                w.proc.kill()
                w.proc.join(2.0)
        for w in live:
            if w.job is None:
                continue
            status, value = "interrupted", None
            try:
                while w.conn.poll():
                    _, status, value = w.conn.recv()
            except (EOFError, OSError):
                pass
            job, w.job = w.job, None
            if on_result is not None:
                on_result(job, status, value)

    def close(self) -> None:
        """Ask idle workers to exit, then make sure none is left."""
        for w in self._slots:
            if w is None:
                continue
            if w.alive() and w.job is None:
                try:
                    w.conn.send(None)
                except OSError:
                    pass
        for w in self._slots:
            if w is None:
                continue
            w.proc.join(self.grace if w.job is None else 0.0)
            if w.alive():
                w.proc.kill()
                w.proc.join(2.0)
            w.conn.close()
        self._slots = [None] * self.workers


def _exit_text(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# -- GPUs for --runs-per-gpu --------------------------------------------------------------------------
def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``$CUDA_VISIBLE_DEVICES`` entries, else ``0..n-1``."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001  (no usable CUDA)
        return []


def gpu_groups(gpus: Sequence[str], runs_per_gpu: int) -> list[dict[str, str]]:
    """One environment per worker: ``runs_per_gpu`` workers share each GPU (``CUDA_VISIBLE_DEVICES``).

    >>> [e["CUDA_VISIBLE_DEVICES"] for e in gpu_groups(["0", "3"], 2)]
    ['0', '0', '3', '3']
    """
    if int(runs_per_gpu) < 1:
        raise UserError(f"--runs-per-gpu must be >= 1, got {runs_per_gpu}")
    if not gpus:
        raise UserError("--runs-per-gpu: no GPU is visible (CUDA_VISIBLE_DEVICES / torch.cuda.device_count())")
    return [{"CUDA_VISIBLE_DEVICES": g} for g in gpus for _ in range(int(runs_per_gpu))]
