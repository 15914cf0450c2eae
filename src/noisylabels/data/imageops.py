"""Pillow's image operations, batched: uint8 ``(B, C, H, W)`` tensors, one parameter per sample.

The strong augmentation policies (:mod:`noisylabels.data.policies`) were defined, and are used by
their authors, as Pillow calls on one image at a time. These functions compute the very same
pixels for a whole batch with tensor operations, each sample with its own parameter (a tensor of
``B`` values), grey (``C = 1``, Pillow mode ``L``) or colour (``C = 3``, mode ``RGB``):

========================  ===========================================================================
operation                 Pillow call reproduced, and how
========================  ===========================================================================
``affine``                ``Image.transform(size, AFFINE, m, NEAREST, fillcolor=fill)``: Pillow's own
                          arithmetic (``libImaging/Geometry.c``): the 16.16 fixed-point sampling of
                          ``affine_fixed`` for shears and rotations, the float sampling of
                          ``ImagingScaleAffine`` (pixel centre ``+ 0.5``, floor) for translations
``shear_x`` / ``_y``      ``transform(..., (1, m, 0, 0, 1, 0))`` / ``(1, 0, 0, m, 1, 0)``
``translate_x`` / ``_y``  ``transform(..., (1, 0, t, 0, 1, 0))`` / ``(1, 0, 0, 0, 1, t)`` (``t`` pixels,
                          may be fractional)
``rotate``                ``Image.rotate(deg, NEAREST, fillcolor=fill)`` (its matrix, built in Python
                          exactly as Pillow builds it, per distinct angle of the batch)
``autocontrast``          ``ImageOps.autocontrast`` (per channel, no cutoff): ``int(i * scale + offset)``
``equalize``              ``ImageOps.equalize`` (per channel; Pillow's step and lookup table)
``invert``                ``ImageOps.invert``
``solarize``              ``ImageOps.solarize(threshold)``: ``i`` if ``i < threshold`` else ``255 - i``
``posterize``             ``ImageOps.posterize(bits)``: ``i & ~(2 ** (8 - bits) - 1)``
``brightness``            ``ImageEnhance.Brightness(f)``: ``Image.blend(black, im, f)``
``color``                 ``ImageEnhance.Color(f)``: blend with ``im.convert('L')`` (identity on grey)
``contrast``              ``ImageEnhance.Contrast(f)``: blend with the grey level ``int(mean(L) + 0.5)``
``sharpness``             ``ImageEnhance.Sharpness(f)``: blend with ``filter(SMOOTH)`` (3x3 kernel
                          ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13``, border pixels kept, float32 sums
                          in Pillow's order, ``+ 0.5`` and truncation)
``cutout``                DeVries & Taylor (2017), no Pillow counterpart: see :func:`cutout`
``resized_crop``          ``im.crop(box).resize(size, BILINEAR or BICUBIC)`` (torchvision's
                          ``RandomResizedCrop`` on a PIL image): Pillow's two-pass convolution
                          (``libImaging/Resample.c``: its antialiasing support, coefficients
                          normalised in float64 then rounded to 22-bit fixed point, horizontal pass
                          first, each pass rounded and clipped to uint8)
``hue``                   torchvision's ``adjust_hue`` on a PIL image: ``im.convert('HSV')``, the H
                          byte shifted modulo 256, ``convert('RGB')`` (Pillow's ``rgb2hsv`` /
                          ``hsv2rgb`` of ``libImaging/Convert.c``, float32 / float64 as in C)
``grayscale``             ``im.convert('L')`` repeated over the channels (``RandomGrayscale``)
========================  ===========================================================================

Rounding is Pillow's: ``Image.blend`` computes ``in1 + alpha * (in2 - in1)`` in float32 and
truncates (clipping to ``[0, 255]`` when extrapolating); ``convert('L')`` is
``(19595 R + 38470 G + 7471 B + 32768) >> 16``. The agreement with Pillow (exact, maximum
absolute difference 0 on every operation) is tested in ``tests/data/test_imageops.py`` and printed
by ``benchmarks/augment_throughput.py --agreement``. One caveat: the translation path sums
coordinates sequentially in float64 as Pillow does (``torch.cumsum``, sequential on the CPU); a
CUDA scan may round differently, which changes a pixel only where a sampling coordinate lies
within 1e-15 of a pixel edge (no magnitude of the policies does).

Every function returns a new uint8 tensor of the input's shape and leaves the input unchanged.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from ..errors import UserError

__all__ = ["affine", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "rotation_matrix",
           "autocontrast", "equalize", "invert", "solarize", "posterize", "blend", "grey_level",
           "brightness", "color", "contrast", "sharpness", "smooth", "cutout", "resample_coefficients",
           "resized_crop", "rgb_to_hsv", "hsv_to_rgb", "hue", "grayscale", "hflip"]


def _check(x: torch.Tensor) -> tuple[int, int, int, int]:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4:
        raise UserError(f"image operations need uint8 (B, C, H, W) images, got "
                        f"{getattr(x, 'dtype', type(x).__name__)} of shape {tuple(getattr(x, 'shape', ()))}")
    if x.shape[1] not in (1, 3):
        raise UserError(f"image operations need grey (1 channel) or RGB (3 channel) images, got {x.shape[1]} channels")
    return tuple(x.shape)  # type: ignore[return-value]


def _per_sample(v: torch.Tensor | float | int, b: int, *, device: torch.device,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=dtype, device=device).reshape(-1)
    if t.numel() == 1:
        return t.expand(b)
    if t.numel() != b:
        raise UserError(f"expected 1 or {b} per-sample values, got {t.numel()}")
    return t


def _fill(fill: int) -> int:
    if isinstance(fill, bool) or not isinstance(fill, int) or not 0 <= fill <= 255:
        raise UserError(f"fill must be an integer in [0, 255], got {fill!r}")
    return fill


# -- geometry --------------------------------------------------------------------------------------------
def _gather(x: torch.Tensor, xin: torch.Tensor, yin: torch.Tensor, fill: int) -> torch.Tensor:
    """``out[b, :, y, x] = x[b, :, yin, xin]`` where the source lies in the image, else ``fill``."""
    b, c, h, w = x.shape
    valid = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)  # (B, H, W)
    flat = (yin.clamp(0, h - 1) * w + xin.clamp(0, w - 1)).reshape(b, 1, h * w).expand(b, c, h * w)
    out = x.reshape(b, c, h * w).gather(2, flat).reshape(b, c, h, w)
    return torch.where(valid[:, None], out, torch.full((), fill, dtype=x.dtype, device=x.device))


def affine(x: torch.Tensor, matrix: torch.Tensor, *, fill: int = 0) -> torch.Tensor:
    """``Image.transform(size, Image.AFFINE, matrix, Image.NEAREST, fillcolor=fill)`` per sample.

    Parameters
    ----------
    x:
        uint8 images ``(B, C, H, W)``.
    matrix:
        ``(B, 6)`` (or ``(6,)`` for all) inverse affine maps ``(a, b, c, d, e, f)``: output pixel
        ``(x, y)`` samples the input at ``(a x' + b y' + c, d x' + e y' + f)`` with
        ``(x', y') = (x + 0.5, y + 0.5)``, Pillow's convention.
    fill:
        Value of the pixels whose source lies outside the image.

    Returns
    -------
    torch.Tensor
        The transformed uint8 images. Pillow picks its sampler by the matrix: ``b = d = 0``
        (a translation or scaling) samples in float64 (``ImagingScaleAffine``), any other matrix
        in 16.16 fixed point (``affine_fixed``); both are reproduced to the bit.
    """
    b, _, h, w = _check(x)
    fill = _fill(fill)
    dev = x.device
    a = torch.as_tensor(matrix, dtype=torch.float64, device=dev).reshape(-1, 6)
    if a.shape[0] == 1:
        a = a.expand(b, 6)
    if a.shape[0] != b:
        raise UserError(f"affine: {a.shape[0]} matrices for {b} images")
    if b == 0:
        return x.clone()
    a0, a1, a2, a3, a4, a5 = (a[:, i] for i in range(6))
    ys = torch.arange(h, device=dev, dtype=torch.int64)[None, :, None]
    xs = torch.arange(w, device=dev, dtype=torch.int64)[None, None, :]

    # affine_fixed: FIX(v) = floor(v * 65536 + 0.5); source = (A2 + y A1 + x A0) >> 16
    def fix(v: torch.Tensor) -> torch.Tensor:
        return torch.floor(v * 65536.0 + 0.5).to(torch.int64)[:, None, None]

    f0, f1, f3, f4 = fix(a0), fix(a1), fix(a3), fix(a4)
    f2 = fix(a2 + a0 * 0.5 + a1 * 0.5)
    f5 = fix(a5 + a3 * 0.5 + a4 * 0.5)
    xin_fixed = torch.div(f2 + ys * f1 + xs * f0, 65536, rounding_mode="floor")
    yin_fixed = torch.div(f5 + ys * f4 + xs * f3, 65536, rounding_mode="floor")

    # ImagingScaleAffine: xo = a2 + a0 / 2, then xo += a0 per column (sequential float64 sums)
    def ramp(start: torch.Tensor, step: torch.Tensor, n: int) -> torch.Tensor:
        steps = torch.cat([start[:, None], step[:, None].expand(b, n - 1)], dim=1)
        return torch.floor(torch.cumsum(steps, dim=1)).to(torch.int64)

    xin_scale = ramp(a2 + a0 * 0.5, a0, w)[:, None, :].expand(b, h, w)
    yin_scale = ramp(a5 + a4 * 0.5, a4, h)[:, :, None].expand(b, h, w)
    scale = ((a1 == 0) & (a3 == 0))[:, None, None]
    xin = torch.where(scale, xin_scale, xin_fixed)
    yin = torch.where(scale, yin_scale, yin_fixed)
    return _gather(x, xin, yin, fill)


def _matrices(n: int, dev: torch.device, **entries: torch.Tensor) -> torch.Tensor:
    m = torch.zeros(n, 6, dtype=torch.float64, device=dev)
    m[:, 0] = 1.0
    m[:, 4] = 1.0
    for k, v in entries.items():
        m[:, "abcdef".index(k)] = v
    return m


def shear_x(x: torch.Tensor, m: torch.Tensor | float, *, fill: int = 0) -> torch.Tensor:
    """Horizontal shear: ``Image.transform(size, AFFINE, (1, m, 0, 0, 1, 0), fillcolor=fill)``."""
    b = _check(x)[0]
    return affine(x, _matrices(b, x.device, b=_per_sample(m, b, device=x.device)), fill=fill)


def shear_y(x: torch.Tensor, m: torch.Tensor | float, *, fill: int = 0) -> torch.Tensor:
    """Vertical shear: ``Image.transform(size, AFFINE, (1, 0, 0, m, 1, 0), fillcolor=fill)``."""
    b = _check(x)[0]
    return affine(x, _matrices(b, x.device, d=_per_sample(m, b, device=x.device)), fill=fill)


def translate_x(x: torch.Tensor, pixels: torch.Tensor | float, *, fill: int = 0) -> torch.Tensor:
    """``Image.transform(size, AFFINE, (1, 0, t, 0, 1, 0), fillcolor=fill)``: the content moves
    ``t`` pixels to the left (right for ``t < 0``)."""
    b = _check(x)[0]
    return affine(x, _matrices(b, x.device, c=_per_sample(pixels, b, device=x.device)), fill=fill)


def translate_y(x: torch.Tensor, pixels: torch.Tensor | float, *, fill: int = 0) -> torch.Tensor:
    """``Image.transform(size, AFFINE, (1, 0, 0, 0, 1, t), fillcolor=fill)``: the content moves up."""
    b = _check(x)[0]
    return affine(x, _matrices(b, x.device, f=_per_sample(pixels, b, device=x.device)), fill=fill)


def rotation_matrix(degrees: float, width: int, height: int) -> list[float]:
    """The inverse affine map ``Image.rotate(degrees)`` (about the centre, no expansion) hands to
    ``Image.transform``, computed as Pillow computes it (cosine and sine rounded to 15 digits)."""
    angle = -math.radians(float(degrees) % 360.0)
    m = [round(math.cos(angle), 15), round(math.sin(angle), 15), 0.0,
         round(-math.sin(angle), 15), round(math.cos(angle), 15), 0.0]
    cx, cy = width / 2, height / 2
    m[2] = m[0] * -cx + m[1] * -cy + m[2]
    m[5] = m[3] * -cx + m[4] * -cy + m[5]
    m[2] += cx
    m[5] += cy
    return m


def rotate(x: torch.Tensor, degrees: torch.Tensor | float, *, fill: int = 0) -> torch.Tensor:
    """``Image.rotate(degrees, Image.NEAREST, fillcolor=fill)`` (counter-clockwise, about the centre).

    Pillow's shortcuts for 0, 90, 180 and 270 degrees (a copy or a transpose) give the pixels its
    general matrix gives at those angles, so the general path serves all (tested).
    """
    b, _, h, w = _check(x)
    deg = _per_sample(degrees, b, device=x.device)
    if b == 0:
        return x.clone()
    values, inverse = torch.unique(deg.cpu(), return_inverse=True)
    table = torch.tensor([rotation_matrix(float(v), w, h) for v in values.tolist()], dtype=torch.float64)
    return affine(x, table[inverse].to(x.device), fill=fill)


# -- point operations ------------------------------------------------------------------------------------
def _lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Apply per-(sample, channel) lookup tables ``lut`` of shape ``(B, C, 256)``."""
    b, c, h, w = x.shape
    return lut.to(torch.uint8).gather(2, x.reshape(b, c, h * w).long()).reshape(b, c, h, w)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """``ImageOps.autocontrast(im)``: each channel's lowest level to 0 and highest to 255,
    ``int(i * scale + offset)`` with ``scale = 255 / (hi - lo)``, ``offset = -lo * scale``
    (a channel with one level is kept)."""
    b, c, h, w = _check(x)
    flat = x.reshape(b, c, h * w)
    if b == 0:
        return x.clone()
    lo = flat.amin(dim=2).double()[..., None]
    hi = flat.amax(dim=2).double()[..., None]
    scale = 255.0 / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    offset = -lo * scale
    out = torch.trunc(flat.double() * scale + offset).clamp_(0, 255).to(torch.uint8)
    return torch.where(hi > lo, out, flat).reshape(b, c, h, w)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """``ImageOps.equalize(im)``: per channel, ``step = (n - h[last]) // 255`` (``h[last]`` the count
    of the highest level present) and ``lut[i] = (step // 2 + sum(h[:i])) // step`` clipped to 255;
    ``step = 0`` (one level, or nearly) keeps the channel."""
    b, c, h, w = _check(x)
    if b == 0:
        return x.clone()
    flat = x.reshape(b * c, h * w).long()
    hist = torch.zeros(b * c, 256, dtype=torch.int64, device=x.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat))
    last = hist.gather(1, flat.amax(dim=1, keepdim=True))
    step = (h * w - last) // 255  # (B*C, 1)
    safe = step.clamp_min(1)
    before = torch.cumsum(hist, dim=1) - hist
    lut = torch.div(safe // 2 + before, safe, rounding_mode="floor").clamp_(max=255)
    ident = torch.arange(256, device=x.device, dtype=torch.int64).expand(b * c, 256)
    lut = torch.where(step > 0, lut, ident)
    return _lut(x, lut.reshape(b, c, 256))


def invert(x: torch.Tensor) -> torch.Tensor:
    """``ImageOps.invert(im)``: ``255 - i``."""
    _check(x)
    return 255 - x


def solarize(x: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """``ImageOps.solarize(im, threshold)``: levels ``>= threshold`` inverted (``threshold`` may be
    fractional; 256 keeps the image, 0 inverts it)."""
    b = _check(x)[0]
    thr = _per_sample(threshold, b, device=x.device)[:, None, None, None]
    return torch.where(x.double() < thr, x, 255 - x)


def posterize(x: torch.Tensor, bits: torch.Tensor | int) -> torch.Tensor:
    """``ImageOps.posterize(im, bits)``: keep the ``bits`` (1 to 8) highest bits of each level."""
    b = _check(x)[0]
    k = _per_sample(bits, b, device=x.device, dtype=torch.int64)
    if b and (int(k.min()) < 1 or int(k.max()) > 8):
        raise UserError(f"posterize bits must lie in [1, 8], got {k.tolist()}")
    mask = (255 - (2 ** (8 - k) - 1)).to(torch.uint8)[:, None, None, None]
    return x & mask


# -- ImageEnhance ---------------------------------------------------------------------------------------
def blend(im1: torch.Tensor, im2: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """``Image.blend(im1, im2, alpha)``: ``in1 + alpha * (in2 - in1)`` in float32 (``alpha`` a C
    float), truncated, clipped to ``[0, 255]``. ``im1`` may broadcast against ``im2``."""
    b = _check(im2)[0]
    a = _per_sample(alpha, b, device=im2.device).to(torch.float32)[:, None, None, None]
    i1 = im1.to(torch.float32)
    d = im2.to(torch.float32) - i1
    t = i1 + a * d
    return torch.trunc(t).clamp_(0, 255).to(torch.uint8)


def grey_level(x: torch.Tensor) -> torch.Tensor:
    """``im.convert('L')``: ``(19595 R + 38470 G + 7471 B + 32768) >> 16`` (ITU-R 601-2 in 16-bit
    fixed point); a grey image is returned as it is. Shape ``(B, 1, H, W)``."""
    _check(x)
    if x.shape[1] == 1:
        return x
    r, g, bl = (x[:, i:i + 1].to(torch.int32) for i in range(3))
    return ((r * 19595 + g * 38470 + bl * 7471 + 32768) >> 16).to(torch.uint8)


def brightness(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """``ImageEnhance.Brightness(im).enhance(factor)``: blend with black."""
    _check(x)
    return blend(torch.zeros((), dtype=torch.uint8, device=x.device), x, factor)


def color(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """``ImageEnhance.Color(im).enhance(factor)``: blend with ``im.convert('L')`` (every channel);
    a grey image is kept (its grey version is itself)."""
    _check(x)
    if x.shape[1] == 1:
        return x.clone()
    return blend(grey_level(x), x, factor)


def contrast(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """``ImageEnhance.Contrast(im).enhance(factor)``: blend with the uniform grey
    ``int(mean(im.convert('L')) + 0.5)``."""
    b, _, h, w = _check(x)
    lum = grey_level(x).reshape(b, h * w).to(torch.int64).sum(dim=1)
    mean = torch.floor(lum.double() / float(h * w) + 0.5).to(torch.uint8)[:, None, None, None]
    return blend(mean, x, factor)


def smooth(x: torch.Tensor) -> torch.Tensor:
    """``im.filter(ImageFilter.SMOOTH)``: the 3x3 kernel ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13``
    on the interior (float32, Pillow's summation order, ``+ 0.5`` then truncation), border kept."""
    b, c, h, w = _check(x)
    if h < 3 or w < 3 or b == 0:
        return x.clone()
    f = x.to(torch.float32)
    k1 = torch.tensor(1.0 / 13.0, dtype=torch.float32)
    k5 = torch.tensor(5.0 / 13.0, dtype=torch.float32)

    def row(r: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:  # (in[x-1] k0 + in[x] k1) + in[x+1] k2
        return (r[..., :-2] * k1 + r[..., 1:-1] * centre) + r[..., 2:] * k1

    ss = torch.full((), 0.5, dtype=torch.float32)
    ss = ss + row(f[:, :, 2:], k1)      # the row below (Pillow's in1, kernel[0:3])
    ss = ss + row(f[:, :, 1:-1], k5)    # the row itself
    ss = ss + row(f[:, :, :-2], k1)     # the row above
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = ss.clamp_(0, 255).to(torch.uint8)
    return out


def sharpness(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """``ImageEnhance.Sharpness(im).enhance(factor)``: blend with :func:`smooth` of the image."""
    _check(x)
    return blend(smooth(x), x, factor)


# -- Cutout ---------------------------------------------------------------------------------------------
def cutout(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, *, size: int, fill: int = 127) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017, "Improved Regularization of Convolutional Neural Networks with
    Cutout", Sec. 3): a ``size`` x ``size`` square centred at pixel ``(row, col)`` set to ``fill``,
    clipped at the image border (the official code: rows ``[row - size // 2, row + size // 2)``
    clipped to the image, likewise columns).

    Parameters
    ----------
    rows, cols:
        ``(B,)`` integer centres (the policy draws them uniformly over the image).
    size:
        Side of the square in pixels (even: exactly ``size``; odd: ``2 * (size // 2)``, as the
        official code).
    fill:
        Value of the square (the official code zeroes the normalised image, i.e. fills the dataset
        mean; see :mod:`noisylabels.data.policies` for the default).
    """
    b, c, h, w = _check(x)
    fill = _fill(fill)
    half = int(size) // 2
    r = _per_sample(rows, b, device=x.device, dtype=torch.int64)[:, None, None]
    q = _per_sample(cols, b, device=x.device, dtype=torch.int64)[:, None, None]
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    hole = (ys >= r - half) & (ys < r + half) & (xs >= q - half) & (xs < q + half)
    return torch.where(hole[:, None], torch.full((), fill, dtype=x.dtype, device=x.device), x)


# -- resized crop (RandomResizedCrop) -------------------------------------------------------------------
#: Pillow's fixed-point precision of the resampling coefficients (``32 - 8 - 2``)
PRECISION_BITS = 22


def _bilinear(t: float) -> float:
    t = -t if t < 0.0 else t
    return 1.0 - t if t < 1.0 else 0.0


def _bicubic(t: float) -> float:  # Keys' cubic convolution, a = -0.5 (Pillow's BICUBIC)
    a = -0.5
    t = -t if t < 0.0 else t
    if t < 1.0:
        return ((a + 2.0) * t - (a + 3.0)) * t * t + 1
    if t < 2.0:
        return (((t - 5) * t + 8) * t - 4) * a
    return 0.0


#: resampling filters: (function, support), as ``Resample.c`` defines them
RESAMPLE_FILTERS = {"bilinear": (_bilinear, 1.0), "bicubic": (_bicubic, 2.0)}


@lru_cache(maxsize=4096)
def _coefficients(in_size: int, out_size: int, interpolation: str) -> tuple[tuple[int, ...], ...]:
    filt, filter_support = RESAMPLE_FILTERS[interpolation]
    scale = float(in_size) / out_size          # (double)(in1 - in0) / outSize, box (0, in_size)
    filterscale = max(scale, 1.0)
    support = filter_support * filterscale
    ss = 1.0 / filterscale
    rows = []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)   # C casts truncate toward zero, as int() does
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [filt((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for w in k:
            ww += w
        if ww != 0.0:
            k = [w / ww for w in k]
        full = [0] * in_size
        for x, w in enumerate(k):
            full[xmin + x] = int((-0.5 if w < 0 else 0.5) + w * (1 << PRECISION_BITS))
        rows.append(tuple(full))
    return tuple(rows)


def resample_coefficients(in_size: int, out_size: int, *, interpolation: str = "bilinear") -> torch.Tensor:
    """The ``(out_size, in_size)`` int64 fixed-point coefficients with which Pillow resamples one
    axis of ``in_size`` pixels to ``out_size`` (``precompute_coeffs`` then ``normalize_coeffs_8bpc``
    of ``libImaging/Resample.c``: filter support scaled by the reduction factor, weights normalised
    in float64, rounded half away from zero to ``PRECISION_BITS`` bits)."""
    if interpolation not in RESAMPLE_FILTERS:
        raise UserError(f"interpolation must be one of {', '.join(RESAMPLE_FILTERS)}, got {interpolation!r}")
    if int(in_size) < 1 or int(out_size) < 1:
        raise UserError(f"resample sizes must be positive, got {in_size} -> {out_size}")
    return torch.tensor(_coefficients(int(in_size), int(out_size), interpolation), dtype=torch.int64)


def _axis_matrix(start: torch.Tensor, length: torch.Tensor, full: int, out: int, interpolation: str,
                 device: torch.device) -> torch.Tensor:
    """``(B, full, out)`` float64: sample b's coefficients of a crop ``[start, start + length)`` of an
    axis of ``full`` pixels resampled to ``out`` (zero outside the crop)."""
    b = start.shape[0]
    m = torch.zeros(b, full, out, dtype=torch.float64, device=device)
    for n in torch.unique(length).tolist():
        idx = (length == n).nonzero().flatten()
        coef = resample_coefficients(int(n), out, interpolation=interpolation).to(device, torch.float64).T  # (n, out)
        pos = start[idx, None] + torch.arange(int(n), device=device)  # (k, n)
        m[idx[:, None], pos] = coef
    return m


def _fixed_to_uint8(s: torch.Tensor) -> torch.Tensor:
    """Pillow's ``clip8(ss)`` of a sum already holding the coefficients: ``(ss + 2**21) >> 22``
    clipped to ``[0, 255]`` (exact: the float64 sums are integers below 2**53)."""
    return torch.floor((s + float(1 << (PRECISION_BITS - 1))) / float(1 << PRECISION_BITS)).clamp_(0, 255)


def resized_crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: torch.Tensor,
                 width: torch.Tensor, *, size: tuple[int, int] | None = None,
                 interpolation: str = "bilinear") -> torch.Tensor:
    """``im.crop((left, top, left + width, top + height)).resize((W, H), filter)`` per sample
    (torchvision's ``resized_crop`` on a PIL image; ``RandomResizedCrop`` draws the boxes).

    Parameters
    ----------
    x:
        uint8 images ``(B, C, H_in, W_in)``.
    top, left, height, width:
        ``(B,)`` integer crop boxes inside the image.
    size:
        ``(H, W)`` of the output (default: the input's).
    interpolation:
        ``'bilinear'`` (torchvision's default) or ``'bicubic'`` (the SimCLR authors' TensorFlow code
        resizes bicubically).

    Returns
    -------
    torch.Tensor
        uint8 ``(B, C, H, W)``: Pillow's pixels exactly (two passes, each in 22-bit fixed point,
        rounded and clipped to uint8; :func:`resample_coefficients`). The passes run horizontal first,
        except where the height shrinks by more than twice as many pixels as the width: Pillow 13
        then runs the vertical pass first (python-pillow/Pillow#9549), and so does this function;
        earlier Pillow versions differ from it by a level on some pixels of such downscales only. A
        crop resized back to at least its own size (every crop of ``RandomResizedCrop`` and of the
        ``simclr`` policy) is computed the same way by every Pillow version.
    """
    b, c, h, w = _check(x)
    oh, ow = (h, w) if size is None else (int(size[0]), int(size[1]))
    dev = x.device
    t, l_, hh, ww = (_per_sample(v, b, device=dev, dtype=torch.int64) for v in (top, left, height, width))
    if b == 0:
        return torch.zeros(0, c, oh, ow, dtype=torch.uint8, device=dev)
    if bool(((t < 0) | (l_ < 0) | (hh < 1) | (ww < 1) | (t + hh > h) | (l_ + ww > w)).any()):
        raise UserError(f"resized_crop: a crop box lies outside the {w}x{h} image")
    kh = _axis_matrix(l_, ww, w, ow, interpolation, dev)[:, None]                  # (B, 1, W_in, W)
    kv = _axis_matrix(t, hh, h, oh, interpolation, dev).transpose(1, 2)[:, None]   # (B, 1, H, H_in)
    xf = x.to(torch.float64)
    # Pillow >= 13 runs the vertical pass first when the height shrinks by more than twice as many
    # pixels as the width (python-pillow/Pillow#9549); horizontal first otherwise (and always before)
    vfirst = (hh > oh) & ((hh - oh) > 2 * (ww - ow))
    out = torch.empty(b, c, oh, ow, dtype=torch.uint8, device=dev)
    for first_v in (False, True):
        idx = (vfirst == first_v).nonzero().flatten()
        if len(idx) == 0:
            continue
        xi, khi, kvi = xf[idx], kh[idx], kv[idx]
        if first_v:
            res = _fixed_to_uint8(torch.matmul(_fixed_to_uint8(torch.matmul(kvi, xi)), khi))
        else:
            res = _fixed_to_uint8(torch.matmul(kvi, _fixed_to_uint8(torch.matmul(xi, khi))))
        out[idx] = res.to(torch.uint8)
    return out


# -- colour: hue, grayscale ----------------------------------------------------------------------------
def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """``im.convert('HSV')`` of RGB images: uint8 ``(B, 3, H, W)`` of H, S, V bytes (Pillow's
    ``rgb2hsv_row``: float32 ratios, the hue sum in float64 where C promotes, ``fmod(h / 6 + 1, 1)``,
    bytes by truncation)."""
    _check(x)
    if x.shape[1] != 3:
        raise UserError("rgb_to_hsv needs RGB images")
    f32, f64 = torch.float32, torch.float64
    r, g, bl = (x[:, i].to(torch.int32) for i in range(3))
    maxc = torch.maximum(r, torch.maximum(g, bl))
    minc = torch.minimum(r, torch.minimum(g, bl))
    grey = maxc == minc
    cr = (maxc - minc).to(f32)
    crs = torch.where(grey, torch.ones_like(cr), cr)
    s = cr / torch.where(maxc == 0, torch.ones_like(cr), maxc.to(f32))
    rc, gc, bc = ((maxc - v).to(f32) / crs for v in (r, g, bl))
    h = torch.where(r == maxc, bc - gc,
                    torch.where(g == maxc, ((2.0 + rc.to(f64)) - bc.to(f64)).to(f32),
                                ((4.0 + gc.to(f64)) - rc.to(f64)).to(f32)))
    h = torch.fmod(h.to(f64) / 6.0 + 1.0, 1.0).to(f32)
    uh = torch.trunc(h.to(f64) * 255.0).clamp_(0, 255)
    us = torch.trunc(s.to(f64) * 255.0).clamp_(0, 255)
    uh = torch.where(grey, torch.zeros_like(uh), uh)
    us = torch.where(grey, torch.zeros_like(us), us)
    return torch.stack([uh, us, maxc.to(f64)], dim=1).to(torch.uint8)


def _round_half_away(y: torch.Tensor) -> torch.Tensor:
    """C's ``round`` of non-negative float64 values (halves away from zero; exact below 2**52)."""
    fl = torch.floor(y)
    return fl + ((y - fl) >= 0.5).to(y.dtype)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """``Image.merge('HSV', ...).convert('RGB')``: Pillow's ``hsv2rgb`` on uint8 ``(B, 3, H, W)``
    H, S, V bytes (sector ``floor(6 h / 255)``, float32 remainder and saturation, float64 products,
    C rounding)."""
    _check(x)
    f32, f64 = torch.float32, torch.float64
    h, s, v = (x[:, i].to(f64) for i in range(3))
    i = torch.floor(h * 6.0 / 255.0)
    f = (h * 6.0 / 255.0 - i).to(f32)
    fs = (s / 255.0).to(f32)
    p = _round_half_away(v * (1.0 - fs.to(f64))).clamp_(0, 255)
    q = _round_half_away(v * (1.0 - (fs * f).to(f64))).clamp_(0, 255)
    t = _round_half_away(v * (1.0 - fs.to(f64) * (1.0 - f.to(f64)))).clamp_(0, 255)
    sector = torch.remainder(i.to(torch.int64), 6)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros(x.shape[0], 3, *x.shape[2:], dtype=f64, device=x.device)
    for k, rgb in enumerate(table):
        out = torch.where((sector == k)[:, None], torch.stack(rgb, dim=1), out)
    out = torch.where((s == 0)[:, None], v[:, None].expand_as(out), out)
    return out.to(torch.uint8)


def hue(x: torch.Tensor, shift: torch.Tensor | int) -> torch.Tensor:
    """torchvision's ``adjust_hue`` on a PIL image: the hue byte of ``im.convert('HSV')`` plus
    ``shift`` modulo 256 (torchvision adds ``int(hue_factor * 255)``), converted back to RGB; a grey
    image is returned unchanged (as torchvision returns mode ``L``)."""
    b = _check(x)[0]
    if x.shape[1] == 1:
        return x.clone()
    k = _per_sample(shift, b, device=x.device, dtype=torch.int64)[:, None, None]
    hsv = rgb_to_hsv(x)
    hh = torch.remainder(hsv[:, 0].to(torch.int64) + k, 256).to(torch.uint8)
    return hsv_to_rgb(torch.cat([hh[:, None], hsv[:, 1:]], dim=1))


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """torchvision's ``rgb_to_grayscale(im, num_output_channels=C)`` on a PIL image:
    ``im.convert('L')`` (:func:`grey_level`) repeated over the image's channels."""
    _check(x)
    return grey_level(x).expand_as(x).clone()


def hflip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """``im.transpose(FLIP_LEFT_RIGHT)`` where ``flip`` (``(B,)`` booleans) is true."""
    b = _check(x)[0]
    sel = _per_sample(flip, b, device=x.device, dtype=torch.bool)[:, None, None, None]
    return torch.where(sel, x.flip(3), x)
