"""Batch data augmentation as tensor operations (no per-sample Python loop).

The standard CIFAR recipe of He et al. (2016), "Deep Residual Learning for
Image Recognition", Sec. 4.2: pad 4 pixels with zeros, take a random 32x32
crop, flip horizontally with probability 1/2. Every sample draws its own crop
offset and flip from the given ``torch.Generator`` (never the global RNG), so a
seeded generator reproduces the same batch.

A *view* is an :class:`AugmentSpec`: ``weak`` is crop + flip (the recipe above);
``strong`` is crop + flip followed by a policy of :mod:`noisylabels.data.policies`
on the uint8 images (``AugmentSpec(crop_padding=4, hflip=True, policy=...)``), the
strong view of FixMatch, SOP+ and ProMix. The loaders take one spec or a tuple of
specs (one per view, ``None``: the plain images); see :class:`~noisylabels.data.BatchLoader`.
A view draws, per batch, in this order: the crop offsets, the flips, the policy's plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError
from .policies import AugmentPolicy

__all__ = ["AugmentSpec", "random_crop", "random_hflip", "normalize", "apply_augment", "draw_crop_offsets",
           "draw_flips", "view_specs", "view_generators"]


@dataclass
class AugmentSpec:
    """Which training augmentations to apply.

    Attributes
    ----------
    crop_padding:
        Zero-pad by this many pixels and crop back to the original size at a
        random offset (0 disables; 4 is the CIFAR standard).
    hflip:
        Flip each image horizontally with probability 1/2.
    policy:
        A strong augmentation policy (:func:`~noisylabels.data.create_augment_policy`) applied
        after the crop and flip, on the uint8 images; ``None``: none (a weak view).
    """

    crop_padding: int = 0
    hflip: bool = False
    policy: AugmentPolicy | None = None

    def __post_init__(self) -> None:
        if int(self.crop_padding) != self.crop_padding or self.crop_padding < 0:
            raise UserError(f"crop_padding must be a non-negative integer, got {self.crop_padding!r}")
        self.crop_padding = int(self.crop_padding)
        if self.policy is not None and not isinstance(self.policy, AugmentPolicy):
            raise UserError(f"AugmentSpec.policy must be an augmentation policy (create_augment_policy), "
                            f"got {self.policy!r}")

    @property
    def active(self) -> bool:
        """Whether any augmentation is switched on."""
        return self.crop_padding > 0 or bool(self.hflip) or self.policy is not None


def _draw_device(generator: torch.Generator) -> torch.device:
    return generator.device if hasattr(generator, "device") else torch.device("cpu")


def draw_crop_offsets(n: int, *, padding: int, generator: torch.Generator) -> torch.Tensor:
    """The ``(2, n)`` crop offsets (rows, then columns; uniform in ``[0, 2 * padding]``) that
    :func:`random_crop` draws for a batch of ``n`` (the streaming loader draws the same)."""
    return torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=_draw_device(generator))


def draw_flips(n: int, *, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """The ``(n,)`` booleans :func:`random_hflip` draws (``u < p``, ``u`` uniform)."""
    return torch.rand(n, generator=generator, device=_draw_device(generator)) < p


def random_crop(x: torch.Tensor, *, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad each image by ``padding`` and crop it back at a per-sample random offset.

    Parameters
    ----------
    x:
        Float images ``(B, C, H, W)`` (pixel scale, before normalisation, so
        the padding is black).
    padding:
        Pixels of zero padding on each side; 0 returns ``x`` unchanged.
    generator:
        Source of the offsets (uniform in ``[0, 2 * padding]`` per axis).

    Returns
    -------
    torch.Tensor
        Cropped images of the same shape as ``x``.
    """
    if padding < 0:
        raise UserError(f"padding must be >= 0, got {padding}")
    if padding == 0 or x.shape[0] == 0:
        return x
    b, c, h, w = x.shape
    off = draw_crop_offsets(b, padding=padding, generator=generator).to(x.device)
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = off[0][:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = off[1][:, None] + torch.arange(w, device=x.device)  # (B, W)
    bidx = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indices separated by a slice: the result is (B, H, W, C).
    out = padded[bidx, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: torch.Tensor, *, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each image of ``(B, C, H, W)`` horizontally with probability ``p``.

    Parameters
    ----------
    x:
        Images ``(B, C, H, W)``.
    generator:
        Source of the per-sample coin flips.
    p:
        Flip probability in ``[0, 1]``.

    Returns
    -------
    torch.Tensor
        The images, some flipped along the width axis.
    """
    if not 0.0 <= p <= 1.0:
        raise UserError(f"flip probability must be in [0, 1], got {p}")
    if x.shape[0] == 0:
        return x
    flip = draw_flips(x.shape[0], generator=generator, p=p).to(x.device)[:, None, None, None]
    return torch.where(flip, x.flip(3), x)


def normalize(
    x: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` for ``(B, C, H, W)`` images.

    Parameters
    ----------
    x:
        Float images.
    mean, std:
        ``C`` values each (same scale as ``x``); ``std`` must be positive.

    Returns
    -------
    torch.Tensor
        The normalised images.
    """
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    if m.shape[1] != x.shape[1] or s.shape[1] != x.shape[1]:
        raise UserError(f"mean/std have {m.shape[1]}/{s.shape[1]} values for {x.shape[1]} channels")
    if bool((s <= 0).any()):
        raise UserError(f"std must be positive, got {s.flatten().tolist()}")
    return (x - m) / s


def apply_augment(x: torch.Tensor, spec: AugmentSpec | None, *, generator: torch.Generator) -> torch.Tensor:
    """Apply ``spec`` (crop, then flip, then its policy) to a ``(B, C, H, W)`` batch; ``None`` is a
    no-op. Crop and flip move pixels (any dtype; the padding is 0); a policy needs uint8 images."""
    if spec is None:
        return x
    if spec.crop_padding:
        x = random_crop(x, padding=spec.crop_padding, generator=generator)
    if spec.hflip:
        x = random_hflip(x, generator=generator)
    if spec.policy is not None:
        if x.dtype != torch.uint8:
            raise UserError("a strong augmentation policy needs uint8 images (apply it before the float conversion)")
        x = spec.policy(x, generator=generator)
    return x


def view_specs(augment: AugmentSpec | None | tuple[AugmentSpec | None, ...] | list) -> tuple[AugmentSpec | None, ...]:
    """The loaders' ``augment`` as one spec per view: a spec or ``None`` is one view; a tuple
    (or list) of them is one view each (at least one)."""
    if isinstance(augment, (tuple, list)):
        specs = tuple(augment)
        if not specs:
            raise UserError("augment: a tuple of views needs at least one view (AugmentSpec or None)")
    else:
        specs = (augment,)
    for s in specs:
        if s is not None and not isinstance(s, AugmentSpec):
            raise UserError(f"augment: each view is an AugmentSpec or None, got {s!r}")
    return specs


def view_generators(generator: torch.Generator, n: int) -> list[torch.Generator]:
    """Generators of the views after the first, one per view: ``n`` 63-bit seeds drawn from
    ``generator`` (the loader's, at the start of a pass, after the permutation), so every view's
    augmentation in a pass depends only on the loader generator's state. No draw for ``n = 0``."""
    if n <= 0:
        return []
    dev = _draw_device(generator)
    seeds = torch.randint(0, 2**63 - 1, (n,), generator=generator, device=dev).tolist()
    return [torch.Generator(device=dev).manual_seed(int(s)) for s in seeds]
