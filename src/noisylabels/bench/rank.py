"""A bench run on several processes: one data-parallel run of a cell (``--gpus-per-run N`` on Ray).

:func:`run_data_parallel` starts ``nproc`` ranks through :func:`noisylabels.train.launch.launch`
(torchrun's agent, ``--standalone``: gloo on CPU, NCCL on CUDA, one GPU per rank); each rank runs
``python -m noisylabels.bench.rank JOB.json``, that is the cell's run function (``fn(cfg,
threads)``, :func:`noisylabels.bench.harness._run_cell`) under torchrun's environment, so that the
run is the one ``noisylabels train --nproc N`` trains with the same config: rank 0 writes every
record into ``cfg['out']``, and its return value (the summary) comes back through ``JOB.json``'s
result file. Ranks die with the process that launched them (a cancelled Ray task leaves none).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = ["run_data_parallel", "RankFailed"]


class RankFailed(RuntimeError):
    """A rank failed with something other than a user error; ``rank_traceback`` is its traceback."""

    def __init__(self, message: str, rank_traceback: str = "") -> None:
        super().__init__(message)
        self.rank_traceback = rank_traceback


def run_data_parallel(fn_path: str, cfg: Mapping[str, Any], threads: int, *, nproc: int) -> Any:
    """``fn(cfg, threads)`` as one data-parallel run over ``nproc`` ranks on this machine; rank 0's result.

    Raises
    ------
    UserError
        A rank's user error (its one line; e.g. a global batch not divisible by ``nproc``).
    RankFailed
        Any other failure of a rank (its first line; the traceback in ``rank_traceback``).
    """
    from ..train.launch import launch

    with tempfile.TemporaryDirectory(prefix="noisylabels-cell-") as tmp:
        job, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job.write_text(json.dumps({"fn": fn_path, "cfg": cfg, "threads": int(threads), "result": str(result)}))
        res = launch(["noisylabels.bench.rank", str(job)], nproc=nproc)
        if res.returncode == 2 and res.error:
            raise UserError(res.error)
        if res.returncode > 128 and res.error is None:
            raise KeyboardInterrupt
        if res.returncode != 0:
            raise RankFailed(res.error or f"the data-parallel run failed (status {res.returncode})", res.traceback)
        return json.loads(result.read_text())


def _rank_main(path: str) -> int:
    """One rank (started by :func:`run_data_parallel`): run the job, report an error to the launcher."""
    import traceback

    from .pool import error_result, resolve_function, set_parent_death_signal
    from ..train.launch import LAUNCHER_PID_ENV, another_rank_failed, report_rank_error

    set_parent_death_signal(signal.SIGTERM)
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if launcher and os.getppid() != int(launcher):  # the launcher died before prctl took effect
        return 143
    job = json.loads(Path(path).read_text())  # written by run_data_parallel (our own file)
    try:
        value = resolve_function(job["fn"])(job["cfg"], job["threads"])
    except UserError as exc:
        if not report_rank_error(str(exc), traceback=traceback.format_exc()):
            print(f"noisylabels: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001  (reported to the launcher, which returns it to the bench)
        if another_rank_failed():  # its collective partner left: a consequence, not the cause
            return 1
        res = error_result(exc)
        if not report_rank_error(res["error"], user=False, traceback=res["traceback"]):
            raise
        return 1
    if os.environ.get("RANK", "0") == "0":
        from ..io import atomic_write_bytes

        atomic_write_bytes(Path(job["result"]), json.dumps(value).encode())
    return 0


if __name__ == "__main__":  # pragma: no cover  (a rank's process)
    sys.exit(_rank_main(sys.argv[1]))
