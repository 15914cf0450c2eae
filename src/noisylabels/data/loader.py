"""Mini-batches from in-memory uint8 tensors.

The whole training set lives in one NCHW uint8 tensor (50,000 CIFAR images are
150 MB); a batch is gathered by index, converted to float in ``[0, 1]``,
augmented (:mod:`noisylabels.data.augment`) and normalised. Every batch carries
the dataset indices of its samples, which noisy-label methods need to keep
per-sample state (loss histories, label corrections, ...).

Views. ``augment`` is one :class:`~noisylabels.data.AugmentSpec` (or ``None``): one view,
``Batch.x``, exactly as before views existed. A tuple of specs gives one view per spec, in
``Batch.views`` (``views[0] is x``), e.g. ``augment=(weak, strong, strong)`` for a method that
wants a weak view and two strong ones (``weak = AugmentSpec(4, True)``, ``strong =
AugmentSpec(4, True, policy=create_augment_policy("randaugment+cutout"))``: crop + flip, then the
policy, as FixMatch / SOP+ / ProMix; ``RunData.strong`` is the run's). Randomness: the
permutation, then (with more than one view) one seed per further view is drawn from the
loader's generator at the start of each pass (:func:`~noisylabels.data.augment.view_generators`);
the first view draws from the loader's generator batch by batch, each further view from its
own generator; every view draws per batch its crop offsets, its flips, then its policy's plan.
So a pass's views depend only on the generator's state at its start (``(seed, epoch)`` in the
loop), and the streamed loader gives the same batches. A view with a policy is cropped,
flipped and augmented in uint8, then converted to float; a view without one is converted first
(the same values: crop and flip only move pixels).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch

from ..errors import UserError
from .augment import AugmentSpec, apply_augment, view_generators, view_specs

__all__ = ["Batch", "BatchLoader", "channel_stats", "to_nchw"]


class Batch(NamedTuple):
    """One mini-batch.

    Attributes
    ----------
    x:
        float32 normalised images ``(B, C, H, W)``.
    y:
        int64 labels ``(B,)`` (the labels given to the loader, e.g. noisy ones).
    index:
        int64 dataset indices ``(B,)`` of the samples.
    views:
        Every view of the batch, float32 normalised ``(B, C, H, W)`` each, in the order of the
        loader's ``augment`` specs (``views[0] is x``); the loaders always fill it (one view:
        ``(x,)``). A batch built by hand may leave it empty; ``batch.views or (batch.x,)`` then.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    views: tuple[torch.Tensor, ...] = ()


def to_nchw(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Convert loader output (uint8 NHWC numpy) to a contiguous uint8 NCHW tensor."""
    t = torch.as_tensor(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if t.ndim != 4:
        raise UserError(f"expected NHWC images with 4 dimensions, got shape {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).contiguous()


def channel_stats(
    images: torch.Tensor | np.ndarray,
    *,
    indices: torch.Tensor | np.ndarray | None = None,
    chunk: int = 4096,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation in ``[0, 1]`` scale.

    Parameters
    ----------
    images:
        uint8 images ``(N, C, H, W)``.
    indices:
        Restrict to these images (e.g. the training split only).
    chunk:
        Images processed at a time (bounds the float64 memory used).

    Returns
    -------
    mean, std:
        Tuples of ``C`` floats.
    """
    t = torch.as_tensor(images)
    if t.ndim != 4:
        raise UserError(f"channel_stats expects (N, C, H, W) images, got shape {tuple(t.shape)}")
    idx = None if indices is None else torch.as_tensor(np.asarray(indices), dtype=torch.long)
    n = t.shape[0] if idx is None else len(idx)
    if n == 0:
        raise UserError("channel_stats: no images")
    c = t.shape[1]
    s1 = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, n, chunk):
        part = t[i:i + chunk] if idx is None else t[idx[i:i + chunk].to(t.device)]
        part = part.to(torch.float64) / 255.0
        s1 += part.sum(dim=(0, 2, 3)).cpu()
        s2 += (part * part).sum(dim=(0, 2, 3)).cpu()
    count = n * t.shape[2] * t.shape[3]
    mean = s1 / count
    var = (s2 / count - mean * mean).clamp_min(0.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in var.sqrt())


class BatchLoader:
    """Iterate over mini-batches of in-memory images.

    Parameters
    ----------
    images:
        uint8 ``(N, C, H, W)`` tensor of the whole dataset (CPU or GPU).
    labels:
        int64 ``(N,)`` labels aligned with ``images``.
    indices:
        Dataset indices to visit each epoch (e.g. the ``train`` split).
    batch_size:
        Samples per batch.
    shuffle:
        Visit ``indices`` in a new random order each epoch.
    mean, std:
        Per-channel normalisation constants in ``[0, 1]`` scale (see
        :func:`channel_stats`).
    augment:
        Augmentations applied to every batch (``None``: none), or a tuple of specs (each
        ``AugmentSpec`` or ``None``), one per view (see the module docstring).
    generator:
        The only source of randomness (shuffling and augmentation). ``None``
        uses a private generator seeded with 0. The generator advances across
        epochs, so re-seeding it reproduces the whole run.
    drop_last:
        Drop the final incomplete batch.
    device:
        Move each batch here before augmenting (default: the images' device).

    Notes
    -----
    ``len(loader)`` is the number of batches per epoch. Each ``iter(loader)``
    starts a new epoch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor | np.ndarray | Sequence[int],
        *,
        batch_size: int,
        shuffle: bool,
        mean: Sequence[float] | torch.Tensor,
        std: Sequence[float] | torch.Tensor,
        augment: AugmentSpec | None | tuple[AugmentSpec | None, ...] = None,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            raise UserError("BatchLoader images must be a uint8 (N, C, H, W) tensor")
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or len(labels) != len(images):
            raise UserError(f"BatchLoader: {len(images)} images but labels of shape {tuple(labels.shape)}")
        if int(batch_size) < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
        idx = idx.to(device="cpu", dtype=torch.long).reshape(-1)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(images)):
            raise UserError(f"BatchLoader indices must lie in [0, {len(images)})")
        self.images = images
        self.labels = labels.to(torch.long)
        self.indices = idx
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.augment = augment
        self.view_specs = view_specs(augment)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.drop_last = bool(drop_last)
        self.device = torch.device(device) if device is not None else images.device
        c = images.shape[1]
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if len(self.mean) != c or len(self.std) != c:
            raise UserError(f"mean/std need {c} values (one per channel), got {len(self.mean)}/{len(self.std)}")
        if bool((self.std <= 0).any()):
            raise UserError(f"std must be positive, got {self.std.tolist()}")
        self._mean_dev = self.mean.to(self.device).reshape(1, c, 1, 1)
        self._std_dev = self.std.to(self.device).reshape(1, c, 1, 1)

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self.indices
        if self.shuffle and len(order):
            perm = torch.randperm(len(order), generator=self.generator, device=self.generator.device)
            order = order[perm.cpu()]
        gens = [self.generator, *view_generators(self.generator, len(self.view_specs) - 1)]
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            src_idx = idx.to(self.images.device)
            raw = self.images[src_idx].to(self.device, non_blocking=True)
            views = tuple(self._view(raw, spec, g) for spec, g in zip(self.view_specs, gens))
            y = self.labels[idx.to(self.labels.device)].to(self.device, non_blocking=True)
            yield Batch(x=views[0], y=y, index=idx.to(self.device), views=views)

    def _view(self, raw: torch.Tensor, spec: AugmentSpec | None, generator: torch.Generator) -> torch.Tensor:
        if spec is not None and spec.policy is not None:
            x = apply_augment(raw, spec, generator=generator).float().div_(255.0)
        else:
            x = apply_augment(raw.float().div_(255.0), spec, generator=generator)
        return (x - self._mean_dev) / self._std_dev  # as augment.normalize, checks done once
