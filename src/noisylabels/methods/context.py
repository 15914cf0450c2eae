"""What a method may use of the run (:class:`MethodContext`) and what one step returns (:class:`StepOutput`).

The training loop (:class:`noisylabels.train.TrainContext`) satisfies :class:`MethodContext`;
methods are written against the protocol only, so ``noisylabels.methods`` never imports the loop
or the data loaders, and a notebook or a test can drive a method with any object that has these
attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

__all__ = ["MethodContext", "RunDataView", "RecorderView", "MetaBatch", "StepOutput", "Network", "NetworkSpec",
           "is_noisy_train", "selection_quality", "DistributedView", "data_parallel", "batch_total"]


@dataclass
class StepOutput:
    """What :meth:`Method.train_step` returns; the loop does the accounting (loss, accuracy).

    Attributes
    ----------
    logits:
        The training batch's logits the step trained on (``(B, K)``; detached or not); ``None`` for
        a step that trains no classifier (self-supervised pretraining): the epoch's
        ``train_accuracy`` is then ``None``.
    loss:
        The 0-dim training loss of the step (what was minimised; checked for finiteness).
    """

    logits: torch.Tensor | None
    loss: torch.Tensor


@dataclass(frozen=True)
class NetworkSpec:
    """A network a method trains beside the run's model (declared in :attr:`Method.networks`).

    Attributes
    ----------
    name:
        Its name (checkpoint key, ``ctx.networks[name]``).
    trainable:
        ``True``: its own optimiser (the run's ``optim`` section) and learning-rate schedule, stepped
        and checkpointed by the loop; ``False``: weights only, which the method updates itself (e.g.
        an exponential moving average of another network).
    """

    name: str
    trainable: bool = True


@dataclass
class Network:
    """A network of the run: the model, and for a trainable one its optimiser and schedule.

    The run's own model is ``ctx.model`` / ``ctx.optimizer``; the networks a method declares in
    :attr:`Method.networks` are ``ctx.networks[name]``. Each is built like the run's model (same
    architecture and ``model`` options, ``model.init_checkpoint`` included) from its own seed, so
    two networks start from different weights.
    """

    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None


class MetaBatch(NamedTuple):
    """A meta batch on the run's device: inputs, labels, dataset indices."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor


class RunDataView(Protocol):
    """The parts of the run's data a method reads (:class:`noisylabels.train.RunData` has them)."""

    labels: torch.Tensor          # int64 (N,): the labels training sees, by dataset index
    clean_labels: torch.Tensor    # int64 (N,): ground truth, for metrics only
    splits: dict[str, torch.Tensor]
    classes: list[str]
    transition: np.ndarray

    @property
    def num_classes(self) -> int: ...

    @property
    def is_noisy(self) -> torch.Tensor: ...


class RecorderView(Protocol):
    """Where a method writes its own records (plots, ``.npz`` files)."""

    def path(self, name: str) -> Path: ...


@runtime_checkable
class MethodContext(Protocol):
    """What a method may use of the run.

    Attributes
    ----------
    cfg:
        The resolved run config (read only).
    data:
        Labels, splits and noise ground truth (:class:`RunDataView`).
    model, optimizer, device:
        The network being trained, its optimiser (SGD for meta methods) and device.
    recorder:
        The run directory (:class:`RecorderView`).
    loss_fn:
        The configured base loss ``(logits, target, *, reduction) -> loss`` (``loss`` section).
    networks:
        The networks the method declared (:attr:`Method.networks`), by name (:class:`Network`).
    epoch, step, steps_per_epoch:
        Loop state: the epoch running, the global step about to run, steps per epoch.
    best:
        The validation-selected epoch so far (``epoch``, ``val_accuracy``, ...).
    """

    cfg: dict[str, Any]
    data: RunDataView
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    recorder: RecorderView
    loss_fn: Callable[..., torch.Tensor]
    networks: dict[str, Network]
    epoch: int
    step: int
    steps_per_epoch: int
    best: dict[str, Any]

    @property
    def seed(self) -> int: ...

    @property
    def epochs(self) -> int: ...

    def next_meta_batch(self, batch_size: int | None = None) -> MetaBatch:
        """The next meta batch (shuffled and augmented like training; the stream restarts each
        epoch from a generator seeded by ``(seed, epoch)``, so resume is exact)."""

    def backward_and_step(self, loss: torch.Tensor, *, net: Network | None = None,
                          also: Sequence[torch.optim.Optimizer] = ()) -> None:
        """``zero_grad``, ``backward``, optional gradient clipping, ``optimizer.step`` of the run's
        model, or of the trainable network ``net``; ``also``: optimisers of the method's own
        parameters (per-sample ``u``, ``v`` of SOP), zeroed and stepped with it (never clipped)."""

    def clip_and_step(self, *, net: Network | None = None, also: Sequence[torch.optim.Optimizer] = (),
                      reduced: bool = False) -> None:
        """Optional gradient clipping, then ``optimizer.step`` (gradients already in ``.grad``), and
        ``step`` of each optimiser in ``also`` (in a data-parallel run all-reduced first unless ``reduced``)."""

    def add_module(self, name: str, module: torch.nn.Module, *, net: Network | None = None) -> torch.nn.Module:
        """A module trained beside the run's model (``net=None``) or the trainable network ``net`` (e.g. a
        second head on its features): its parameters join that optimiser and schedule, it is clipped with
        the network and checkpointed and restored by the loop (call in ``setup``); returns it on the device."""

    def loader(self, split: str | torch.Tensor, *, shuffle: bool, augment: bool, batch_size: int | None = None,
               generator: torch.Generator | None = None, drop_last: bool = False,
               views: tuple[str, ...] | None = None) -> Any:
        """Batches (``x``, ``y``, ``index``, and ``views`` when several) of a split or index tensor of the
        pool; ``views`` names the augmentation of each view (``'weak'``, ``'strong'``, ``'none'``;
        default: the run's weak augmentation if ``augment``, one view)."""

    def mixup(self, x: torch.Tensor, targets: torch.Tensor, *, alpha: float, generator: torch.Generator,
              num_classes: int | None = None, per_sample: bool = False, max_lambda: bool = False,
              as_given: bool = False) -> Any:
        """:func:`noisylabels.data.mixup` (Zhang et al. 2018): the batch mixed with a permutation of itself,
        drawn from ``generator`` only; returns ``x``, ``targets`` ``(B, K)``, ``lam`` ``(B,)``, ``perm`` ``(B,)``.
        In a data-parallel step called on this process's whole slice, the global batch is mixed (the
        1-process pairs) and this slice's rows come back; every process must then call it alike.
        ``as_given``: mix ``x`` as it is (e.g. a global batch the method gathered itself)."""

    def predict(self, split: str | torch.Tensor = "train", *, model: torch.nn.Module | None = None) -> torch.Tensor:
        """Softmax outputs (eval mode, no augmentation) of ``model`` (default: the one being
        trained) on a split or index tensor of the training pool."""

    def reinit_model(self) -> None:
        """Re-initialise the model's weights (deterministic from the run seed)."""

    def restart_schedule(self, start_epoch: int) -> None:
        """Restart the learning-rate schedule at ``start_epoch`` and clear the optimiser state."""

    def reset_model_selection(self) -> None:
        """Forget the best-validation epoch so far."""

    def build_model(self, name: str | None = None, **options: Any) -> torch.nn.Module:
        """A new registry model for this run's data (classes, channels, image size) on the CPU, drawn
        from the global RNG (a method seeds it); ``name=None`` or the student's name: the student's
        architecture with its options (not its ``init_checkpoint``); ``options`` add to or replace
        those (e.g. EMLC's teacher, Taraday & Baskin 2023, Sec. 3.3)."""


class DistributedView(Protocol):
    """A data-parallel run's process group as the meta base sees it (``ctx.dist``,
    :class:`noisylabels.train.distributed.Distributed`): the step's slice ``n_local`` of the global
    batch ``n_global``; ``reduce_grads`` (``sum_r (n_r / n) t_r``: per-rank means to the global
    mean), ``gather_batch`` (a per-sample tensor of the global batch, rank order), ``all_reduce_sum_``;
    for a step whose loss is the global batch's on every rank (SimCLR, DivideMix's MixMatch):
    ``gather_batch_grad`` (differentiable gather), ``rows`` (this rank's share of another batch
    size), ``replicate_loss`` (the step's gradient all-reduce then weighs each rank ``1 / N``)."""

    rank: int
    world_size: int
    n_local: int
    n_global: int

    @property
    def active(self) -> bool: ...

    @property
    def local_slice(self) -> slice: ...

    def reduce_grads(self, tensors: Any) -> list[Any]: ...

    def gather_batch(self, t: torch.Tensor, n: int | None = None) -> torch.Tensor: ...

    def gather_batch_grad(self, t: torch.Tensor, n: int | None = None) -> torch.Tensor: ...

    def rows(self, n: int) -> slice: ...

    def replicate_loss(self) -> None: ...

    def batch_sum(self, partial: torch.Tensor) -> torch.Tensor: ...

    def all_reduce_sum_(self, tensors: Any) -> None: ...

    def merge_rows_(self, tensors: Any, written: torch.Tensor) -> torch.Tensor: ...


def data_parallel(ctx: Any) -> DistributedView | None:
    """``ctx.dist`` when the run is data-parallel (more than one process), else ``None`` (a context
    without ``dist``, e.g. one built by hand, is a single process)."""
    dist = getattr(ctx, "dist", None)
    return dist if dist is not None and getattr(dist, "active", False) else None


def batch_total(ctx: Any, values: torch.Tensor, *, dim: int | None = None) -> tuple[torch.Tensor, int]:
    """``(sum of values, count)`` over the training batch, for a method's in-batch normalisation
    (MW-Net's ``sum`` weights): in a data-parallel training step the global batch's (every process's
    slice; differentiable), so the normalisation is the 1-process run's. ``dim=0``: the sum over the
    batch's rows only (e.g. SOP+'s mean prediction per class, ``(K,)``)."""
    dp = data_parallel(ctx)
    total = values.sum() if dim is None else values.sum(dim)
    if dp is None or not getattr(dp, "in_step", False) or len(values) != dp.n_local:
        return total, len(values)
    return dp.batch_sum(total), dp.n_global


def is_noisy_train(data: RunDataView) -> np.ndarray | None:
    """The corruption mask of the training split, as a numpy bool array (metrics only); ``None``
    when the run has no ground truth (the labels are the user's: nothing is known to be wrong)."""
    if not getattr(data, "has_ground_truth", True):
        return None
    return data.is_noisy[data.splits["train"]].numpy()


def selection_quality(mask: np.ndarray, noisy: np.ndarray | None, *, prefix: str,
                      fraction: str = "fraction") -> dict[str, float | None]:
    """A sample selection's epoch metrics: ``<prefix>_<fraction>`` (the share selected) and, with
    ground truth (``noisy``, :func:`is_noisy_train`), ``<prefix>_precision`` (clean among the
    selected) and ``<prefix>_recall`` (selected among the clean); ``None`` where undefined."""
    out: dict[str, float | None] = {f"{prefix}_{fraction}": float(mask.mean()) if len(mask) else None}
    if noisy is not None:
        clean = ~noisy
        out[f"{prefix}_precision"] = float(clean[mask].mean()) if mask.any() else None
        out[f"{prefix}_recall"] = float(mask[clean].mean()) if clean.any() else None
    return out
