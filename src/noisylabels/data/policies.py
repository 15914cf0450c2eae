"""Strong augmentation policies on uint8 batches: AutoAugment (CIFAR-10), RandAugment, TrivialAugment, Cutout.

Each policy works in two halves: :meth:`AugmentPolicy.draw` draws, from a ``torch.Generator``
(never the global RNG), one *plan* for a batch of ``n`` images: per sample and per step the
operation (``op``, codes into :data:`OPS`, -1: not applied) and its parameter in the operation's
own unit (``value``: pixels, degrees, enhancement factor, bits, threshold), with the draws it
came from (sub-policy or level, application coin, sign); :meth:`AugmentPolicy.apply` applies a plan to a uint8 ``(B, C, H, W)`` batch
with the batched, Pillow-exact operations of :mod:`noisylabels.data.imageops`, grouping the
samples by operation (a loop over at most 15 operations per step, none over samples). Calling a
policy does both. The same generator state gives the same batch; every sample draws its own
sub-policy / operations / magnitudes / signs.

Policies (``create_augment_policy(name, **options)``; ``list_augment_policies()``):

``autoaugment-cifar10`` (fill 128)
    AutoAugment (Cubuk et al. 2019, "AutoAugment: Learning Augmentation Strategies from Data",
    CVPR): the 25 sub-policies found on reduced CIFAR-10 (the paper's appendix table); per image
    one sub-policy uniformly, each of its two operations applied with its probability. Magnitude
    bin ``m`` (0-9) maps uniformly onto the paper's ranges (Table 1: "discretize the range of
    magnitudes into 10 values (uniform spacing)"): shear ``0.3 m / 9``, translate
    ``(150 / 331) m / 9`` of the image side (the paper's 150 px of 331), rotate ``30 m / 9``
    degrees, each with a random sign; colour, contrast, brightness, sharpness factor
    ``1 +- 0.9 m / 9``; posterize ``round(8 - 4 m / 9)`` bits; solarize threshold
    ``256 - 256 m / 9``. This is the reading of the PyTorch ports the noisy-label papers use
    (DeepVoltaire's ``CIFAR10Policy``, torchvision's ``AutoAugment``); the authors' TensorFlow
    code maps bin ``m`` to ``m / 10`` of each range and the factor to ``0.1 + 1.8 m / 10`` without
    a sign. Fill: 128 grey, as DeepVoltaire's (the authors' code fills the dataset mean, about
    (125, 123, 114) on CIFAR-10; torchvision fills 0). Geometry samples nearest, as all three.
``randaugment`` (``num_ops`` N = 2, ``magnitude`` M = 10, fill 0)
    RandAugment (Cubuk et al. 2020, "RandAugment: Practical automated data augmentation with a
    reduced search space", NeurIPS): its 14 operations (identity, autocontrast, equalize,
    rotate, solarize, colour, posterize, contrast, brightness, sharpness, shear-x/y,
    translate-x/y), N drawn uniformly with replacement per image. **The variant is FixMatch's**
    (Sohn et al. 2020, "FixMatch", Sec. 2.3 and Table 12, as in kekmodel/FixMatch-pytorch's
    ``RandAugmentMC``, the strong view of FixMatch-style noisy-label methods): each operation is
    applied with probability 1/2 at a level ``v`` drawn per image uniformly from ``{1, ...,
    M - 1}`` (of 10), mapped onto Table 12's ranges: factor ``0.05 + 0.9 v / 10`` (colour,
    contrast, brightness, sharpness), posterize ``4 + int(4 v / 10)`` bits, rotate
    ``int(30 v / 10)`` degrees, shear ``0.3 v / 10``, translate ``int(0.3 v / 10 * side)``
    pixels (signed before truncation), the geometric ones with a random sign; solarize
    threshold ``256 - int(256 v / 10)``. Fill 0, Pillow's default, as that code. The paper's
    fixed-magnitude RandAugment is not offered.
``trivialaugment`` (fill 0)
    TrivialAugment Wide (Müller & Hutter 2021, "TrivialAugment: Tuning-free Yet State-of-the-Art
    Data Augmentation", ICCV): one of the same 14 operations per image, uniformly, at a level
    ``l`` uniform in ``{0, ..., 30}``, on the wide ranges of the authors' ``aug_lib``
    (``wide_standard``): shear ``0.99 l / 30``, translate ``int(32 l / 30)`` pixels, rotate
    ``int(135 l / 30)`` degrees (random signs), factor ``0.01 + 1.99 l / 30``, posterize
    ``8 - int(6 l / 30)`` bits, solarize ``256 - int(256 l / 30)``. Fill 0, as that code
    (torchvision's ``TrivialAugmentWide`` instead uses factors ``1 +- 0.99 l / 30`` and
    thresholds ``255 - 255 l / 30``).
``cutout`` (``size`` 16 pixels, fill 127)
    Cutout (DeVries & Taylor 2017): a ``size`` x ``size`` square at a centre drawn uniformly over
    the image (clipped at the border), see :func:`noisylabels.data.imageops.cutout`. Fill 127
    grey, as FixMatch's ``CutoutAbs``; DeVries & Taylor zero the normalised image, i.e. fill the
    dataset's mean colour (about (125, 123, 114) on CIFAR-10). 16 is their CIFAR-10 size (8 for
    CIFAR-100).

``simclr`` (``min_scale`` 0.08, ``strength`` 0.5, ``interpolation`` bilinear)
    SimCLR's augmentation (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML, Sec. 3 and App. A; the CIFAR-10 setting of App. B.9: colour distortion
    strength ``s = 0.5``, no Gaussian blur), as the PyTorch ports compose it from torchvision on PIL
    images (``RandomResizedCrop``, ``RandomHorizontalFlip``, ``RandomApply(ColorJitter, 0.8)``,
    ``RandomGrayscale(0.2)``; the SimCLR code SupContrast, which C2D pretrained with): per image a
    crop of area ``U(min_scale, 1)`` of the image and aspect ratio log-uniform in ``[3/4, 4/3]``
    (ten tries, else the whole image, as torchvision), resized back to the image size (Pillow's
    bilinear; ``interpolation: bicubic`` as the authors' TensorFlow code); a horizontal flip with
    probability 1/2 (``hflip: false`` for digits); with probability ``jitter_p`` = 0.8 brightness,
    contrast, saturation (factors ``U(max(0, 1 - 0.8 s), 1 + 0.8 s)``) and hue (``U(-0.2 s, 0.2 s)``,
    the hue byte shifted by ``int(255 h)``) in a random order; grey with probability
    ``grayscale_p`` = 0.2. The views need no pad-and-crop before it (``noisylabels pretrain`` sets
    ``data.augment: none``). C2D's SupContrast crops with ``min_scale`` 0.2 (an option).

Compositions join names with ``+`` and apply the parts in order: ``randaugment+cutout`` is
FixMatch's strong augmentation (RandAugment then Cutout 16; the default ``data.strong_augment``),
``autoaugment-cifar10+cutout`` the AutoAugment paper's CIFAR recipe, ``trivialaugment+cutout``
TrivialAugment's. An option goes to every part that takes it (``fill`` to all).

None of these policies uses SolarizeAdd or Invert beyond AutoAugment's own Invert, so SolarizeAdd
is not implemented. Grey images are supported (colour is then the identity, as in Pillow).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..registry import Registry, call_with_options, keyword_options
from . import imageops as ops

__all__ = ["OPS", "AugmentPolicy", "AutoAugmentCIFAR10", "RandAugment", "TrivialAugment", "Cutout", "Compose",
           "apply_ops", "AUGMENT_POLICIES", "create_augment_policy", "list_augment_policies", "strong_augment_policy",
           "DEFAULT_STRONG_AUGMENT", "AUTOAUGMENT_CIFAR10", "SimCLRAugment", "draw_resized_crops"]

#: operation codes of a plan (index into this tuple; -1: nothing applied)
OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "AutoContrast", "Invert",
       "Equalize", "Solarize", "Posterize", "Contrast", "Color", "Brightness", "Sharpness")
_CODE = {name: i for i, name in enumerate(OPS)}
_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_ENHANCE = ("Contrast", "Color", "Brightness", "Sharpness")

#: the default ``data.strong_augment``: FixMatch's RandAugment (N=2, M=10) followed by Cutout 16
DEFAULT_STRONG_AUGMENT = "randaugment+cutout"


def _apply_one(code: int, x: torch.Tensor, v: torch.Tensor, fill: int) -> torch.Tensor:
    name = OPS[code]
    if name == "Identity":
        return x
    if name == "ShearX":
        return ops.shear_x(x, v, fill=fill)
    if name == "ShearY":
        return ops.shear_y(x, v, fill=fill)
    if name == "TranslateX":
        return ops.translate_x(x, v, fill=fill)
    if name == "TranslateY":
        return ops.translate_y(x, v, fill=fill)
    if name == "Rotate":
        return ops.rotate(x, v, fill=fill)
    if name == "AutoContrast":
        return ops.autocontrast(x)
    if name == "Invert":
        return ops.invert(x)
    if name == "Equalize":
        return ops.equalize(x)
    if name == "Solarize":
        return ops.solarize(x, v)
    if name == "Posterize":
        return ops.posterize(x, v.round().to(torch.int64))
    if name == "Contrast":
        return ops.contrast(x, v)
    if name == "Color":
        return ops.color(x, v)
    if name == "Brightness":
        return ops.brightness(x, v)
    return ops.sharpness(x, v)


def apply_ops(x: torch.Tensor, op: torch.Tensor, value: torch.Tensor, *, fill: int = 0) -> torch.Tensor:
    """Apply to each image ``i`` of a uint8 ``(B, C, H, W)`` batch the operation ``OPS[op[i]]``
    with parameter ``value[i]`` (``op[i] = -1``: none), grouping the samples by operation.

    ``value`` is in the operation's unit: shear factor, translation in pixels, rotation in
    degrees, solarize threshold, posterize bits, enhancement factor (unused for identity,
    autocontrast, invert, equalize). ``fill`` fills what geometry moves into the image.
    """
    op = op.to(x.device)
    value = value.to(x.device)
    out = x
    for code in torch.unique(op).tolist():
        if code < 0 or OPS[code] == "Identity":
            continue
        idx = (op == code).nonzero().flatten()
        res = _apply_one(code, x.index_select(0, idx), value.index_select(0, idx), fill)
        if out is x:
            out = x.clone()
        out.index_copy_(0, idx, res)
    return out


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):
        raise UserError(f"augmentation policies need uint8 (B, C, H, W) grey or RGB images, got "
                        f"{getattr(x, 'dtype', type(x).__name__)} of shape {tuple(getattr(x, 'shape', ()))}")


def _check_fill(fill: Any) -> int:
    if isinstance(fill, bool) or not isinstance(fill, int) or not 0 <= fill <= 255:
        raise UserError(f"augment policy option fill must be an integer in [0, 255], got {fill!r}")
    return int(fill)


class AugmentPolicy:
    """A strong augmentation policy: ``policy(x, generator=g)`` = ``apply(x, draw(len(x), ...))``.

    Subclasses implement :meth:`draw` (every random number of a batch, drawn in a documented
    order) and :meth:`apply` (no randomness). ``config`` (name and options) identifies a policy:
    two policies with the same config are equal.
    """

    name = "policy"

    def __init__(self, **config: Any) -> None:
        self.config = {"name": self.name, **config}

    def draw(self, n: int, *, size: tuple[int, int], generator: torch.Generator) -> dict[str, Any]:
        """The plan of a batch of ``n`` images of ``size = (height, width)``."""
        raise NotImplementedError

    def apply(self, x: torch.Tensor, plan: dict[str, Any]) -> torch.Tensor:
        """``x`` (uint8 ``(B, C, H, W)``) augmented as ``plan`` says."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
        _check_images(x)
        return self.apply(x, self.draw(x.shape[0], size=(x.shape[2], x.shape[3]), generator=generator))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AugmentPolicy) and other.config == self.config

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if k != "name")
        return f"{self.config['name']}({opts})"


def _device(generator: torch.Generator) -> torch.device:
    return generator.device if hasattr(generator, "device") else torch.device("cpu")


class _OpPolicy(AugmentPolicy):
    """A policy whose plan is ``op`` / ``value`` tensors ``(n, steps)``, applied step by step."""

    def __init__(self, *, fill: int, **config: Any) -> None:
        self.fill = _check_fill(fill)
        super().__init__(**config, fill=self.fill)

    def apply(self, x: torch.Tensor, plan: dict[str, Any]) -> torch.Tensor:
        _check_images(x)
        op, value = plan["op"], plan["value"]
        if op.shape[0] != x.shape[0]:
            raise UserError(f"{self.name}: a plan of {op.shape[0]} images for a batch of {x.shape[0]}")
        for k in range(op.shape[1]):
            x = apply_ops(x, op[:, k], value[:, k], fill=self.fill)
        return x


def _signed(op: torch.Tensor, value: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """``value`` negated where ``negative`` for the geometric operations; enhancement factors
    ``1 + m`` become ``1 - m`` (``value`` holds ``m`` for them)."""
    geo = torch.zeros_like(op, dtype=torch.bool)
    enh = torch.zeros_like(op, dtype=torch.bool)
    for name in _GEOMETRIC:
        geo |= op == _CODE[name]
    for name in _ENHANCE:
        enh |= op == _CODE[name]
    out = torch.where(geo & negative, -value, value)
    return torch.where(enh, torch.where(negative, 1.0 - value, 1.0 + value), out)


#: AutoAugment's CIFAR-10 policy (Cubuk et al. 2019, appendix): 25 sub-policies of two
#: (operation, probability, magnitude bin) steps; ``None``: an operation without magnitude
AUTOAUGMENT_CIFAR10: tuple[tuple[tuple[str, float, int | None], tuple[str, float, int | None]], ...] = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.2, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)


def _autoaugment_magnitudes() -> torch.Tensor:
    """``(len(OPS), 10)`` unsigned magnitudes per bin (translations as a fraction of the side)."""
    table = np.zeros((len(OPS), 10))
    lin = {"ShearX": np.linspace(0, 0.3, 10), "ShearY": np.linspace(0, 0.3, 10),
           "TranslateX": np.linspace(0, 150 / 331, 10), "TranslateY": np.linspace(0, 150 / 331, 10),
           "Rotate": np.linspace(0, 30, 10), "Solarize": np.linspace(256, 0, 10),
           "Posterize": np.round(np.linspace(8, 4, 10)),
           **{name: np.linspace(0.0, 0.9, 10) for name in _ENHANCE}}
    for name, values in lin.items():
        table[_CODE[name]] = values
    return torch.from_numpy(table)


class AutoAugmentCIFAR10(_OpPolicy):
    """AutoAugment's CIFAR-10 policy (Cubuk et al. 2019); see the module docstring.

    Draws, in this order: the sub-policy of each image (``randint(25)``), two uniforms deciding
    whether each step applies (``u < p``), two uniforms for the signs (``< 0.5``: negative).
    """

    name = "autoaugment-cifar10"
    _magnitudes = _autoaugment_magnitudes()

    def __init__(self, *, fill: int = 128) -> None:
        super().__init__(fill=fill)
        self._op = torch.tensor([[_CODE[s[0]] for s in sub] for sub in AUTOAUGMENT_CIFAR10])
        self._p = torch.tensor([[s[1] for s in sub] for sub in AUTOAUGMENT_CIFAR10], dtype=torch.float64)
        self._bin = torch.tensor([[s[2] or 0 for s in sub] for sub in AUTOAUGMENT_CIFAR10])

    def draw(self, n: int, *, size: tuple[int, int], generator: torch.Generator) -> dict[str, Any]:
        dev = _device(generator)
        sub = torch.randint(0, len(AUTOAUGMENT_CIFAR10), (n,), generator=generator, device=dev).cpu()
        u = torch.rand(n, 2, generator=generator, device=dev, dtype=torch.float64).cpu()
        negative = torch.rand(n, 2, generator=generator, device=dev, dtype=torch.float64).cpu() < 0.5
        op, p, b = self._op[sub], self._p[sub], self._bin[sub]
        m = self._magnitudes[op, b]
        h, w = size
        m = torch.where(op == _CODE["TranslateX"], m * w, m)
        m = torch.where(op == _CODE["TranslateY"], m * h, m)
        value = _signed(op, m, negative)
        return {"op": torch.where(u < p, op, torch.full_like(op, -1)), "value": value,
                "sub": sub, "applied": u < p, "negative": negative}


_POOL = ("AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Identity", "Posterize", "Rotate",
         "Sharpness", "ShearX", "ShearY", "Solarize", "TranslateX", "TranslateY")


class RandAugment(_OpPolicy):
    """RandAugment, FixMatch's variant (Cubuk et al. 2020; Sohn et al. 2020); see the module docstring.

    Parameters
    ----------
    num_ops:
        N, operations per image (drawn uniformly with replacement from the 14).
    magnitude:
        M in [2, 10]: each operation's level is uniform in ``{1, ..., M - 1}`` (of 10).
    fill:
        Value of the pixels geometry moves into the image.

    Draws, in this order: the operations ``(n, N)``, the levels ``(n, N)``, the application
    coins ``(n, N)`` (``< 0.5``: applied), the signs ``(n, N)`` (``< 0.5``: negative).
    """

    name = "randaugment"

    def __init__(self, *, num_ops: int = 2, magnitude: int = 10, fill: int = 0) -> None:
        if isinstance(num_ops, bool) or not isinstance(num_ops, int) or not 1 <= num_ops <= 16:
            raise UserError(f"randaugment num_ops must be an integer in [1, 16], got {num_ops!r}")
        if isinstance(magnitude, bool) or not isinstance(magnitude, int) or not 2 <= magnitude <= 10:
            raise UserError(f"randaugment magnitude must be an integer in [2, 10] (levels are drawn from "
                            f"1 to magnitude - 1, of 10), got {magnitude!r}")
        self.num_ops, self.magnitude = int(num_ops), int(magnitude)
        super().__init__(num_ops=self.num_ops, magnitude=self.magnitude, fill=fill)
        self._pool = torch.tensor([_CODE[name] for name in _POOL])

    def draw(self, n: int, *, size: tuple[int, int], generator: torch.Generator) -> dict[str, Any]:
        dev = _device(generator)
        k = (n, self.num_ops)
        which = torch.randint(0, len(_POOL), k, generator=generator, device=dev).cpu()
        v = torch.randint(1, self.magnitude, k, generator=generator, device=dev).cpu().to(torch.float64)
        applied = torch.rand(k, generator=generator, device=dev, dtype=torch.float64).cpu() < 0.5
        negative = torch.rand(k, generator=generator, device=dev, dtype=torch.float64).cpu() < 0.5
        op = self._pool[which]
        h, w = size
        value = torch.zeros(k, dtype=torch.float64)
        for name in _ENHANCE:
            value = torch.where(op == _CODE[name], v * 0.9 / 10 + 0.05, value)
        value = torch.where(op == _CODE["Posterize"], torch.trunc(v * 4 / 10) + 4, value)
        value = torch.where(op == _CODE["Solarize"], 256 - torch.trunc(v * 256 / 10), value)
        value = torch.where(op == _CODE["Rotate"], torch.trunc(v * 30 / 10), value)
        shear = v * 0.3 / 10
        value = torch.where((op == _CODE["ShearX"]) | (op == _CODE["ShearY"]), shear, value)
        geo = torch.zeros_like(op, dtype=torch.bool)
        for name in _GEOMETRIC:
            geo |= op == _CODE[name]
        value = torch.where(geo & negative, -value, value)
        signed = torch.where(negative, -shear, shear)  # translations: signed, then int(v * side)
        value = torch.where(op == _CODE["TranslateX"], torch.trunc(signed * w), value)
        value = torch.where(op == _CODE["TranslateY"], torch.trunc(signed * h), value)
        return {"op": torch.where(applied, op, torch.full_like(op, -1)), "value": value,
                "level": v.to(torch.int64), "applied": applied, "negative": negative}


class TrivialAugment(_OpPolicy):
    """TrivialAugment Wide (Müller & Hutter 2021); see the module docstring.

    Draws, in this order: the operation ``(n,)``, the level ``(n,)`` in ``{0, ..., 30}``, the sign
    ``(n,)`` (``< 0.5``: negative).
    """

    name = "trivialaugment"

    def __init__(self, *, fill: int = 0) -> None:
        super().__init__(fill=fill)
        self._pool = torch.tensor([_CODE[name] for name in _POOL])

    def draw(self, n: int, *, size: tuple[int, int], generator: torch.Generator) -> dict[str, Any]:
        dev = _device(generator)
        which = torch.randint(0, len(_POOL), (n, 1), generator=generator, device=dev).cpu()
        lv = torch.randint(0, 31, (n, 1), generator=generator, device=dev).cpu().to(torch.float64)
        negative = torch.rand(n, 1, generator=generator, device=dev, dtype=torch.float64).cpu() < 0.5
        op = self._pool[which]
        value = torch.zeros(n, 1, dtype=torch.float64)
        for name in _ENHANCE:
            value = torch.where(op == _CODE[name], lv * (2.0 - 0.01) / 30 + 0.01, value)
        value = torch.where(op == _CODE["Posterize"], 8 - torch.trunc(lv * 6 / 30), value)
        value = torch.where(op == _CODE["Solarize"], 256 - torch.trunc(lv * 256 / 30), value)
        value = torch.where(op == _CODE["Rotate"], torch.trunc(lv * 135 / 30), value)
        value = torch.where((op == _CODE["ShearX"]) | (op == _CODE["ShearY"]), lv * 0.99 / 30, value)
        value = torch.where((op == _CODE["TranslateX"]) | (op == _CODE["TranslateY"]), torch.trunc(lv * 32 / 30), value)
        geo = torch.zeros_like(op, dtype=torch.bool)
        for name in _GEOMETRIC:
            geo |= op == _CODE[name]
        return {"op": op, "value": torch.where(geo & negative, -value, value), "level": lv.to(torch.int64),
                "negative": negative}


class Cutout(AugmentPolicy):
    """Cutout (DeVries & Taylor 2017): one ``size`` x ``size`` square per image, its centre drawn
    uniformly over the pixels (rows ``randint(H)``, then columns ``randint(W)``), set to ``fill``."""

    name = "cutout"

    def __init__(self, *, size: int = 16, fill: int = 127) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 4096:
            raise UserError(f"cutout size must be an integer number of pixels in [1, 4096], got {size!r}")
        self.size, self.fill = int(size), _check_fill(fill)
        super().__init__(size=self.size, fill=self.fill)

    def draw(self, n: int, *, size: tuple[int, int], generator: torch.Generator) -> dict[str, Any]:
        dev = _device(generator)
        h, w = size
        rows = torch.randint(0, h, (n,), generator=generator, device=dev).cpu()
        cols = torch.randint(0, w, (n,), generator=generator, device=dev).cpu()
        return {"row": rows, "col": cols}

    def apply(self, x: torch.Tensor, plan: dict[str, Any]) -> torch.Tensor:
        _check_images(x)
        return ops.cutout(x, plan["row"], plan["col"], size=self.size, fill=self.fill)


class Compose(AugmentPolicy):
    """The parts applied in order (their draws in the same order): ``a+b+...``."""

    def __init__(self, parts: Sequence[AugmentPolicy]) -> None:
        self.parts = tuple(parts)
        self.name = "+".join(p.config["name"] for p in self.parts)
        super().__init__(parts=[dict(p.config) for p in self.parts])

    def draw(self, n: int, *, size: tuple[int, int], generator: torch.Generator) -> dict[str, Any]:
        return {"parts": [p.draw(n, size=size, generator=generator) for p in self.parts]}

    def apply(self, x: torch.Tensor, plan: dict[str, Any]) -> torch.Tensor:
        for p, sub in zip(self.parts, plan["parts"]):
            x = p.apply(x, sub)
        return x

    def __repr__(self) -> str:
        return "+".join(repr(p) for p in self.parts)


def draw_resized_crops(n: int, *, size: tuple[int, int], min_scale: float = 0.08, max_scale: float = 1.0,
                       ratio: tuple[float, float] = (3 / 4, 4 / 3), attempts: int = 10,
                       generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Crop boxes of torchvision's ``RandomResizedCrop.get_params`` for ``n`` images of ``size =
    (height, width)``, drawn for the whole batch: per image ``attempts`` tries of an area fraction
    ``U(min_scale, max_scale)`` and a log-uniform aspect ratio in ``ratio``, ``w = round(sqrt(A r))``,
    ``h = round(sqrt(A / r))``; the first try that fits wins, at an offset uniform over the positions
    where it fits; none fits: the central crop of the image clamped to ``ratio``.

    Draws, in this order: the area fractions ``(n, attempts)``, the log-ratios ``(n, attempts)``, the
    offset uniforms ``(n, 2)`` (rows, columns). Returns int64 ``top``, ``left``, ``height``, ``width``.
    """
    dev = _device(generator)
    h, w = size
    area = float(h * w)
    k = (n, int(attempts))
    frac = min_scale + (max_scale - min_scale) * torch.rand(k, generator=generator, device=dev, dtype=torch.float64).cpu()
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    logr = lo + (hi - lo) * torch.rand(k, generator=generator, device=dev, dtype=torch.float64).cpu()
    u = torch.rand(n, 2, generator=generator, device=dev, dtype=torch.float64).cpu()
    ar = torch.exp(logr)
    cw = torch.round(torch.sqrt(area * frac * ar))   # round half to even, as Python's round()
    ch = torch.round(torch.sqrt(area * frac / ar))
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.argmax(fits.to(torch.int64), dim=1, keepdim=True)
    ok = fits.any(dim=1)
    in_ratio = w / h
    if in_ratio < min(ratio):
        fw, fh = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(h * max(ratio))), h
    else:
        fw, fh = w, h
    cw = torch.where(ok, cw.gather(1, first).squeeze(1), torch.full((n,), float(fw), dtype=torch.float64))
    ch = torch.where(ok, ch.gather(1, first).squeeze(1), torch.full((n,), float(fh), dtype=torch.float64))
    top = torch.where(ok, torch.floor(u[:, 0] * (h - ch + 1)).clamp(max=h - ch), torch.full_like(ch, float((h - fh) // 2)))
    left = torch.where(ok, torch.floor(u[:, 1] * (w - cw + 1)).clamp(max=w - cw), torch.full_like(cw, float((w - fw) // 2)))
    return {"top": top.to(torch.int64), "left": left.to(torch.int64), "height": ch.to(torch.int64),
            "width": cw.to(torch.int64)}


#: the colour-jitter operations of the ``simclr`` policy, by their code in its plan's ``order``
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


class SimCLRAugment(AugmentPolicy):
    """SimCLR's augmentation (Chen et al. 2020); see the module docstring.

    Parameters
    ----------
    min_scale:
        Smallest crop area as a fraction of the image (0.08, the paper's Inception crop; SupContrast,
        C2D's SimCLR code: 0.2).
    hflip:
        Flip horizontally with probability 1/2 (turn off for digits).
    strength:
        Colour distortion strength ``s`` (0.5: the paper's CIFAR-10 setting; 1.0: ImageNet):
        brightness, contrast and saturation ``0.8 s``, hue ``0.2 s``.
    jitter_p, grayscale_p:
        Probabilities of the colour jitter (0.8) and of the grey conversion (0.2).
    interpolation:
        ``bilinear`` (torchvision's default) or ``bicubic`` (the authors' TensorFlow code).

    Draws, in this order: the crops (:func:`draw_resized_crops`), the flips ``(n,)``, the jitter coins
    ``(n,)``, the jitter order ``(n, 4)`` (argsort of uniforms), the four factors ``(n, 4)``, the grey
    coins ``(n,)`` (each ``u < p``).
    """

    name = "simclr"

    def __init__(self, *, min_scale: float = 0.08, hflip: bool = True, strength: float = 0.5,
                 jitter_p: float = 0.8, grayscale_p: float = 0.2, interpolation: str = "bilinear") -> None:
        def prob(key: str, v: Any) -> float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                raise UserError(f"simclr {key} must be a probability in [0, 1], got {v!r}")
            return float(v)

        if isinstance(min_scale, bool) or not isinstance(min_scale, (int, float)) or not 0.0 < float(min_scale) <= 1.0:
            raise UserError(f"simclr min_scale must be a number in (0, 1], got {min_scale!r}")
        if not isinstance(hflip, bool):
            raise UserError(f"simclr hflip must be true or false, got {hflip!r}")
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= float(strength) <= 2.5:
            raise UserError(f"simclr strength must be a number in [0, 2.5] (hue 0.2 s at most 0.5), got {strength!r}")
        if interpolation not in ops.RESAMPLE_FILTERS:
            raise UserError(f"simclr interpolation must be one of {', '.join(ops.RESAMPLE_FILTERS)}, got {interpolation!r}")
        self.min_scale, self.hflip, self.strength = float(min_scale), hflip, float(strength)
        self.jitter_p, self.grayscale_p = prob("jitter_p", jitter_p), prob("grayscale_p", grayscale_p)
        self.interpolation = interpolation
        super().__init__(min_scale=self.min_scale, hflip=hflip, strength=self.strength, jitter_p=self.jitter_p,
                         grayscale_p=self.grayscale_p, interpolation=interpolation)

    def draw(self, n: int, *, size: tuple[int, int], generator: torch.Generator) -> dict[str, Any]:
        dev = _device(generator)
        plan: dict[str, Any] = draw_resized_crops(n, size=size, min_scale=self.min_scale, generator=generator)

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device=dev, dtype=torch.float64).cpu()

        flip = uniform(n) < 0.5
        plan["flip"] = flip & self.hflip
        plan["jitter"] = uniform(n) < self.jitter_p
        plan["order"] = torch.argsort(uniform(n, 4), dim=1)
        f = uniform(n, 4)
        b = 0.8 * self.strength
        lo = max(0.0, 1.0 - b)
        plan["factors"] = torch.cat([lo + (1.0 + b - lo) * f[:, :3], 0.2 * self.strength * (2.0 * f[:, 3:] - 1.0)], dim=1)
        plan["hue_shift"] = torch.trunc(plan["factors"][:, 3] * 255.0).to(torch.int64)
        plan["grey"] = uniform(n) < self.grayscale_p
        return plan

    def apply(self, x: torch.Tensor, plan: dict[str, Any]) -> torch.Tensor:
        _check_images(x)
        if plan["top"].shape[0] != x.shape[0]:
            raise UserError(f"{self.name}: a plan of {plan['top'].shape[0]} images for a batch of {x.shape[0]}")
        x = ops.resized_crop(x, plan["top"], plan["left"], plan["height"], plan["width"],
                             interpolation=self.interpolation)
        x = ops.hflip(x, plan["flip"])  # new tensors: the jitter below writes into x in place
        jitter, order, factors = plan["jitter"].to(x.device), plan["order"].to(x.device), plan["factors"]
        for step in range(4):
            for code, name in enumerate(JITTER_OPS):
                idx = (jitter & (order[:, step] == code)).nonzero().flatten()
                if len(idx) == 0:
                    continue
                xi = x.index_select(0, idx)
                if name == "hue":
                    res = ops.hue(xi, plan["hue_shift"].to(x.device).index_select(0, idx))
                else:
                    fn = {"brightness": ops.brightness, "contrast": ops.contrast, "saturation": ops.color}[name]
                    res = fn(xi, factors[:, code].to(x.device).index_select(0, idx))
                x.index_copy_(0, idx, res)
        grey = plan["grey"].to(x.device)
        if bool(grey.any()):
            x = torch.where(grey[:, None, None, None], ops.grayscale(x), x)
        return x


AUGMENT_POLICIES: Registry = Registry("augment policy")
AUGMENT_POLICIES.register("autoaugment-cifar10", help="AutoAugment's CIFAR-10 policy (Cubuk et al. 2019), fill 128")(
    AutoAugmentCIFAR10)
AUGMENT_POLICIES.register("randaugment", help="RandAugment, FixMatch's variant (N=2, M=10; fill 0)")(RandAugment)
AUGMENT_POLICIES.register("trivialaugment", help="TrivialAugment Wide (Müller & Hutter 2021), fill 0")(TrivialAugment)
AUGMENT_POLICIES.register("cutout", help="Cutout (DeVries & Taylor 2017), size 16, fill 127")(Cutout)
AUGMENT_POLICIES.register("simclr", help="SimCLR's crop-resize, flip, colour jitter (p 0.8, s 0.5) and grey (p 0.2), "
                          "no blur (Chen et al. 2020, CIFAR setting)")(SimCLRAugment)


def list_augment_policies() -> list[str]:
    """Names of the registered policies (join them with ``+`` to compose)."""
    return AUGMENT_POLICIES.names()


def create_augment_policy(name: str, **options: Any) -> AugmentPolicy:
    """The policy ``name`` (one of :func:`list_augment_policies`, or several joined by ``+``,
    applied in order) with ``options`` (each given to every part that takes it; one no part
    takes is a one-line error naming the valid ones)."""
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"augment policy name must be a word such as {DEFAULT_STRONG_AUGMENT}, got {name!r}")
    names = [p.strip().lower() for p in name.split("+")]
    if any(not p for p in names):
        raise UserError(f"augment policy {name!r}: empty part; join names with '+', e.g. {DEFAULT_STRONG_AUGMENT}")
    factories = [AUGMENT_POLICIES.get(p) for p in names]
    takes = [set((keyword_options(f) or (set(), []))[1]) for f in factories]
    bad = [k for k in options if not any(k in t for t in takes)]
    if bad:
        valid = sorted(set().union(*takes))
        raise UserError(f"augment policy {name!r} has no option(s) {', '.join(map(repr, bad))}; "
                        f"valid options: {', '.join(valid) or '(none)'}")
    if len(names) == 1:
        return call_with_options("augment policy", names[0], factories[0], **options)
    return Compose([call_with_options("augment policy", n, f, **{k: v for k, v in options.items() if k in t})
                    for n, f, t in zip(names, factories, takes)])


def strong_augment_policy(setting: Any) -> AugmentPolicy | None:
    """The policy a ``data.strong_augment`` setting names: ``none`` (or null / false): none; a
    name (``randaugment+cutout``); or a mapping ``{name: ..., option: value, ...}`` (``name``
    defaults to :data:`DEFAULT_STRONG_AUGMENT`)."""
    if setting is None or setting is False or (isinstance(setting, str) and setting.strip().lower() == "none"):
        return None
    if isinstance(setting, str):
        return create_augment_policy(setting)
    if isinstance(setting, Mapping):
        opts = {str(k): v for k, v in setting.items()}
        name = opts.pop("name", DEFAULT_STRONG_AUGMENT)
        return create_augment_policy(name, **opts)
    raise UserError(f"data.strong_augment must be none, a policy name (e.g. {DEFAULT_STRONG_AUGMENT}) or a mapping "
                    f"{{name: ..., option: value}}, got {setting!r}")
