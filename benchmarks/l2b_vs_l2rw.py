"""L2B versus L2RW with matched warm-up on MNIST-10k, with per-epoch statistics of the weights.

The `l2b` CPU tier's protocol (LeNet, clean meta set of 500, SGD lr 0.05 / momentum 0.9 /
wd 5e-4, cosine, batch 64, gradient norm clipped at 0.25, symmetric noise that flips to another
class) at a longer schedule. Both methods get the same ``--warmup`` epochs of plain CE. Printed
per run and epoch (L2B rows; L2RW has alpha only):

* ``beta share``: the fraction of the batch's weight mass on the pseudo-label terms (sum beta);
* ``mass noisy``: the fraction of the total mass (alpha + beta) on corrupted samples;
* ``alpha noisy / clean``: mean alpha (x batch size) of corrupted and clean samples;
* ``beta good``: of the beta mass on corrupted samples, the fraction whose pseudo-label is the
  clean label (where bootstrapping can help), and ``yhat acc``: pseudo-label accuracy against the
  clean labels on corrupted training samples;
* ``zero``: the fraction of samples with alpha = beta = 0 (rectified away);
* test accuracy.

Variants (``--variants``):

``l2rw``, ``l2b``              the methods as implemented (virtual step = the run's SGD step with
                               momentum and weight decay, at eps = 0 a momentum step ahead)
``l2rw-plain``, ``l2b-plain``  the meta-gradient through a plain SGD step at the current lr, as
                               L2B Eq. 5 and Appendix B.2 (Eqs. 23, 28: gradients at theta_t);
                               done by handing the engine a momentum-free SGD over the same
                               parameters (instrumentation only; the real step is unchanged)
``ce``                         plain cross-entropy

Usage::

    python benchmarks/l2b_vs_l2rw.py --rates 0.4 0.5 --epochs 20 --warmup 2 --seeds 0 1 2 \
        --variants l2rw l2b --out /tmp/l2b_vs_l2rw

Needs the shared MNIST test files; one thread.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

import noisylabels.methods.meta as meta_module
from noisylabels.config import resolve_config
from noisylabels.meta import per_example_weights
from noisylabels.methods import register_method
from noisylabels.methods import L2B, L2RW
from noisylabels.train import fit, read_metrics

__all__ = ["ProbeL2B", "main"]


def _plain_sgd_weights(model, optimizer, **kw):
    """``per_example_weights`` through a momentum-free, weight-decay-free SGD step at the current lr."""
    plain = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                            lr=float(optimizer.param_groups[0]["lr"]), momentum=0.0)
    return per_example_weights(model, plain, **kw)


class _PlainVirtualStep:
    """Mixin: the engine sees a plain SGD optimiser for the meta-gradient when ``plain_virtual``."""

    def __init__(self, *, plain_virtual: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.plain_virtual = bool(plain_virtual)

    def train_step(self, ctx, x, y, index):
        if not self.plain_virtual:
            return super().train_step(ctx, x, y, index)
        meta_module.per_example_weights = _plain_sgd_weights  # what ExampleWeightingMethod calls
        try:
            return super().train_step(ctx, x, y, index)
        finally:
            meta_module.per_example_weights = per_example_weights


@register_method("l2rw-probe", help="L2RW with an optional plain-SGD virtual step (benchmarks/l2b_vs_l2rw.py)")
class ProbeL2RW(_PlainVirtualStep, L2RW):
    pass


@register_method("l2b-probe", help="L2B with per-step statistics (benchmarks/l2b_vs_l2rw.py)")
class ProbeL2B(_PlainVirtualStep, L2B):
    """L2B recording where the weight mass goes (observed vs pseudo-label, clean vs corrupted)."""

    def on_epoch_start(self, ctx) -> None:
        super().on_epoch_start(ctx)
        self._acc: dict[str, list[float]] = {}

    def normalize(self, raw):
        w = super().normalize(raw)
        self._ab = (w[:, 0].detach(), w[:, 1].detach(), raw.detach())
        return w

    def example_losses(self, z, y):
        self._yhat = z.detach().argmax(1)  # the pseudo-label L2B uses (the same forward)
        return super().example_losses(z, y)

    def train_step(self, ctx, x, y, index):
        self._ab = None
        out = super().train_step(ctx, x, y, index)
        if self._ab is not None:
            a, b, raw = self._ab
            noisy = ctx.data.is_noisy[index.cpu()].to(a.device)
            clean_y = ctx.data.clean_labels[index.cpu()].to(a.device)
            tot = float((a + b).sum())
            add = lambda k, v: self._acc.setdefault(k, []).append(float(v))  # noqa: E731
            if tot > 0:
                add("beta_share", b.sum() / tot)
                add("mass_noisy", (a + b)[noisy].sum() / tot)
            good = (self._yhat == clean_y) & noisy
            if float(b[noisy].sum()) > 0:
                add("beta_good", b[good].sum() / b[noisy].sum())
            if noisy.any():
                add("yhat_acc_noisy", (self._yhat[noisy] == clean_y[noisy]).float().mean())
            add("zero", ((a == 0) & (b == 0)).float().mean())
            add("raw_abs", (raw * len(y)).abs().mean())
        return out

    def on_epoch_end(self, ctx) -> dict[str, Any]:
        out = super().on_epoch_end(ctx)
        for k, v in self._acc.items():
            out[f"probe_{k}"] = float(np.mean(v))
        return out


VARIANTS: dict[str, dict[str, Any]] = {
    "l2rw": {"method.name": "l2rw-probe"},
    "l2rw-plain": {"method.name": "l2rw-probe", "method.plain_virtual": True},
    "l2b": {"method.name": "l2b-probe"},
    "l2b-plain": {"method.name": "l2b-probe", "method.plain_virtual": True},
    "ce": {"method.name": "erm", "loss.name": "ce"},
}


def run(out: Path, variant: str, rate: float, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    over = {"out": str(out), "seed": seed, "train.progress": False, "train.num_threads": 1,
            "data.name": "mnist", "model.name": "lenet", "data.meta_size": 500, "data.meta_set": "clean",
            "noise.type": "symmetric", "noise.rate": rate, "train.epochs": args.epochs,
            "optim.name": "sgd", "optim.lr": 0.05, "optim.momentum": 0.9, "optim.weight_decay": 5e-4,
            "optim.schedule": "cosine", "train.batch_size": 64, "train.clip_grad_norm": args.clip,
            **VARIANTS[variant]}
    if variant != "ce":
        over["method.warmup_epochs"] = args.warmup
    summary = fit(resolve_config(overrides=over), overwrite=True)
    rows = read_metrics(out)
    return {"summary": summary, "rows": rows}


def _f(v: Any, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[0.4])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--clip", type=float, default=0.25)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=["l2rw", "l2b"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(args.out or tempfile.mkdtemp(prefix="l2b_vs_l2rw_"))
    print(f"MNIST-10k LeNet, symmetric {args.rates}, {args.epochs} epochs, warm-up {args.warmup}, clip {args.clip}, "
          f"seeds {args.seeds}; runs in {root}", flush=True)
    finals: dict[tuple[str, float], list[tuple[float, float, float]]] = {}
    for rate in args.rates:
        for variant in args.variants:
            for seed in args.seeds:
                res = run(root / f"{variant}-r{rate}-s{seed}", variant, rate, seed, args)
                print(f"\n#### {variant}, sym {rate}, seed {seed}\n")
                print("| epoch | beta share | mass noisy | alpha noisy | alpha clean | beta good | yhat acc | "
                      "zero | test acc |")
                print("|---|---|---|---|---|---|---|---|---|")
                for r in res["rows"]:
                    print(f"| {r['epoch']} | {_f(r.get('probe_beta_share'))} | {_f(r.get('probe_mass_noisy'))} | "
                          f"{_f(r.get('mean_weight_noisy'))} | {_f(r.get('mean_weight_clean'))} | "
                          f"{_f(r.get('probe_beta_good'))} | {_f(r.get('probe_yhat_acc_noisy'))} | "
                          f"{_f(r.get('probe_zero'))} | {100 * r['test_accuracy']:.2f} |", flush=True)
                s = res["summary"]
                last5 = statistics.fmean(r["test_accuracy"] for r in res["rows"][-5:])
                finals.setdefault((variant, rate), []).append((s["test_accuracy"], s["last_test_accuracy"], last5))
                print(f"best-val {100 * s['test_accuracy']:.2f}, last {100 * s['last_test_accuracy']:.2f}, "
                      f"last-5 {100 * last5:.2f}, {s['seconds']:.0f} s", flush=True)
    print("\n| variant | sym rate | n | test @ best val | last epoch | last-5 mean |")
    print("|---|---|---|---|---|---|")
    for (variant, rate), vals in finals.items():
        cols = []
        for k in range(3):
            xs = [100 * v[k] for v in vals]
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            cols.append(f"{statistics.fmean(xs):.2f} ± {sd:.2f}")
        print(f"| {variant} | {rate} | {len(vals)} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()
