"""Streaming data source (data larger than memory): the same batches as the in-memory path for
the same seed and epoch, the same run, exact resume, and the auto choice by memory budget."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch

from noisylabels.config import resolve_config
from noisylabels.data import AugmentSpec, BatchLoader, channel_stats, create_augment_policy, create_dataset
from noisylabels.data.stream import StreamLoader, is_stream, pool_channel_stats
from noisylabels.errors import UserError
from noisylabels.train.prepare import prepare_data

pytestmark = pytest.mark.usefixtures("one_thread")


def make_zip(path, *, n_per_class=14, classes=("ant", "bee", "cat"), size=10, fmt="PNG", grey_first=False):
    """An image-folder zip (train and test splits) of random images; PNG is lossless, JPEG is not."""
    from PIL import Image

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for split, n in (("train", n_per_class), ("test", 4)):
            for c in classes:
                for k in range(n):
                    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                    im = Image.fromarray(arr)
                    if grey_first and split == "train" and c == classes[0] and k == 0:
                        im = im.convert("L")
                    buf = io.BytesIO()
                    im.save(buf, format=fmt)
                    zf.writestr(f"data/{split}/{c}/{k:03d}.{fmt.lower()}", buf.getvalue())
    return path


@pytest.fixture(scope="module")
def zips(tmp_path_factory):
    d = tmp_path_factory.mktemp("zips")
    return {"png": make_zip(d / "png.zip"), "jpeg": make_zip(d / "jpeg.zip", fmt="JPEG", size=12),
            "mixed": make_zip(d / "mixed.zip", grey_first=True)}


@pytest.mark.parametrize("kind", ["png", "jpeg", "mixed"])
def test_streamed_images_decode_to_the_in_memory_pixels(zips, kind):
    mem = create_dataset("imagefolder", path=zips[kind], cache=False)
    lazy = create_dataset("imagefolder", path=zips[kind], stream=True)
    assert is_stream(lazy.x_train) and is_stream(lazy.x_test)
    assert lazy.x_train.shape == mem.x_train.shape and lazy.paths_train == mem.paths_train
    assert np.array_equal(lazy.y_train, mem.y_train) and np.array_equal(lazy.y_test, mem.y_test)
    pool = lazy.x_train.nchw()
    got = pool.load(np.arange(len(pool)))
    assert torch.equal(got, torch.from_numpy(mem.x_train).permute(0, 3, 1, 2))
    sub = lazy.x_train[np.array([5, 2])]  # lazy views index like arrays
    assert torch.equal(sub.nchw().load([0, 1]), got[[5, 2]])


WEAK = AugmentSpec(crop_padding=2, hflip=True)
STRONG = AugmentSpec(crop_padding=2, hflip=True, policy=create_augment_policy("randaugment+cutout", size=4))
VIEWS = {"weak": WEAK, "weak-strong-plain": (WEAK, STRONG, None),
         "strong-first": (STRONG, AugmentSpec(crop_padding=1), STRONG),
         "autoaugment": (AugmentSpec(policy=create_augment_policy("autoaugment-cifar10")),),
         "trivialaugment": AugmentSpec(hflip=True, policy=create_augment_policy("trivialaugment"))}


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("views", sorted(VIEWS))
def test_stream_loader_yields_the_batch_loaders_batches(zips, workers, views):
    """Every view of every batch bit for bit, for one spec (the 18 golden pins' path) and for tuples
    of weak, strong and plain views."""
    mem = create_dataset("imagefolder", path=zips["png"], cache=False)
    images = torch.from_numpy(mem.x_train).permute(0, 3, 1, 2).contiguous()
    lazy = create_dataset("imagefolder", path=zips["png"], stream=True).x_train.nchw()
    labels = torch.from_numpy(mem.y_train)
    idx = torch.arange(3, len(labels))  # a split, not the whole pool
    mean, std = channel_stats(images)
    spec = VIEWS[views]
    n_views = len(spec) if isinstance(spec, tuple) else 1
    for epoch in range(2):  # each epoch's generator seeded by (seed, epoch), as the loop does
        kw = dict(batch_size=8, shuffle=True, mean=mean, std=std, augment=spec)
        ref = list(BatchLoader(images, labels, idx, generator=torch.Generator().manual_seed(100 + epoch), **kw))
        got = list(StreamLoader(lazy, labels, idx, generator=torch.Generator().manual_seed(100 + epoch),
                                workers=workers, **kw))
        assert len(got) == len(ref) == 5
        for a, b in zip(ref, got):
            assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.index, b.index)
            assert len(a.views) == len(b.views) == n_views and a.views[0] is a.x and b.views[0] is b.x
            assert all(torch.equal(u, v) for u, v in zip(a.views, b.views))
    # augmentation really happened (the batches differ from the plain ones)
    plain = next(iter(BatchLoader(images, labels, idx, batch_size=8, shuffle=False, mean=mean, std=std)))
    aug = next(iter(StreamLoader(lazy, labels, idx, batch_size=8, shuffle=False, mean=mean, std=std,
                                 augment=spec, workers=workers)))
    assert not torch.equal(plain.x, aug.x)
    assert all(not torch.equal(plain.x, v) for v, s in zip(aug.views, spec if n_views > 1 else (spec,)) if s)


def test_nested_stream_loaders_do_not_disturb_each_other(zips):
    """A meta loader iterated inside a training epoch (what the meta methods do) gets its own
    workers; both give the in-memory batches; a loader abandoned part-way is reusable. (A streamed
    pass draws its whole epoch from the generator when it starts, the in-memory one batch by
    batch: they agree whenever a generator is not shared with a pass abandoned part-way, which is
    how the loop and the meta methods use them.)"""
    mem = create_dataset("imagefolder", path=zips["png"], cache=False)
    images = torch.from_numpy(mem.x_train).permute(0, 3, 1, 2).contiguous()
    lazy = create_dataset("imagefolder", path=zips["png"], stream=True).x_train.nchw()
    labels = torch.from_numpy(mem.y_train)
    kw = dict(batch_size=5, shuffle=True, mean=(0.5,) * 3, std=(0.2,) * 3, augment=AugmentSpec(crop_padding=1))
    outer = [torch.arange(0, 25), torch.arange(30, 42)]

    def run(cls, imgs):
        out = []
        g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
        inner = iter(cls(imgs, labels, outer[1], generator=g2, **kw))
        for b in cls(imgs, labels, outer[0], generator=g1, **kw):
            out.append(b.x)
            out.append(next(inner).x)
            if len(out) == 4:
                g3 = torch.Generator().manual_seed(3)  # a new pass with its own generator (a new epoch)
                inner = iter(cls(imgs, labels, outer[1], generator=g3, **kw))  # abandon the first
        return out

    ref = run(BatchLoader, images)
    got = run(lambda *a, **k: StreamLoader(*a, workers=1, **k), lazy)
    assert len(ref) == len(got) == 10 and all(torch.equal(a, b) for a, b in zip(ref, got))


def _cfg(tmp_path, zpath, name, **over):
    return resolve_config(overrides={
        "data.name": "imagefolder", "data.options": {"path": str(zpath)}, "noise.rate": 0.3,
        "model.name": "mlp", "model.hidden": [32], "train.epochs": 3, "train.batch_size": 8,
        "data.augment": {"crop_padding": 2, "hflip": True}, "train.progress": False,
        "out": str(tmp_path / name), **over})


def test_auto_streams_only_beyond_the_memory_budget_and_bad_settings_are_one_line(zips, tmp_path):
    assert not is_stream(prepare_data(_cfg(tmp_path, zips["png"], "a")).images)
    tiny = prepare_data(_cfg(tmp_path, zips["png"], "b", **{"data.memory_budget_gb": 1e-6}))
    assert is_stream(tiny.images) and is_stream(tiny.test_images) and tiny.images.workers == 2
    with pytest.raises(UserError, match="data.stream must be auto, true or false"):
        prepare_data(_cfg(tmp_path, zips["png"], "c", **{"data.stream": "maybe"}))
    with pytest.raises(UserError, match="dataset 'digits' has no streaming source"):
        prepare_data(resolve_config(overrides={"data.stream": True}))
    with pytest.raises(UserError, match="instance noise needs every image in memory"):
        prepare_data(_cfg(tmp_path, zips["png"], "d", **{"data.stream": True, "noise.type": "instance"}))


def test_streamed_run_equals_in_memory_run(zips, tmp_path):
    from noisylabels.train import fit

    over = {"train.epochs": 2, "train.checkpoint": False}
    mem = fit(_cfg(tmp_path, zips["png"], "mem", **{"data.stream": False}, **over))
    streamed = fit(_cfg(tmp_path, zips["png"], "str", **{"data.stream": True, "data.stream_workers": 1}, **over))
    read = lambda d: (tmp_path / d / "metrics.jsonl").read_text()  # noqa: E731
    assert read("mem") == read("str")
    assert (tmp_path / "mem" / "suspects.csv").read_text() == (tmp_path / "str" / "suspects.csv").read_text()
    assert mem["test_accuracy"] == streamed["test_accuracy"]


@pytest.mark.slow
def test_streamed_run_resumes_exactly(zips, tmp_path, assert_resume_exact):
    assert_resume_exact(lambda name: _cfg(tmp_path, zips["png"], name, **{"data.stream": True,
                                                                           "data.stream_workers": 1}), 1)


def test_pool_channel_stats_of_a_stream_sample_the_pool(zips, monkeypatch):
    import noisylabels.data.stream as stream

    lazy = create_dataset("imagefolder", path=zips["png"], stream=True).x_train.nchw()
    full = channel_stats(lazy.load(np.arange(len(lazy))))
    assert pool_channel_stats(lazy) == full  # a pool smaller than the sample: all of it
    monkeypatch.setattr(stream, "STATS_SAMPLE", 20)
    mean, std = pool_channel_stats(lazy)
    assert mean != full[0] and np.allclose(mean, full[0], atol=0.05) and np.allclose(std, full[1], atol=0.05)


def test_idle_stream_workers_beyond_the_cap_are_stopped(zips, monkeypatch):
    import noisylabels.data.stream as stream

    pool = stream._LoaderPool()
    monkeypatch.setattr(stream, "_POOL", pool)
    monkeypatch.setattr(pool, "max_idle", 1)
    lazy = create_dataset("imagefolder", path=zips["png"], stream=True).x_train.nchw()
    kw = dict(batch_size=10, shuffle=False, mean=(0.5,) * 3, std=(0.2,) * 3, workers=1)
    labels = torch.zeros(len(lazy), dtype=torch.long)
    list(StreamLoader(lazy[np.arange(20)], labels[:20], torch.arange(20), **kw))
    (first, _), = [v for stack in pool.free.values() for v in stack]
    workers = list(first._iterator._workers)
    assert workers and all(w.is_alive() for w in workers)  # persistent between epochs
    list(StreamLoader(lazy[np.arange(20, 40)], labels[:20], torch.arange(20), **kw))  # another source
    assert len(pool.order) == 1
    for w in workers:
        w.join(5)
    assert not any(w.is_alive() for w in workers)
