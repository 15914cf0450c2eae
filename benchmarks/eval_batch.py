"""Evaluation passes on the CPU by batch size: why ``train.eval_batch_size: auto`` is 64 there.

For each model, the best of ``--repeats`` timings of an eval-mode forward pass (no gradient) over
``--images`` random images in batches of 32, 64, 128, 256 and 1000, and each time's ratio to the
batch of 64 (``EVAL_BATCH_AUTO['cpu']``). One process, ``--threads`` torch threads.

    python benchmarks/eval_batch.py [--threads 1] [--images 2000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from noisylabels.config import EVAL_BATCH_AUTO
from noisylabels.models import create_model

MODELS = (("mlp", (1, 8, 8), {"hidden": [256]}), ("lenet", (1, 28, 28), {}), ("resnet8", (3, 32, 32), {}),
          ("resnet32", (3, 32, 32), {}), ("preact_resnet18", (3, 32, 32), {}))
BATCHES = (32, 64, 128, 256, 1000)


def seconds(model: torch.nn.Module, x: torch.Tensor, batch: int, repeats: int) -> float:
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            for s in range(0, len(x), batch):
                model(x[s:s + batch])
            best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ref = EVAL_BATCH_AUTO["cpu"]
    print(f"# eval-mode forward, {args.threads} thread(s), best of {args.repeats}; seconds (ratio to batch {ref})")
    print("| model | images | " + " | ".join(f"batch {b}" for b in BATCHES) + " |")
    print("|---|---:|" + "---:|" * len(BATCHES))
    for name, shape, options in MODELS:
        n = args.images if name != "preact_resnet18" else max(1, args.images // 4)
        model = create_model(name, num_classes=10, in_channels=shape[0], image_size=shape[1], **options).eval()
        x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))
        times = {b: seconds(model, x, b, args.repeats) for b in BATCHES}
        cells = " | ".join(f"{times[b]:.3f} ({times[b] / times[ref]:.2f})" for b in BATCHES)
        print(f"| {name} | {n} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
