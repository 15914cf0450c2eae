"""Data larger than memory: images decoded on demand by ``DataLoader`` worker processes.

An image-folder / zip / key-list source whose decoded training pool would not fit in the memory
budget (``data.stream: auto``; ``true`` forces it) is kept as a :class:`StreamImages`: the file
names and the decoding settings, no pixels. :class:`StreamLoader` then serves the very batches
:class:`~noisylabels.data.BatchLoader` would serve from the decoded array:

* **Order and augmentation** are drawn in the main process, before the epoch, from the loop's
  generator seeded by ``(seed, epoch)``, with the same calls in the same order as the in-memory
  loader (``randperm``, then per batch the crop offsets and the flip coins of
  :mod:`noisylabels.data.augment`). Epoch ``e`` depends only on ``(seed, e)``, so resume stays
  exact, and the batches are bit-for-bit those of the in-memory path (tested). One difference:
  a streamed pass advances the generator by the whole epoch's draws when it starts (its workers
  prefetch), the in-memory loader batch by batch; they differ only if a generator is reused
  after a pass abandoned part-way (the loop and the meta methods give each pass its own
  generator, or consume passes to their end).
* **Decoding and augmenting** run in ``data.stream_workers`` worker processes (a
  ``torch.utils.data.DataLoader`` with persistent workers, pinned memory on CUDA): each worker
  reads its files (one zip handle per process), decodes them exactly as the in-memory decoder
  does, pads, crops and flips in uint8 (pure data movement, so equal to the float ops of the
  in-memory path), and returns a uint8 batch. The main process (or the GPU) converts it to
  float and normalises it. Worker processes draw no randomness.
* **Views** (``augment`` a tuple of specs, see :mod:`noisylabels.data.loader`): the plan holds,
  per batch and per view, the crop offsets, the flips and the strong policy's plan, drawn with
  the in-memory loader's calls (the further views from the generators seeded after the
  permutation). A worker decodes each image once and returns every view's crop and flip; **the
  strong policy runs in the main process**, on the batch's uint8 view on the delivery device
  (as the in-memory loader applies it), from the plan drawn before the epoch. Every view is
  bit-for-bit the in-memory loader's (tested).
* **Channel statistics** of a streamed pool are estimated on a fixed sample (seed 0) of
  :data:`STATS_SAMPLE` images instead of the whole pool.

Choices where nothing dictates them: a streamed set is grey (one channel) when its first 64
images are; noise models that need every image's pixels (``instance``, ``open-set``) need the
in-memory path; the in-memory path stays the default wherever the data fit (it is faster).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from .augment import AugmentSpec, draw_crop_offsets, draw_flips, view_generators, view_specs
from .decode import decode_chunk
from .loader import Batch, BatchLoader, channel_stats

__all__ = ["StreamImages", "StreamLoader", "batch_loader", "pool_channel_stats", "memory_budget",
           "should_stream", "STATS_SAMPLE", "is_stream", "stream_options", "to_pool"]

STATS_SAMPLE = 5000


def memory_budget(gb: float | None = None) -> int:
    """Bytes the decoded images may take: ``gb`` GiB, else half the machine's physical memory."""
    if gb is not None:
        if isinstance(gb, bool) or not isinstance(gb, (int, float)) or not gb > 0:
            raise UserError(f"data.memory_budget_gb must be a positive number, got {gb!r}")
        return int(gb * 2**30)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def should_stream(setting: Any, *, decoded_bytes: int, budget: int) -> bool:
    """``data.stream``: ``true`` / ``false``, or ``auto`` = whether the decoded images exceed the budget."""
    if setting in (True, "true"):
        return True
    if setting in (False, "false", None):
        return False
    if setting == "auto":
        return decoded_bytes > budget
    raise UserError(f"data.stream must be auto, true or false, got {setting!r}")


# -- the lazy image array ----------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamImages:
    """Images decoded on demand: ``shape`` is ``(N, H, W, C)`` (``layout='NHWC'``, as a loader
    returns it) or ``(N, C, H, W)`` (``'NCHW'``, the training pool); ``device`` is where batches
    are delivered. Indexing with an index array gives another lazy view (nothing is decoded).
    """

    source: str
    is_zip: bool
    names: tuple[str, ...]
    size: tuple[int, int]          # (width, height) after decoding / resizing
    channels: int
    resize: bool
    layout: str = "NHWC"
    device: torch.device = torch.device("cpu")
    workers: int = 2               # decoding processes of the loaders over these images

    dtype = torch.uint8
    ndim = 4

    @property
    def shape(self) -> tuple[int, int, int, int]:
        w, h = self.size
        n = len(self.names)
        return (n, h, w, self.channels) if self.layout == "NHWC" else (n, self.channels, h, w)

    @property
    def decoded_bytes(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, idx: Any) -> StreamImages:
        sel = np.arange(len(self.names))[_as_index(idx)]
        return replace(self, names=tuple(self.names[int(i)] for i in np.atleast_1d(sel)))

    def nchw(self) -> StreamImages:
        """The same images as an ``(N, C, H, W)`` pool."""
        return replace(self, layout="NCHW")

    def to(self, device: torch.device | str) -> StreamImages:
        """Deliver batches on ``device`` (nothing moves now)."""
        return replace(self, device=torch.device(device))

    def decode(self, i: int) -> np.ndarray:
        """Image ``i`` as ``(H, W, C)`` uint8, decoded exactly as the in-memory decoder does."""
        arr, _ = decode_chunk(self.source, self.is_zip, [self.names[i]], self.size, self.resize)
        return arr[0, ..., : self.channels]

    def load(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Decode ``indices`` in this process: uint8 ``(B, C, H, W)``."""
        idx = np.asarray(torch.as_tensor(indices).cpu()).reshape(-1)
        arr = np.stack([self.decode(int(i)) for i in idx]) if len(idx) else np.zeros((0, *self.shape[1:]), np.uint8)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))


def _as_index(idx: Any) -> Any:
    if isinstance(idx, torch.Tensor):
        return idx.cpu().numpy()
    return idx


def is_stream(images: Any) -> bool:
    return isinstance(images, StreamImages)


def pool_channel_stats(images: torch.Tensor | StreamImages) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """:func:`~noisylabels.data.channel_stats` of a pool; of a fixed sample when it is streamed."""
    if not is_stream(images):
        return channel_stats(images)
    n = len(images)
    take = np.sort(np.random.default_rng(0).choice(n, size=min(n, STATS_SAMPLE), replace=False))
    return channel_stats(images.nchw().load(take))


# -- worker-side dataset -----------------------------------------------------------------------------
class _AugmentedFiles(torch.utils.data.Dataset):
    """``dataset[(i, views)]``: image ``i`` decoded once, then per view ``(dy, dx, flip)`` of
    ``views`` zero-padded by that view's padding, cropped at ``(dy, dx)`` and flipped horizontally
    if ``flip``; uint8 ``(V, C, H, W)``."""

    def __init__(self, images: StreamImages, paddings: tuple[int, ...]) -> None:
        self.images = images
        self.paddings = tuple(int(p) for p in paddings)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, tuple[tuple[int, int, bool], ...]]) -> torch.Tensor:
        i, views = key
        x = torch.from_numpy(np.ascontiguousarray(self.images.decode(int(i)).transpose(2, 0, 1)))
        out = []
        for p, (dy, dx, flip) in zip(self.paddings, views):
            v = x
            if p:
                c, h, w = x.shape
                padded = torch.zeros((c, h + 2 * p, w + 2 * p), dtype=x.dtype)
                padded[:, p:p + h, p:p + w] = x
                v = padded[:, dy:dy + h, dx:dx + w]
            if flip:
                v = v.flip(2)
            out.append(v)
        return torch.stack(out)


def _collate(items: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(items)


class _Plan(torch.utils.data.Sampler):
    """The batch sampler of a cached DataLoader: the keys of the current epoch, set before iterating."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, tuple[tuple[int, int, bool], ...]]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, tuple[tuple[int, int, bool], ...]]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _LoaderPool:
    """Persistent DataLoaders per (source, view paddings, workers); one is lent per running iteration
    (a nested iteration, e.g. meta batches inside a training epoch, gets its own). At most
    :attr:`max_idle` idle ones are kept (the oldest are dropped, which stops their workers)."""

    max_idle = 6

    def __init__(self) -> None:
        self.free: dict[tuple, list[tuple[torch.utils.data.DataLoader, _Plan]]] = {}
        self.order: list[tuple] = []  # keys of idle loaders, oldest first (one entry per loader)
        self.lock = threading.Lock()

    def take(self, images: StreamImages, paddings: tuple[int, ...], workers: int, pin: bool) -> tuple[Any, _Plan, tuple]:
        key = (images.source, images.names, images.size, images.channels, images.resize, paddings, workers, pin)
        images = replace(images, device=torch.device("cpu"))
        with self.lock:
            stack = self.free.setdefault(key, [])
            if stack:
                self.order.remove(key)
                return (*stack.pop(), key)
        plan = _Plan()
        kw: dict[str, Any] = {}
        if workers > 0:
            kw = dict(persistent_workers=True, prefetch_factor=4)
        dl = torch.utils.data.DataLoader(_AugmentedFiles(images.nchw(), paddings), batch_sampler=plan,
                                         num_workers=workers, collate_fn=_collate, pin_memory=pin, **kw)
        return dl, plan, key

    def give_back(self, key: tuple, dl: Any, plan: _Plan) -> None:
        dropped = []
        with self.lock:
            self.free.setdefault(key, []).append((dl, plan))
            self.order.append(key)
            while len(self.order) > self.max_idle:
                old = self.order.pop(0)
                dropped.append(self.free[old].pop(0))
        for dl_old, _ in dropped:  # stop their persistent workers now
            it = getattr(dl_old, "_iterator", None)
            if it is not None and hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()


_POOL = _LoaderPool()


class StreamLoader:
    """:class:`~noisylabels.data.BatchLoader`'s interface and batches, from a :class:`StreamImages`.

    Parameters
    ----------
    images:
        The streamed pool (``(N, C, H, W)``; its ``device`` is where batches are delivered).
    labels, indices, batch_size, shuffle, mean, std, augment, generator, drop_last, device:
        As :class:`~noisylabels.data.BatchLoader` (the same draws from ``generator``; ``augment``
        one spec or a tuple of specs, one per view).
    workers:
        Decoding worker processes (default: ``images.workers``, i.e. ``data.stream_workers``;
        0 decodes in this process).
    """

    def __init__(self, images: StreamImages, labels: torch.Tensor, indices: Any, *, batch_size: int, shuffle: bool,
                 mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor,
                 augment: AugmentSpec | None | tuple[AugmentSpec | None, ...] = None,
                 generator: torch.Generator | None = None,
                 drop_last: bool = False, device: torch.device | str | None = None,
                 workers: int | None = None) -> None:
        if not is_stream(images):
            raise UserError("StreamLoader needs StreamImages (use BatchLoader for in-memory images)")
        self.images = images.nchw()
        self.labels = torch.as_tensor(labels).to(torch.long)
        if self.labels.ndim != 1 or len(self.labels) != len(images):
            raise UserError(f"StreamLoader: {len(images)} images but labels of shape {tuple(self.labels.shape)}")
        if int(batch_size) < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
        self.indices = idx.to(device="cpu", dtype=torch.long).reshape(-1)
        if len(self.indices) and (int(self.indices.min()) < 0 or int(self.indices.max()) >= len(images)):
            raise UserError(f"StreamLoader indices must lie in [0, {len(images)})")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.view_specs = tuple(v if v is not None and v.active else None for v in view_specs(augment))
        self.augment = self.view_specs[0] if not isinstance(augment, (tuple, list)) else self.view_specs
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.drop_last = bool(drop_last)
        self.device = torch.device(device) if device is not None else images.device
        self.workers = max(0, int(images.workers if workers is None else workers))
        c = self.images.shape[1]
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if len(mean_t) != c or len(std_t) != c:
            raise UserError(f"mean/std need {c} values (one per channel), got {len(mean_t)}/{len(std_t)}")
        if bool((std_t <= 0).any()):
            raise UserError(f"std must be positive, got {std_t.tolist()}")
        self._mean_dev = mean_t.to(self.device).reshape(1, c, 1, 1)
        self._std_dev = std_t.to(self.device).reshape(1, c, 1, 1)

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def plan(self) -> list[tuple[torch.Tensor, list[tuple[torch.Tensor | None, torch.Tensor | None, Any]]]]:
        """One epoch's ``(indices, views)`` per batch, ``views`` one ``(crop offsets (2, B) or None,
        flips (B,) or None, policy plan or None)`` per view, drawn from the generator(s) with
        :class:`BatchLoader`'s calls in its order."""
        order = self.indices
        if self.shuffle and len(order):
            perm = torch.randperm(len(order), generator=self.generator, device=self.generator.device)
            order = order[perm.cpu()]
        gens = [self.generator, *view_generators(self.generator, len(self.view_specs) - 1)]
        size = (int(self.images.shape[2]), int(self.images.shape[3]))
        out = []
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            views = []
            for spec, g in zip(self.view_specs, gens):
                off = flips = policy_plan = None
                if spec is not None and len(idx):
                    if spec.crop_padding:
                        off = draw_crop_offsets(len(idx), padding=spec.crop_padding, generator=g).cpu()
                    if spec.hflip:
                        flips = draw_flips(len(idx), generator=g).cpu()
                    if spec.policy is not None:
                        policy_plan = spec.policy.draw(len(idx), size=size, generator=g)
                views.append((off, flips, policy_plan))
            out.append((idx, views))
        return out

    def __iter__(self) -> Iterator[Batch]:
        plan = self.plan()
        if not plan:
            return
        paddings = tuple(spec.crop_padding if spec is not None else 0 for spec in self.view_specs)
        keys = []
        for idx, views in plan:
            n = len(idx)
            per_view = []
            for p, (off, flips, _) in zip(paddings, views):
                dy = off[0].tolist() if off is not None else [p] * n
                dx = off[1].tolist() if off is not None else [p] * n
                fl = flips.tolist() if flips is not None else [False] * n
                per_view.append(list(zip(dy, dx, fl)))
            keys.append([(i, tuple(v[j] for v in per_view)) for j, i in enumerate(idx.tolist())])
        pin = self.device.type == "cuda"
        dl, holder, key = _POOL.take(self.images, paddings, self.workers, pin)
        holder.batches = keys
        try:
            for (idx, views), xb in zip(plan, dl):
                outs = []
                for k, (spec, (_, _, policy_plan)) in enumerate(zip(self.view_specs, views)):
                    u = xb[:, k].to(self.device, non_blocking=True)
                    if policy_plan is not None:
                        u = spec.policy.apply(u, policy_plan)  # the main process: workers draw nothing
                    x = u.float().div_(255.0)
                    outs.append((x - self._mean_dev) / self._std_dev)
                y = self.labels[idx.to(self.labels.device)].to(self.device, non_blocking=True)
                yield Batch(x=outs[0], y=y, index=idx.to(self.device), views=tuple(outs))
        finally:
            _POOL.give_back(key, dl, holder)


def batch_loader(images: torch.Tensor | StreamImages, labels: torch.Tensor, indices: Any,
                 **kwargs: Any) -> BatchLoader | StreamLoader:
    """:class:`StreamLoader` for streamed images, :class:`~noisylabels.data.BatchLoader` otherwise."""
    if is_stream(images):
        return StreamLoader(images, labels, indices, **kwargs)
    return BatchLoader(images, labels, indices, **kwargs)


def stream_options(data_cfg: Any) -> dict[str, Any]:
    """The ``stream`` / ``memory_budget_gb`` options for ``create_dataset`` from the ``data``
    config section, for loaders that can stream (``imagefolder``); none for the others."""
    import inspect

    from .registry import DATASETS  # the package __init__ has registered every loader

    setting = data_cfg.get("stream", "auto")
    should_stream(setting, decoded_bytes=0, budget=1)  # validates the value
    if "stream" not in inspect.signature(DATASETS.get(data_cfg["name"])).parameters:
        if setting in (True, "true"):
            raise UserError(f"data.stream=true: dataset {data_cfg['name']!r} has no streaming source "
                            "(imagefolder has; its files are read into memory)")
        return {}
    if setting in (False, "false", None):
        return {}
    return {"stream": setting, "memory_budget_gb": data_cfg.get("memory_budget_gb")}


def to_pool(x: np.ndarray | StreamImages, data_cfg: Any) -> torch.Tensor | StreamImages:
    """A loader's NHWC images as the training pipeline's NCHW pool (uint8 tensor, or streamed)."""
    if is_stream(x):
        workers = data_cfg.get("stream_workers", 2)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise UserError(f"data.stream_workers must be an integer >= 0, got {workers!r}")
        return replace(x.nchw(), workers=workers)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
