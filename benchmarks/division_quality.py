"""DivideMix's division quality, per epoch, read from run directories (issue 23).

A pure reader: it trains nothing. For every run directory given it prints

(a) one row per epoch: test accuracy and, for each network (``a``: the run's model, ``b``: the
    peer), the division at the start of the epoch (DivideMix Sec. 3.1, Algorithm 1: the samples with
    ``w_i > p_threshold`` under that network's GMM fit, which form the *other* network's labelled set):
    its labelled fraction, and its precision and recall against the truly clean samples
    (``division_{a,b}_{labelled_fraction,precision,recall}`` in ``metrics.jsonl``, written by
    :class:`noisylabels.methods.DivideMix` when the labels have ground truth; ``-`` in warm-up epochs
    and for methods without a division), and the AUROC of the epoch's ``1 - w`` (mean of both
    networks) for the wrong labels (``detection_auroc``): the ranking quality the division thresholds;
    with ``--top F``, also the precision of the ``F`` fraction of training samples of highest ``w``
    (``sample_records.npz`` ``clean_prob`` against ``labels.csv`` ``is_noisy``): what a stricter
    threshold than ``p_threshold`` would have kept;
(b) one summary row per run: test accuracy at the best noisy-validation epoch (the first epoch of
    highest ``val_accuracy``: the loop's rule), last-epoch and last-5 mean test accuracy (computed
    from ``metrics.jsonl``, so a run stopped early is summarised at the epochs it reached), the
    detection AUROC (``summary.json``'s, from the final scores; for a run stopped before its end,
    the last epoch's ``detection_auroc`` in ``metrics.jsonl``, marked ``*``), and the clean fraction
    of the training split (``1 - realized_noise_rate``), the precision a division picking at random
    would have.

``--mean`` adds the mean of the summary columns over runs of the same dataset and method (seeds).

Usage::

    python3 benchmarks/division_quality.py RUN_DIR [RUN_DIR ...] [--mean] [--no-epochs] [--top 0.5]

The measurements of issue 23 (2 shared CPU cores, ``nice -n 15``, ``train.num_threads=1``, one run
at a time) and their tables are in ``benchmarks/realnoise_findings.md``, section "DivideMix division
quality".
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from noisylabels.errors import UserError
from noisylabels.io.jsonable import read_metrics

__all__ = ["RunSummary", "NETWORKS", "DIVISION_FIELDS", "read_run", "epoch_rows", "top_precision", "summarize", "mean_rows",
           "format_epochs", "format_summaries", "main"]

NETWORKS = ("a", "b")
DIVISION_FIELDS = ("labelled_fraction", "precision", "recall")
LAST_K = 5


@dataclass(frozen=True)
class RunSummary:
    """One run's summary row (accuracies are fractions; ``None``: not available)."""

    name: str
    dataset: str
    method: str
    status: str
    epochs: int
    best_epoch: int | None
    best_val_test_accuracy: float | None
    last_test_accuracy: float | None
    last5_test_accuracy: float | None
    detection_auroc: float | None
    auroc_from_epoch: bool
    clean_fraction: float | None


def read_run(run_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(metrics rows, summary)`` of a run directory (the summary ``{}`` when it has none)."""
    path = Path(run_dir)
    if not (path / "metrics.jsonl").is_file():
        raise UserError(f"{path}: no metrics.jsonl (not a training run directory)")
    rows = read_metrics(path)
    summary_path = path / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return rows, summary


def epoch_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per epoch: ``epoch``, ``test_accuracy`` and ``{a,b}_{labelled_fraction,precision,recall}``
    (``None`` where the epoch has no division)."""
    out = []
    for r in rows:
        row = {"epoch": r.get("epoch"), "test_accuracy": r.get("test_accuracy"), "w_auroc": r.get("detection_auroc")}
        for net in NETWORKS:
            for f in DIVISION_FIELDS:
                row[f"{net}_{f}"] = r.get(f"division_{net}_{f}")
        out.append(row)
    return out


def top_precision(run_dir: str | Path, fraction: float) -> dict[int, float]:
    """Per recorded epoch: the fraction of truly clean samples among the ``ceil(fraction * N)``
    training samples of highest ``clean_prob`` (ties: the lower index first); ``{}`` for a run
    without ``clean_prob`` records or ground truth."""
    path = Path(run_dir)
    if not 0.0 < fraction <= 1.0:
        raise UserError(f"--top must lie in (0, 1], got {fraction}")
    if not (path / "sample_records.npz").is_file() or not (path / "labels.csv").is_file():
        return {}
    with np.load(path / "sample_records.npz", allow_pickle=False) as rec:
        if "clean_prob" not in rec.files:
            return {}
        epochs, index, w = rec["epochs"], rec["index"], rec["clean_prob"]
    with open(path / "labels.csv", newline="") as fh:
        noisy = {int(r["index"]): r["is_noisy"] for r in csv.DictReader(fh)}
    if any(noisy.get(int(i), "") not in ("0", "1") for i in index):
        return {}                                         # no ground truth for these samples
    clean = np.array([noisy[int(i)] == "0" for i in index])
    k = max(1, math.ceil(fraction * len(index)))
    return {int(e): float(clean[np.argsort(-w[j], kind="stable")[:k]].mean()) for j, e in enumerate(epochs)}


def summarize(run_dir: str | Path) -> RunSummary:
    """The summary row of one run directory (see the module docstring for each column's rule)."""
    rows, summary = read_run(run_dir)
    scored = [r for r in rows if r.get("test_accuracy") is not None]
    best = None
    for r in rows:
        v = r.get("val_accuracy")
        if v is not None and (best is None or v > best["val_accuracy"]):
            best = r
    tail = [r["test_accuracy"] for r in scored[-LAST_K:]]
    finished = summary.get("status") == "finished"
    auroc, from_epoch = (summary.get("detection_auroc") if finished else None), False
    if auroc is None:
        per_epoch = [r["detection_auroc"] for r in rows if r.get("detection_auroc") is not None]
        auroc, from_epoch = (per_epoch[-1], True) if per_epoch else (None, False)
    noise = summary.get("realized_noise_rate")
    return RunSummary(
        name=Path(run_dir).name, dataset=str(summary.get("dataset", "?")), method=str(summary.get("method", "?")),
        status=str(summary.get("status", "no summary")), epochs=len(rows),
        best_epoch=None if best is None else best.get("epoch"),
        best_val_test_accuracy=None if best is None else best.get("test_accuracy"),
        last_test_accuracy=scored[-1]["test_accuracy"] if scored else None,
        last5_test_accuracy=sum(tail) / len(tail) if len(tail) == LAST_K else None,
        detection_auroc=auroc, auroc_from_epoch=from_epoch,
        clean_fraction=None if noise is None else 1.0 - float(noise))


def mean_rows(summaries: Sequence[RunSummary]) -> list[tuple[str, str, int, dict[str, float | None]]]:
    """``(dataset, method, n_runs, {column: mean})`` per (dataset, method), in first-seen order; a
    column's mean is ``None`` when any run lacks it."""
    groups: dict[tuple[str, str], list[RunSummary]] = {}
    for s in summaries:
        groups.setdefault((s.dataset, s.method), []).append(s)
    out = []
    for (dataset, method), runs in groups.items():
        means: dict[str, float | None] = {}
        for col in ("best_val_test_accuracy", "last_test_accuracy", "last5_test_accuracy", "detection_auroc"):
            vals = [getattr(s, col) for s in runs]
            means[col] = None if any(v is None for v in vals) else sum(vals) / len(vals)
        out.append((dataset, method, len(runs), means))
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def format_epochs(name: str, rows: Sequence[dict[str, Any]], *, top: dict[int, float] | None = None,
                  fraction: float | None = None) -> str:
    """The per-epoch table of one run, markdown (percentages; AUROC as a fraction); ``top``: the
    :func:`top_precision` column at ``fraction``."""
    head = ["epoch", "test acc"] + [f"{net}: {lab}" for net in NETWORKS for lab in ("labelled", "prec", "recall")]
    head += ["w AUROC"] + ([f"prec top {100 * fraction:g}%"] if top is not None else [])
    lines = [f"{name}", "", "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in epoch_rows(rows):
        cells = [str(r["epoch"]), _pct(r["test_accuracy"])]
        cells += [_pct(r[f"{net}_{f}"]) for net in NETWORKS for f in DIVISION_FIELDS]
        cells += [_num(r["w_auroc"])] + ([_pct(top.get(r["epoch"]))] if top is not None else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_summaries(summaries: Sequence[RunSummary], *, mean: bool = False) -> str:
    """The summary table (one row per run, and with ``mean`` one per dataset and method), markdown."""
    head = ["run", "method", "status", "epochs", "best-val test acc (epoch)", "last", "last-5", "detection AUROC",
            "clean fraction"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for s in summaries:
        best = "-" if s.best_val_test_accuracy is None else f"{_pct(s.best_val_test_accuracy)} ({s.best_epoch})"
        auroc = _num(s.detection_auroc) + ("*" if s.auroc_from_epoch else "")
        lines.append("| " + " | ".join([s.name, s.method, s.status, str(s.epochs), best, _pct(s.last_test_accuracy),
                                        _pct(s.last5_test_accuracy), auroc, _pct(s.clean_fraction)]) + " |")
    if mean:
        for dataset, method, n, m in mean_rows(summaries):
            lines.append("| " + " | ".join([f"mean of {n} ({dataset})", method, "", "",
                                            _pct(m["best_val_test_accuracy"]), _pct(m["last_test_accuracy"]),
                                            _pct(m["last5_test_accuracy"]), _num(m["detection_auroc"]), ""]) + " |")
    if any(s.auroc_from_epoch for s in summaries):
        lines.append("\n`*`: the run stopped before its end; the AUROC of its last epoch's scores (metrics.jsonl).")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories (noisylabels train --out)")
    parser.add_argument("--mean", action="store_true", help="add the mean over runs of the same dataset and method")
    parser.add_argument("--no-epochs", action="store_true", help="print the summary table only")
    parser.add_argument("--top", type=float, default=None, metavar="F",
                        help="add the precision of the F fraction of samples of highest clean_prob per epoch")
    args = parser.parse_args(argv)
    try:
        if not args.no_epochs:
            for run in args.runs:
                top = None if args.top is None else top_precision(run, args.top)
                print(format_epochs(Path(run).name, read_run(run)[0], top=top, fraction=args.top))
                print()
        print(format_summaries([summarize(r) for r in args.runs], mean=args.mean))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
