"""Strong augmentation policies: each batch equals the authors' Pillow code applied image by image
(their formulas written out here, driven by the plan's draws), per-sample draws, seeding, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from noisylabels.data.policies import (
    AUTOAUGMENT_CIFAR10,
    OPS,
    Compose,
    create_augment_policy,
    list_augment_policies,
    strong_augment_policy,
)
from noisylabels.errors import UserError

from ..helpers import from_pil as _np, to_pil as _pil


def _batch(n: int, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    a[::3] = (a[::3] // 4 + 90).astype(np.uint8)  # some low-contrast images
    return a




def _fc(im, fill):
    return (fill,) * 3 if im.mode == "RGB" else fill


# -- the authors' per-image code, as formulas (independent of noisylabels.data.policies) ---------------
def autoaugment_reference(im, name, m, negative, fill=128):
    """DeepVoltaire's CIFAR10Policy ranges (np.linspace over 10 bins), signed, nearest, fill 128."""
    r = {"ShearX": np.linspace(0, 0.3, 10), "ShearY": np.linspace(0, 0.3, 10),
         "TranslateX": np.linspace(0, 150 / 331, 10), "TranslateY": np.linspace(0, 150 / 331, 10),
         "Rotate": np.linspace(0, 30, 10), "Color": np.linspace(0.0, 0.9, 10),
         "Posterize": np.round(np.linspace(8, 4, 10), 0).astype(int), "Solarize": np.linspace(256, 0, 10),
         "Contrast": np.linspace(0.0, 0.9, 10), "Sharpness": np.linspace(0.0, 0.9, 10),
         "Brightness": np.linspace(0.0, 0.9, 10)}
    s = -1 if negative else 1
    mag = r[name][m] if name in r else None
    fc = _fc(im, fill)
    return {
        "ShearX": lambda: im.transform(im.size, Image.AFFINE, (1, mag * s, 0, 0, 1, 0), fillcolor=fc),
        "ShearY": lambda: im.transform(im.size, Image.AFFINE, (1, 0, 0, mag * s, 1, 0), fillcolor=fc),
        "TranslateX": lambda: im.transform(im.size, Image.AFFINE, (1, 0, mag * im.size[0] * s, 0, 1, 0), fillcolor=fc),
        "TranslateY": lambda: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, mag * im.size[1] * s), fillcolor=fc),
        "Rotate": lambda: im.rotate(mag * s, fillcolor=fc),
        "Color": lambda: ImageEnhance.Color(im).enhance(1 + mag * s),
        "Posterize": lambda: ImageOps.posterize(im, int(mag)),
        "Solarize": lambda: ImageOps.solarize(im, mag),
        "Contrast": lambda: ImageEnhance.Contrast(im).enhance(1 + mag * s),
        "Sharpness": lambda: ImageEnhance.Sharpness(im).enhance(1 + mag * s),
        "Brightness": lambda: ImageEnhance.Brightness(im).enhance(1 + mag * s),
        "AutoContrast": lambda: ImageOps.autocontrast(im),
        "Equalize": lambda: ImageOps.equalize(im),
        "Invert": lambda: ImageOps.invert(im),
    }[name]()


FIXMATCH_POOL = [("AutoContrast", None, None), ("Brightness", 0.9, 0.05), ("Color", 0.9, 0.05),
                 ("Contrast", 0.9, 0.05), ("Equalize", None, None), ("Identity", None, None), ("Posterize", 4, 4),
                 ("Rotate", 30, 0), ("Sharpness", 0.9, 0.05), ("ShearX", 0.3, 0), ("ShearY", 0.3, 0),
                 ("Solarize", 256, 0), ("TranslateX", 0.3, 0), ("TranslateY", 0.3, 0)]


def fixmatch_reference(im, name, v, negative):
    """kekmodel/FixMatch-pytorch's RandAugmentMC operations (PARAMETER_MAX = 10, Pillow's default fill)."""
    max_v, bias = {n: (m, b) for n, m, b in FIXMATCH_POOL}[name]
    fp = lambda: float(v) * max_v / 10 + bias  # noqa: E731  _float_parameter + bias
    ip = lambda: int(v * max_v / 10) + bias  # noqa: E731  _int_parameter + bias
    sgn = -1 if negative else 1
    if name in ("Brightness", "Color", "Contrast", "Sharpness"):
        return getattr(ImageEnhance, name)(im).enhance(fp())
    if name == "Posterize":
        return ImageOps.posterize(im, ip())
    if name == "Solarize":
        return ImageOps.solarize(im, 256 - ip())
    if name == "Rotate":
        return im.rotate(sgn * ip())
    if name == "ShearX":
        return im.transform(im.size, Image.AFFINE, (1, sgn * fp(), 0, 0, 1, 0))
    if name == "ShearY":
        return im.transform(im.size, Image.AFFINE, (1, 0, 0, sgn * fp(), 1, 0))
    if name == "TranslateX":
        return im.transform(im.size, Image.AFFINE, (1, 0, int(sgn * fp() * im.size[0]), 0, 1, 0))
    if name == "TranslateY":
        return im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, int(sgn * fp() * im.size[1])))
    return {"AutoContrast": ImageOps.autocontrast, "Equalize": ImageOps.equalize, "Identity": lambda i: i}[name](im)


def trivialaugment_reference(im, name, level, negative):
    """automl/trivialaugment aug_lib, wide_standard space (PARAMETER_MAX = 30)."""
    ip = lambda maxval: int(level * maxval / 30)  # noqa: E731
    fp = lambda maxval: float(level) * maxval / 30  # noqa: E731
    sgn = -1 if negative else 1
    if name in ("Brightness", "Color", "Contrast", "Sharpness"):
        return getattr(ImageEnhance, name)(im).enhance(fp(2.0 - 0.01) + 0.01)
    if name == "Posterize":
        return ImageOps.posterize(im, 8 - ip(8 - 2))
    if name == "Solarize":
        return ImageOps.solarize(im, 256 - ip(256))
    if name == "Rotate":
        return im.rotate(sgn * ip(135))
    if name == "ShearX":
        return im.transform(im.size, Image.AFFINE, (1, sgn * fp(0.99), 0, 0, 1, 0))
    if name == "ShearY":
        return im.transform(im.size, Image.AFFINE, (1, 0, 0, sgn * fp(0.99), 1, 0))
    if name == "TranslateX":
        return im.transform(im.size, Image.AFFINE, (1, 0, sgn * ip(32), 0, 1, 0))
    if name == "TranslateY":
        return im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, sgn * ip(32)))
    return {"AutoContrast": ImageOps.autocontrast, "Equalize": ImageOps.equalize, "Identity": lambda i: i}[name](im)


def _run(policy, a, seed=3):
    x = torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
    plan = policy.draw(len(a), size=(a.shape[1], a.shape[2]), generator=torch.Generator().manual_seed(seed))
    out = policy.apply(x, plan).permute(0, 2, 3, 1).numpy()
    return plan, out


@pytest.mark.parametrize("c", [3, 1])
def test_autoaugment_cifar10_equals_the_pillow_policy_image_by_image(c):
    a = _batch(120, c, h=28, w=32)
    plan, out = _run(create_augment_policy("autoaugment-cifar10"), a)
    assert len(set(plan["sub"].tolist())) >= 20  # most sub-policies drawn
    for i in range(len(a)):
        im = _pil(a[i])
        for k, (name, p, m) in enumerate(AUTOAUGMENT_CIFAR10[int(plan["sub"][i])]):
            if bool(plan["applied"][i, k]):
                im = autoaugment_reference(im, name, m or 0, bool(plan["negative"][i, k]))
        assert np.array_equal(out[i], _np(im)), i


@pytest.mark.parametrize("c", [3, 1])
def test_randaugment_equals_fixmatchs_pillow_code_image_by_image(c):
    a = _batch(80, c, h=32, w=28)
    policy = create_augment_policy("randaugment", num_ops=3, magnitude=10)
    plan, out = _run(policy, a)
    pool = [n for n, _, _ in FIXMATCH_POOL]
    seen = set()
    for i in range(len(a)):
        im = _pil(a[i])
        for k in range(3):
            name = OPS[int(plan["op"][i, k])] if bool(plan["applied"][i, k]) else None
            if name is not None:
                seen.add(name)
                im = fixmatch_reference(im, name, int(plan["level"][i, k]), bool(plan["negative"][i, k]))
        assert np.array_equal(out[i], _np(im)), i
    assert seen == set(pool)
    assert 1 <= int(plan["level"].min()) and int(plan["level"].max()) <= 9  # v in {1, ..., M - 1}


@pytest.mark.parametrize("c", [3, 1])
def test_trivialaugment_equals_the_authors_pillow_code_image_by_image(c):
    a = _batch(120, c)
    plan, out = _run(create_augment_policy("trivialaugment"), a)
    for i in range(len(a)):
        ref = trivialaugment_reference(_pil(a[i]), OPS[int(plan["op"][i, 0])], int(plan["level"][i, 0]),
                                       bool(plan["negative"][i, 0]))
        assert np.array_equal(out[i], _np(ref)), i
    assert int(plan["level"].min()) == 0 and int(plan["level"].max()) == 30


def test_every_sample_draws_its_own_operations_and_magnitudes():
    n = 4000
    g = torch.Generator().manual_seed(0)
    ta = create_augment_policy("trivialaugment").draw(n, size=(32, 32), generator=g)
    counts = np.bincount(ta["op"][:, 0].numpy(), minlength=len(OPS))
    used = counts[counts > 0]
    assert len(used) == 14 and used.min() > n / 14 * 0.75 and used.max() < n / 14 * 1.25  # uniform over 14
    assert len(set(zip(ta["op"][:, 0].tolist(), ta["value"][:, 0].tolist()))) > 100
    ra = create_augment_policy("randaugment").draw(n, size=(32, 32), generator=g)
    assert abs(float(ra["applied"].double().mean()) - 0.5) < 0.03
    assert not torch.equal(ra["op"][:, 0], ra["op"][:, 1])  # the two steps are drawn independently
    aa = create_augment_policy("autoaugment-cifar10").draw(n, size=(32, 32), generator=g)
    assert len(set(aa["sub"].tolist())) == 25
    first = torch.tensor([AUTOAUGMENT_CIFAR10[s][0][1] for s in aa["sub"].tolist()], dtype=torch.float64)
    assert abs(float(aa["applied"][:, 0].double().mean()) - float(first.mean())) < 0.03  # applied with p
    cut = create_augment_policy("cutout").draw(n, size=(20, 30), generator=g)
    assert int(cut["row"].max()) == 19 and int(cut["col"].max()) == 29 and int(cut["col"].min()) == 0


@pytest.mark.parametrize("name", ["autoaugment-cifar10", "randaugment", "trivialaugment", "cutout",
                                  "randaugment+cutout"])
def test_the_same_generator_state_gives_the_same_batch(name):
    policy = create_augment_policy(name)
    x = torch.from_numpy(_batch(32)).permute(0, 3, 1, 2).contiguous()
    one = policy(x, generator=torch.Generator().manual_seed(7))
    two = policy(x, generator=torch.Generator().manual_seed(7))
    other = policy(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(one, two) and not torch.equal(one, other)
    assert not torch.equal(one, x)
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    policy(x, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is never drawn from


def test_registry_compositions_and_options():
    assert list_augment_policies() == ["autoaugment-cifar10", "cutout", "randaugment", "simclr", "trivialaugment"]
    p = create_augment_policy("randaugment+cutout", num_ops=1, size=8, fill=5)
    assert isinstance(p, Compose) and p.name == "randaugment+cutout"
    assert [q.config for q in p.parts] == [{"name": "randaugment", "num_ops": 1, "magnitude": 10, "fill": 5},
                                           {"name": "cutout", "size": 8, "fill": 5}]
    assert p == create_augment_policy("RandAugment + Cutout", num_ops=1, size=8, fill=5)
    x = torch.from_numpy(_batch(16)).permute(0, 3, 1, 2).contiguous()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    ra, cut = p.parts
    assert torch.equal(p(x, generator=g1), cut(ra(x, generator=g2), generator=g2))  # parts in order, one stream
    with pytest.raises(UserError, match="unknown augment policy 'randaugmnt'; valid names"):
        create_augment_policy("randaugmnt")
    with pytest.raises(UserError, match="no option.*'sizee'.*valid options: fill, magnitude, num_ops, size"):
        create_augment_policy("randaugment+cutout", sizee=3)
    with pytest.raises(UserError, match="magnitude must be an integer in \\[2, 10\\]"):
        create_augment_policy("randaugment", magnitude=30)
    with pytest.raises(UserError, match="option num_ops must be an integer"):
        create_augment_policy("randaugment", num_ops=1.5)
    with pytest.raises(UserError, match="fill"):
        create_augment_policy("cutout", fill=-1)
    with pytest.raises(UserError, match="empty part"):
        create_augment_policy("randaugment+")
    with pytest.raises(UserError, match="uint8"):
        p(x.float(), generator=g1)


def test_strong_augment_settings():
    assert strong_augment_policy("none") is None and strong_augment_policy(None) is None
    assert strong_augment_policy(False) is None
    default = strong_augment_policy("randaugment+cutout")
    assert default == strong_augment_policy({}) == create_augment_policy("randaugment+cutout", num_ops=2,
                                                                          magnitude=10, size=16)
    assert strong_augment_policy({"name": "trivialaugment", "fill": 128}).config == {"name": "trivialaugment",
                                                                                     "fill": 128}
    assert strong_augment_policy({"magnitude": 5}).parts[0].magnitude == 5  # name defaults to FixMatch's
    with pytest.raises(UserError, match="data.strong_augment must be none, a policy name"):
        strong_augment_policy(3)
