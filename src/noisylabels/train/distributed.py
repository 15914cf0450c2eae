"""Data-parallel training over ``torch.distributed`` (one run, several processes).

Launch: ``torchrun --nproc-per-node N -m noisylabels train ...`` (or ``noisylabels train --nproc N``,
which starts exactly that through ``python -m torch.distributed.run``). The process group is
PyTorch's own, from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ...): gloo on
CPU, NCCL on CUDA.

What each rank does (:class:`Distributed`; the loop and the meta base call it):

* Batches. Every rank draws the epoch's *global* batches from the same ``(seed, epoch)``
  generator (permutation and augmentation) and keeps its contiguous slice (:meth:`Distributed.shard`:
  ``torch.tensor_split``, sizes differ by at most one in an epoch's last batch). So an N-process run
  sees the global batches of a 1-process run; ``train.batch_size`` is the global batch. Meta
  batches are *not* split: every rank draws the same global meta batch (the meta loss and its
  gradient at the virtual step are then equal on every rank without communication).
* Gradients: an explicit all-reduce of the weighted mean, not a ``DistributedDataParallel`` wrapper.
  Each rank's loss is the mean over its slice of ``n_r`` samples; :meth:`Distributed.reduce_grads`
  scales its gradient by ``n_r / n`` and sums over ranks, which is the gradient of the mean over the
  global batch of ``n`` samples. Why not DDP: the meta engine differentiates the model functionally
  (virtual steps, forward-mode JVPs on the recorded graph, double backward), which DDP's backward
  hooks neither see nor support; one reduction in ``ctx.clip_and_step`` covers every method and
  every network; checkpoints keep the model's own parameter names. The price: communication does
  not overlap the backward pass (``benchmarks/ddp_scaling.py`` measures it).
* Per-sample state (``Method.per_sample`` tables, per-sample parameters such as SOP's u, v too:
  their gradients are weighted by ``n_r / n``, not all-reduced): each rank writes the rows of its
  batch slices; at the end of each epoch's steps (before the method's epoch-end hook,
  the checkpoint and the next epoch's start) the loop merges them (:meth:`Distributed.merge_rows_`),
  each row from the rank that wrote it, so every rank holds the 1-process table.
* Records: per-sample records are summed over ranks at the end of each epoch; rank 0 alone
  evaluates (validation, test, the final scoring: the models are equal on every rank), writes
  records and checkpoints. The checkpoint holds every rank's RNG state (``rank_rng``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from ..errors import UserError
from ..meta.graph_jvp import register_jvp_rule

__all__ = ["Distributed", "GlobalSum", "SINGLE", "global_sum", "init_distributed", "shard_bounds", "single_process", "world_size_from_env"]


def world_size_from_env() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when not launched by torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """``[start, stop)`` of ``rank``'s contiguous slice of ``n`` items (``torch.tensor_split``: the
    first ``n % world`` ranks take one more)."""
    base, extra = divmod(int(n), int(world))
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class Distributed:
    """The run's place in its process group; with ``world_size == 1`` every operation is the identity.

    Attributes
    ----------
    rank, world_size:
        This process's rank and the number of processes.
    n_local, n_global:
        The current step's slice and global batch sizes (:meth:`set_step`).
    """

    def __init__(self, *, rank: int = 0, world_size: int = 1) -> None:
        self.rank, self.world_size = int(rank), int(world_size)
        self.n_local = self.n_global = 1
        self.in_step = False  # inside a training step (every rank runs the same collectives)
        self.replicated = False  # this step's loss is the global value on every rank (:meth:`replicate_loss`)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- batches ---------------------------------------------------------------------------------------
    def shard(self, n: int) -> slice:
        """This rank's slice of a global batch of ``n`` samples; sets the step's sizes."""
        start, stop = shard_bounds(n, self.rank, self.world_size)
        self.set_step(n_local=stop - start, n_global=n)
        return slice(start, stop)

    def set_step(self, *, n_local: int, n_global: int) -> None:
        self.n_local, self.n_global = int(n_local), int(n_global)
        self.replicated = False

    def rows(self, n: int) -> slice:
        """This rank's slice of ``n`` items split like a global batch (no change to the step's sizes;
        e.g. a step's second batch of another size, DivideMix's unlabelled one)."""
        start, stop = shard_bounds(n, self.rank, self.world_size)
        return slice(start, stop)

    def replicate_loss(self) -> None:
        """Declare this step's loss the *global* batch's on every rank, built from collectives whose
        backward sums every rank's gradient (:meth:`gather_batch_grad`, :meth:`batch_sum`): e.g. NT-Xent
        over gathered projections. Rank ``r``'s gradient is then ``N`` times its own rows' share of
        the global gradient, and the step's all-reduce weighs every rank ``1 / N``
        (:attr:`local_fraction`) instead of ``n_r / n``; reset by the next :meth:`set_step`."""
        self.replicated = True

    @property
    def local_slice(self) -> slice:
        """This rank's rows of the current step's global batch."""
        start, stop = shard_bounds(self.n_global, self.rank, self.world_size)
        return slice(start, stop)

    @property
    def local_fraction(self) -> float:
        """``n_r / n`` of the current step: the weight of this rank's mean in the global mean
        (``1 / N`` after :meth:`replicate_loss`)."""
        if self.replicated:
            return 1.0 / self.world_size
        return self.n_local / max(self.n_global, 1)

    # -- collectives -------------------------------------------------------------------------------------
    def all_reduce_sum_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Sum ``tensors`` over ranks in place (one flat all-reduce per dtype)."""
        if not self.active or not tensors:
            return
        import torch.distributed as dist

        by_dtype: dict[Any, list[torch.Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault((t.dtype, t.device), []).append(t)
        for group in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat)
            offset = 0
            for t in group:
                t.copy_(flat[offset:offset + t.numel()].view_as(t))
                offset += t.numel()

    def merge_rows_(self, tensors: Sequence[torch.Tensor], written: torch.Tensor) -> torch.Tensor:
        """Merge per-sample state over ranks in place: each row takes the value of the rank that wrote it.

        ``tensors`` are ``(N, ...)`` tables whose rows are dataset indices (``Method.per_sample``);
        ``written`` is this rank's ``(N,)`` boolean mask of the rows it wrote since the last merge (the
        loop: the rows of its batch slices). A row that one rank wrote takes that rank's value; a row
        that several wrote, their mean (identical values stay exact: ``(v + v) / 2 == v``); a row that no
        rank wrote keeps its value (every rank holds the same one). Values of unwritten rows never
        enter the sums (``inf`` / ``nan`` there cannot spread). Two all-reduces: the counts, the values.
        Returns the ``(N,)`` boolean mask of the rows some rank wrote (``written`` on one process).
        """
        if not self.active or not tensors:
            return written.to(torch.bool)
        mask = written.to(device=tensors[0].device, dtype=torch.bool)
        counts = mask.to(torch.float64)
        self.all_reduce_sum_([counts])
        parts = [torch.where(mask.view(-1, *([1] * (t.dim() - 1))), t.detach(), torch.zeros((), dtype=t.dtype,
                             device=t.device)) for t in tensors]
        self.all_reduce_sum_(parts)
        rows = counts > 0
        with torch.no_grad():
            for t, part in zip(tensors, parts):
                c = counts[rows].to(part.dtype).view(-1, *([1] * (t.dim() - 1))) if part.is_floating_point() else None
                t[rows] = (part[rows] / c).to(t.dtype) if c is not None else part[rows] // counts[rows].long().view(
                    -1, *([1] * (t.dim() - 1)))
        return rows.to(written.device)

    def reduce_grads(self, tensors: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """The global-batch mean of per-rank means: ``sum_r (n_r / n) t_r`` (new tensors; ``None`` stays)."""
        if not self.active:
            return list(tensors)
        out = [None if t is None else t.detach() * self.local_fraction for t in tensors]
        self.all_reduce_sum_([t for t in out if t is not None])
        return out

    def reduce_param_grads_(self, params: Sequence[torch.nn.Parameter]) -> None:
        """:meth:`reduce_grads` of the parameters' ``.grad`` in place (the real step's all-reduce)."""
        if not self.active:
            return
        grads = [p.grad for p in params if p.grad is not None]
        for g in grads:
            g.mul_(self.local_fraction)
        self.all_reduce_sum_(grads)

    def scale_param_grads_(self, params: Sequence[torch.Tensor]) -> None:
        """Weight the ``.grad`` of row-local per-sample parameters by ``n_r / n`` in place, without an
        all-reduce: each rank's rows are its slice's, whose gradient is then the global batch's (the
        rows are merged after the epoch's steps, :meth:`merge_rows_`)."""
        if not self.active:
            return
        for p in params:
            if p.grad is not None:
                p.grad.mul_(self.local_fraction)

    def batch_sum(self, partial: torch.Tensor) -> torch.Tensor:
        """The sum over the global batch of this rank's partial sum, differentiable (a batch
        normalisation, e.g. MW-Net's ``sum`` weights). Its backward gives each rank's partial sum
        ``(sum_r (n_r/n) g_r) / (n_r/n)``, so that :meth:`reduce_grads`' weighting of the per-rank
        gradients yields the global batch's gradient (and it is itself differentiable: double backward)."""
        if not self.active:
            return partial
        return GlobalSum.apply(partial, self)

    def gather_batch(self, t: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """The global batch of a per-sample tensor (rank order: the global batch's order); ``n``: the
        global number of rows when it is not the step's ``n_global`` (each rank holds :meth:`rows`)."""
        if not self.active:
            return t
        import torch.distributed as dist

        total = self.n_global if n is None else int(n)
        sizes = [shard_bounds(total, r, self.world_size) for r in range(self.world_size)]
        width = max(b - a for a, b in sizes)
        pad = torch.zeros((width, *t.shape[1:]), dtype=t.dtype, device=t.device)
        pad[:len(t)] = t.detach()
        parts = [torch.empty_like(pad) for _ in range(self.world_size)]
        dist.all_gather(parts, pad)
        return torch.cat([p[:b - a] for p, (a, b) in zip(parts, sizes)])

    def gather_batch_grad(self, t: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """:meth:`gather_batch`, differentiable: the backward sums the gathered tensor's gradient over
        every rank and hands this rank its rows (the adjoint of the gather, a reduce-scatter; e.g.
        NT-Xent's negatives from every rank, :meth:`replicate_loss`)."""
        if not self.active:
            return t
        total = self.n_global if n is None else int(n)
        return _GatherRows.apply(t, self, total)

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (in-process state such as RNG tensors; never user files), rank order."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        import torch.distributed as dist

        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    out = t.detach().clone()
    dist.all_reduce(out)
    return out


class GlobalSum(torch.autograd.Function):
    """``sum_r partial_r`` over the processes, differentiable in every mode the project uses: its
    backward is the all-reduce of ``(n_r / n) * grad`` divided by ``n_r / n`` (so the step's weighted
    gradient all-reduce gives the global batch's gradient; the weight read when the backward runs:
    ``1 / N`` after :meth:`Distributed.replicate_loss`), written with the autograd-aware all-reduce
    (a second derivative works: the meta engine's double backward); its forward-mode rule is the
    all-reduce of the tangent (``torch.func.jvp``; the graph walk's rule is registered below)."""

    @staticmethod
    def forward(partial: torch.Tensor, dist: Distributed) -> torch.Tensor:  # type: ignore[override]
        return _all_reduce_sum(partial)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:  # type: ignore[override]
        ctx.dist = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        import warnings

        frac = float(ctx.dist.local_fraction)
        with warnings.catch_warnings():  # the autograd-aware all-reduce, deprecated in name only
            warnings.simplefilter("ignore", FutureWarning)
            from torch.distributed.nn.functional import all_reduce

            return all_reduce(grad * frac) / frac, None

    @staticmethod
    def jvp(ctx: Any, tangent: torch.Tensor, _dist: Any) -> torch.Tensor:  # type: ignore[override]
        return _all_reduce_sum(tangent)


def global_sum(partial: torch.Tensor, dist: Distributed) -> torch.Tensor:
    """:class:`GlobalSum` of ``partial`` (this rank weighed by ``dist.local_fraction`` in the backward)."""
    return GlobalSum.apply(partial, dist)


@register_jvp_rule("GlobalSumBackward")
def _global_sum_rule(node: Any, tin: Any) -> torch.Tensor | None:
    """The graph walk's rule for :class:`GlobalSum`: the tangent of a global sum is the all-reduce
    of the local tangents (every process walks the same graph, so the collectives pair up)."""
    return None if tin[0] is None else _all_reduce_sum(tin[0])


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, t: torch.Tensor, dist: Distributed, total: int) -> torch.Tensor:  # type: ignore[override]
        ctx.rows = dist.rows(total)
        ctx.dist = dist
        return dist.gather_batch(t, total)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        ctx.dist.all_reduce_sum_([grad])
        return grad[ctx.rows], None, None


#: the single-process default (every operation the identity)
SINGLE = Distributed()


_FORCED_SINGLE = [False]


@contextmanager
def single_process() -> Iterator[None]:
    """Inside the block :func:`init_distributed` answers :data:`SINGLE` (work rank 0 does alone, e.g.
    the nested runs of a cross-fitted warm-up, never joins the group's collectives)."""
    before = _FORCED_SINGLE[0]
    _FORCED_SINGLE[0] = True
    try:
        yield
    finally:
        _FORCED_SINGLE[0] = before


def init_distributed(device: torch.device) -> Distributed:
    """Join torchrun's process group (gloo on CPU, NCCL on CUDA) when ``WORLD_SIZE > 1``; else :data:`SINGLE`.

    Under CUDA each rank takes the GPU of its ``LOCAL_RANK``."""
    world = world_size_from_env()
    if world == 1 or _FORCED_SINGLE[0]:
        return SINGLE
    import torch.distributed as dist

    if not dist.is_available():
        raise UserError("this torch build has no torch.distributed: run without torchrun / --nproc")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size())
