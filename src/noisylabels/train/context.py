"""A run's state (:class:`TrainContext`, what a method sees), assembled by :func:`make_context`
(:func:`noisylabels.train.loop.build_context` checks the names and loads the data first);
:func:`predict_proba` / :func:`evaluate` score a model."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..config import eval_batch_size
from ..data import Batch, BatchLoader
from ..data.mix import mixup
from ..data.stream import batch_loader
from ..errors import UserError
from ..losses import create_loss
from ..methods import MetaBatch, Method
from ..methods.context import Network, NetworkSpec
from ..models import create_model, eval_mode
from ..seeding import derive_seed
from .build import build_model, build_run_schedule, check_meta_settings
from .distributed import SINGLE, Distributed
from .syncbn import sync_batchnorm
from .optim import build_optimizer
from .prepare import RunData
from .records import RunRecorder

__all__ = ["TrainContext", "make_context", "predict_proba", "evaluate", "embed", "knn_monitor"]


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
    networks: dict[str, Network] = field(default_factory=dict)  # the method's networks beside the model
    dist: Distributed = SINGLE  # the process group (data-parallel runs; :mod:`.distributed`)
    #: modules a method trains beside a network (:meth:`add_module`): name -> (module, owner network or "")
    modules: dict[str, tuple[torch.nn.Module, str]] = field(default_factory=dict)
    _meta_streams: dict[int, Iterator[Batch]] = field(default_factory=dict, repr=False)
    def mixup(self, x: torch.Tensor, targets: torch.Tensor, *, alpha: float, generator: torch.Generator,
              num_classes: int | None = None, per_sample: bool = False, max_lambda: bool = False,
              as_given: bool = False) -> Any:
        """:func:`noisylabels.data.mixup`, for methods (they never import the data layer).

        In a data-parallel training step, on this rank's slice of the global batch (``len(x)`` is the
        slice's): the slices are gathered, the global batch is mixed with the generator's draws (the
        same on every rank: the 1-process run's permutation and ``lam``) and this rank's rows of the
        result are returned (``perm`` holds global batch positions). Anything else (e.g. a subset or a
        concatenation of views), and any ``x`` with ``as_given`` (a batch the method gathered itself),
        is mixed as given."""
        dp = self.dist
        kw = dict(alpha=alpha, generator=generator, num_classes=num_classes, per_sample=per_sample,
                  max_lambda=max_lambda)
        if as_given or not (dp.active and dp.in_step and len(x) == dp.n_local and len(targets) == dp.n_local):
            return mixup(x, targets, **kw)
        mixed = mixup(dp.gather_batch(x), dp.gather_batch(torch.as_tensor(targets)), **kw)
        sl = dp.local_slice
        return type(mixed)(*(v[sl] for v in mixed))

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
               generator: torch.Generator | None = None, drop_last: bool = False,
               views: tuple[str, ...] | None = None) -> BatchLoader:
        """Batches of the training pool restricted to ``split`` (a name or index tensor).

        ``views``: the kind of each view (``'weak'``: ``data.augment``; ``'strong'``: weak then
        ``data.strong_augment``; ``'none'``); with more than one, every batch carries ``views`` (one
        tensor each; ``x`` is the first). Default: one view, weak if ``augment`` else none."""
        idx = self.data.splits[split] if isinstance(split, str) else split
        if views is None:
            spec: Any = self.data.augment if augment else None
        else:
            specs = tuple(self.view_spec(k) for k in views)
            spec = specs[0] if len(specs) == 1 else specs
        return batch_loader(self.images, self.labels, idx, batch_size=batch_size or int(self.cfg["train"]["batch_size"]),
                           shuffle=shuffle, mean=self.data.mean, std=self.data.std,
                           augment=spec, generator=generator, drop_last=drop_last)

    def view_spec(self, kind: str) -> Any:
        """The augmentation of a view kind (``weak``, ``strong``, ``none``)."""
        if kind == "weak":
            return self.data.augment
        if kind == "strong":
            return self.data.strong
        if kind == "none":
            return None
        raise UserError(f"unknown view kind {kind!r}: use weak, strong or none")

    @property
    def views(self) -> tuple[str, ...]:
        """The kinds of the training batches' views (``data.views``, resolved from the method's)."""
        return tuple(self.cfg["data"].get("views") or ("weak",))

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
                             std=self.data.std, batch_size=eval_batch_size(self.cfg),
                             device=self.device)

    def restart_schedule(self, start_epoch: int) -> None:
        """Restart the learning-rate schedule at ``start_epoch`` over the remaining epochs and clear
        the optimiser's state (used by two-stage methods that retrain from scratch); the trainable
        networks' schedules restart with it."""
        self.schedule_start_epoch = int(start_epoch)
        self.optimizer.state.clear()
        self.scheduler = build_run_schedule(self.optimizer, self.cfg, self.steps_per_epoch, self.schedule_start_epoch)
        for net in self.networks.values():
            if net.optimizer is not None:
                net.optimizer.state.clear()
                net.scheduler = build_run_schedule(net.optimizer, self.cfg, self.steps_per_epoch,
                                                   self.schedule_start_epoch)

    def add_network(self, spec: NetworkSpec) -> Network:
        """A network like the run's model from its own seed (``(seed, 'net-' + name)``; the run's
        ``model`` options and init checkpoint), with its own optimiser and schedule if trainable."""
        if spec.name in self.networks:
            raise UserError(f"method {self.cfg['method']['name']!r} declares network {spec.name!r} twice")
        model = build_model(self.cfg, self.data, seed=derive_seed(self.seed, f"net-{spec.name}")).to(self.device)
        sync_batchnorm(self.cfg, self.dist, model)
        if self.cfg["train"].get("channels_last"):
            model = model.to(memory_format=torch.channels_last)
        net = Network(name=spec.name, model=model)
        if spec.trainable:
            net.optimizer = build_optimizer(model.parameters(), self.cfg["optim"])
            net.scheduler = build_run_schedule(net.optimizer, self.cfg, self.steps_per_epoch, self.schedule_start_epoch)
        else:
            model.requires_grad_(False)
        self.networks[spec.name] = net
        return net

    def add_module(self, name: str, module: torch.nn.Module, *, net: Network | None = None) -> torch.nn.Module:
        """A module the method trains beside the run's model (``net=None``) or a trainable network
        ``net`` (e.g. a second head on its features, ProMix's pseudo-label head): moved to the device;
        its parameters join that optimiser as a new parameter group (the optimiser's defaults) and that
        schedule is rebuilt to cover it (call in ``setup``, before any step); gradient clipping covers
        it with the network; the loop checkpoints and restores it (``modules``) and puts it in train
        mode with the network each epoch. Returns the module on the device."""
        if name in self.modules:
            raise UserError(f"method {self.cfg['method']['name']!r} adds module {name!r} twice")
        opt = self.optimizer if net is None else net.optimizer
        if opt is None:
            raise ValueError(f"network {net.name!r} is not trainable (it has no optimiser)")  # type: ignore[union-attr]
        module = sync_batchnorm(self.cfg, self.dist, module.to(self.device))
        opt.add_param_group({"params": list(module.parameters())})
        sched = build_run_schedule(opt, self.cfg, self.steps_per_epoch, self.schedule_start_epoch)
        if net is None:
            self.scheduler = sched
        else:
            net.scheduler = sched
        self.modules[name] = (module, "" if net is None else net.name)
        return module

    def owned_modules(self, net: Network | None = None) -> list[torch.nn.Module]:
        """The modules :meth:`add_module` added beside ``net`` (``None``: the run's model)."""
        owner = "" if net is None else net.name
        return [m for m, o in self.modules.values() if o == owner]

    def step_schedules(self, *, to: int | None = None) -> None:
        """One step of the run's learning-rate schedule and of every trainable network's; ``to``: move
        them to that position instead (the schedules count ``steps_per_epoch`` steps per epoch). A network
        a method has not stepped yet (DivideMix trains network B after network A) does not warn that its
        schedule stepped before its optimiser: the schedule follows the loop, not the network."""
        for sched in [self.scheduler] + [n.scheduler for n in self.networks.values() if n.scheduler is not None]:
            if to is not None:
                sched.last_epoch = int(to) - 1
            if getattr(sched, "_step_count", 0) == 1:  # torch checks the order on the first step only
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"),
                                            category=UserWarning)
                    sched.step()
            else:
                sched.step()

    def reinit_model(self) -> None:
        """Re-initialise the model's weights in place (deterministic from the run seed)."""
        fresh = build_model(self.cfg, self.data, seed=derive_seed(int(self.cfg["seed"]), f"reinit-{self.epoch}"))
        self.model.load_state_dict(fresh.state_dict())

    def reset_model_selection(self) -> None:
        """Forget the best-validation epoch so far (e.g. after a first training stage)."""
        self.best.clear()

    def build_model(self, name: str | None = None, **options: Any) -> torch.nn.Module:
        """A new registry model for this run's data, on the CPU, from the global RNG; ``name=None``
        or the student's name: the student's architecture with its ``model`` options (not
        ``init_checkpoint`` / ``init_exclude`` / ``seed``), ``options`` added over them."""
        mcfg = {k: v for k, v in self.cfg["model"].items() if k not in ("init_checkpoint", "init_exclude", "seed")}
        student = mcfg.pop("name")
        if name is None or name == student:
            name, options = student, {**mcfg, **options}
        model = create_model(name, num_classes=self.data.num_classes, in_channels=self.data.in_channels,
                             image_size=self.data.image_size, **options)
        return sync_batchnorm(self.cfg, self.dist, model)

    def backward_and_step(self, loss: torch.Tensor, *, net: Network | None = None,
                          also: Sequence[torch.optim.Optimizer] = ()) -> None:
        """``zero_grad``, ``backward``, optional gradient-norm clipping, ``optimizer.step`` of the run's
        model or of the trainable network ``net`` (through the fp16 gradient scaler when
        ``train.amp: fp16``, which several networks do not use).

        ``also``: optimisers of parameters the method owns (e.g. SOP's per-sample ``u``, ``v``), zeroed
        before and stepped after the same backward (unscaled by the same scaler, never clipped)."""
        opt = self.optimizer if net is None else net.optimizer
        if opt is None:
            raise ValueError(f"network {net.name!r} is not trainable (it has no optimiser)")  # type: ignore[union-attr]
        opt.zero_grad(set_to_none=True)
        for o in also:
            o.zero_grad(set_to_none=True)
        scaler = self.extra.get("scaler")
        (loss if scaler is None else scaler.scale(loss)).backward()
        self.clip_and_step(net=net, also=also)

    def clip_and_step(self, *, net: Network | None = None, also: Sequence[torch.optim.Optimizer] = (),
                      reduced: bool = False) -> None:
        """Optional gradient-norm clipping (``train.clip_grad_norm``, of the model's parameters), then
        ``optimizer.step`` (of ``net``'s optimiser if given) and of each optimiser in ``also``. In a
        data-parallel run the gradients (every parameter of the optimisers stepped: the network's, its
        added modules', ``also``'s) are first
        all-reduced to the global batch's mean (:meth:`Distributed.reduce_param_grads_`) unless
        ``reduced`` (they already are, e.g. a meta step's virtual-step gradient)."""
        clip = self.cfg["train"]["clip_grad_norm"]
        scaler = self.extra.get("scaler")
        model, opt = (self.model, self.optimizer) if net is None else (net.model, net.optimizer)
        if not reduced:
            rows = self._row_local(also)
            params = [p for o in (opt, *also) for g in o.param_groups for p in g["params"]]
            self.dist.reduce_param_grads_([p for p in params if id(p) not in rows])
            self.dist.scale_param_grads_([p for p in params if id(p) in rows])
        if scaler is not None:
            for o in (opt, *also):
                scaler.unscale_(o)
        if clip:
            params = [p for m in [model, *self.owned_modules(net)] for p in m.parameters()]
            torch.nn.utils.clip_grad_norm_(params, float(clip))
        if scaler is None:
            for o in (opt, *also):
                o.step()
        else:
            for o in (opt, *also):
                scaler.step(o)
            scaler.update()

    def _row_local(self, also: Sequence[torch.optim.Optimizer]) -> set[int]:
        """In a data-parallel run, the ids of the method's per-sample parameters (SOP's u, v) among
        ``also``'s: each rank steps its slice's rows with its gradient weighted by ``n_r / n`` (no
        all-reduce of the dense ``(N, ...)`` gradient) and the loop merges the rows after the epoch's
        steps. Exact only when a row without gradient does not move: plain SGD, no momentum or weight decay."""
        if not self.dist.active or not also:
            return set()
        rows = {id(t) for t in self.method.per_sample_tensors().values() if t.requires_grad}
        for o in also:
            for g in o.param_groups:
                if any(id(p) in rows for p in g["params"]) and not (
                        type(o) is torch.optim.SGD and not g.get("momentum") and not g.get("weight_decay")):
                    raise ValueError("per-sample parameters on several processes need plain SGD (no momentum, no "
                                     "weight decay): rows outside a process's slices must not move")
        return rows

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
    return _map_images(lambda x: torch.softmax(model(x).float(), dim=1), model, images, indices, mean=mean, std=std,
                       batch_size=batch_size, device=device)


@torch.no_grad()
def _map_images(fn: Any, model: torch.nn.Module, images: torch.Tensor, indices: torch.Tensor | None, *,
                mean: tuple[float, ...], std: tuple[float, ...], batch_size: int, device: torch.device) -> torch.Tensor:
    """``fn`` of the normalised, unaugmented ``images[indices]`` batch by batch, ``model`` in eval mode
    (each submodule's mode restored after), as an ``(n, d)`` float32 tensor on the CPU."""
    idx = torch.arange(len(images)) if indices is None else indices
    dummy = torch.zeros(len(images), dtype=torch.long)
    out = []
    with eval_mode(model):
        for batch in batch_loader(images, dummy, idx, batch_size=batch_size, shuffle=False, mean=mean, std=std):
            out.append(fn(batch.x.to(device)).float().flatten(1).cpu())
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


@torch.no_grad()
def embed(model: torch.nn.Module, images: torch.Tensor, indices: torch.Tensor | None, *,
          mean: tuple[float, ...], std: tuple[float, ...], batch_size: int, device: torch.device) -> torch.Tensor:
    """``model.features`` (eval mode, no augmentation) of ``images[indices]``: ``(n, num_features)``
    float32 on the CPU."""
    features = getattr(model, "features", None)
    if not callable(features):
        raise UserError(f"{type(model).__name__} has no features(): a kNN monitor needs a model of the form "
                        f"classifier(features(x))")
    return _map_images(features, model, images, indices, mean=mean, std=std, batch_size=batch_size, device=device)


def knn_monitor(model: torch.nn.Module, data: RunData, images: torch.Tensor, labels: torch.Tensor, *, k: int,
                temperature: float, batch_size: int, device: torch.device) -> dict[str, float | None]:
    """The accuracy of a weighted kNN classifier (:func:`noisylabels.eval.knn_predict`) on ``model``'s
    features: the training split with the labels training sees is the memory; the validation split
    (its given labels) and the test set (its labels) are the queries. ``None`` where the data have
    no labels or ``k`` is 0 (no monitor)."""
    from ..eval.knn import knn_accuracy

    if not k or not getattr(data, "has_labels", True) or len(data.splits["train"]) == 0:
        return {"val_accuracy": None, "test_accuracy": None}
    kw = dict(mean=data.mean, std=data.std, batch_size=batch_size, device=device)
    train = data.splits["train"]
    memory = embed(model, images, train.to(images.device), **kw)
    mem_labels = labels[train.to(labels.device)].cpu()
    knn = dict(num_classes=data.num_classes, k=int(k), temperature=float(temperature))
    val = data.splits["val"]
    val_acc = knn_accuracy(memory, mem_labels, embed(model, images, val.to(images.device), **kw),
                           labels[val.to(labels.device)], **knn) if len(val) else None
    test_acc = knn_accuracy(memory, mem_labels, embed(model, data.test_images, None, **kw), data.test_labels,
                            **knn) if len(data.test_labels) else None
    return {"val_accuracy": val_acc, "test_accuracy": test_acc}


def make_context(cfg: dict[str, Any], data: RunData, device: torch.device, recorder: RunRecorder,
                 method: Method) -> TrainContext:
    """A :class:`TrainContext` for a resolved ``cfg`` on built ``data``: model, loss, optimiser and schedule."""
    model = build_model(cfg, data).to(device)
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
    scheduler = build_run_schedule(optimizer, cfg, steps)
    ctx = TrainContext(cfg=cfg, data=data, model=model, optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn,
                       method=method, device=device, recorder=recorder, steps_per_epoch=steps)
    ctx.extra["images"] = data.images.to(device)
    ctx.extra["labels"] = data.labels.to(device)
    if amp == "fp16":
        ctx.extra["scaler"] = torch.amp.GradScaler(device.type)
    return ctx
