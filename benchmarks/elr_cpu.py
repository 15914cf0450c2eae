"""ELR and ELR+ against CE on the CPU: digits with 40% symmetric noise and CIFAR-10 with human labels.

Each cell is one ``noisylabels train`` command (printed), run in this process one after the other
(one torch thread); the table gives, per cell and averaged over its seeds, the test accuracy at the
best-validation epoch, at the last epoch and over the last 5 epochs, the detection AUROC of the
method's own score (CE: 1 - p(given label) under the selected model), and the seconds::

    nice -n 15 python benchmarks/elr_cpu.py digits --seeds 0 1 2 --out /tmp/elr_digits
    nice -n 15 python benchmarks/elr_cpu.py cifar10n --seeds 0 --out /tmp/elr_c10n
    python benchmarks/elr_cpu.py digits --out /tmp/elr_digits --table   # the table of finished runs

``--cell NAME=ARGS`` adds a cell (``ARGS``: extra command-line words, e.g.
``elr-b9=--method elr --set method.beta=0.9``); ``--only`` runs some cells.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

__all__ = ["main", "SETTINGS", "CELLS"]

SETTINGS = {
    "digits": [],  # the defaults: digits, MLP, symmetric 40%, 30 epochs
    "cifar10n": ["--dataset", "cifar10", "--data-dir", "/work/shared/data", "--set",
                 "data.options.labels_csv=/work/shared/data/cifar10n-random1.csv", "--model", "resnet8",
                 "--set", "data.train_subset=4000", "--epochs", "15"],
}

CELLS = {
    "ce": ["--method", "erm"],
    "elr": ["--method", "elr"],
    "elr-plus": ["--method", "elr-plus"],
}


def _command(setting: str, cell_args: list[str], seed: int, out: Path) -> list[str]:
    return ["train", *SETTINGS[setting], *cell_args, "--seed", str(seed), "--set", "train.num_threads=1",
            "--out", str(out), "--overwrite", "--quiet"]


def _row(name: str, summaries: list[dict]) -> str:
    def mean(key: str) -> str:
        vals = [s[key] for s in summaries if s.get(key) is not None]
        if not vals:
            return "-"
        m = sum(vals) / len(vals)
        spread = f" ± {(max(vals) - min(vals)) / 2 * (100 if key != 'seconds' else 1):.1f}" if len(vals) > 1 else ""
        return f"{100 * m:.2f}{spread}" if key != "seconds" else f"{m:.0f}"
    auroc = [s.get("detection_auroc") for s in summaries if s.get("detection_auroc") is not None]
    au = f"{sum(auroc) / len(auroc):.3f}" if auroc else "-"
    return (f"| {name} | {len(summaries)} | {mean('test_accuracy')} | {mean('last_test_accuracy')} | "
            f"{mean('last5_test_accuracy')} | {au} | {mean('seconds')} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("setting", choices=sorted(SETTINGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cell", action="append", default=[], metavar="NAME=ARGS")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--table", action="store_true", help="only print the table of the runs under --out")
    args = ap.parse_args(argv)
    cells = dict(CELLS)
    for c in args.cell:
        name, extra = c.split("=", 1)
        cells[name] = shlex.split(extra)
    chosen = [c for c in cells if args.only is None or c in args.only]
    root = Path(args.out)
    if not args.table:
        from noisylabels.cli import main as cli

        for name in chosen:
            for seed in args.seeds:
                cmd = _command(args.setting, cells[name], seed, root / f"{name}-s{seed}")
                print("noisylabels " + shlex.join(cmd), flush=True)
                if cli(cmd) != 0:
                    print(f"  {name} seed {seed} failed", flush=True)
    print(f"\n{args.setting}: seeds {args.seeds} (± half the range over seeds)\n")
    print("| cell | runs | best-val test acc | last | last-5 | detection AUROC | s |")
    print("|---|---|---|---|---|---|---|")
    for name in chosen:
        summaries = []
        for seed in args.seeds:
            p = root / f"{name}-s{seed}" / "summary.json"
            if p.is_file():
                s = json.loads(p.read_text())
                if s.get("status") == "finished":
                    summaries.append(s)
        if summaries:
            print(_row(name, summaries), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
