"""Start one data-parallel run on this machine: torchrun's agent, with one line for a rank's error.

:func:`launch` runs PyTorch's own launcher (``torch.distributed.run``, ``--standalone``) in this
process, so that a rank's error ends as one line instead of torchrun's traceback and failure box.
``noisylabels train --nproc N`` and the bench's data-parallel Ray cells
(``--gpus-per-run N``) start their ranks through it.

How a rank's error reaches the launcher: :func:`launch` sets ``$NOISYLABELS_RANK_ERRORS`` to a
private folder; a rank that fails writes its one-line message there (:func:`report_rank_error`)
and exits (2 for a :class:`~noisylabels.errors.UserError`) without printing it. A rank whose
failure is only the consequence of another's (its collective partner left, torchrun stopped it)
finds that rank's file (:func:`another_rank_failed`) and stays silent. The launcher prints nothing
itself: it returns the root cause (rank 0's user error if it has one, else the first written;
without a file, the first process to fail and its exit status) and the exit status: 2 for a user
error, 1 for anything else, ``128 + signal`` when the launcher was stopped by a signal.

Users who run ``torchrun`` themselves keep torchrun's own behaviour: every rank prints its error
and torchrun adds its summary (the variable is not set).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Launched", "launch", "report_rank_error", "another_rank_failed", "launched_rank", "RANK_ERRORS_ENV",
           "LAUNCHER_PID_ENV"]

#: the folder where a rank started by :func:`launch` leaves its error (unset elsewhere)
RANK_ERRORS_ENV = "NOISYLABELS_RANK_ERRORS"
#: the launcher's process id (a rank may ask to die with it)
LAUNCHER_PID_ENV = "NOISYLABELS_LAUNCHER_PID"


@dataclass
class Launched:
    """How a launched run ended.

    Attributes
    ----------
    returncode:
        0 (every rank finished), 2 (a rank's user error), 1 (another failure) or ``128 + signal``.
    error:
        The root cause in one line (``None`` when the run finished or the launcher was stopped).
    traceback:
        The failing rank's traceback when it left one (bench cells keep it in ``error.txt``).
    """

    returncode: int
    error: str | None = None
    traceback: str = ""


def launched_rank() -> Path | None:
    """The error folder of the :func:`launch` that started this process as a rank, else ``None``."""
    folder = os.environ.get(RANK_ERRORS_ENV)
    return Path(folder) if folder and "RANK" in os.environ else None


def report_rank_error(message: str, *, user: bool = True, traceback: str = "") -> bool:
    """Leave this rank's one-line error for its launcher; ``False`` (nothing written) when this
    process was not started by :func:`launch`, so the caller prints it itself."""
    folder = launched_rank()
    if folder is None:
        return False
    rank = os.environ.get("RANK", "0")
    tmp = folder / f".rank-{rank}.json"
    try:
        tmp.write_text(json.dumps({"rank": int(rank), "time": time.time(), "user": bool(user),
                                   "message": str(message).strip().splitlines()[0] if str(message).strip() else "",
                                   "traceback": traceback}))
        os.replace(tmp, folder / f"rank-{rank}.json")  # complete or absent for the launcher
    except OSError:
        return False
    return True


def another_rank_failed() -> bool:
    """Whether, in a run started by :func:`launch`, another rank has already reported its error
    (this process's failure is then its consequence, and stays silent)."""
    folder = launched_rank()
    if folder is None:
        return False
    own = f"rank-{os.environ.get('RANK', '0')}.json"
    try:
        return any(p.name != own for p in folder.glob("rank-*.json"))
    except OSError:
        return False


def _root_cause(folder: Path) -> dict | None:
    reports = []
    for p in folder.glob("rank-*.json"):
        try:
            reports.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    if not reports:
        return None
    pool = [r for r in reports if r.get("user")] or reports
    # rank 0's user error names the run's own folder (the others write to scratch); else the first written
    return next((r for r in pool if r.get("rank") == 0), None) or min(pool, key=lambda r: r.get("time", 0.0))


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, n))


@contextmanager
def _agent_scope(folder: str) -> Iterator[None]:
    """What torchrun's agent changes in this process, put back afterwards: its signal handlers,
    the environment (``OMP_NUM_THREADS``), and its error log (muted: the launcher reports)."""
    import logging

    env = dict(os.environ)
    handlers = ({s: signal.getsignal(s) for s in _SIGNALS}
                if threading.current_thread() is threading.main_thread() else {})
    names = ["torch.distributed.elastic"] + [n for n in logging.root.manager.loggerDict
                                             if n.startswith("torch.distributed.elastic.")]
    levels = {n: logging.getLogger(n).level for n in names}  # the agent's modules set their own levels
    for n in names:
        logging.getLogger(n).setLevel(logging.CRITICAL)
    os.environ[RANK_ERRORS_ENV] = folder
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    try:
        yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
        for s, h in handlers.items():
            signal.signal(s, h)
        for k in set(os.environ) - set(env):  # key by key: other threads may read the environment
            del os.environ[k]
        for k, v in env.items():
            if os.environ.get(k) != v:
                os.environ[k] = v


def launch(argv: Sequence[str], *, nproc: int) -> Launched:
    """Run ``python -m <argv>`` as ``nproc`` data-parallel ranks on this machine and wait for them.

    The same as ``python -m torch.distributed.run --standalone --nproc-per-node N -m <argv>``
    (torchrun's agent runs in this process; the ranks are its children, they inherit stdout and
    stderr), except for errors: see the module docstring.

    Parameters
    ----------
    argv:
        The module and its arguments, e.g. ``["noisylabels", "train", "--out", "runs/x"]``.
    nproc:
        Number of ranks (>= 1).
    """
    import tempfile

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    with tempfile.TemporaryDirectory(prefix="noisylabels-ranks-") as folder:
        try:
            with _agent_scope(folder):
                run(parse_args(["--standalone", f"--nproc-per-node={int(nproc)}", "-m", *argv]))
            return Launched(0)
        except ChildFailedError as exc:
            cause = _root_cause(Path(folder))
            if cause is not None:
                return Launched(2 if cause.get("user") else 1, cause.get("message") or "a process failed",
                                cause.get("traceback") or "")
            rank, failure = exc.get_first_failure()
            return Launched(1, f"process {rank} of {nproc} {_exit_text(int(failure.exitcode))}")
        except SignalException as exc:
            return Launched(128 + int(exc.sigval))
