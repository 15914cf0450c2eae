"""Which score should a user trust to find wrong labels? Detection AUROC / AP and the error of
the estimated number of wrong labels, on the training split, for:

(a) in-sample CE: the selected model of an ordinary run scores the samples it trained on;
    counts: confident learning on those in-sample probabilities, and ``noisylabels detect``'s
    default for such runs (noise rate estimated on the held-out validation split);
(b) cross-fitted CE: ``--folds 5`` out-of-sample probabilities (confident learning's count);
(c) cleanlab 2.x on the same cross-fitted probabilities (``filter.find_label_issues``,
    ``count.num_label_issues``), when installed -- it must equal (b) exactly;
(d) the meta methods' own scores: MW-Net's weight and L2B's alpha on the observed label
    (``method_scores.npy``, minus the weight of the selected epoch), and their models'
    in-sample self-confidence.

Every run uses one process and one torch thread. Usage::

    python benchmarks/detect_scores.py [--datasets digits mnist] [--noise symmetric pair]
        [--rates 0.2 0.4] [--seed 0] [--folds 5] [--out /tmp/detect_scores] [--no-meta]

MNIST-10k needs the shared MNIST test files (a 10,000-image pool split into train/val/test).
Prints a markdown table: AUROC, AP, and for each count ``estimate / true (relative error)``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from noisylabels.config import resolve_config
from noisylabels.detect import estimate_noise, find_label_issues, label_quality_scores, num_label_issues
from noisylabels.detect.report import load_run_inputs, run_detection
from noisylabels.eval.metrics import detection_auroc, detection_average_precision
from noisylabels.train import fit
from noisylabels.train.crossfit import crossfit

__all__ = ["main"]


def _base(args, dataset: str, noise: str, rate: float, out: Path) -> dict:
    over = {"out": str(out), "seed": args.seed, "train.progress": False, "train.num_threads": 1,
            "noise.type": noise, "noise.rate": rate, "train.checkpoint": False}
    if dataset == "mnist":
        over.update({"data.name": "mnist", "train.epochs": args.mnist_epochs})
    return over


def _train_rows(run: Path):
    inp = load_run_inputs(run)
    tr = np.asarray(inp.split) == "train"
    return inp, tr


def _fmt_count(est: int, true: int) -> str:
    return f"{est} / {true} ({100 * (est - true) / max(true, 1):+.0f}%)"


def _metrics(score_bad: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    return detection_auroc(score_bad, truth), detection_average_precision(score_bad, truth)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["digits", "mnist"])
    p.add_argument("--noise", nargs="+", default=["symmetric", "pair"])
    p.add_argument("--rates", nargs="+", type=float, default=[0.2, 0.4])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--mnist-epochs", type=int, default=15)
    p.add_argument("--no-meta", action="store_true", help="skip the meta methods (d)")
    p.add_argument("--out", default="/tmp/detect_scores")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out_root = Path(args.out)
    try:
        from cleanlab import count as cl_count
        from cleanlab import filter as cl_filter
    except ImportError:
        cl_filter = cl_count = None
    lines = ["| data | noise | score | AUROC | AP | count: estimate / true (error) | flags: precision / recall |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    records = []
    for dataset in args.datasets:
        for noise in args.noise:
            for rate in args.rates:
                tag = f"{dataset}-{noise}-{rate}"
                t0 = time.perf_counter()
                cell = f"| {dataset} | {noise} {int(100 * rate)}% |"

                def row(name, bad, truth, count, flags=None):
                    auc, ap = _metrics(bad, truth) if bad is not None else (float("nan"),) * 2
                    fl = "-"
                    if flags is not None:
                        hit = int((flags & truth).sum())
                        fl = f"{hit / max(int(flags.sum()), 1):.3f} / {hit / max(int(truth.sum()), 1):.3f}"
                    lines.append(f"{cell} {name} | {auc:.3f} | {ap:.3f} | {count} | {fl} |")
                    records.append({"cell": tag, "score": name, "auroc": auc, "ap": ap, "count": count, "flags": fl})

                # (a) in-sample
                run = out_root / tag / "erm"
                fit(resolve_config(overrides=_base(args, dataset, noise, rate, run)), overwrite=True)
                inp, tr = _train_rows(run)
                y, pp, truth = inp.labels[tr], inp.pred_probs[tr], inp.is_noisy[tr]
                true_n = int(truth.sum())
                est = estimate_noise(y, pp)
                ins_flags = find_label_issues(y, pp)
                row("(a) in-sample CE, confident learning", -label_quality_scores(y, pp), truth,
                    _fmt_count(est.num_issues, true_n), ins_flags)
                det = run_detection(inp)
                row("(a') in-sample CE, `detect` default (val-split rate)",
                    -label_quality_scores(y, pp), truth, _fmt_count(int(det.is_issue[tr].sum()), true_n),
                    det.is_issue[tr])
                # (b) cross-fitted
                cf = out_root / tag / "crossfit"
                crossfit(resolve_config(overrides=_base(args, dataset, noise, rate, cf)), folds=args.folds,
                         detect=False)
                inp_c, tr_c = _train_rows(cf)
                yc, pc, tc = inp_c.labels[tr_c], inp_c.pred_probs[tr_c], inp_c.is_noisy[tr_c]
                assert np.array_equal(yc, y) and np.array_equal(tc, truth)
                est_c = estimate_noise(yc, pc)
                flags_c = find_label_issues(yc, pc)
                row(f"(b) cross-fitted CE ({args.folds} folds), calibrated count", -label_quality_scores(yc, pc), tc,
                    _fmt_count(est_c.num_issues, true_n), flags_c)
                row("(b) cross-fitted CE, off-diagonal count", -label_quality_scores(yc, pc, method="normalized_margin"),
                    tc, _fmt_count(est_c.num_issues_off_diagonal, true_n) + " (AUROC: normalized margin)")
                # (c) cleanlab
                if cl_filter is not None:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        cl_mask = cl_filter.find_label_issues(yc, pc, n_jobs=1)
                        cl_n = int(cl_count.num_label_issues(yc, pc, estimation_method="off_diagonal_calibrated"))
                    assert np.array_equal(cl_mask, flags_c), "cleanlab's mask differs from noisylabels.detect's"
                    assert cl_n == num_label_issues(yc, pc, estimation_method="off_diagonal_calibrated")
                    row("(c) cleanlab 2.x on (b)'s probabilities", -pc[np.arange(len(yc)), yc], tc,
                        _fmt_count(cl_n, true_n) + " (= b)", cl_mask)
                # (d) meta methods' own scores
                if not args.no_meta:
                    for method in ("mwnet", "l2b"):
                        mrun = out_root / tag / method
                        over = _base(args, dataset, noise, rate, mrun)
                        over.update({"method.name": method})
                        fit(resolve_config(overrides=over), overwrite=True)
                        inp_m, tr_m = _train_rows(mrun)
                        ms = inp_m.method_scores[tr_m]
                        ym, pm, tm = inp_m.labels[tr_m], inp_m.pred_probs[tr_m], inp_m.is_noisy[tr_m]
                        what = "weight" if method == "mwnet" else "alpha"
                        row(f"(d) {method} own score (-{what})", ms, tm, "-")
                        row(f"(d) {method} model, in-sample self-confidence", -label_quality_scores(ym, pm), tm,
                            _fmt_count(estimate_noise(ym, pm).num_issues, int(tm.sum())))
                print(f"[{tag}: {time.perf_counter() - t0:.0f} s]", flush=True)
    print("\n".join(lines))
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "table.md").write_text("\n".join(lines) + "\n")
    (out_root / "table.json").write_text(json.dumps(records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
