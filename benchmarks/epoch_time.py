"""Wall time of one CIFAR-10 training epoch: the data pipeline alone versus with training.

Shows that batch assembly (uint8 -> float, normalisation, random crop + flip as tensor ops) is
not the bottleneck. Uses the shared CIFAR-10 JPEG zips (decoded once into the cache).

    python benchmarks/epoch_time.py [--model resnet20] [--batch-size 128] [--threads 2] [--steps N]
"""

from __future__ import annotations

import argparse
import time

import torch

from noisylabels.config import resolve_config
from noisylabels.data import BatchLoader
from noisylabels.models import create_model
from noisylabels.train import prepare_data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="time only this many steps of the epoch")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    cfg = resolve_config(overrides={"data.name": "cifar10", "noise.type": "none", "noise.rate": 0.0})
    data = prepare_data(cfg)
    load_s = time.perf_counter() - t0
    idx = data.splits["train"]
    gen = torch.Generator().manual_seed(0)

    def batches():
        loader = BatchLoader(data.images, data.labels, idx, batch_size=args.batch_size, shuffle=True,
                             mean=data.mean, std=data.std, augment=data.augment, generator=gen)
        for k, b in enumerate(loader):
            if args.steps is not None and k >= args.steps:
                break
            yield b

    t = time.perf_counter()
    n = 0
    for b in batches():
        n += len(b.y)
        b.x.sum()  # touch the batch
    pipe_s = time.perf_counter() - t

    model = create_model(args.model, num_classes=10, in_channels=3, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model.train()
    t = time.perf_counter()
    for b in batches():
        loss = torch.nn.functional.cross_entropy(model(b.x), b.y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - t

    print(f"CIFAR-10 train split: {len(idx)} images ({n} timed), batch {args.batch_size}, "
          f"{args.threads} threads; data load (cached) {load_s:.1f} s")
    print("| what | seconds | images/s |")
    print("|---|---|---|")
    print(f"| data pipeline alone (crop+flip+normalise) | {pipe_s:.2f} | {n / pipe_s:,.0f} |")
    print(f"| pipeline + {args.model} training | {train_s:.2f} | {n / train_s:,.0f} |")
    print(f"pipeline share of a training epoch: {100 * pipe_s / train_s:.1f}%")


if __name__ == "__main__":
    main()
