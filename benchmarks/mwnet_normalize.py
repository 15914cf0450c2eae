"""MW-Net weight normalisation: ``normalize='none'`` (the paper's Eq. 2) vs ``'sum'`` (official WRN script).

Trains MW-Net* / RMNW-Net with each normalisation on the same data, noise and seeds, and prints
per epoch the mean weight of clean and of corrupted training samples and the detection AUROC
of the weights (AUROC < 0.5: the weights rank corrupted labels *above* clean ones), plus the
final test accuracy at the best-validation epoch.

Usage::

    python benchmarks/mwnet_normalize.py [--dataset mnist] [--noise uniform] [--rate 0.4] \
        [--epochs 4] [--seeds 0 1 2] [--out /tmp/mwnet_normalize]

MNIST needs the shared data (see ``noisylabels datasets``); ``--dataset digits`` runs anywhere.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from noisylabels.config import resolve_config
from noisylabels.train import fit, read_metrics

__all__ = ["main"]


def _run(out: Path, *, method: str, normalize: str, seed: int, args: argparse.Namespace) -> list[dict]:
    over = {"out": str(out), "seed": seed, "train.progress": False, "train.epochs": args.epochs,
            "data.name": args.dataset, "noise.type": args.noise, "noise.rate": args.rate,
            "method.name": method, "method.normalize": normalize,
            "optim.lr": 0.05, "optim.momentum": 0.9, "optim.weight_decay": 5e-4, "train.batch_size": 64}
    if args.dataset == "mnist":
        over.update({"model.name": "lenet", "data.meta_size": 500})
    summary = fit(resolve_config(overrides=over), overwrite=True)
    rows = read_metrics(out)
    rows[-1]["_test_at_best_val"] = summary["test_accuracy"]
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--noise", default="uniform")
    ap.add_argument("--rate", type=float, default=0.4)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["mwnet", "rmnw-net"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp(prefix="mwnet_normalize_"))
    print(f"{args.dataset}, {args.noise} noise {args.rate}, {args.epochs} epochs, seeds {args.seeds}")
    print("| method | normalize | seed | epoch | W clean | W noisy | AUROC | test acc @ best val |")
    print("|---|---|---|---|---|---|---|---|")
    for method in args.methods:
        for normalize in ("none", "sum"):
            for seed in args.seeds:
                rows = _run(root / f"{method}-{normalize}-{seed}", method=method, normalize=normalize,
                            seed=seed, args=args)
                for r in rows:
                    acc = f"{100 * r['_test_at_best_val']:.2f}" if "_test_at_best_val" in r else ""
                    print(f"| {method} | {normalize} | {seed} | {r['epoch']} | {r['mean_weight_clean']:.3f} | "
                          f"{r['mean_weight_noisy']:.3f} | {r['detection_auroc']:.3f} | {acc} |", flush=True)


if __name__ == "__main__":
    main()
