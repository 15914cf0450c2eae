"""Job functions for the bench-executor tests (imported by spawned workers and Ray tasks by name)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def echo(value):
    return {"value": value, "pid": os.getpid()}


def env_var(name, delay=0.0):
    time.sleep(delay)
    return os.environ.get(name)


def fail(message):
    raise RuntimeError(message + "\nsecond line")


def die(code):
    os._exit(code)


def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def sleep_then_mark(seconds, marker):
    """Sleep (interruptibly), then create ``marker``; a cancelled job never creates it."""
    time.sleep(seconds)
    Path(marker).write_text("done")
    return "done"


def flaky_run(cfg, threads):
    """A bench run that fails on its first attempt (a marker file beside the suite remembers it)."""
    marker = Path(cfg["data"]["options"]["flaky_marker"])
    if not marker.exists():
        marker.write_text("failed once")
        raise RuntimeError("flaky failure on the first attempt")
    cfg = dict(cfg, data={**cfg["data"], "options": {}})
    from noisylabels.bench.harness import _run_cell

    return _run_cell(cfg, threads)


def world(cfg, threads):
    """A data-parallel cell's rank: its place in the process group and its threads (rank 0's answer comes back)."""
    return {"world_size": int(os.environ["WORLD_SIZE"]), "rank": int(os.environ["RANK"]), "threads": threads}


def user_error_on_rank_1(cfg, threads):
    """Rank 1 fails with a user error; rank 0 waits for it in a collective (its failure is a consequence)."""
    import torch
    import torch.distributed as dist

    from noisylabels.errors import UserError

    dist.init_process_group("gloo")
    if dist.get_rank() == 1:
        raise UserError("rank 1 found a bad input")
    dist.all_reduce(torch.zeros(1))  # never completes: rank 1 has left
    return {"unreachable": True}
