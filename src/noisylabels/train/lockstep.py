"""Several runs trained in lockstep whose methods share state (multi-task meta-training).

NARL-Adjuster's transfer protocol (Ding et al., Sec. 3.3.2) meta-trains *one* adjuster over
several tasks (noise types x rates): each task has its own classifier, optimiser, data and noise,
and all tasks' meta steps update the same adjuster. :func:`fit_lockstep` runs such tasks with the
one training loop (:class:`~noisylabels.train.loop.Run`): in every epoch the tasks' training
steps are interleaved round-robin (task 0's step, task 1's step, ..., then task 0 again; a task
whose epoch has fewer batches drops out of the round until the epoch ends), then every task ends
its epoch (evaluation, selection, checkpoint). ``tie`` makes the methods share what they share
(e.g. one adjuster and its optimiser) after they are built and before checkpoints are restored.

Resume: every task checkpoints after each epoch; a resumed lockstep run restores every task
(the shared state is restored once per task, identically) and continues from the common epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..progress import progress_mode
from .loop import Run, TrainContext, status_of

__all__ = ["fit_lockstep"]


def fit_lockstep(cfgs: Sequence[dict[str, Any]], *, tie: Callable[[list[TrainContext]], None],
                 resume: bool = False, on_epoch_end: Callable[[int, list[Run]], None] | None = None,
                 on_begin: Callable[[int, list[Run]], None] | None = None,
                 on_built: Callable[[], None] | None = None, overwrite: bool = False) -> list[dict[str, Any]]:
    """Train the runs of ``cfgs`` (one per task) in lockstep; returns their summaries.

    Parameters
    ----------
    cfgs:
        Resolved configs, one per task, each with its own ``out`` directory and the same number of
        epochs.
    tie:
        Called once with the tasks' contexts after their methods are set up: share state here.
    resume:
        Continue every task from its checkpoint (all must be at the same epoch).
    on_epoch_end:
        Called after every epoch with the epoch and the runs (e.g. to snapshot shared state).
    on_begin:
        Called once before training with the first epoch to run (e.g. to restore snapshots).
    on_built:
        Called once every task is built (its data, files and checkpoints read) and before any
        earlier records are replaced (e.g. to replace the enclosing folder's previous run).
    overwrite:
        Replace earlier runs in the tasks' folders (else such folders are refused).

    Every task's folder is locked for the run (:class:`noisylabels.train.rundir.RunDir`); a
    task folder holding an earlier run is replaced only after every task is built.
    """
    if not cfgs:
        raise UserError("lockstep training needs at least one task")
    epochs = {int(c["train"]["epochs"]) for c in cfgs}
    if len(epochs) != 1 or len({c["out"] for c in cfgs}) != len(cfgs):
        raise UserError("lockstep tasks need the same number of epochs and distinct output directories")
    from .rundir import RunDir

    with ExitStack() as stack:
        claims = [stack.enter_context(RunDir(c["out"], resume=resume, overwrite=overwrite)) for c in cfgs]
        runs = [Run(cfg) for cfg in cfgs]
        if on_built is not None:
            on_built()
        for claim in claims:
            claim.start()
        return _train(runs, epochs.pop(), tie=tie, resume=resume, on_epoch_end=on_epoch_end, on_begin=on_begin)


def _train(runs: list[Run], epochs: int, *, tie: Callable[[list[TrainContext]], None], resume: bool,
           on_epoch_end: Callable[[int, list[Run]], None] | None,
           on_begin: Callable[[int, list[Run]], None] | None) -> list[dict[str, Any]]:
    tie([r.ctx for r in runs])
    for r in runs:
        r.begin(resume=resume)
    starts = {r.start_epoch for r in runs}
    if len(starts) != 1:
        raise UserError(f"cannot resume lockstep tasks stopped at different epochs ({sorted(starts)}); "
                        f"rerun without --resume")
    start = starts.pop()
    if on_begin is not None:
        on_begin(start, runs)
    error: BaseException | None = None
    try:
        for epoch in range(start, epochs):
            active = [r.steps(epoch) for r in runs]
            while active:
                for it in list(active):
                    try:
                        next(it)
                    except StopIteration:
                        active.remove(it)
            rows = [r.end_epoch(epoch) for r in runs]
            if progress_mode(runs[0].cfg["train"]["progress"]) is not None:  # one line per epoch, every task
                accs = ", ".join(f"{Path(str(r.cfg['out'])).name} {row['val_accuracy']:.3f}"
                                 for r, row in zip(runs, rows))
                print(f"epoch {epoch + 1}/{int(runs[0].cfg['train']['epochs'])}: val accuracy {accs}", flush=True)
            if on_epoch_end is not None:
                on_epoch_end(epoch, runs)
    except BaseException as exc:
        error = exc
        raise
    finally:
        summaries = [r.finish(status_of(error, r.finished)) for r in runs]
    return summaries
