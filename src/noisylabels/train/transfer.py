"""Meta-training one NARL-Adjuster over several noisy-label tasks, for transfer (T-*).

The run side of :mod:`noisylabels.methods.narl_transfer` (which states the paper's task grid, the
snapshot epochs and the adjuster file; ``default_tasks`` and ``ASYMMETRIC_MAPS`` are re-exported
here). Ding et al. (Sec. 3.3.2, Algorithm 1 in a multi-task setting): one adjuster is meta-trained on
several tasks -- the same dataset under several noise types and rates (the paper: CIFAR-10 x
{symmetric, asymmetric, instance} x {20, 40, 60%}, ResNet-32, 60 epochs, lr x0.1 at 40 and 50) --
and snapshots ``theta^(T/3)``, ``theta^(2T/3)``, ``theta^(T)`` are saved into one file, which
``--method t-narl --set method.adjuster=FILE`` uses on a new dataset (Algorithm 2).

How the tasks are interleaved is not specified by the paper; here (:func:`noisylabels.train.lockstep.fit_lockstep`)
every task has its own classifier, optimiser, noise realisation and meta batches, their training
steps alternate round-robin, and each task's meta step (every ``meta_interval``-th of *its* steps)
updates the one shared adjuster with the one shared Adam state
(:meth:`~noisylabels.methods.meta.MetaNetMethod.share_meta_net`). Snapshots are taken at the end of
epochs ``round(T/3)``, ``round(2T/3)`` and ``T`` (``T`` = epochs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import set_value
from ..errors import UserError
from ..io import atomic_torch_save
from ..methods.narl import NARL
from ..methods.narl_transfer import ASYMMETRIC_MAPS, default_tasks, save_adjuster, snapshot_epochs
from ..noise import list_noise_types
from .lockstep import fit_lockstep
from .loop import Run, TrainContext
from .rundir import register

__all__ = ["parse_task", "default_tasks", "meta_train_adjuster", "tie_adjusters", "ASYMMETRIC_MAPS"]


def parse_task(text: str) -> dict[str, Any]:
    """``'TYPE:RATE'`` (e.g. ``'symmetric:0.4'``) -> ``{'noise.type': ..., 'noise.rate': ...}``."""
    kind, sep, rate = str(text).partition(":")
    try:
        value = float(rate)
    except ValueError:
        value = float("nan")
    if not sep or kind not in list_noise_types() or not 0.0 <= value < 1.0:
        raise UserError(f"a task is TYPE:RATE with a registered noise type and a rate in [0, 1), e.g. "
                        f"symmetric:0.4; got {text!r}")
    return {"noise.type": kind, "noise.rate": value}


def tie_adjusters(ctxs: Sequence[TrainContext]) -> None:
    """Make every task's NARL train task 0's adjuster with task 0's optimiser (one module, one
    optimiser state: every task's meta step moves the shared adjuster)."""
    shared = ctxs[0].method
    if not isinstance(shared, NARL):
        raise UserError(f"narl-train meta-trains the narl method; got {type(shared).__name__}")
    for ctx in ctxs[1:]:
        ctx.method.share_meta_net(shared)  # type: ignore[attr-defined]


def meta_train_adjuster(base: Mapping[str, Any], tasks: Sequence[str], *, out: str | Path,
                        adjuster_out: str | Path | None = None, resume: bool = False,
                        overwrite: bool = False) -> dict[str, Any]:
    """Meta-train one adjuster on ``tasks`` (``TYPE:RATE`` strings) in lockstep; write the adjuster file.

    Parameters
    ----------
    base:
        A resolved config with ``method.name: narl`` (its options: the family, meta interval, ...).
    tasks:
        Noise settings of the tasks, e.g. ``['symmetric:0.2', 'instance:0.4']``.
    out:
        Folder of the task runs (``out/task-<k>-<type>-<rate>``) and of the snapshots so far.
    adjuster_out:
        The adjuster file (default ``out/adjuster.pt``); an existing file is refused unless ``overwrite``.
    resume:
        Continue the tasks of the run in ``out`` (the same tasks only).
    overwrite:
        Replace a narl-train run in ``out`` (only its records, once every task is built) and an
        existing ``adjuster_out``; without it both are refused, so task folders of two invocations
        never mix.
    resume:
        Continue interrupted task runs (same numbers).

    Returns
    -------
    dict
        ``{'adjuster': path, 'snapshot_epochs': [...], 'tasks': [...], 'summaries': [...]}``.
    """
    if str(base["method"]["name"]) != "narl":
        raise UserError(f"narl-train meta-trains the narl method; got --method {base['method']['name']}")
    if not tasks:
        raise UserError("narl-train needs at least one task (--task TYPE:RATE)")
    out = Path(out)
    path = Path(adjuster_out) if adjuster_out is not None else out / "adjuster.pt"
    if adjuster_out is not None and path.exists() and not overwrite:
        raise UserError(f"--adjuster-out {path} exists; give --overwrite to replace it, or choose another file")
    if path.is_dir():
        raise UserError(f"--adjuster-out {path} is a folder; give a file name")
    cfgs = []
    for k, text in enumerate(tasks):
        cfg = dict(base)
        for key, value in {**parse_task(text), "out": str(out / f"task-{k}-{text.replace(':', '-')}")}.items():
            cfg = set_value(cfg, key, value)
        cfgs.append(cfg)
    epochs = int(base["train"]["epochs"])
    snap_epochs = snapshot_epochs(epochs)
    snaps_path = out / "adjuster_snapshots.pt"
    snaps: dict[int, dict[str, torch.Tensor]] = {}

    def on_begin(start: int, runs: list[Run]) -> None:
        if start and snaps_path.is_file():
            saved = torch.load(snaps_path, map_location="cpu", weights_only=True)
            snaps.update({int(e): sd for e, sd in saved.items()})

    def on_epoch_end(epoch: int, runs: list[Run]) -> None:
        if epoch + 1 in snap_epochs:
            net = runs[0].ctx.method.meta_net  # type: ignore[attr-defined]
            snaps[epoch + 1] = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            atomic_torch_save({str(e): sd for e, sd in snaps.items()}, snaps_path, on_write=register)

    from .rundir import RunDir, read_marker

    with RunDir(out, resume=resume, overwrite=overwrite, replace_default=False) as claim:
        if resume:  # the same tasks only: a task folder of another invocation never joins this one
            mine = {Path(c["out"]).name for c in cfgs}
            other = sorted(n for n in (read_marker(out) or {}).get("manifest", [])
                           if n.startswith("task-") and n not in mine and (out / n).exists())
            if other:
                raise UserError(f"cannot resume narl-train in {out} with other tasks: it holds {', '.join(other)}; "
                                "give the same --task flags, or start anew with --overwrite")
        summaries = fit_lockstep(cfgs, tie=tie_adjusters, resume=resume, on_epoch_end=on_epoch_end, on_begin=on_begin,
                                 on_built=claim.start, overwrite=True)
        return _write_adjuster(base, summaries, out, path, snaps, snap_epochs, tasks)


def _write_adjuster(base: Mapping[str, Any], summaries: list[dict[str, Any]], out: Path, path: Path,
                    snaps: dict[int, dict[str, torch.Tensor]], snap_epochs: list[int],
                    tasks: Sequence[str]) -> dict[str, Any]:
    if not all(s.get("status") == "finished" for s in summaries):
        raise UserError(f"narl-train stopped before the end; rerun with --resume (records in {out})")
    method = NARL(**{k: v for k, v in base["method"].items() if k != "name"})
    register(path)  # the default OUT/adjuster.pt is part of the narl-train run
    save_adjuster(path, family=method.robust.family_name, adjuster=method.meta_net,
                  snapshots=[snaps[e] for e in snap_epochs], snapshot_epochs=snap_epochs, tasks=tasks)
    return {"adjuster": str(path), "snapshot_epochs": snap_epochs, "tasks": list(tasks), "summaries": summaries}
