"""Linear-probe and kNN accuracy of a pretrained backbone against the same model at random init.

Pretrain first (``noisylabels pretrain ... --out OUT``), then

    python benchmarks/simclr_probe.py --backbone OUT/backbone.pt --dataset digits --model lenet [--subset N]

builds the model of the pretraining run twice (once loading ``backbone.pt`` through
``model.init_checkpoint``, once at its random init, same seed), embeds the training pool and the
test set (``features()``, eval mode, no augmentation, true labels, no noise) and prints the test
accuracy of a linear probe (:func:`noisylabels.eval.probe.linear_probe_accuracy`) and of the
weighted kNN monitor (k 200, tau 0.1) for both, and their differences, measured in one run.
"""

from __future__ import annotations

import argparse

import torch

from noisylabels.config import resolve_config
from noisylabels.eval.knn import knn_accuracy
from noisylabels.eval.probe import linear_probe_accuracy
from noisylabels.train import build_context
from noisylabels.train.context import embed


def features(cfg: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    ctx = build_context(cfg)
    data = ctx.data
    kw = dict(mean=data.mean, std=data.std, batch_size=1000, device=ctx.device)
    pool = torch.arange(len(ctx.images))
    return (embed(ctx.model, ctx.images, pool, **kw), data.clean_labels.cpu(),
            embed(ctx.model, data.test_images, None, **kw), data.test_labels.cpu(), data.num_classes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--subset", type=int, default=None, help="data.train_subset of the probe's training pool")
    ap.add_argument("--test-subset", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = {}
    for name, init in (("pretrained", args.backbone), ("random init", None)):
        over = {"out": "/tmp/simclr-probe-unused", "data.name": args.dataset, "model.name": args.model,
                "noise.type": "none", "noise.rate": 0.0,
                "data.train_subset": args.subset, "data.test_subset": args.test_subset,
                **({"model.init_checkpoint": init} if init else {})}
        cfg = resolve_config(overrides=over, assignments=args.set)
        xtr, ytr, xte, yte, k = features(cfg)
        rows[name] = (linear_probe_accuracy(xtr, ytr, xte, yte, num_classes=k),
                      knn_accuracy(xtr, ytr, xte, yte, num_classes=k, k=200, temperature=0.1))
    print(f"{args.dataset} / {args.model}: {len(xtr)} training, {len(xte)} test samples, {xtr.shape[1]} features")
    print(f"{'':14s} {'linear probe':>13s} {'kNN (k=200)':>12s}")
    for name, (lin, knn) in rows.items():
        print(f"{name:14s} {lin:13.4f} {knn:12.4f}")
    (pl, pk), (rl, rk) = rows["pretrained"], rows["random init"]
    print(f"{'difference':14s} {pl - rl:+13.4f} {pk - rk:+12.4f}")


if __name__ == "__main__":
    main()
