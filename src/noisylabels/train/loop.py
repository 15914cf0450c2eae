"""The one training loop every method reuses.

:func:`fit` builds data, model, loss, method, optimiser and schedule from a config, then runs
epochs of ``method.train_step`` over shuffled (and batch-augmented) training batches, evaluates
on validation and test after every epoch, selects the model on validation accuracy only, writes
a checkpoint every epoch and can resume from it with the same numbers as an uninterrupted run.

Reproducibility: the global torch RNG is seeded from the run seed and saved in checkpoints; the
data order and augmentation of epoch ``e`` come from a generator seeded by ``(seed, e)``, so
they do not depend on what happened before (which is what makes resume exact).

The rooms around the loop: :mod:`.context` (the run's state), :mod:`.build` (what a config builds,
and the checks before any data are loaded), :mod:`.resume` (every check a resumed run passes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from .. import __version__
from ..config import eval_batch_size
from ..errors import NonFiniteLossError, UserError
from ..eval.metrics import detection_metrics
from ..methods import StepOutput
from ..seeding import derive_seed, seed_everything
from .build import build_method, check_device, check_names, resolve_method_defaults
from .context import TrainContext, evaluate, knn_monitor, make_context, predict_proba
from .distributed import SINGLE, Distributed, init_distributed, single_process
from .prepare import RunData, prepare_data
from .records import RunRecorder
from .resume import _kept_text, check_checkpoint, check_more_epochs, data_fingerprint, resume_hash
from .rundir import RunDir
from .syncbn import has_batchnorm, sync_batchnorm

__all__ = ["TrainContext", "Run", "build_context", "fit", "evaluate", "predict_proba", "seed_everything",
           "resolve_method_defaults", "status_of", "LAST_K", "check_names", "check_device",
           "resume_hash", "check_more_epochs", "data_fingerprint"]

#: selection-free summary: the mean test accuracy of the last ``LAST_K`` epochs (NARL's protocol)
LAST_K = 5


def build_context(cfg: dict[str, Any], *, data: RunData | None = None, dist: Distributed = SINGLE) -> TrainContext:
    """Build a run's :class:`TrainContext` (data, model, loss, method set up) without training.

    :func:`fit` starts from it; notebooks and tests use it to drive ``method.train_step`` by hand.
    The context's ``cfg`` is ``cfg`` with the method's defaults resolved (:func:`resolve_method_defaults`).
    ``dist``: this process's place in a data-parallel run (:mod:`.distributed`); every rank builds the
    same model, method and data from the seed, then ranks other than 0 reseed their global RNG
    (their own dropout masks) and write nothing into ``out`` (:class:`ScratchRecorder`).
    """
    cfg = check_names(cfg)
    seed_everything(int(cfg["seed"]))
    method = build_method(cfg)
    if data is None:
        data = prepare_data(cfg, needs_meta_set=method.needs_meta_set)
    if not getattr(data, "has_labels", True) and not method.self_supervised:
        raise UserError(f"the data have no labels (data.options.unlabeled): method {cfg['method']['name']!r} learns "
                        f"from labels; only self-supervised pretraining runs on them (noisylabels pretrain)")
    device = check_device(cfg["device"])
    if dist.active:
        if int(cfg["train"]["batch_size"]) % dist.world_size:
            raise UserError(f"train.batch_size {cfg['train']['batch_size']} is the global batch and must be divisible "
                            f"by the {dist.world_size} processes")
        if device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
    recorder = RunRecorder(cfg["out"]) if dist.is_main else ScratchRecorder(cfg["out"])
    ctx = make_context(cfg, data, device, recorder, method)
    ctx.dist = dist
    sync_batchnorm(cfg, dist, ctx.model)  # before the method's set-up (its networks are converted as built)
    ctx.method.setup(ctx)
    if dist.active:
        check_data_parallel(ctx)
    if dist.rank > 0:
        torch.manual_seed(derive_seed(int(cfg["seed"]), f"rank-{dist.rank}"))
    return ctx


class ScratchRecorder(RunRecorder):
    """The recorder of ranks other than 0: reads the run directory (a checkpoint to resume), writes
    what a method writes into a private temporary folder (removed at exit), never into ``out``."""

    def __init__(self, out_dir: Any) -> None:
        import atexit
        import shutil
        import tempfile
        from pathlib import Path

        self.out = Path(out_dir)
        self.scratch = Path(tempfile.mkdtemp(prefix="noisylabels-rank-"))
        atexit.register(shutil.rmtree, self.scratch, True)

    def path(self, name: str) -> Any:
        return self.scratch / name

    def load_checkpoint(self) -> Any:
        scratch = self.scratch
        try:
            self.scratch = self.out  # read the real one
            return super().load_checkpoint()
        finally:
            self.scratch = scratch


def _merged_per_sample(method: Any) -> list[torch.Tensor]:
    """The ``per_sample`` tables the loop merges over ranks after each epoch's steps: every one, the
    per-sample parameters (SOP's u and v) included: each rank steps only its slices' rows
    (:meth:`TrainContext.clip_and_step`: their gradients are weighted by ``n_r / n``, not all-reduced)."""
    return list(method.per_sample_tensors().values())


def check_data_parallel(ctx: TrainContext) -> None:
    """What a data-parallel run refuses: a method that says why (``Method.data_parallel_refusal``),
    BatchNorm with a meta method without ``train.sync_batchnorm`` (each process's batch statistics
    would differ from the global batch's, in the virtual step and the JVP rules; with it,
    :mod:`.syncbn`), ``train.compile`` with ``train.sync_batchnorm``, a multi-step meta look-ahead
    (its per-process window is not checkpointed per process); ``train.sync_batchnorm`` without
    BatchNorm warns. ``per_sample`` tables run: the loop merges them after each epoch's
    steps (each row from the rank whose slice held it, :meth:`Distributed.merge_rows_`), per-sample
    parameters too (their optimiser must leave a row without gradient unchanged: ``clip_and_step``)."""
    from ..methods.meta import MetaMethod

    name = ctx.cfg["method"]["name"]
    why = type(ctx.method).data_parallel_refusal
    if why:
        raise UserError(f"method {name!r} does not run on several processes: {why}; use one process")
    from ..meta.schedule import EveryK, MetaSchedule

    schedule = getattr(ctx.method, "schedule", None)  # a meta method's (Co-teaching's is a word)
    if isinstance(schedule, MetaSchedule) and not isinstance(schedule, EveryK):
        # a look-ahead window / k-step accumulator holds each process's own slices and partial sums,
        # but only rank 0's checkpoint is written: a resume would replay rank 0's on every rank
        raise UserError(f"method {name!r} with a multi-step look-ahead (lookahead / k > 1) does not run on several "
                        f"processes yet (each process's window is not checkpointed); use one process or k = 1")
    sync = bool(ctx.cfg["train"].get("sync_batchnorm"))
    nets = [ctx.model, *(n.model for n in getattr(ctx, "networks", {}).values())]
    meta_net = getattr(ctx.method, "meta_net", None)
    if isinstance(meta_net, torch.nn.Module):
        nets.append(meta_net)
    has_bn = any(has_batchnorm(m) for m in nets)
    if has_bn and isinstance(ctx.method, MetaMethod) and not sync:
        raise UserError(f"model {ctx.cfg['model']['name']!r} has BatchNorm: meta method {name!r} on several "
                        f"processes needs train.sync_batchnorm=true (else each process would normalise its own "
                        f"slice, in the virtual step and the JVP too); or use one process")
    if sync and ctx.cfg["train"].get("compile"):
        raise UserError("train.sync_batchnorm on several processes does not run with train.compile (its all-reduces "
                        "inside the forward are not compiled); set one of them to false")
    if sync and not has_bn and ctx.dist.is_main:
        import warnings

        warnings.warn(f"train.sync_batchnorm: model {ctx.cfg['model']['name']!r} has no BatchNorm layer; the option "
                      f"changes nothing", UserWarning, stacklevel=2)


def _summary(cfg: Mapping[str, Any], data: RunData, history: list[dict[str, Any]], best: Mapping[str, Any],
             seconds: float, status: str, *, seconds_total: float | None = None) -> dict[str, Any]:
    last = history[-1] if history else {}
    tail = [h["test_accuracy"] for h in history[-LAST_K:] if h.get("test_accuracy") is not None]
    return {
        "status": status,
        "method": cfg["method"]["name"],
        "loss": cfg["loss"]["name"],
        "meta_set": cfg["data"]["meta_set"] if len(data.splits["meta"]) else None,
        "model": cfg["model"]["name"],
        "dataset": cfg["data"]["name"],
        "noise": cfg["noise"]["type"],
        "noise_rate": float(cfg["noise"]["rate"]),
        "seed": int(cfg["seed"]),
        "test_accuracy": best.get("test_accuracy"),
        "best_epoch": best.get("epoch"),
        "best_val_accuracy": best.get("val_accuracy"),
        "last_test_accuracy": last.get("test_accuracy"),
        f"last{LAST_K}_test_accuracy": sum(tail) / len(tail) if len(tail) == LAST_K else None,
        "epochs_run": len(history),
        "realized_noise_rate": data.realized_noise_rate("train"),
        "ground_truth": bool(data.has_ground_truth),
        "test_carved": bool(data.test_carved),
        "num_train": len(data.splits["train"]),
        "num_val": len(data.splits["val"]),
        "num_meta": len(data.splits["meta"]),
        "num_test": len(data.test_labels),
        "seconds": seconds,
        "seconds_total": seconds if seconds_total is None else seconds_total,
        "version": __version__,
        **({"monitor": "knn" if data.has_labels and cfg["method"].get("knn_k", 1) else "none",
            "selection": "last epoch"} if _self_supervised(cfg) else {}),
    }


def _self_supervised(cfg: Mapping[str, Any]) -> bool:
    from ..methods import METHODS

    return bool(METHODS.get(str(cfg["method"]["name"])).self_supervised)


class Run:
    """One run between epochs: what :func:`fit` drives, and what a lockstep driver interleaves
    (:func:`noisylabels.train.lockstep.fit_lockstep`: several runs whose methods share state).

    ``Run(cfg)`` builds the context (:func:`build_context`); :meth:`begin` restores the checkpoint
    (``resume``) or writes the first records; :meth:`steps` runs one epoch's training steps, one
    per ``next()``; :meth:`end_epoch` evaluates, selects on validation, checkpoints; :meth:`finish`
    writes the summary (and, for a finished run, scores every sample).
    """

    def __init__(self, cfg: dict[str, Any], *, data: RunData | None = None, dist: Distributed = SINGLE,
                 allow_other_world_size: bool = False) -> None:
        self.t0 = time.perf_counter()
        if cfg["train"]["num_threads"]:
            torch.set_num_threads(int(cfg["train"]["num_threads"]))
        self.dist, self.allow_other_world_size = dist, bool(allow_other_world_size)
        self.ctx = build_context(cfg, data=data, dist=dist)
        self.cfg = self.ctx.cfg
        self.history: list[dict[str, Any]] = []
        self.start_epoch, self.seconds_before = 0, 0.0
        self._row: dict[str, Any] = {}

    @property
    def epochs(self) -> int:
        return self.ctx.epochs

    def begin(self, *, resume: bool = False) -> None:
        """Restore ``out/checkpoint.pt`` (if ``resume`` and present), else write the first records;
        then ``summary.json`` says ``running``.

        A checkpoint carries the hash of the config it was written under (:func:`resume_hash`)
        and a fingerprint of the data (:func:`data_fingerprint`): one written under another config
        or on other data (e.g. ``--data-dir`` pointing elsewhere) is refused, never continued; one
        without a fingerprint (an older noisylabels) is refused too, since nothing shows its data.
        The one setting a resumed
        run may change is ``train.epochs``, to more than the epochs run, when neither the
        schedule nor the method depends on the total (see :func:`check_more_epochs`).
        """
        ctx, data, recorder = self.ctx, self.ctx.data, self.ctx.recorder
        _ = self.data_fingerprint  # of the data as built, before any epoch (a method may change labels later)
        ckpt = recorder.load_checkpoint() if resume else None
        if ckpt is not None:
            self._check_checkpoint_config(ckpt)
            ctx.model.load_state_dict(ckpt["model"])
            if ckpt.get("schedule_start_epoch"):
                ctx.restart_schedule(int(ckpt["schedule_start_epoch"]))
            ctx.optimizer.load_state_dict(ckpt["optimizer"])
            ctx.scheduler.load_state_dict(ckpt["scheduler"])
            _load_networks(ctx, ckpt.get("networks", {}), path=recorder.path("checkpoint.pt"))
            _load_modules(ctx, ckpt.get("modules", {}), path=recorder.path("checkpoint.pt"))
            ctx.method.load_state_dict(ckpt["method"])
            ctx.method.load_records_state_dict(ckpt.get("records", {}))
            ctx.method.load_per_sample_state_dict(ckpt.get("per_sample", {}))
            self._restore_rng(ckpt)
            if ckpt.get("scaler") and ctx.extra.get("scaler") is not None:
                ctx.extra["scaler"].load_state_dict(ckpt["scaler"])
            self.history = ckpt["history"]
            ctx.best.update(ckpt["best"])
            self.start_epoch, self.seconds_before = int(ckpt["epoch"]) + 1, self._seconds_so_far(ckpt)
            ctx.step = int(ckpt["step"])
            if self.dist.is_main:
                recorder.write_config(self.cfg)  # where this run now lives (--out), and any added epochs
        elif not self.dist.is_main:
            pass
        else:
            recorder.write_config(self.cfg)
            recorder.write_labels(clean=data.clean_labels.numpy(), observed=data.labels.numpy(),
                                  splits={k: v.numpy() for k, v in data.splits.items()},
                                  ood=None if data.open_set_mask is None else data.open_set_mask.numpy(),
                                  paths=data.paths, test_labels=data.test_labels.numpy(), test_paths=data.test_paths)
        self.write_running_summary()

    def _restore_rng(self, ckpt: Mapping[str, Any]) -> None:
        """This rank's RNG states from the checkpoint (``rank_rng``: one entry per rank of the run that
        wrote it). Another number of processes is refused unless ``allow_other_world_size``: then rank
        ``r`` takes the saved rank ``r``'s state where there is one and a fresh seeded stream otherwise
        (the global batches and the gradients are those of the same global batch either way; what
        changes is the draws inside a step, e.g. dropout masks, and the reductions' round-off)."""
        saved_world = int(ckpt.get("world_size", 1))
        world, rank = self.dist.world_size, self.dist.rank
        if saved_world != world and not self.allow_other_world_size:
            raise UserError(f"cannot resume from {self.ctx.recorder.path('checkpoint.pt')} on {world} process(es): it was "
                            f"written by {saved_world}; resume with --nproc {saved_world}, or pass "
                            f"--allow-other-world-size (the same global batches; other random draws inside the steps)")
        states = list(ckpt.get("rank_rng") or [{"torch": ckpt["torch_rng"], "cuda": ckpt.get("cuda_rng") or []}])
        if rank < len(states):
            torch.set_rng_state(states[rank]["torch"])
            if states[rank].get("cuda") and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(list(states[rank]["cuda"]))
        else:
            torch.manual_seed(derive_seed(self.ctx.seed, f"rank-{rank}-epoch-{int(ckpt['epoch']) + 1}"))

    def _seconds_so_far(self, ckpt: Mapping[str, Any]) -> float:
        """The run's wall time before this process: the running total the last summary persisted
        (it counts the time after the last checkpoint too: the final epoch's scoring, an interrupted
        epoch), else the checkpoint's."""
        import json

        try:
            total = json.loads(self.ctx.recorder.path("summary.json").read_text()).get("seconds_total")
        except (OSError, ValueError, AttributeError):
            total = None
        if isinstance(total, (int, float)) and not isinstance(total, bool) and math.isfinite(total) \
                and total >= float(ckpt["seconds"]):
            return float(total)
        return float(ckpt["seconds"])

    def _check_checkpoint_config(self, ckpt: Mapping[str, Any]) -> None:
        check_checkpoint(ckpt, self.cfg, path=self.ctx.recorder.path("checkpoint.pt"),
                         fingerprint=self.data_fingerprint, epochs=self.epochs)

    @property
    def data_fingerprint(self) -> str:
        """A hash of what the run trains and is tested on: pool and test images, the labels it sees
        and the clean ones (where the files live does not matter: a moved data folder resumes)."""
        if "_data_fingerprint" not in self.__dict__:
            self._data_fingerprint = data_fingerprint(self.ctx.data)
        return self._data_fingerprint

    def write_running_summary(self) -> None:
        """``summary.json`` with ``status: running`` and the epochs so far (rank 0 only)."""
        if self.dist.is_main:
            self.ctx.recorder.write_summary(self._summary("running"))

    def _summary(self, status: str) -> dict[str, Any]:
        seconds = self.seconds  # read once: the total is the earlier processes' total plus exactly this
        return _summary(self.cfg, self.ctx.data, self.history, self.ctx.best, seconds, status,
                        seconds_total=self.seconds_before + seconds)

    def steps(self, epoch: int) -> Iterator[None]:
        """The training steps of ``epoch``, one per ``next()``; the loop's accounting (loss, accuracy)."""
        ctx, method, device = self.ctx, self.ctx.method, self.ctx.device
        ctx.start_epoch(epoch)
        ctx.model.train()
        for net in ctx.networks.values():
            if net.optimizer is not None:
                net.model.train()
        for module, _ in ctx.modules.values():
            module.train()
        method.start_epoch(ctx)
        gen = torch.Generator().manual_seed(derive_seed(ctx.seed, f"epoch-{epoch}"))
        tot_loss = tot_correct = tot_count = tot_scored = 0.0
        batches = method.epoch_batches(ctx, gen)
        # a method's own batches may be more or fewer than steps_per_epoch: the schedules then advance
        # by the epoch's fraction, so they end each epoch where the loop's own batches would
        n_own = len(batches) if batches is not None and hasattr(batches, "__len__") else None
        if batches is None:
            batches = ctx.loader("train", shuffle=True, augment=True, generator=gen, views=ctx.views)
        spe, first = ctx.steps_per_epoch, epoch * ctx.steps_per_epoch
        dist = ctx.dist
        tables = _merged_per_sample(method) if dist.active else []
        written = torch.zeros(len(ctx.data.labels), dtype=torch.bool) if tables else None
        for j, batch in enumerate(batches):
            views = getattr(batch, "views", ())
            xs = tuple(views) if len(views) > 1 else (batch.x,)
            yb, ib = batch.y, batch.index
            if dist.active:  # every rank drew the global batch; each trains on its slice
                sl = dist.shard(len(yb))
                own = getattr(batch, "shard_views", None)  # views of other sizes (DivideMix's unlabelled) split themselves
                xs = own(dist) if own is not None else tuple(v[sl] for v in xs)
                yb, ib = yb[sl], ib[sl]
                if written is not None:
                    written[ib] = True
            y = yb.to(device)
            x = tuple(ctx.to_device(v) for v in xs) if len(xs) > 1 else ctx.to_device(xs[0])
            dist.in_step = True
            try:
                with ctx.autocast():
                    out = method.train_step(ctx, x, y, ib.to(device))
            finally:
                dist.in_step = False
            if not isinstance(out, StepOutput):
                raise TypeError(f"{type(method).__name__}.train_step must return a StepOutput, got {type(out).__name__}")
            n = float(y.numel())
            # n == 0: an epoch's last batch smaller than the world left this rank's slice empty: its loss
            # is a mean over nothing (NaN), its gradient 0, its weight n_r / n 0 in the all-reduce
            if n:
                loss = float(out.loss)
                if not math.isfinite(loss):
                    raise NonFiniteLossError(f"non-finite loss at epoch {epoch} step {ctx.step}; training stopped, "
                                             f"{_kept_text(ctx.recorder.path('checkpoint.pt'), epoch)}")
                tot_loss += loss * n
                if out.logits is not None:  # None: the step trained no classifier (self-supervised)
                    tot_correct += float((out.logits.detach().argmax(1) == y).sum())
                    tot_scored += n
                tot_count += n
            ctx.step_schedules(to=None if n_own is None else first + ((j + 1) * spe) // max(n_own, 1))
            ctx.step += 1
            yield
        if written is not None:  # each row of the per-sample state from the rank that wrote it
            dist.merge_rows_(tables, written)
        if dist.active:  # the epoch's sums over every rank's slices
            totals = torch.tensor([tot_loss, tot_correct, tot_count, tot_scored], dtype=torch.float64, device=device)
            dist.all_reduce_sum_([totals])
            tot_loss, tot_correct, tot_count, tot_scored = (float(v) for v in totals.tolist())
        self._row = {"epoch": epoch, "lr": ctx.lr, "train_loss": tot_loss / max(tot_count, 1),
                     "train_accuracy": tot_correct / tot_scored if tot_scored else None}

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """The method's epoch records, validation and test accuracy, model selection (validation
        only), checkpoint and ``metrics.jsonl``; returns the epoch's row."""
        ctx, data, recorder, tcfg = self.ctx, self.ctx.data, self.ctx.recorder, self.cfg["train"]
        eval_kw = dict(mean=data.mean, std=data.std, batch_size=eval_batch_size(self.cfg), device=ctx.device)
        row = dict(self._row)
        row.update(ctx.method.end_epoch(ctx))
        rank_rng = self.dist.gather_objects({"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all()
                                             if torch.cuda.is_available() else []}) if tcfg["checkpoint"] else []
        if not self.dist.is_main:  # rank 0 alone evaluates (the models are equal) and writes
            self.history.append(row)
            return row
        model = ctx.method.eval_model(ctx)
        best = ctx.best
        if ctx.method.self_supervised:
            # no classifier was trained: a weighted kNN classifier on the features is the accuracy, and
            # nothing is selected (the last epoch is the result; backbone.pt is written at the end)
            knn = knn_monitor(model, data, ctx.images, ctx.labels, k=int(ctx.method.knn_k),
                              temperature=float(ctx.method.knn_temperature),
                              batch_size=eval_batch_size(self.cfg), device=ctx.device)
            row.update(val_accuracy=knn["val_accuracy"], val_loss=None, test_accuracy=knn["test_accuracy"],
                       test_loss=None)
            self.history.append(row)
            best.clear()
            best.update(epoch=epoch, val_accuracy=knn["val_accuracy"], test_accuracy=knn["test_accuracy"])
        else:
            val = evaluate(model, ctx.images, ctx.labels, data.splits["val"], **eval_kw)
            test = evaluate(model, data.test_images, data.test_labels, None, **eval_kw)
            row.update(val_accuracy=val["accuracy"], val_loss=val["loss"], test_accuracy=test["accuracy"],
                       test_loss=test["loss"])
            for name, other in ctx.method.report_models(ctx).items():  # e.g. each network of a pair on its own
                v = evaluate(other, ctx.images, ctx.labels, data.splits["val"], **eval_kw)
                t = evaluate(other, data.test_images, data.test_labels, None, **eval_kw)
                row.update({f"val_accuracy_{name}": v["accuracy"], f"val_loss_{name}": v["loss"],
                            f"test_accuracy_{name}": t["accuracy"], f"test_loss_{name}": t["loss"]})
            self.history.append(row)
            # Model selection on the (noisy) validation split only; ties keep the earlier epoch.
            val_acc = val["accuracy"] if math.isfinite(val["accuracy"]) else -1.0
            if not best or val_acc > best["val_accuracy"]:
                best.clear()
                best.update(epoch=epoch, val_accuracy=val_acc, test_accuracy=test["accuracy"],
                            **{k: v for k, v in row.items() if k.startswith("detection_")})
                recorder.save_best_model(model.state_dict())
        if tcfg["checkpoint"]:
            recorder.save_checkpoint({
                "epoch": epoch, "step": ctx.step, "model": ctx.model.state_dict(),
                "optimizer": ctx.optimizer.state_dict(), "scheduler": ctx.scheduler.state_dict(),
                "method": ctx.method.state_dict(), "records": ctx.method.records_state_dict(),
                **_network_state(ctx), **_per_sample_state(ctx.method),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "scaler": ctx.extra["scaler"].state_dict() if ctx.extra.get("scaler") is not None else {},
                "history": self.history, "best": dict(best),
                "seconds": self.seconds_total, "schedule_start_epoch": ctx.schedule_start_epoch,
                "config_hash": resume_hash(self.cfg), "epochs": self.epochs,
                "data_fingerprint": self.data_fingerprint,
                "world_size": self.dist.world_size, "rank_rng": rank_rng,
            })
        recorder.write_metrics(self.history)
        self.write_running_summary()
        return row

    @property
    def seconds(self) -> float:
        """Wall time of this process's part of the run (from building it)."""
        return time.perf_counter() - self.t0

    @property
    def seconds_total(self) -> float:
        """Wall time of the whole run: this process and those it resumed."""
        return self.seconds_before + self.seconds

    @property
    def finished(self) -> bool:
        return bool(self.history) and self.history[-1]["epoch"] == self.epochs - 1

    def finish(self, status: str) -> dict[str, Any]:
        """Write ``summary.json`` (and, if ``status == 'finished'``, score every sample), the metrics
        and the curves; returns the summary."""
        cfg, recorder = self.cfg, self.ctx.recorder
        summary = self._summary(status)
        if not self.dist.is_main:
            return summary
        if status == "finished":
            summary.update(_finalize(self.ctx, recorder))
        recorder.write_metrics(self.history)
        recorder.write_summary(summary)
        if self.history:
            try:
                data = self.ctx.data
                test = "test (clean)" if data.has_ground_truth else (
                    "test (carved from your labels)" if data.test_carved else "test (your test labels)")
                noise = ("no simulated noise" if str(cfg["noise"]["type"]).lower() == "none"
                         else f"{cfg['noise']['type']} {cfg['noise']['rate']}")
                recorder.plot_curves(self.history, title=f"{cfg['method']['name']} / {cfg['loss']['name']} on "
                                     f"{cfg['data']['name']}, {noise}", test_label=test)
            except Exception as exc:  # a plot must never lose the run's results
                summary["plot_error"] = str(exc)
        return summary


def _network_state(ctx: TrainContext) -> dict[str, Any]:
    """Checkpoint entries of the method's networks and added modules (none: the keys are left out,
    as before networks)."""
    out: dict[str, Any] = {}
    if ctx.modules:
        out["modules"] = {name: module.state_dict() for name, (module, _) in ctx.modules.items()}
    if not ctx.networks:
        return out
    return {**out, "networks": {name: {"model": net.model.state_dict(),
                                "optimizer": net.optimizer.state_dict() if net.optimizer is not None else {},
                                "scheduler": net.scheduler.state_dict() if net.scheduler is not None else {}}
                         for name, net in ctx.networks.items()}}


def _per_sample_state(method: Any) -> dict[str, Any]:
    state = method.per_sample_state_dict()
    return {"per_sample": state} if state else {}


def _load_networks(ctx: TrainContext, state: Mapping[str, Any], *, path: Any) -> None:
    missing = sorted(set(ctx.networks) - set(state))
    if missing:
        raise UserError(f"cannot resume from {path}: it holds no network {', '.join(missing)} of method "
                        f"{ctx.cfg['method']['name']!r}")
    for name, net in ctx.networks.items():
        net.model.load_state_dict(state[name]["model"])
        if net.optimizer is not None:
            net.optimizer.load_state_dict(state[name]["optimizer"])
            net.scheduler.load_state_dict(state[name]["scheduler"])


def _load_modules(ctx: TrainContext, state: Mapping[str, Any], *, path: Any) -> None:
    missing = sorted(set(ctx.modules) - set(state))
    if missing:
        raise UserError(f"cannot resume from {path}: it holds no module {', '.join(missing)} of method "
                        f"{ctx.cfg['method']['name']!r}")
    for name, (module, _) in ctx.modules.items():
        module.load_state_dict(state[name])


def status_of(exc: BaseException | None, finished: bool) -> str:
    """The summary status of a run that ended with ``exc`` (``None``: returned normally)."""
    if exc is None:
        return "finished" if finished else "stopped"
    if isinstance(exc, NonFiniteLossError):
        return "diverged"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return "failed"


#: ``resolve(cfg, data, progress) -> cfg``: settles config values that need a computation of their own
Resolve = Callable[[dict[str, Any], RunData, Any], dict[str, Any]]


def fit(cfg: dict[str, Any], *, resume: bool = False, overwrite: bool = False, stop_after: int | None = None,
        progress: bool | str | None = None, data: RunData | None = None,
        resolve: Resolve | None = None, allow_other_world_size: bool = False) -> dict[str, Any]:
    """Train one run described by a resolved config; write its records to ``cfg['out']``.

    Launched by ``torchrun`` (``WORLD_SIZE > 1``), the run is data-parallel over the process group
    (:mod:`noisylabels.train.distributed`): the same numbers as one process with the same global
    ``train.batch_size``; rank 0 claims the run directory and writes every record.

    Parameters
    ----------
    cfg:
        A resolved config (:func:`noisylabels.config.resolve_config`).
    resume:
        Continue from ``out/checkpoint.pt`` if present (numbers equal an uninterrupted run); a
        checkpoint of another config is refused.
    overwrite:
        A new run into a folder that holds an earlier run replaces it (removing only that run's
        records, its manifest); without it such a folder is refused. The folder is locked for the
        run's lifetime, and nothing is removed before everything the run reads has been read
        (:class:`noisylabels.train.rundir.RunDir`).
    stop_after:
        Stop after this many epochs *in this call* (a budget; the run can be resumed later).
    progress:
        Default ``cfg['train']['progress']``: ``True`` shows a tqdm bar on a terminal and prints
        one line per epoch elsewhere (a log, a pipe); ``"lines"``: always lines; ``False``: quiet
        (:func:`noisylabels.progress.progress_mode`).
    data:
        Pre-built :class:`RunData` (otherwise built from the config).
    resolve:
        ``resolve(cfg, data, progress) -> cfg`` for a new run: settles config values a higher layer
        computes (``method.forget_rate: estimate`` from a cross-fitted warm-up:
        :func:`noisylabels.detect.resolve_forget_rate`, which ``noisylabels train`` passes). It runs
        once the folder is claimed and the data are read, and may write nested runs into
        ``cfg['out']`` (they belong to this run); the config it returns is the run's (``config.yaml``).
        A resumed run calls it again on the same config: it must return the same values without
        redoing its work (``resolve_forget_rate`` reuses its finished warm-up), so that a caller
        resuming with the unresolved config (a suite cell) continues the run it started. In a
        data-parallel run rank 0 calls it alone, its nested runs on one process, and the others
        wait for the config it returns.
    allow_other_world_size:
        Resume a checkpoint written by another number of processes (see :meth:`Run._restore_rng`).

    Returns
    -------
    dict
        The summary written to ``summary.json``.
    """
    dist = init_distributed(check_device(cfg["device"]))
    from contextlib import ExitStack

    # one path for one process and for several: rank 0 claims the folder and settles the config; the
    # collectives below are the identity on one process, where every error is raised as it is
    with ExitStack() as stack:
        claim, refusal = None, None
        if dist.is_main:
            try:  # refusals and the lock; nothing removed
                claim = stack.enter_context(RunDir(cfg["out"], resume=resume, overwrite=overwrite))
            except UserError as exc:
                if not dist.active:
                    raise
                refusal = str(exc)
        refusal = dist.broadcast_object(refusal)
        if refusal is not None:
            raise UserError(refusal)
        if resolve is not None:  # rank 0 settles the config on one process; the others wait for it
            answer: tuple[str, Any] = ("ok", cfg)
            if claim is not None:
                try:
                    if data is None:  # the data as Run(cfg) builds them (the values resolved do not change them)
                        run_cfg = check_names(cfg)
                        data = prepare_data(run_cfg, needs_meta_set=build_method(run_cfg).needs_meta_set)
                    claim.start()  # a new run: what resolve writes into the folder is this run's
                    with single_process():
                        answer = ("ok", resolve(cfg, data, progress))
                except BaseException as exc:
                    if dist.active:
                        dist.broadcast_object(("error", f"rank 0 failed before training: {exc}"))
                    raise
            kind, value = dist.broadcast_object(answer)
            if kind == "error":
                raise UserError(value)
            cfg = value
        try:  # reads everything the run needs (every rank reads the checkpoint before rank 0 replaces anything)
            run, failed = Run(cfg, data=data, dist=dist, allow_other_world_size=allow_other_world_size), None
        except BaseException as exc:
            if not dist.active:
                raise
            run, failed = None, exc
        errors = [e for e in dist.gather_objects(None if failed is None else str(failed)) if e is not None]
        if failed is not None:
            raise failed
        if errors:  # another rank failed: stop here rather than wait for it in a collective
            raise UserError(f"another process failed before training: {errors[0]}")
        if claim is not None:
            claim.start()  # only now does a new run replace the previous one's records
        return _train(run, resume=resume, stop_after=stop_after, progress=progress if dist.is_main else False)


def _train(run: Run, *, resume: bool, stop_after: int | None, progress: bool | str | None) -> dict[str, Any]:
    run.begin(resume=resume)
    epochs, start = run.epochs, run.start_epoch
    end_epoch = epochs if stop_after is None else min(epochs, start + int(stop_after))
    from tqdm.auto import tqdm

    from ..progress import progress_mode

    mode = progress_mode(run.cfg["train"]["progress"] if progress is None else progress)
    lines = mode == "lines"  # off a terminal: one plain line per epoch instead of a bar
    bar = tqdm(range(start, end_epoch), desc=f"{run.cfg['method']['name']}", unit="epoch",
               disable=mode != "bar", leave=False, initial=start, total=epochs)
    error: BaseException | None = None
    try:
        for epoch in bar:
            for _ in run.steps(epoch):
                pass
            row = run.end_epoch(epoch)
            if "val_accuracy" not in row:  # a data-parallel rank other than 0: no evaluation
                continue
            bar.set_postfix(val=_num(row["val_accuracy"], 3), test=_num(row["test_accuracy"], 3))
            if lines:
                what = "kNN " if run.ctx.method.self_supervised else ""
                print(f"epoch {epoch + 1}/{epochs}: train loss {row['train_loss']:.4f}, {what}val accuracy "
                      f"{_num(row['val_accuracy'], 4)}, {what}test accuracy {_num(row['test_accuracy'], 4)} "
                      f"({run.seconds:.1f} s)", flush=True)
    except BaseException as exc:
        error = exc
        raise
    finally:
        bar.close()
        summary = run.finish(status_of(error, run.finished))
    return summary


def _num(v: Any, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _finalize(ctx: TrainContext, recorder: RunRecorder) -> dict[str, Any]:
    """Score every training sample with the selected model; write ``suspects.csv``. A self-supervised
    run scores nothing (no classifier was trained) and writes ``backbone.pt`` instead."""
    data = ctx.data
    model = ctx.method.eval_model(ctx)
    if ctx.method.self_supervised:
        from ..models.checkpoint import backbone_state_dict
        from .records import atomic_torch_save

        path = recorder.path("backbone.pt")
        atomic_torch_save(backbone_state_dict(model), path)
        return {"backbone": str(path), **ctx.method.finish(ctx)}
    best_path = recorder.path("best_model.pt")
    if best_path.is_file():
        model.load_state_dict(torch.load(best_path, map_location=ctx.device, weights_only=True))
    idx = data.splits["train"]
    probs = predict_proba(model, ctx.images, idx.to(ctx.images.device), mean=data.mean, std=data.std,
                          batch_size=eval_batch_size(ctx.cfg), device=ctx.device)
    given = data.labels[idx]
    scores = ctx.method.sample_scores(ctx, probs, given).detach().cpu().numpy()
    recorder.write_suspects(index=idx.numpy(), given=given.numpy(), predicted=probs.argmax(1).numpy(),
                            score=scores, classes=data.classes, paths=data.paths,
                            score_column=ctx.method.score_column)
    from .scoring import held_out_rows, pool_and_test_probs, write_pred_probs  # every sample, for `detect`
    write_pred_probs(recorder, pool_and_test_probs(model, data, batch_size=eval_batch_size(ctx.cfg),
                     device=ctx.device), held_out=held_out_rows(data, trained_on=idx.numpy()), data=data,
                     method_scores=(idx.numpy(), scores))
    out: dict[str, Any] = {}
    if data.has_ground_truth:  # without it nothing is known to be wrong: no detection metrics
        noisy = data.is_noisy[idx].numpy()
        out.update(detection_metrics(scores, noisy))
        if ctx.method.detection is not None:  # the method's own score; the selected model's confidence beside it
            confidence = (1.0 - probs.gather(1, given[:, None]).squeeze(1)).numpy()
            out.update({f"confidence_{k}": v for k, v in detection_metrics(confidence, noisy).items()})
        out["train_accuracy_clean"] = float((probs.argmax(1) == data.clean_labels[idx]).float().mean())
    out.update(ctx.method.finish(ctx))
    return out
