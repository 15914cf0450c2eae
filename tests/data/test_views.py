"""Multi-view batches of the in-memory loader: every view recomputed independently from the
documented draws, one spec unchanged, each view's pass a function of the generator's seed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from noisylabels.data import AugmentSpec, Batch, BatchLoader, create_augment_policy
from noisylabels.errors import UserError

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _data(n=37, h=12, w=10):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8), torch.arange(n) % 4


def _norm(u8):
    m, s = torch.tensor(MEAN).reshape(1, 3, 1, 1), torch.tensor(STD).reshape(1, 3, 1, 1)
    return (u8.float() / 255.0 - m) / s


def _crop_flip(u8, padding, off, flips):
    """Zero-pad, crop at the drawn offsets and flip, image by image (He et al. 2016 recipe)."""
    out = []
    for i in range(len(u8)):
        v = F.pad(u8[i], (padding,) * 4)[:, off[0, i]:off[0, i] + u8.shape[2], off[1, i]:off[1, i] + u8.shape[3]] \
            if padding else u8[i]
        out.append(v.flip(2) if flips is not None and flips[i] else v)
    return torch.stack(out)


def test_views_are_the_documented_draws_applied_view_by_view():
    images, labels = _data()
    policy = create_augment_policy("randaugment+cutout", size=4)
    weak, strong = AugmentSpec(crop_padding=2, hflip=True), AugmentSpec(crop_padding=3, hflip=True, policy=policy)
    loader = BatchLoader(images, labels, torch.arange(37), batch_size=8, shuffle=True, mean=MEAN, std=STD,
                         augment=(weak, strong, None), generator=torch.Generator().manual_seed(5))
    batches = list(loader)
    # the contract, re-made by hand: permutation, two view seeds, then per batch each view's draws
    g = torch.Generator().manual_seed(5)
    order = torch.randperm(37, generator=g)
    seeds = torch.randint(0, 2**63 - 1, (2,), generator=g).tolist()
    g_strong = torch.Generator().manual_seed(seeds[0])
    for k, batch in enumerate(batches):
        idx = order[k * 8:(k + 1) * 8]
        n = len(idx)
        assert torch.equal(batch.index, idx) and torch.equal(batch.y, labels[idx])
        assert len(batch.views) == 3 and batch.views[0] is batch.x
        off = torch.randint(0, 5, (2, n), generator=g)
        flips = torch.rand(n, generator=g) < 0.5
        assert torch.equal(batch.views[0], _norm(_crop_flip(images[idx], 2, off, flips)))
        off = torch.randint(0, 7, (2, n), generator=g_strong)
        flips = torch.rand(n, generator=g_strong) < 0.5
        plan = policy.draw(n, size=(12, 10), generator=g_strong)
        assert torch.equal(batch.views[1], _norm(policy.apply(_crop_flip(images[idx], 3, off, flips), plan)))
        assert torch.equal(batch.views[2], _norm(images[idx]))


def test_one_spec_is_one_view_and_unchanged():
    images, labels = _data()
    spec = AugmentSpec(crop_padding=2, hflip=True)
    kw = dict(batch_size=8, shuffle=True, mean=MEAN, std=STD)
    one = list(BatchLoader(images, labels, torch.arange(37), augment=spec, generator=torch.Generator().manual_seed(1), **kw))
    g = torch.Generator().manual_seed(1)
    order = torch.randperm(37, generator=g)  # no view seeds are drawn for one view
    for k, b in enumerate(one):
        idx = order[k * 8:(k + 1) * 8]
        off = torch.randint(0, 5, (2, len(idx)), generator=g)
        flips = torch.rand(len(idx), generator=g) < 0.5
        assert b.views == (b.x,) and torch.equal(b.x, _norm(_crop_flip(images[idx], 2, off, flips)))
    tup = list(BatchLoader(images, labels, torch.arange(37), augment=(spec,), generator=torch.Generator().manual_seed(1), **kw))
    assert all(torch.equal(a.x, b.x) for a, b in zip(one, tup))
    x, y, index, views = one[0]  # the four fields; a Batch built with three still works
    assert Batch(x, y, index).views == ()


def test_each_views_pass_depends_only_on_the_generators_seed():
    images, labels = _data()
    strong = AugmentSpec(crop_padding=2, hflip=True, policy=create_augment_policy("trivialaugment"))
    kw = dict(batch_size=8, shuffle=True, mean=MEAN, std=STD)

    def views(seed, first):
        loader = BatchLoader(images, labels, torch.arange(37), augment=(first, strong, strong),
                             generator=torch.Generator().manual_seed(seed), **kw)
        return [b.views for b in loader]

    a, b = views(3, AugmentSpec(crop_padding=2, hflip=True)), views(3, AugmentSpec(crop_padding=2, hflip=True))
    assert all(torch.equal(u, v) for x, y in zip(a, b) for u, v in zip(x, y))
    c = views(3, None)  # a different first view does not move the other views' draws
    assert all(torch.equal(x[1], y[1]) and torch.equal(x[2], y[2]) for x, y in zip(a, c))
    assert not all(torch.equal(x[1], x[2]) for x in a)  # two strong views of one batch differ
    d = views(4, AugmentSpec(crop_padding=2, hflip=True))
    assert not all(torch.equal(x[1], y[1]) for x, y in zip(a, d))


def test_bad_view_specs():
    images, labels = _data()
    kw = dict(batch_size=8, shuffle=False, mean=MEAN, std=STD)
    with pytest.raises(UserError, match="at least one view"):
        BatchLoader(images, labels, torch.arange(37), augment=(), **kw)
    with pytest.raises(UserError, match="AugmentSpec or None"):
        BatchLoader(images, labels, torch.arange(37), augment=(AugmentSpec(), "strong"), **kw)
    with pytest.raises(UserError, match="policy must be an augmentation policy"):
        AugmentSpec(policy="randaugment")


def test_config_strong_augment_is_checked_before_data_and_built_into_run_data(tmp_path):
    from noisylabels.config import resolve_config
    from noisylabels.train.build import check_names
    from noisylabels.train.prepare import prepare_data

    cfg = resolve_config(overrides={"out": str(tmp_path / "r")})
    assert cfg["data"]["strong_augment"] == "randaugment+cutout"
    data = prepare_data(cfg)  # digits: 8x8 grey, data.augment auto = none
    assert data.augment is None and data.strong == AugmentSpec(
        policy=create_augment_policy("randaugment+cutout", num_ops=2, magnitude=10, size=16))
    cifar_like = resolve_config(overrides={"data.augment": {"crop_padding": 4, "hflip": True},
                                           "data.strong_augment": {"name": "autoaugment-cifar10+cutout", "size": 8}})
    assert prepare_data(cifar_like).strong == AugmentSpec(
        crop_padding=4, hflip=True, policy=create_augment_policy("autoaugment-cifar10+cutout", size=8))
    assert prepare_data(resolve_config(assignments=["data.strong_augment=none"])).strong is None
    tuned = resolve_config(assignments=["data.strong_augment.magnitude=5"])  # name: the default's
    assert tuned["data"]["strong_augment"] == {"magnitude": 5}
    for bad, match in (("randaugmnt", "unknown augment policy 'randaugmnt'"), ({"name": 3}, "must be a policy name"),
                       ({"name": "cutout", "size": 0}, "cutout size"), (7, "data.strong_augment must be none")):
        with pytest.raises(UserError, match=match):  # the shape on load, names with the run's other names
            check_names(resolve_config(overrides={"data.strong_augment": bad}))
