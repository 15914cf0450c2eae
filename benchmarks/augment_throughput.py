"""Images per second per core: the strong augmentation policies against ResNet-18 training.

In one process and one run, with ``--threads`` torch threads (default 1, i.e. per core), on
CIFAR-like uint8 batches (``--batch-size`` x 3 x 32 x 32):

* each policy of :mod:`noisylabels.data.policies` (and FixMatch's / AutoAugment's /
  TrivialAugment's compositions with Cutout) applied to uint8 batches (draw + apply);
* ``strong view``: the in-memory loader's whole strong view, gather + crop + flip +
  ``randaugment+cutout`` + float + normalise (:class:`~noisylabels.data.BatchLoader`), and the
  weak view alone (crop + flip) for comparison;
* ``training``: a training step of ``--model`` (default ``preact_resnet18``, the CIFAR ResNet-18
  of DivideMix / ELR / SOP; forward, cross-entropy, backward, SGD step) on batches in memory.

It prints a table of images/s and the ratio policy / training (target: far above 1, i.e. the
strong augmentation is never the bottleneck; a method with k strong views needs the ratio above
k). ``--agreement`` also prints the agreement of every operation with Pillow (max and mean
absolute difference over grey and RGB images and a grid of magnitudes; the same check as
``tests/data/test_imageops.py``).

    python benchmarks/augment_throughput.py [--model preact_resnet18] [--batch-size 128]
        [--threads 1] [--seconds 3] [--train-steps 3] [--agreement]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from noisylabels.data import AugmentSpec, BatchLoader, create_augment_policy
from noisylabels.data import imageops as O
from noisylabels.models import create_model

POLICIES = ["autoaugment-cifar10", "randaugment", "trivialaugment", "cutout", "randaugment+cutout",
            "autoaugment-cifar10+cutout", "trivialaugment+cutout"]


def policy_rate(name: str, x: torch.Tensor, seconds: float) -> float:
    policy = create_augment_policy(name)
    g = torch.Generator().manual_seed(0)
    policy(x, generator=g)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        policy(x, generator=g)
        n += len(x)
    return n / (time.perf_counter() - t0)


def loader_rate(images: torch.Tensor, augment, batch_size: int, seconds: float) -> float:
    labels = torch.zeros(len(images), dtype=torch.long)
    n, t0, epoch = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        loader = BatchLoader(images, labels, torch.arange(len(images)), batch_size=batch_size, shuffle=True,
                             mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), augment=augment,
                             generator=torch.Generator().manual_seed(epoch))
        for b in loader:
            n += len(b.index)
        epoch += 1
    return n / (time.perf_counter() - t0)


def training_rate(model_name: str, batch_size: int, steps: int) -> float:
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, in_channels=3, image_size=32)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - t0)


def agreement_table() -> list[tuple[str, int, float]]:
    """(operation, max |ours - Pillow|, mean |ours - Pillow|) over grey and RGB images."""
    from PIL import Image, ImageEnhance, ImageFilter, ImageOps

    rng = np.random.default_rng(0)
    factors = [0.0, 0.05, 0.1, 0.5, 1.0, 1.3, 1.9, 2.0]
    fc = lambda im: (128,) * 3 if im.mode == "RGB" else 128  # noqa: E731
    cases = [
        ("ShearX", lambda x, v: O.shear_x(x, v, fill=128),
         lambda im, v: im.transform(im.size, Image.AFFINE, (1, v, 0, 0, 1, 0), fillcolor=fc(im)), [0.1, -0.3, 0.99]),
        ("ShearY", lambda x, v: O.shear_y(x, v, fill=128),
         lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, v, 1, 0), fillcolor=fc(im)), [0.1, -0.3, 0.99]),
        ("TranslateX", lambda x, v: O.translate_x(x, v, fill=128),
         lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, v, 0, 1, 0), fillcolor=fc(im)), [3, -9, 14.5015]),
        ("TranslateY", lambda x, v: O.translate_y(x, v, fill=128),
         lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, v), fillcolor=fc(im)), [3, -9, 14.5015]),
        ("Rotate", lambda x, v: O.rotate(x, v, fill=128), lambda im, v: im.rotate(v, fillcolor=fc(im)),
         [3.33, -30, 90, 135]),
        ("AutoContrast", lambda x, v: O.autocontrast(x), lambda im, v: ImageOps.autocontrast(im), [None]),
        ("Equalize", lambda x, v: O.equalize(x), lambda im, v: ImageOps.equalize(im), [None]),
        ("Invert", lambda x, v: O.invert(x), lambda im, v: ImageOps.invert(im), [None]),
        ("Solarize", O.solarize, ImageOps.solarize, [256, 227.6, 128, 26, 0]),
        ("Posterize", O.posterize, ImageOps.posterize, [8, 6, 4, 2]),
        ("Brightness", O.brightness, lambda im, v: ImageEnhance.Brightness(im).enhance(v), factors),
        ("Color", O.color, lambda im, v: ImageEnhance.Color(im).enhance(v), factors),
        ("Contrast", O.contrast, lambda im, v: ImageEnhance.Contrast(im).enhance(v), factors),
        ("Sharpness", O.sharpness, lambda im, v: ImageEnhance.Sharpness(im).enhance(v), factors),
        ("Smooth", lambda x, v: O.smooth(x), lambda im, v: im.filter(ImageFilter.SMOOTH), [None]),
    ]
    rows = []
    for name, ours, ref, values in cases:
        worst, total, count = 0, 0.0, 0
        for c in (3, 1):
            a = rng.integers(0, 256, (8, 32, 32, c), dtype=np.uint8)
            a[::2] = (a[::2] // 4 + 90).astype(np.uint8)
            x = torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
            for v in values:
                got = ours(x, v).permute(0, 2, 3, 1).numpy().astype(int)
                for i in range(len(a)):
                    r = np.asarray(ref(Image.fromarray(a[i, ..., 0] if c == 1 else a[i]), v)).astype(int)
                    d = np.abs(got[i] - (r[..., None] if r.ndim == 2 else r))
                    worst, total, count = max(worst, int(d.max())), total + float(d.sum()), count + d.size
        rows.append((name, worst, total / count))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="preact_resnet18")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0, help="time per policy measurement")
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--agreement", action="store_true", help="also print the Pillow agreement table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.agreement:
        print("| operation | max abs diff vs Pillow | mean abs diff |\n|---|---:|---:|")
        for name, worst, mean in agreement_table():
            print(f"| {name} | {worst} | {mean:.3g} |")
        print()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.batch_size, 3, 32, 32), generator=g, dtype=torch.uint8)
    pool = torch.randint(0, 256, (4096, 3, 32, 32), generator=g, dtype=torch.uint8)
    train = training_rate(args.model, args.batch_size, args.train_steps)
    rows = [(f"policy {name}", policy_rate(name, x, args.seconds)) for name in POLICIES]
    weak = AugmentSpec(crop_padding=4, hflip=True)
    strong = AugmentSpec(crop_padding=4, hflip=True, policy=create_augment_policy("randaugment+cutout"))
    rows.append(("loader weak view (crop + flip + normalise)", loader_rate(pool, weak, args.batch_size, args.seconds)))
    rows.append(("loader strong view (crop + flip + randaugment+cutout + normalise)",
                 loader_rate(pool, strong, args.batch_size, args.seconds)))
    rows.append(("loader views (weak, strong)", loader_rate(pool, (weak, strong), args.batch_size, args.seconds)))
    print(f"{args.threads} thread(s), batch {args.batch_size}, 32x32 RGB uint8; training: {args.model} forward + "
          f"backward + SGD step = {train:.1f} images/s\n")
    print("| path | images/s | ratio to training |\n|---|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r:.0f} | {r / train:.1f} |")


if __name__ == "__main__":
    main()
