"""Per-step cost of each registered loss relative to cross entropy.

Two measurements, both in this process with ``torch.set_num_threads(2)``:

1. loss only: forward + backward of the loss on logits (B=128, K=10) that require grad;
2. full step (if ``noisylabels.models.create_model('resnet20', ...)`` exists): ResNet-20
   forward on a CIFAR-sized batch (128, 3, 32, 32), the loss, backward and an SGD step.

Losses are timed round-robin (one repeat of every loss per round) so that drifts in machine
load hit all losses alike; the table reports the median over rounds and the ratio to CE.

Usage::

    PYTHONPATH=src python3 benchmarks/loss_cost.py [--repeats 300] [--model-repeats 7] [--no-model]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch

from noisylabels.losses import create_loss, list_losses

__all__ = ["main"]


def _hyperparameters(name: str, k: int) -> dict[str, Any]:
    if name == "forward":
        t = torch.full((k, k), 0.2 / (k - 1))
        t.fill_diagonal_(0.8)
        return {"T": t}
    return {}


def _time_round_robin(steps: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {n: [] for n in steps}
    for _ in range(repeats):
        for n, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[n].append(time.perf_counter() - t0)
    return {n: statistics.median(v) * 1e3 for n, v in times.items()}


def loss_only(names: list[str], *, batch: int, classes: int, repeats: int) -> dict[str, float]:
    """Median ms of forward + backward of each loss on (batch, classes) logits."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, classes, generator=g).requires_grad_()
    target = torch.randint(0, classes, (batch,), generator=g)
    steps = {}
    for n in names:
        loss = create_loss(n, **_hyperparameters(n, classes))

        def step(loss=loss) -> None:
            logits.grad = None
            loss(logits, target).backward()

        steps[n] = step
    return _time_round_robin(steps, repeats, warmup=20)


def model_step(names: list[str], *, batch: int, classes: int, repeats: int) -> dict[str, float] | None:
    """Median ms of a ResNet-20 training step per loss, or None without the models package."""
    try:
        from noisylabels.models import create_model

        net = create_model("resnet20", num_classes=classes)
    except Exception as exc:  # models package absent or different: skip this part
        print(f"(full-step timing skipped: {type(exc).__name__}: {exc})")
        return None
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    target = torch.randint(0, classes, (batch,), generator=g)
    steps = {}
    for n in names:
        loss = create_loss(n, **_hyperparameters(n, classes))

        def step(loss=loss) -> None:
            opt.zero_grad(set_to_none=True)
            loss(net(x), target).backward()
            opt.step()

        steps[n] = step
    return _time_round_robin(steps, repeats, warmup=1)


def _table(title: str, ms: dict[str, float]) -> str:
    base = ms["ce"]
    lines = [title, f"{'loss':<16}{'ms':>10}{'x CE':>8}"]
    for n, v in ms.items():
        lines.append(f"{n:<16}{v:>10.3f}{v / base:>8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=300, help="rounds for the loss-only timing")
    ap.add_argument("--model-repeats", type=int, default=7, help="rounds for the ResNet-20 step timing")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-model", action="store_true", help="skip the full ResNet-20 step")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = ["ce"] + list_losses(aliases=False)
    names = list(dict.fromkeys(names))  # ce first, no duplicates
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B={args.batch}, K={args.classes}")
    print(_table(f"\nloss only: forward+backward, median of {args.repeats}",
                 loss_only(names, batch=args.batch, classes=args.classes, repeats=args.repeats)))
    if not args.no_model:
        ms = model_step(names, batch=args.batch, classes=args.classes, repeats=args.model_repeats)
        if ms is not None:
            print(_table(f"\nResNet-20 step (forward+loss+backward+SGD) on ({args.batch},3,32,32), "
                         f"median of {args.model_repeats}", ms))


if __name__ == "__main__":
    main()
