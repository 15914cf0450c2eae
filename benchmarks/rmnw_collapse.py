"""Why does RMNW-Net collapse at heavy uniform noise on MNIST-10k? Per-epoch evidence.

Trains RMNW-Net (noisy meta set, MAE meta loss) on the `rmnw` CPU tier's MNIST cell (LeNet,
meta set 500, SGD lr 0.05 / momentum 0.9 / wd 5e-4, cosine, batch 64) with an instrumented
subclass, registered here as ``rmnw-net-probe``, and prints per epoch:

* ``W raw``: the weight net's output ``W(l; phi)`` before normalisation (mean, min, max over the
  epoch's training samples) -- does it go to 0 for everyone?
* ``w clean / w noisy``: mean *used* weight (after the ``sum`` normalisation) of clean and of
  corrupted training samples, and the detection AUROC of the weights;
* ``|g_phi|``: mean norm of the meta-gradient ``dL_meta/dphi`` per meta step, and the meta loss;
* ``W(l)``: the weighting function at losses 0.1, 1, 2.3 (= -log 0.1, chance), 4 at epoch end
  (is it increasing in the loss, i.e. does it favour the corrupted samples?);
* ``p_y meta``: mean softmax probability of the (noisy) meta label on the meta batches;
* ``top class``: the share of the test set predicted as the most frequent predicted class (1.0 =
  constant predictor), and the test accuracy.

Variants (``--variants``; each a set of method/optimiser options):

``suite``      the `rmnw` suite's setting: sum normalisation, weight net Adam lr 1e-3 wd 1e-4
``paper-sgd``  the weight-net optimiser Ghosh & Lan state (Sec. 4: lr 1e-3 fixed, wd 5e-4; their
               code: SGD momentum 0.9), sum normalisation
``none``       Eq. 2 as written (no normalisation), Adam
``none-sgd``   no normalisation, SGD as the paper
``warmup``     the suite's setting after ``--warmup`` epochs of plain CE (weights all 1)
``mnw``        the suite's setting with the CE meta loss (MNW-Net), for comparison
``mnw-sgd``    MNW-Net with the paper's weight-net optimiser
``adam-slow``  the suite's setting with the weight net's Adam lr 1e-4 instead of 1e-3
``ce``         plain cross-entropy (ERM) on the same split

Usage::

    python benchmarks/rmnw_collapse.py --rate 0.6 --epochs 10 --seeds 0 1 2 \
        --variants suite paper-sgd none warmup ce --out /tmp/rmnw_collapse

Needs the shared MNIST test files (``../shared/data/mnist-test``); one thread.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisylabels.config import resolve_config
from noisylabels.methods import register_method
from noisylabels.methods.mwnet import RMNWNet
from noisylabels.train import fit, read_metrics
from noisylabels.train.loop import predict_proba

__all__ = ["ProbeRMNW", "main"]

GRID = (0.1, 1.0, 2.3, 4.0)


@register_method("rmnw-net-probe", help="RMNW-Net with per-step statistics (benchmarks/rmnw_collapse.py)")
class ProbeRMNW(RMNWNet):
    """RMNW-Net recording the raw weight-net outputs, the meta-gradient norm and meta-batch p_y.

    The base's ``warmup_epochs`` (plain CE steps first) is the experiment's warm-up variant.
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._stats: dict[str, list[float]] = {}

    def _add(self, key: str, value: float) -> None:
        self._stats.setdefault(key, []).append(float(value))

    def on_epoch_start(self, ctx) -> None:
        super().on_epoch_start(ctx)
        self._stats = {}
        self._raw_min, self._raw_max = float("inf"), float("-inf")

    def train_step(self, ctx, x, y, index):
        # statistics of the meta step, without changing what it computes
        meta_fn = self.meta_loss

        def probing_meta_loss(zm, ym):
            with torch.no_grad():
                self._add("p_y_meta", torch.softmax(zm.detach(), 1).gather(1, ym[:, None]).mean())
            return meta_fn(zm, ym)

        grads_seen: list[torch.Tensor] = []
        orig_step = self.meta_opt.step

        def step_and_record(*a, **k):
            g = torch.cat([p.grad.reshape(-1) for p in self.meta_net.parameters() if p.grad is not None])
            grads_seen.append(g.norm())
            return orig_step(*a, **k)

        self.meta_loss = probing_meta_loss
        self.meta_opt.step = step_and_record
        try:
            out = super().train_step(ctx, x, y, index)
        finally:
            self.meta_loss = meta_fn
            self.meta_opt.step = orig_step
        for g in grads_seen:
            self._add("meta_grad_norm", g)
        return out

    def batch_weights(self, ce: torch.Tensor) -> torch.Tensor:
        # remember the raw outputs of the real step's weights (last call in the step)
        with torch.no_grad():
            raw = self.meta_net(ce.detach())
            self._add("raw_mean_all", raw.mean())
            self._raw_min = min(getattr(self, "_raw_min", float("inf")), float(raw.min()))
            self._raw_max = max(getattr(self, "_raw_max", float("-inf")), float(raw.max()))
        return super().batch_weights(ce)

    def on_epoch_end(self, ctx) -> dict[str, Any]:
        out = super().on_epoch_end(ctx)
        mean = lambda k: float(np.mean(self._stats[k])) if self._stats.get(k) else None  # noqa: E731
        out.update(probe_raw_mean=mean("raw_mean_all"),
                   probe_raw_min=None if self._raw_min == float("inf") else self._raw_min,
                   probe_raw_max=None if self._raw_max == float("-inf") else self._raw_max,
                   probe_meta_grad_norm=mean("meta_grad_norm"), probe_p_y_meta=mean("p_y_meta"))
        with torch.no_grad():
            out["probe_W_grid"] = [float(v) for v in self.meta_net(torch.tensor(GRID, device=ctx.device))]
        data = ctx.data
        probs = predict_proba(ctx.model, data.test_images, None, mean=data.mean, std=data.std,
                              batch_size=1000, device=ctx.device)
        pred = probs.argmax(1)
        out["probe_top_class_share"] = float(torch.bincount(pred, minlength=probs.shape[1]).max() / len(pred))
        return out


# rmnw-net's defaults are now SGD weight net + sum normalisation (= paper-sgd; issue 20); the
# variants below state every setting explicitly so that each reproduces its row of the study.
_ADAM = {"method.meta_optimizer": "adam", "method.meta_weight_decay": 1e-4, "method.meta_nesterov": False}
_SGD = {"method.meta_optimizer": "sgd", "method.meta_weight_decay": 5e-4}
VARIANTS: dict[str, dict[str, Any]] = {
    "suite": {"method.name": "rmnw-net-probe", "method.normalize": "sum", **_ADAM},   # the old defaults
    "paper-sgd": {"method.name": "rmnw-net-probe", "method.normalize": "sum", **_SGD},
    "none": {"method.name": "rmnw-net-probe", "method.normalize": "none", **_ADAM},
    "none-sgd": {"method.name": "rmnw-net-probe", "method.normalize": "none", **_SGD},   # the paper as written
    "warmup": {"method.name": "rmnw-net-probe", "method.normalize": "sum", **_ADAM,
               "method.warmup_epochs": None},   # filled from --warmup
    "mnw": {"method.name": "rmnw-net-probe", "method.meta_loss": "ce", "method.normalize": "sum", **_ADAM},
    "mnw-sgd": {"method.name": "rmnw-net-probe", "method.meta_loss": "ce", "method.normalize": "sum", **_SGD},
    "adam-slow": {"method.name": "rmnw-net-probe", "method.normalize": "sum", **_ADAM, "method.meta_lr": 1e-4},
    "default": {"method.name": "rmnw-net-probe"},   # the preset's defaults now (= paper-sgd, Nesterov)
    "ce": {"method.name": "erm", "loss.name": "ce"},
}


def run(out: Path, variant: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    over = {"out": str(out), "seed": seed, "train.progress": False, "train.num_threads": 1,
            "data.name": "mnist", "model.name": "lenet", "data.meta_size": 500, "data.meta_set": "noisy",
            "noise.type": args.noise, "noise.rate": args.rate, "train.epochs": args.epochs,
            "optim.name": "sgd", "optim.lr": args.lr, "optim.momentum": 0.9, "optim.weight_decay": 5e-4,
            "optim.schedule": "cosine", "train.batch_size": 64, **VARIANTS[variant]}
    if variant == "warmup":
        over["method.warmup_epochs"] = args.warmup
    for kv in args.set:
        k, v = kv.split("=", 1)
        over[k] = json.loads(v) if v[:1] in "[{0123456789-" or v in ("true", "false", "null") else v
    summary = fit(resolve_config(overrides=over), overwrite=True)
    rows = read_metrics(out)
    return {"summary": summary, "rows": rows}


def _f(v: Any, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", default="uniform")
    ap.add_argument("--rate", type=float, default=0.6)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=["suite", "paper-sgd", "none", "warmup", "ce"])
    ap.add_argument("--set", nargs="*", default=[], help="extra overrides key=value for every run")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(args.out or tempfile.mkdtemp(prefix="rmnw_collapse_"))
    print(f"MNIST-10k LeNet, {args.noise} {args.rate}, {args.epochs} epochs, lr {args.lr}, seeds {args.seeds}; "
          f"runs in {root}", flush=True)
    finals = []
    for variant in args.variants:
        for seed in args.seeds:
            res = run(root / f"{variant}-s{seed}", variant, seed, args)
            print(f"\n#### {variant}, seed {seed}\n")
            print("| epoch | W raw mean [min, max] | w clean | w noisy | AUROC | meta |g_phi| | p_y meta | "
                  f"W({', '.join(map(str, GRID))}) | top class | test acc |")
            print("|---|---|---|---|---|---|---|---|---|---|")
            for r in res["rows"]:
                grid = r.get("probe_W_grid")
                print(f"| {r['epoch']} | {_f(r.get('probe_raw_mean'))} [{_f(r.get('probe_raw_min'))}, "
                      f"{_f(r.get('probe_raw_max'))}] | {_f(r.get('mean_weight_clean'))} | "
                      f"{_f(r.get('mean_weight_noisy'))} | {_f(r.get('detection_auroc'))} | "
                      f"{_f(r.get('probe_meta_grad_norm'), '.2e')} | {_f(r.get('probe_p_y_meta'))} | "
                      f"{'-' if grid is None else ', '.join(f'{g:.3f}' for g in grid)} | "
                      f"{_f(r.get('probe_top_class_share'), '.2f')} | {100 * r['test_accuracy']:.2f} |", flush=True)
            s = res["summary"]
            finals.append((variant, seed, s["test_accuracy"], s["last_test_accuracy"], s.get("detection_auroc"),
                           s["seconds"]))
    print("\n| variant | seed | test acc @ best val | last-epoch test acc | AUROC (selected) | seconds |")
    print("|---|---|---|---|---|---|")
    for v, seed, a, last, auc, sec in finals:
        print(f"| {v} | {seed} | {100 * a:.2f} | {100 * last:.2f} | {_f(auc)} | {sec:.0f} |")


if __name__ == "__main__":
    main()
