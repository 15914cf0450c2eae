"""The ``simclr`` augmentation policy and its new operations (resized crop, hue, grey) against Pillow,
the way torchvision's ``RandomResizedCrop``, ``ColorJitter`` and ``RandomGrayscale`` compute them
on PIL images (the SimCLR PyTorch ports' pipeline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from noisylabels.data import imageops as O
from noisylabels.data.policies import SimCLRAugment, create_augment_policy, draw_resized_crops
from noisylabels.errors import UserError

from ..helpers import from_pil as _np, to_pil as _pil


def _images(n: int, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    a[1::4] = np.clip(rng.normal(120, 30, a[1::4].shape), 0, 255).astype(np.uint8)  # natural-ish contrast
    a[2::4, : h // 2] = 200                                                              # flat blocks
    return a




def _t(a):
    return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()


def _back(x):
    return x.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("c", [3, 1])
def test_resized_crop_equals_pillow_crop_then_resize(c, interpolation):
    a = _images(8, c, h=32, w=28)
    boxes = [(0, 0, 32, 28), (3, 5, 10, 7), (0, 0, 2, 2), (10, 1, 22, 27), (5, 9, 17, 4), (31, 27, 1, 1),
             (2, 3, 29, 11), (7, 0, 9, 28)]  # (top, left, height, width): up- and downscales, both axes
    top, left, hh, ww = (torch.tensor([b[i] for b in boxes]) for i in range(4))
    filt = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]
    for size in [(32, 28), (16, 20), (40, 9)]:
        got = _back(O.resized_crop(_t(a), top, left, hh, ww, size=size, interpolation=interpolation))
        for i, (t, l_, h, w) in enumerate(boxes):
            want = _np(_pil(a[i]).crop((l_, t, l_ + w, t + h)).resize((size[1], size[0]), filt))
            assert np.array_equal(got[i], want), (i, size)


def test_hue_and_grey_equal_pillow_hsv_and_l_conversions():
    a = _images(8)
    a[3] = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0]] * 256, dtype=np.uint8).reshape(32, 32, 3)
    shifts = [0, 1, -1, 25, -25, 127, -128, 51]  # torchvision: int(hue_factor * 255), hue_factor in [-0.5, 0.5]
    got = _back(O.hue(_t(a), torch.tensor(shifts)))
    for i, s in enumerate(shifts):  # torchvision adjust_hue on a PIL image
        h, sat, v = _pil(a[i]).convert("HSV").split()
        np_h = np.array(h, dtype=np.uint8)
        with np.errstate(over="ignore"):
            np_h += np.uint8(s % 256)
        want = _np(Image.merge("HSV", (Image.fromarray(np_h, "L"), sat, v)).convert("RGB"))
        assert np.array_equal(got[i], want), i
    grey = _back(O.grayscale(_t(a)))
    for i in range(len(a)):
        assert np.array_equal(grey[i], np.repeat(_np(_pil(a[i]).convert("L")), 3, axis=2))


def _reference(im, plan, i, interpolation):
    """torchvision's SimCLR pipeline on one PIL image, with the plan's draws."""
    t, l_, h, w = (int(plan[k][i]) for k in ("top", "left", "height", "width"))
    filt = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]
    im = im.crop((l_, t, l_ + w, t + h)).resize(im.size, filt)
    if plan["flip"][i]:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    if plan["jitter"][i]:
        for code in plan["order"][i].tolist():
            f = float(plan["factors"][i, code])
            if code == 0:
                im = ImageEnhance.Brightness(im).enhance(f)
            elif code == 1:
                im = ImageEnhance.Contrast(im).enhance(f)
            elif code == 2:
                im = ImageEnhance.Color(im).enhance(f)
            elif im.mode == "RGB":
                hh, ss, vv = im.convert("HSV").split()
                np_h = np.array(hh, dtype=np.uint8)
                with np.errstate(over="ignore"):
                    np_h += np.uint8(int(f * 255) % 256)
                im = Image.merge("HSV", (Image.fromarray(np_h, "L"), ss, vv)).convert("RGB")
    if plan["grey"][i]:
        im = im.convert("L")
        if len(plan["_mode"]) == 3:
            im = im.convert("RGB")  # RandomGrayscale keeps the channel count (convert('L') repeated)
    return _np(im)


@pytest.mark.parametrize("c", [3, 1])
def test_simclr_policy_equals_torchvisions_pil_pipeline_image_by_image(c):
    a = _images(48, c)
    policy = create_augment_policy("simclr")
    plan = policy.draw(len(a), size=(32, 32), generator=torch.Generator().manual_seed(5))
    got = _back(policy.apply(_t(a), plan))
    plan["_mode"] = "RGB" if c == 3 else "L"
    for i in range(len(a)):
        assert np.array_equal(got[i], _reference(_pil(a[i]), plan, i, "bilinear")), i
    # the draws cover every branch: flips, jitter on and off, greys, every order start
    assert 0 < int(plan["flip"].sum()) < len(a) and 0 < int(plan["jitter"].sum()) < len(a)
    assert 0 < int(plan["grey"].sum()) < len(a) and set(plan["order"][:, 0].tolist()) == {0, 1, 2, 3}


def test_simclr_draws_follow_the_papers_distributions():
    g = torch.Generator().manual_seed(0)
    n = 4000
    crops = draw_resized_crops(n, size=(32, 32), min_scale=0.08, generator=g)
    area = (crops["height"] * crops["width"]).double() / 1024
    ratio = crops["width"].double() / crops["height"].double()
    assert float(area.min()) >= 0.06 and float(area.max()) <= 1.0 and 0.45 < float(area.mean()) < 0.6
    assert float(ratio.min()) >= 0.6 and float(ratio.max()) <= 1.6  # 3/4..4/3 up to the rounding to pixels
    assert bool(((crops["top"] >= 0) & (crops["top"] + crops["height"] <= 32)).all())
    plan = SimCLRAugment(strength=0.5).draw(n, size=(32, 32), generator=g)
    f = plan["factors"]
    assert 0.6 <= float(f[:, :3].min()) and float(f[:, :3].max()) <= 1.4  # 1 +- 0.8 s, s = 0.5
    assert -0.1 <= float(f[:, 3].min()) and float(f[:, 3].max()) <= 0.1  # +- 0.2 s
    assert abs(float(plan["jitter"].double().mean()) - 0.8) < 0.03
    assert abs(float(plan["grey"].double().mean()) - 0.2) < 0.03
    assert abs(float(plan["flip"].double().mean()) - 0.5) < 0.03
    assert not SimCLRAugment(hflip=False).draw(64, size=(8, 8), generator=g)["flip"].any()


def test_same_generator_same_views_and_bad_options_are_one_line_errors():
    x = _t(_images(16))
    p = create_augment_policy("simclr", min_scale=0.2)
    one = p(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(one, p(x, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(one, p(x, generator=torch.Generator().manual_seed(4)))
    for kw, msg in [({"min_scale": 0}, "min_scale"), ({"jitter_p": 1.5}, "jitter_p"), ({"hflip": "yes"}, "hflip"),
                    ({"interpolation": "nearest"}, "interpolation"), ({"strength": -1}, "strength")]:
        with pytest.raises(UserError, match=msg):
            create_augment_policy("simclr", **kw)
    with pytest.raises(UserError, match="outside"):
        O.resized_crop(x, torch.tensor(30), torch.tensor(0), torch.tensor(5), torch.tensor(5))
