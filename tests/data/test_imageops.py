"""The batched uint8 image operations against Pillow (the reference the policies were defined with).

Agreement table (every operation, grey and RGB, random and low-contrast images, square and
non-square, every magnitude the policies use and a few more): maximum absolute difference 0,
mean 0 (bit-exact) for all of

    ShearX, ShearY, TranslateX, TranslateY, Rotate, AutoContrast, Equalize, Invert, Solarize,
    Posterize, Brightness, Color, Contrast, Sharpness (and the SMOOTH filter and convert('L'))

``benchmarks/augment_throughput.py --agreement`` prints the same table.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from noisylabels.data import imageops as O
from noisylabels.data.policies import AUTOAUGMENT_CIFAR10
from noisylabels.errors import UserError

from ..helpers import from_pil as _np, to_pil as _pil

SHEARS = [0.0, 0.0333, -0.1, 0.3, -0.3, 0.99, -0.5]
TRANSLATIONS = [0, 1, -3, 9, 14.501510574018129, -14.501510574018129, 6.44, -0.5, 0.5, 32, -40]
ANGLES = [0, 3.3333333333333335, -30, 27, -4.5, 90, -90, 180, 135, -133, 13.5]
FACTORS = [0.0, 0.01, 0.05, 0.1, 0.41, 0.95, 1.0, 1.3, 1.6, 1.9, 2.0]


def _images(c: int, *, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    """Random NHWC uint8 images: full-range noise, low-contrast, few-level and constant ones (the
    cases where autocontrast / equalize / contrast take their special branches)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (6, h, w, c), dtype=np.uint8)
    a[1] = (a[1] // 8 + 100).astype(np.uint8)                    # low contrast
    a[2] = np.where(a[2] > 128, 200, 37).astype(np.uint8)         # two levels
    a[3] = 77                                                     # constant
    a[4, : h // 2] = 255                                          # a large block at one level
    a[5] = np.clip(rng.normal(120, 30, (h, w, c)), 0, 255).astype(np.uint8)
    return a




def agreement(ours, reference, values, *, c: int, h: int = 32, w: int = 32) -> tuple[int, float]:
    """(max, mean) absolute difference between ``ours(x, v)`` on the batch and ``reference(im, v)``
    per image, over ``values``."""
    a = _images(c, h=h, w=w)
    x = torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
    worst, total, count = 0, 0.0, 0
    for v in values:
        got = ours(x, v)
        assert got.dtype == torch.uint8 and got.shape == x.shape
        got = got.permute(0, 2, 3, 1).numpy()
        for i in range(len(a)):
            d = np.abs(got[i].astype(int) - _np(reference(_pil(a[i]), v)).astype(int))
            worst, total, count = max(worst, int(d.max())), total + float(d.sum()), count + d.size
    return worst, total / count


def _fc(fill: int, c: int):
    return (fill,) * 3 if c == 3 else fill


CASES = {
    "ShearX": (lambda x, v: O.shear_x(x, v, fill=128),
               lambda im, v: im.transform(im.size, Image.AFFINE, (1, v, 0, 0, 1, 0), fillcolor=_fc(128, len(im.getbands()))),
               SHEARS),
    "ShearY": (lambda x, v: O.shear_y(x, v, fill=0),
               lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, v, 1, 0)), SHEARS),
    "TranslateX": (lambda x, v: O.translate_x(x, v, fill=128),
                   lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, v, 0, 1, 0),
                                              fillcolor=_fc(128, len(im.getbands()))), TRANSLATIONS),
    "TranslateY": (lambda x, v: O.translate_y(x, v, fill=0),
                   lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, v)), TRANSLATIONS),
    "Rotate": (lambda x, v: O.rotate(x, v, fill=128),
               lambda im, v: im.rotate(v, fillcolor=_fc(128, len(im.getbands()))), ANGLES),
    "AutoContrast": (lambda x, v: O.autocontrast(x), lambda im, v: ImageOps.autocontrast(im), [None]),
    "Equalize": (lambda x, v: O.equalize(x), lambda im, v: ImageOps.equalize(im), [None]),
    "Invert": (lambda x, v: O.invert(x), lambda im, v: ImageOps.invert(im), [None]),
    "Solarize": (O.solarize, ImageOps.solarize, [256, 227.55555555555554, 199, 128, 26, 1, 0]),
    "Posterize": (O.posterize, ImageOps.posterize, [8, 7, 6, 5, 4, 2, 1]),
    "Brightness": (O.brightness, lambda im, v: ImageEnhance.Brightness(im).enhance(v), FACTORS),
    "Color": (O.color, lambda im, v: ImageEnhance.Color(im).enhance(v), FACTORS),
    "Contrast": (O.contrast, lambda im, v: ImageEnhance.Contrast(im).enhance(v), FACTORS),
    "Sharpness": (O.sharpness, lambda im, v: ImageEnhance.Sharpness(im).enhance(v), FACTORS),
    "Smooth": (lambda x, v: O.smooth(x), lambda im, v: im.filter(ImageFilter.SMOOTH), [None]),
}


@pytest.mark.parametrize("c", [3, 1])
@pytest.mark.parametrize("op", sorted(CASES))
def test_every_operation_equals_pillow(op, c):
    ours, reference, values = CASES[op]
    worst, mean = agreement(ours, reference, values, c=c)
    assert worst == 0 and mean == 0.0, (op, c, worst, mean)


@pytest.mark.parametrize("op", ["ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Sharpness"])
def test_geometry_on_non_square_images_equals_pillow(op):
    ours, reference, values = CASES[op]
    assert agreement(ours, reference, values, c=3, h=20, w=28) == (0, 0.0)


def test_per_sample_parameters_act_on_their_own_sample():
    a = _images(3)
    x = torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
    angles = torch.tensor([0.0, 30.0, -30.0, 90.0, 13.5, -4.5], dtype=torch.float64)
    out = O.rotate(x, angles, fill=7).permute(0, 2, 3, 1).numpy()
    for i, ang in enumerate(angles.tolist()):
        assert np.array_equal(out[i], _np(_pil(a[i]).rotate(ang, fillcolor=(7, 7, 7))))
    factors = torch.linspace(0.1, 1.9, 6, dtype=torch.float64)
    out = O.contrast(x, factors).permute(0, 2, 3, 1).numpy()
    for i, f in enumerate(factors.tolist()):
        assert np.array_equal(out[i], _np(ImageEnhance.Contrast(_pil(a[i])).enhance(f)))


def test_the_equalize_lookup_table_is_clipped_as_pillow_clips_it():
    """A histogram whose rounding pushes ``lut[last]`` to 256: 512 pixels, one at the highest
    level, so ``step = 511 // 255 = 2`` and ``lut[255] = (1 + 511) // 2 = 256`` (Pillow clips)."""
    a = np.zeros((1, 16, 32, 1), np.uint8)
    a[0, :, :16] = 10
    a[0, :, 16:] = 200
    a[0, 0, 0] = 255
    x = torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
    ref = _np(ImageOps.equalize(_pil(a[0])))
    assert ref[0, 0, 0] == 255
    assert np.array_equal(O.equalize(x)[0].permute(1, 2, 0).numpy(), ref)


def test_cutout_is_the_papers_square_clipped_at_the_border():
    x = torch.full((3, 1, 10, 12), 9, dtype=torch.uint8)
    out = O.cutout(x, torch.tensor([5, 0, 9]), torch.tensor([6, 11, 0]), size=4, fill=200)
    want = np.full((3, 10, 12), 9)
    for i, (r, q) in enumerate([(5, 6), (0, 11), (9, 0)]):  # DeVries & Taylor's util/cutout.py, by hand
        y1, y2 = max(r - 2, 0), min(r + 2, 10)
        x1, x2 = max(q - 2, 0), min(q + 2, 12)
        want[i, y1:y2, x1:x2] = 200
    assert np.array_equal(out[:, 0].numpy(), want)
    assert int((out[0] == 200).sum()) == 16  # a full 4 x 4 square inside the image


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(UserError, match="uint8"):
        O.invert(torch.zeros(1, 3, 4, 4))
    with pytest.raises(UserError, match="channels"):
        O.invert(torch.zeros(1, 2, 4, 4, dtype=torch.uint8))
    with pytest.raises(UserError, match="bits"):
        O.posterize(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), 0)
    with pytest.raises(UserError, match="fill"):
        O.rotate(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), 3.0, fill=300)


def test_autoaugment_table_is_the_papers_cifar10_policy():
    """25 sub-policies of two steps; spot checks against the paper's table (first, last, the p=0 step)."""
    assert len(AUTOAUGMENT_CIFAR10) == 25 and all(len(s) == 2 for s in AUTOAUGMENT_CIFAR10)
    assert AUTOAUGMENT_CIFAR10[0] == (("Invert", 0.1, None), ("Contrast", 0.2, 6))
    assert AUTOAUGMENT_CIFAR10[14] == (("Solarize", 0.5, 2), ("Invert", 0.0, None))
    assert AUTOAUGMENT_CIFAR10[24] == (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None))
