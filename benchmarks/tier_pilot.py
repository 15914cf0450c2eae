"""Size a CPU benchmark tier: seconds per epoch and whether cross-entropy memorises the noise.

A CPU tier only shows what a robust method buys if plain CE *memorises* inside the schedule: its
test accuracy peaks, then falls as the network fits the corrupted labels. This script trains
the given configurations (one process, one thread) and prints, per run, the test-accuracy curve
(every ``--every`` epochs), the best and last-epoch test accuracy, the drop between them, the
best-validation epoch, and the measured seconds per epoch (training + evaluation), from which a
tier's total time follows (runs x epochs x s/epoch).

Usage::

    python benchmarks/tier_pilot.py --epochs 40 --rates 0.4 0.6 --noise symmetric \
        --set data.name=mnist model.name=lenet optim.lr=0.05 optim.weight_decay=1e-4 \
        --methods ce gce --out /tmp/pilot

``--methods`` entries: ``ce`` (ERM + CE), ``gce`` (ERM + Lq, q 0.7), ``mae``, ``trunc`` (truncated Lq,
k 0.5, prune every epoch after the first third), ``rmnw`` / ``mwnet`` / ``l2rw`` / ``l2b`` (meta
methods; 10% meta set, noisy for rmnw), or any ``method=NAME`` / ``loss=NAME``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch

from noisylabels.config import parse_assignment, resolve_config
from noisylabels.train import fit, read_metrics

__all__ = ["main"]

METHODS: dict[str, dict[str, Any]] = {
    "ce": {"method.name": "erm", "loss.name": "ce"},
    "gce": {"method.name": "erm", "loss.name": "gce", "loss.q": 0.7},
    "mae": {"method.name": "erm", "loss.name": "mae"},
    "trunc": {"method.name": "truncated-lq", "method.q": 0.7, "method.k": 0.5, "method.prune_every": 1},
    "rmnw": {"method.name": "rmnw-net", "data.meta_set": "noisy", "method.meta_optimizer": "sgd",
             "method.meta_weight_decay": 5e-4},
    "rmnw-none": {"method.name": "rmnw-net", "data.meta_set": "noisy", "method.meta_optimizer": "sgd",
                  "method.meta_weight_decay": 5e-4, "method.normalize": "none"},
    "mwnet": {"method.name": "mwnet", "data.meta_set": "clean", "method.meta_optimizer": "sgd",
              "method.meta_weight_decay": 5e-4},
    "l2rw": {"method.name": "l2rw", "data.meta_set": "clean", "method.warmup_epochs": 1},
    "l2b": {"method.name": "l2b", "data.meta_set": "clean", "method.warmup_epochs": 1},
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--rates", type=float, nargs="+", default=[0.4])
    ap.add_argument("--noise", default="symmetric")
    ap.add_argument("--methods", nargs="+", default=["ce"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides key=value for every run")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(args.out or tempfile.mkdtemp(prefix="tier_pilot_"))
    common = dict(parse_assignment(a) for a in args.set)
    print(f"{args.epochs} epochs, {args.noise} {args.rates}, seed {args.seed}; overrides {common}; runs in {root}")
    print("\n| method | rate | test acc every %d epochs | best (epoch) | last | best - last | best-val epoch | "
          "s/epoch |" % args.every)
    print("|---|---|---|---|---|---|---|---|")
    for rate in args.rates:
        for m in args.methods:
            if m in METHODS:
                over = dict(METHODS[m])
            else:
                k, v = m.split("=", 1)
                over = {"method.name": v} if k == "method" else {"method.name": "erm", "loss.name": v}
            if over["method.name"] in ("truncated-lq",):
                over["method.warmup_epochs"] = args.epochs // 3
            if over["method.name"] in ("rmnw-net", "mwnet", "mnw-net", "l2rw", "l2b"):
                over.setdefault("data.meta_size", "auto")
            out = root / f"{m.replace('=', '-')}-{args.noise}-{rate}"
            cfg = resolve_config(overrides={"out": str(out), "seed": args.seed, "train.progress": False,
                                            "train.num_threads": 1, "train.epochs": args.epochs,
                                            "noise.type": args.noise, "noise.rate": rate, **common, **over})
            s = fit(cfg, overwrite=True)
            rows = read_metrics(out)
            acc = [100 * r["test_accuracy"] for r in rows]
            best = max(range(len(acc)), key=acc.__getitem__)
            curve = " ".join(f"{a:.1f}" for a in acc[args.every - 1::args.every])
            print(f"| {m} | {rate} | {curve} | {acc[best]:.2f} ({best}) | {acc[-1]:.2f} | {acc[best] - acc[-1]:.2f} | "
                  f"{s['best_epoch']} | {s['seconds'] / len(rows):.2f} |", flush=True)


if __name__ == "__main__":
    main()
