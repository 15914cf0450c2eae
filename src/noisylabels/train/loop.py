"""The one training loop every method reuses.

:func:`fit` builds data, model, loss, method, optimiser and schedule from a config, then runs
epochs of ``method.train_step`` over shuffled (and batch-augmented) training batches, evaluates
on validation and test after every epoch, selects the model on validation accuracy only, writes
a checkpoint every epoch and can resume from it with the same numbers as an uninterrupted run.

Reproducibility: the global torch RNG is seeded from the run seed and saved in checkpoints; the
data order and augmentation of epoch ``e`` come from a generator seeded by ``(seed, e)``, so
they do not depend on what happened before (which is what makes resume exact).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .. import __version__
from ..data import Batch, BatchLoader
from ..data.stream import batch_loader
from ..errors import NonFiniteLossError, UserError
from ..eval.metrics import detection_metrics
from ..losses import create_loss
from ..methods import METHODS, MetaBatch, Method, StepOutput, check_loss_section, create_method
from ..models import create_model
from ..seeding import derive_seed, seed_everything
from .optim import build_optimizer, build_scheduler
from .prepare import RunData, prepare_data
from .records import RunRecorder
from .rundir import RunDir

__all__ = ["TrainContext", "Run", "build_context", "fit", "evaluate", "predict_proba", "seed_everything",
           "resolve_method_defaults", "status_of", "LAST_K", "check_names", "check_device",
           "resume_hash", "check_more_epochs", "data_fingerprint"]

#: selection-free summary: the mean test accuracy of the last ``LAST_K`` epochs (NARL's protocol)
LAST_K = 5


@dataclass
class TrainContext:
    """The run's state; satisfies :class:`noisylabels.methods.MethodContext` (what a method sees)."""

    cfg: dict[str, Any]
    data: RunData
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: Callable[..., torch.Tensor]
    method: Method
    device: torch.device
    recorder: RunRecorder
    steps_per_epoch: int
    epoch: int = 0
    step: int = 0
    schedule_start_epoch: int = 0   # > 0 after restart_schedule (saved in checkpoints)
    best: dict[str, Any] = field(default_factory=dict)  # the validation-selected epoch so far
    extra: dict[str, Any] = field(default_factory=dict)
    _meta_streams: dict[int, Iterator[Batch]] = field(default_factory=dict, repr=False)

    @property
    def seed(self) -> int:
        return int(self.cfg["seed"])

    @property
    def epochs(self) -> int:
        return int(self.cfg["train"]["epochs"])

    def start_epoch(self, epoch: int) -> None:
        """Set the epoch and restart the meta-batch streams (seeded by ``(seed, epoch)``)."""
        self.epoch = int(epoch)
        self._meta_streams.clear()

    def next_meta_batch(self, batch_size: int | None = None) -> MetaBatch:
        """The next batch of the meta split (shuffled, augmented like training), on the device."""
        bs = int(batch_size or self.cfg["train"]["batch_size"])
        stream = self._meta_streams.get(bs)
        if stream is None:
            stream = self._meta_streams[bs] = self._meta_stream(bs)
        b = next(stream)
        return MetaBatch(self.to_device(b.x), b.y.to(self.device), b.index.to(self.device))

    def _meta_stream(self, batch_size: int) -> Iterator[Batch]:
        if len(self.data.splits["meta"]) == 0:
            raise UserError(f"method {self.cfg['method']['name']!r} asked for meta batches but the meta set is empty")
        gen = torch.Generator().manual_seed(derive_seed(self.seed, f"meta-{self.epoch}"))
        while True:
            yield from self.loader("meta", shuffle=True, augment=True, batch_size=batch_size, generator=gen)

    @property
    def lr(self) -> float:
        """Learning rate of the current step (what ``optimizer.step`` will use)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def loader(self, split: str | torch.Tensor, *, shuffle: bool, augment: bool, batch_size: int | None = None,
               generator: torch.Generator | None = None, drop_last: bool = False) -> BatchLoader:
        """Batches of the training pool restricted to ``split`` (a name or index tensor)."""
        idx = self.data.splits[split] if isinstance(split, str) else split
        return batch_loader(self.images, self.labels, idx, batch_size=batch_size or int(self.cfg["train"]["batch_size"]),
                           shuffle=shuffle, mean=self.data.mean, std=self.data.std,
                           augment=self.data.augment if augment else None, generator=generator,
                           drop_last=drop_last)

    @property
    def images(self) -> torch.Tensor:
        return self.extra["images"]

    @property
    def labels(self) -> torch.Tensor:
        return self.extra["labels"]

    def predict(self, split: str | torch.Tensor = "train", *, model: torch.nn.Module | None = None) -> torch.Tensor:
        """Softmax outputs of ``model`` (default: the one being trained; eval mode, no augmentation)
        on a split of the pool."""
        idx = self.data.splits[split] if isinstance(split, str) else split
        return predict_proba(self.model if model is None else model, self.images, idx.to(self.images.device), mean=self.data.mean,
                             std=self.data.std, batch_size=int(self.cfg["train"]["eval_batch_size"]),
                             device=self.device)

    def restart_schedule(self, start_epoch: int) -> None:
        """Restart the learning-rate schedule at ``start_epoch`` over the remaining epochs and clear
        the optimiser's state (used by two-stage methods that retrain from scratch)."""
        self.schedule_start_epoch = int(start_epoch)
        self.optimizer.state.clear()
        self.scheduler = _scheduler(self.optimizer, self.cfg, self.steps_per_epoch, self.schedule_start_epoch)

    def reinit_model(self) -> None:
        """Re-initialise the model's weights in place (deterministic from the run seed)."""
        fresh = _create_model(self.cfg, self.data, seed=derive_seed(int(self.cfg["seed"]), f"reinit-{self.epoch}"))
        self.model.load_state_dict(fresh.state_dict())

    def reset_model_selection(self) -> None:
        """Forget the best-validation epoch so far (e.g. after a first training stage)."""
        self.best.clear()

    def backward_and_step(self, loss: torch.Tensor) -> None:
        """``zero_grad``, ``backward``, optional gradient-norm clipping, ``optimizer.step`` (through
        the fp16 gradient scaler when ``train.amp: fp16``)."""
        self.optimizer.zero_grad(set_to_none=True)
        scaler = self.extra.get("scaler")
        (loss if scaler is None else scaler.scale(loss)).backward()
        self.clip_and_step()

    def clip_and_step(self) -> None:
        """Optional gradient-norm clipping (``train.clip_grad_norm``), then ``optimizer.step``."""
        clip = self.cfg["train"]["clip_grad_norm"]
        scaler = self.extra.get("scaler")
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        if clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
        if scaler is None:
            self.optimizer.step()
        else:
            scaler.step(self.optimizer)
            scaler.update()

    def autocast(self) -> Any:
        """The autocast context of the training steps (``train.amp``; a no-op for ``none``)."""
        amp = str(self.cfg["train"].get("amp", "none")).lower()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        return torch.autocast(device_type=self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of inputs on the run's device, in the model's memory format."""
        x = x.to(self.device)
        if self.cfg["train"].get("channels_last") and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


@torch.no_grad()
def predict_proba(model: torch.nn.Module, images: torch.Tensor, indices: torch.Tensor | None, *,
                  mean: tuple[float, ...], std: tuple[float, ...], batch_size: int,
                  device: torch.device) -> torch.Tensor:
    """Softmax outputs of ``model`` (eval mode, no augmentation) on ``images[indices]``."""
    idx = torch.arange(len(images)) if indices is None else indices
    dummy = torch.zeros(len(images), dtype=torch.long)
    was_training = model.training
    model.eval()
    out = []
    for batch in batch_loader(images, dummy, idx, batch_size=batch_size, shuffle=False, mean=mean, std=std):
        out.append(torch.softmax(model(batch.x.to(device)).float(), dim=1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 1)


def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None, *,
             mean: tuple[float, ...], std: tuple[float, ...], batch_size: int,
             device: torch.device) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``images[indices]`` against ``labels``."""
    probs = predict_proba(model, images, indices, mean=mean, std=std, batch_size=batch_size, device=device)
    y = labels if indices is None else labels[indices]
    if len(y) == 0:
        return {"accuracy": float("nan"), "loss": float("nan")}
    p_y = probs.gather(1, y[:, None]).clamp_min(1e-12)
    return {"accuracy": float((probs.argmax(1) == y).float().mean()), "loss": float(-p_y.log().mean())}


def _create_model(cfg: Mapping[str, Any], data: RunData, seed: int | None = None) -> torch.nn.Module:
    mcfg = dict(cfg["model"])
    name = mcfg.pop("name")
    if seed is not None:
        mcfg["seed"] = seed
    return create_model(name, num_classes=data.num_classes, in_channels=data.in_channels,
                        image_size=data.image_size, **mcfg)


def _scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], steps_per_epoch: int,
               start_epoch: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """The configured schedule, optionally restarted at ``start_epoch`` over the remaining epochs."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"]
    epochs = int(cfg["train"]["epochs"]) - start_epoch
    offset = start_epoch * steps_per_epoch
    sched = build_scheduler(optimizer, cfg["optim"], steps_per_epoch=steps_per_epoch, epochs=max(1, epochs))
    if offset:
        factor = sched.lr_lambdas[0]
        sched.lr_lambdas = [lambda s: factor(max(0, s - offset))] * len(optimizer.param_groups)
        sched.last_epoch = offset
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor(0)
        sched._last_lr = [g["lr"] for g in optimizer.param_groups]  # what get_last_lr() reports
    return sched


def resolve_method_defaults(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``cfg`` with the settings a method decides resolved (no RNG drawn, nothing built).

    * ``data.meta_set: auto`` becomes the preset's kind (``rmnw-net``, ``mnw-net``: noisy) or
      ``clean``; an explicit contradicting kind is refused.
    * ``loss.name: auto`` becomes the method's own loss, or CE for methods that train on the
      configured loss; a ``loss`` section contradicting a method's own loss is refused.
    """
    out = copy.deepcopy(dict(cfg))
    name = str(out["method"]["name"])
    cls = METHODS.get(name)
    kind, given = cls.meta_set_kind, str(out["data"]["meta_set"])
    if kind is not None and given not in ("auto", kind):
        raise UserError(f"method {name!r} is defined by a {kind} meta set; --meta-set {given} contradicts it "
                        f"(leave data.meta_set at auto)")
    out["data"]["meta_set"] = kind or ("clean" if given == "auto" else given)
    out["loss"]["name"] = check_loss_section(cls, name, out["loss"], out["method"])
    return out


def check_names(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Every registered name, option name, weight file and the device of a config, checked before
    any data are loaded (one-line errors; :mod:`noisylabels.train.precheck`); returns
    :func:`resolve_method_defaults` of ``cfg``."""
    from ..data import DATASETS
    from ..losses import LOSSES
    from ..models import MODELS
    from ..models.timm_adapter import TIMM_PREFIX
    from ..noise import NOISE

    run = resolve_method_defaults(cfg)
    DATASETS.get(str(run["data"]["name"]))
    model = str(run["model"]["name"])
    if not model.lower().startswith(TIMM_PREFIX):
        MODELS.get(model)
    cls = METHODS.get(str(run["method"]["name"]))
    if cls.loss_name({k: v for k, v in run["method"].items() if k != "name"}) is None:
        LOSSES.get(str(run["loss"]["name"]))
    NOISE.get(str(run["noise"]["type"]))
    check_meta_settings(run, cls)
    check_device(run["device"])
    from .precheck import check_inputs

    check_inputs(run)  # method / model / noise options and weight files: no data loaded yet
    return run


def check_meta_settings(cfg: Mapping[str, Any], method: Method | type[Method]) -> None:
    """``train.compile`` and ``train.amp=fp16`` are refused for meta methods, each with its own reason."""
    if not method.needs_meta_set:
        return
    tcfg, name = cfg["train"], cfg["method"]["name"]
    if tcfg.get("compile"):
        raise UserError(f"train.compile is not supported for meta method {name!r}: the meta engine walks the "
                        f"training forward's autograd graph, which torch.compile replaces; set train.compile=false")
    if str(tcfg.get("amp", "none")).lower() == "fp16":
        raise UserError(f"train.amp=fp16 is not supported for meta method {name!r}: the meta engine differentiates "
                        f"unscaled gradients and fp16 needs a gradient scaler; use train.amp=bf16")


def _kept_text(checkpoint: Path, epoch: int) -> str:
    """What a stopped run leaves: the checkpoint of the last finished epoch, or none yet."""
    if checkpoint.is_file():
        return (f"records and the checkpoint of the last finished epoch are kept in {checkpoint.parent} "
                f"(a lower optim.lr or train.clip_grad_norm may help)")
    why = "no epoch had finished" if epoch == 0 else "train.checkpoint is false"
    return (f"records are kept in {checkpoint.parent}, but there is no checkpoint ({why}); "
            f"a lower optim.lr or train.clip_grad_norm may help")


def check_device(name: Any) -> torch.device:
    """``torch.device(name)``, refused in one line when this machine cannot run on it."""
    from ..config import device_type

    kind = device_type(name)
    dev = torch.device(str(name))
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name}: CUDA is not available on this machine (torch {torch.__version__}, "
                            f"torch.cuda.is_available() is False); use --set device=cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError(f"device {name}: MPS is not available on this machine; use --set device=cpu")
    return dev


def _create_method(cfg: Mapping[str, Any]) -> Method:
    meth_cfg = dict(cfg["method"])
    return create_method(meth_cfg.pop("name"), **meth_cfg)


def _build(cfg: dict[str, Any], data: RunData, device: torch.device, recorder: RunRecorder,
           method: Method) -> TrainContext:
    model = _create_model(cfg, data).to(device)
    tcfg = cfg["train"]
    amp = str(tcfg.get("amp", "none")).lower()
    check_meta_settings(cfg, method)
    if tcfg.get("cudnn_benchmark"):
        torch.backends.cudnn.benchmark = True
    if tcfg.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    if tcfg.get("compile"):
        model.compile()  # in place: parameter names and state_dict keys stay those of the model
    lcfg = dict(cfg["loss"])
    loss_name = lcfg.pop("name")
    own = method.loss_name({k: v for k, v in cfg["method"].items() if k != "name"})
    loss_fn = create_loss("ce" if own is not None else loss_name, **lcfg)
    if hasattr(loss_fn, "to"):
        loss_fn = loss_fn.to(device)
    if method.needs_meta_set and len(data.splits["meta"]) == 0:
        raise UserError(f"method {cfg['method']['name']!r} needs a meta set: set data.meta_size > 0 (--meta-size)")
    optimizer = build_optimizer(model.parameters(), cfg["optim"])
    n_train = len(data.splits["train"])
    bs = int(cfg["train"]["batch_size"])
    steps = max(1, math.ceil(n_train / bs))
    scheduler = _scheduler(optimizer, cfg, steps)
    ctx = TrainContext(cfg=cfg, data=data, model=model, optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn,
                       method=method, device=device, recorder=recorder, steps_per_epoch=steps)
    ctx.extra["images"] = data.images.to(device)
    ctx.extra["labels"] = data.labels.to(device)
    if amp == "fp16":
        ctx.extra["scaler"] = torch.amp.GradScaler(device.type)
    return ctx


def build_context(cfg: dict[str, Any], *, data: RunData | None = None) -> TrainContext:
    """Build a run's :class:`TrainContext` (data, model, loss, method set up) without training.

    :func:`fit` starts from it; notebooks and tests use it to drive ``method.train_step`` by hand.
    The context's ``cfg`` is ``cfg`` with the method's defaults resolved (:func:`resolve_method_defaults`).
    """
    cfg = check_names(cfg)
    seed_everything(int(cfg["seed"]))
    method = _create_method(cfg)
    if data is None:
        data = prepare_data(cfg, needs_meta_set=method.needs_meta_set)
    ctx = _build(cfg, data, check_device(cfg["device"]), RunRecorder(cfg["out"]), method)
    ctx.method.setup(ctx)
    return ctx


def data_fingerprint(data: RunData) -> str:
    """A 16-hex-digit BLAKE2b of a run's pool and test images (their bytes; for streamed data, their
    source paths in order), labels and paths (see :attr:`Run.data_fingerprint`)."""
    import hashlib

    import numpy as np

    h = hashlib.blake2b(digest_size=8)
    for t in (data.images, data.labels, data.clean_labels, data.test_images, data.test_labels):
        if not isinstance(t, torch.Tensor):  # streamed images (decoded per batch): their source files, in order
            h.update(f"{type(t).__name__}{len(t)}".encode())
            continue
        a = t.detach().cpu().contiguous()
        h.update(f"{a.dtype}{tuple(a.shape)}".encode())
        h.update(a.numpy().reshape(-1).view(np.uint8) if a.numel() else b"")
    for paths in (data.paths, data.test_paths):
        h.update("\0".join(paths).encode("utf-8", "surrogateescape") if paths is not None else b"-")
    return h.hexdigest()


def resume_hash(cfg: Mapping[str, Any]) -> str:
    """The config hash a checkpoint carries: every setting but bookkeeping, ``data.dir`` and
    ``train.epochs`` (:data:`noisylabels.config.RESUME_FREE_KEYS`)."""
    from ..config import RESUME_FREE_KEYS, config_hash

    return config_hash(cfg, ignore=RESUME_FREE_KEYS)


def check_more_epochs(cfg: Mapping[str, Any], *, before: int, run: int) -> None:
    """Refuse (one line) a resumed run's ``train.epochs`` that differs from the ``before`` it was
    started with, unless it is more than the ``run`` epochs done and neither the learning-rate
    schedule (``cosine`` spans the run) nor the method depends on the total number of epochs."""
    after = int(cfg["train"]["epochs"])
    name = str(cfg["method"]["name"])
    why = None
    if after < run:
        why = f"the run has already trained {run} epochs"
    elif str(cfg["optim"]["schedule"]) == "cosine":
        why = "the cosine schedule spans the run's epochs, so the learning rates already used would change"
    elif METHODS.get(name).total_epochs_matter:
        why = f"method {name!r} plans its stages over the run's epochs"
    if why is not None:
        raise UserError(f"cannot resume with --epochs {after} (the run was started with {before}): {why}; "
                        f"start a new run with --overwrite or choose another --out")


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
    }


class Run:
    """One run between epochs: what :func:`fit` drives, and what a lockstep driver interleaves
    (:func:`noisylabels.train.lockstep.fit_lockstep`: several runs whose methods share state).

    ``Run(cfg)`` builds the context (:func:`build_context`); :meth:`begin` restores the checkpoint
    (``resume``) or writes the first records; :meth:`steps` runs one epoch's training steps, one
    per ``next()``; :meth:`end_epoch` evaluates, selects on validation, checkpoints; :meth:`finish`
    writes the summary (and, for a finished run, scores every sample).
    """

    def __init__(self, cfg: dict[str, Any], *, data: RunData | None = None) -> None:
        self.t0 = time.perf_counter()
        if cfg["train"]["num_threads"]:
            torch.set_num_threads(int(cfg["train"]["num_threads"]))
        self.ctx = build_context(cfg, data=data)
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
            ctx.method.load_state_dict(ckpt["method"])
            ctx.method.load_records_state_dict(ckpt.get("records", {}))
            torch.set_rng_state(ckpt["torch_rng"])
            if ckpt.get("cuda_rng") and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(list(ckpt["cuda_rng"]))
            if ckpt.get("scaler") and ctx.extra.get("scaler") is not None:
                ctx.extra["scaler"].load_state_dict(ckpt["scaler"])
            self.history = ckpt["history"]
            ctx.best.update(ckpt["best"])
            self.start_epoch, self.seconds_before = int(ckpt["epoch"]) + 1, self._seconds_so_far(ckpt)
            ctx.step = int(ckpt["step"])
            recorder.write_config(self.cfg)  # where this run now lives (--out), and any added epochs
        else:
            recorder.write_config(self.cfg)
            recorder.write_labels(clean=data.clean_labels.numpy(), observed=data.labels.numpy(),
                                  splits={k: v.numpy() for k, v in data.splits.items()},
                                  ood=None if data.open_set_mask is None else data.open_set_mask.numpy(),
                                  paths=data.paths, test_labels=data.test_labels.numpy(), test_paths=data.test_paths)
        self.write_running_summary()

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
        p = self.ctx.recorder.path("checkpoint.pt")
        saved = ckpt.get("config_hash")
        if not isinstance(saved, str):
            raise UserError(f"cannot resume from {p}: it carries no config hash (written by an older noisylabels); "
                            f"start a new run with --overwrite")
        now = resume_hash(self.cfg)
        if saved != now:
            raise UserError(f"cannot resume from {p}: it belongs to another run (config hash {saved}, this run's "
                            f"config {now}); start a new run with --overwrite or choose another --out")
        saved_data = ckpt.get("data_fingerprint")
        if not isinstance(saved_data, str):
            raise UserError(f"cannot resume from {p}: it carries no data fingerprint (written by an older noisylabels), "
                            f"so nothing shows it was trained on these data; start a new run in another --out")
        if saved_data != self.data_fingerprint:
            raise UserError(f"cannot resume from {p}: it was trained on other data (images or labels differ from "
                            f"those of --data-dir {self.cfg['data']['dir']}); resume with the data it was trained on, "
                            f"or start a new run in another --out")
        before = int(ckpt.get("epochs", self.epochs))
        if before != self.epochs:
            check_more_epochs(self.cfg, before=before, run=int(ckpt["epoch"]) + 1)

    @property
    def data_fingerprint(self) -> str:
        """A hash of what the run trains and is tested on: pool and test images, the labels it sees
        and the clean ones (where the files live does not matter: a moved data folder resumes)."""
        if "_data_fingerprint" not in self.__dict__:
            self._data_fingerprint = data_fingerprint(self.ctx.data)
        return self._data_fingerprint

    def write_running_summary(self) -> None:
        """``summary.json`` with ``status: running`` and the epochs so far."""
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
        method.start_epoch(ctx)
        gen = torch.Generator().manual_seed(derive_seed(ctx.seed, f"epoch-{epoch}"))
        tot_loss = tot_correct = tot_count = 0.0
        for batch in ctx.loader("train", shuffle=True, augment=True, generator=gen):
            y = batch.y.to(device)
            with ctx.autocast():
                out = method.train_step(ctx, ctx.to_device(batch.x), y, batch.index.to(device))
            if not isinstance(out, StepOutput):
                raise TypeError(f"{type(method).__name__}.train_step must return a StepOutput, got {type(out).__name__}")
            loss = float(out.loss)
            if not math.isfinite(loss):
                raise NonFiniteLossError(f"non-finite loss at epoch {epoch} step {ctx.step}; training stopped, "
                                         f"{_kept_text(ctx.recorder.path('checkpoint.pt'), epoch)}")
            n = float(y.numel())
            tot_loss += loss * n
            tot_correct += float((out.logits.detach().argmax(1) == y).sum())
            tot_count += n
            ctx.scheduler.step()
            ctx.step += 1
            yield
        self._row = {"epoch": epoch, "lr": ctx.lr, "train_loss": tot_loss / max(tot_count, 1),
                     "train_accuracy": tot_correct / max(tot_count, 1)}

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """The method's epoch records, validation and test accuracy, model selection (validation
        only), checkpoint and ``metrics.jsonl``; returns the epoch's row."""
        ctx, data, recorder, tcfg = self.ctx, self.ctx.data, self.ctx.recorder, self.cfg["train"]
        eval_kw = dict(mean=data.mean, std=data.std, batch_size=int(tcfg["eval_batch_size"]), device=ctx.device)
        row = dict(self._row)
        row.update(ctx.method.end_epoch(ctx))
        val = evaluate(ctx.model, ctx.images, ctx.labels, data.splits["val"], **eval_kw)
        test = evaluate(ctx.model, data.test_images, data.test_labels, None, **eval_kw)
        row.update(val_accuracy=val["accuracy"], val_loss=val["loss"], test_accuracy=test["accuracy"],
                   test_loss=test["loss"])
        self.history.append(row)
        best = ctx.best
        # Model selection on the (noisy) validation split only; ties keep the earlier epoch.
        val_acc = val["accuracy"] if math.isfinite(val["accuracy"]) else -1.0
        if not best or val_acc > best["val_accuracy"]:
            best.clear()
            best.update(epoch=epoch, val_accuracy=val_acc, test_accuracy=test["accuracy"],
                        **{k: v for k, v in row.items() if k.startswith("detection_")})
            recorder.save_best_model(ctx.model.state_dict())
        if tcfg["checkpoint"]:
            recorder.save_checkpoint({
                "epoch": epoch, "step": ctx.step, "model": ctx.model.state_dict(),
                "optimizer": ctx.optimizer.state_dict(), "scheduler": ctx.scheduler.state_dict(),
                "method": ctx.method.state_dict(), "records": ctx.method.records_state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "scaler": ctx.extra["scaler"].state_dict() if ctx.extra.get("scaler") is not None else {},
                "history": self.history, "best": dict(best),
                "seconds": self.seconds_total, "schedule_start_epoch": ctx.schedule_start_epoch,
                "config_hash": resume_hash(self.cfg), "epochs": self.epochs,
                "data_fingerprint": self.data_fingerprint,
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


def status_of(exc: BaseException | None, finished: bool) -> str:
    """The summary status of a run that ended with ``exc`` (``None``: returned normally)."""
    if exc is None:
        return "finished" if finished else "stopped"
    if isinstance(exc, NonFiniteLossError):
        return "diverged"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return "failed"


def fit(cfg: dict[str, Any], *, resume: bool = False, overwrite: bool = False, stop_after: int | None = None,
        progress: bool | str | None = None, data: RunData | None = None) -> dict[str, Any]:
    """Train one run described by a resolved config; write its records to ``cfg['out']``.

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

    Returns
    -------
    dict
        The summary written to ``summary.json``.
    """
    with RunDir(cfg["out"], resume=resume, overwrite=overwrite) as claim:  # refusals and the lock; nothing removed
        run = Run(cfg, data=data)  # reads everything the run needs: data, label CSVs, checkpoints, adjusters
        claim.start()  # only now does a new run replace the previous one's records
        return _train(run, resume=resume, stop_after=stop_after, progress=progress)


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
            bar.set_postfix(val=f"{row['val_accuracy']:.3f}", test=f"{row['test_accuracy']:.3f}")
            if lines:
                print(f"epoch {epoch + 1}/{epochs}: train loss {row['train_loss']:.4f}, val accuracy "
                      f"{row['val_accuracy']:.4f}, test accuracy {row['test_accuracy']:.4f} "
                      f"({run.seconds:.1f} s)", flush=True)
    except BaseException as exc:
        error = exc
        raise
    finally:
        bar.close()
        summary = run.finish(status_of(error, run.finished))
    return summary


def _finalize(ctx: TrainContext, recorder: RunRecorder) -> dict[str, Any]:
    """Score every training sample with the selected model; write ``suspects.csv``."""
    data = ctx.data
    best_path = recorder.path("best_model.pt")
    if best_path.is_file():
        ctx.model.load_state_dict(torch.load(best_path, map_location=ctx.device, weights_only=True))
    idx = data.splits["train"]
    probs = predict_proba(ctx.model, ctx.images, idx.to(ctx.images.device), mean=data.mean, std=data.std,
                          batch_size=int(ctx.cfg["train"]["eval_batch_size"]), device=ctx.device)
    given = data.labels[idx]
    scores = ctx.method.sample_scores(ctx, probs, given).detach().cpu().numpy()
    recorder.write_suspects(index=idx.numpy(), given=given.numpy(), predicted=probs.argmax(1).numpy(),
                            score=scores, classes=data.classes, paths=data.paths,
                            score_column=ctx.method.score_column)
    from .scoring import held_out_rows, pool_and_test_probs, write_pred_probs  # every sample, for `detect`
    write_pred_probs(recorder, pool_and_test_probs(ctx.model, data, batch_size=int(ctx.cfg["train"]["eval_batch_size"]),
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
