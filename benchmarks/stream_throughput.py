"""Images per second: the streaming source against the in-memory path and the model's training.

On the shared CIFAR-10 training zip (50,000 JPEGs) this measures, in one process and one run:

* ``in-memory``   -- :class:`~noisylabels.data.BatchLoader` over the decoded uint8 pool (crop + flip);
* ``streaming``   -- :class:`~noisylabels.data.stream.StreamLoader` with ``--workers`` decoding
  processes reading the JPEGs from the zip (decode, crop, flip in the workers; float and
  normalisation in this process), the path ``data.stream: true`` takes;
* ``training``    -- a training step of ``--model`` (forward, CE, backward, SGD step) on batches
  already in memory: what the data path has to keep up with.

It prints the table and the ratio streaming / training (target: > 1, i.e. streaming is never the
bottleneck for a ResNet-20-sized model with 2 workers). The decoding workers and the training
threads share the machine, so on a 2-core machine each measurement runs alone (the sum of the
separate rates overstates what they reach together; the ratio is the quantity of interest).

    python benchmarks/stream_throughput.py [--zip PATH] [--model resnet20] [--batch-size 128]
        [--workers 2] [--threads 2] [--batches 60] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from noisylabels.data import AugmentSpec, BatchLoader, create_dataset
from noisylabels.data.stream import StreamLoader
from noisylabels.models import create_model

DEFAULT_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-train-jpeg.zip"


def rate(batches, n_batches: int, batch_size: int, warmup: int = 3) -> float:
    """Images per second over ``n_batches`` after ``warmup`` batches (workers started, caches warm)."""
    it = iter(batches)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        b = next(it)
        _ = b.x.sum().item()  # the batch is really materialised (and on the device)
    return n_batches * batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zip", default=str(DEFAULT_ZIP))
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    bs = args.batch_size
    spec = AugmentSpec(crop_padding=4, hflip=True)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)

    t0 = time.perf_counter()
    mem = create_dataset("imagefolder", path=args.zip)  # decoded once, then from the cache
    decode_s = time.perf_counter() - t0
    images = torch.from_numpy(mem.x_train).permute(0, 3, 1, 2).contiguous().to(dev)
    labels = torch.from_numpy(mem.y_train)
    idx = torch.arange(len(labels))
    lazy = create_dataset("imagefolder", path=args.zip, stream=True).x_train.nchw().to(dev)
    need = args.batches + 3

    def gen():
        return torch.Generator().manual_seed(0)

    r_mem = rate(BatchLoader(images, labels.to(dev), idx, batch_size=bs, shuffle=True, mean=mean, std=std,
                             augment=spec, generator=gen()), args.batches, bs)
    r_stream = rate(StreamLoader(lazy, labels, idx, batch_size=bs, shuffle=True, mean=mean, std=std,
                                 augment=spec, generator=gen(), workers=args.workers), args.batches, bs)
    r_stream0 = rate(StreamLoader(lazy, labels, idx[: need * bs], batch_size=bs, shuffle=True, mean=mean,
                                  std=std, augment=spec, generator=gen(), workers=0),
                     min(args.batches, 20), bs)

    model = create_model(args.model, num_classes=10, seed=0).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    batch = next(iter(BatchLoader(images, labels.to(dev), idx, batch_size=bs, shuffle=True, mean=mean, std=std,
                                  augment=spec, generator=gen())))

    def steps():
        while True:
            loss = F.cross_entropy(model(batch.x), batch.y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            yield batch

    n_train = max(5, args.batches // 4)
    r_train = rate(steps(), n_train, bs, warmup=2)

    print(f"stream_throughput: torch {torch.__version__}, device {dev}, {args.threads} torch threads, "
          f"{os.cpu_count()} cores, batch {bs}, {len(labels)} images in {Path(args.zip).name} "
          f"(in-memory decode/cache load {decode_s:.1f} s)")
    print()
    print("| path | images/s | x training |")
    print("|---|---|---|")
    rows = [("in-memory BatchLoader (crop+flip)", r_mem),
            (f"streaming, {args.workers} workers (JPEG decode+crop+flip)", r_stream),
            ("streaming, decoding in this process", r_stream0),
            (f"training step, {args.model}", r_train)]
    for name, r in rows:
        print(f"| {name} | {r:,.0f} | {r / r_train:.2f} |")
    verdict = "not the bottleneck" if r_stream > r_train else "THE BOTTLENECK"
    print(f"\nstreaming with {args.workers} workers / training = {r_stream / r_train:.2f}: the stream is {verdict} "
          f"for {args.model} on this machine")


if __name__ == "__main__":
    main()
