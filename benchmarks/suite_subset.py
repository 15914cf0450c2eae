"""Run some cells of a shipped suite one after another (one process, one thread) and tabulate them.

The harness runs a whole suite in parallel workers; on a shared 2-core machine this script runs a
chosen subset (labels per axis) sequentially with one torch thread, skips finished runs, adds the
mean test accuracy of the last five epochs (from ``metrics.jsonl``) where a summary lacks it, and
prints the suite's tables for the subset. This is how the CPU-tier tables of issue 11 were made::

    python benchmarks/suite_subset.py rmnw --out /tmp/rerun/rmnw --seeds 0 1 \
        --keep "noise=unif 0.6|flip2 0.4"
    python benchmarks/suite_subset.py gce --out /tmp/rerun/gce --seeds 0 1 \
        --keep "noise=unif 0.4|unif 0.8" "method=CCE|MAE|Lq|Trunc Lq"
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch

from noisylabels.bench import load_suite
from noisylabels.bench.harness import tabulate
from noisylabels.config import resolve_config
from noisylabels.train import fit, read_metrics

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--keep", nargs="*", default=[], help="axis=label1|label2 (axes not named: every label)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    suite = load_suite(args.suite)
    keep = dict((k.split("=", 1)[0], k.split("=", 1)[1].split("|")) for k in args.keep)
    axes = {ax: [e for e in entries if ax not in keep or str(e["label"]) in keep[ax]]
            for ax, entries in suite.axes.items()}
    suite = dataclasses.replace(suite, axes=axes)
    results = {}
    for cell in suite.cells():
        for seed in args.seeds:
            out = Path(args.out) / cell.key / f"seed-{seed}"
            cfg = resolve_config(overrides={**suite.base, **dict(cell.overrides), "seed": seed, "out": str(out),
                                            "train.progress": False, "train.num_threads": 1})
            done = out / "summary.json"
            s = json.loads(done.read_text()) if done.is_file() else {}
            if s.get("status") != "finished":
                resume = (out / "checkpoint.pt").is_file()
                s = fit(cfg, resume=resume, overwrite=not resume)
            rows = read_metrics(out)
            s.setdefault("last5_test_accuracy", statistics.fmean(r["test_accuracy"] for r in rows[-5:]))
            results[(cell.key, seed)] = s
            print(f"{cell.key} seed {seed}: best-val {s['test_accuracy']:.4f} last {s['last_test_accuracy']:.4f} "
                  f"({s['seconds']:.0f} s)", flush=True)
    md, _ = tabulate(suite, results, args.seeds)
    print(md)
    (Path(args.out) / "table.md").write_text(md)


if __name__ == "__main__":
    main()
