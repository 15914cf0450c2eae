"""Co-teaching and Co-teaching+ against CE on the CPU tier: digits with simulated noise, CIFAR-10 with
the CIFAR-10N human labels (issue 22).

Runs one at a time with the library's loop (``noisylabels.train.fit``, with the forget-rate
estimate hook) into ``--runs``; a finished run is reused. ``table`` prints, per row, the
best-validation / last / last-5 test accuracy (mean +- sd over seeds), the detection AUROC of the
method's score (CE: 1 - p(given) under the selected model; Co-teaching: the small-loss record)
and of the selected model's confidence, the last epoch's selection precision (clean fraction of
what the networks trained on) and recall (fraction of the clean samples trained on), tau and the
seconds per run::

    nice -n 15 python3 benchmarks/coteaching_cpu.py run --part digits
    nice -n 15 python3 benchmarks/coteaching_cpu.py run --part cifar --data-dir ../shared/data
    python3 benchmarks/coteaching_cpu.py table
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

METHODS = ("erm", "coteaching", "coteaching-plus")
DIGITS_NOISE = (("symmetric", 0.4), ("pair", 0.4))
#: (row name, method settings): the defaults, then Co-teaching+ with the official code's schedule / init epochs
DIGITS_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("erm", {"method.name": "erm"}), ("coteaching", {"method.name": "coteaching"}),
    ("coteaching-plus", {"method.name": "coteaching-plus"}),
    ("coteaching-plus-code", {"method.name": "coteaching-plus", "method.schedule": "code"}),
    ("coteaching-plus-init10", {"method.name": "coteaching-plus", "method.init_epochs": 10}),
)


def digits_rows(seeds: list[int]) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for noise, rate in DIGITS_NOISE:
        for name, settings in DIGITS_VARIANTS:
            for seed in seeds:
                rows.append((f"digits-{noise}{rate}-{name}-s{seed}",
                             {"data.name": "digits", "noise.type": noise, "noise.rate": rate, **settings,
                              "seed": seed}))
    return rows


def cifar_rows(data_dir: str, epochs: int, subset: int) -> list[tuple[str, dict[str, Any]]]:
    base = {"data.name": "cifar10", "data.dir": data_dir, "noise.type": "none", "model.name": "resnet8",
            "data.options.labels_csv": str(Path(data_dir) / "cifar10n-random1.csv"), "data.train_subset": subset,
            "train.epochs": epochs}
    return [(f"cifar10n-{m}", {**base, "method.name": m, **({"method.forget_rate": "estimate"} if m != "erm" else {})})
            for m in METHODS]


def run(args: argparse.Namespace) -> None:
    from noisylabels.config import load_config, resolve_config
    from noisylabels.detect import resolve_forget_rate
    from noisylabels.train import fit

    runs = Path(args.runs)
    rows = digits_rows(args.seeds) if args.part == "digits" else cifar_rows(args.data_dir, args.epochs, args.subset)
    estimated: float | None = None
    for name, over in rows:
        out = runs / name
        done = out / "summary.json"
        if done.is_file() and json.loads(done.read_text()).get("status") == "finished":
            print(f"{name}: done", flush=True)
        else:
            if over.get("method.forget_rate") == "estimate" and estimated is not None:
                over = {**over, "method.forget_rate": estimated}  # the same warm-up's number: estimated once
            cfg = resolve_config(overrides={**over, "out": str(out), "train.num_threads": args.threads,
                                            "train.progress": "lines" if args.verbose else False})
            s = fit(cfg, overwrite=True, resolve=resolve_forget_rate)
            print(f"{name}: test {s['test_accuracy']:.4f} last {s['last_test_accuracy']:.4f} "
                  f"({s['seconds']:.0f} s)", flush=True)
        if over.get("method.forget_rate") == "estimate":
            estimated = float(load_config(out / "config.yaml")["method"]["forget_rate"])


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    m = 100 * statistics.mean(values)
    return f"{m:.2f}" if len(values) == 1 else f"{m:.2f} ± {100 * statistics.stdev(values):.2f}"


def table(args: argparse.Namespace) -> None:
    runs = Path(args.runs)
    groups: dict[str, list[Path]] = {}
    for d in sorted(runs.iterdir()):
        if (d / "summary.json").is_file():
            groups.setdefault(d.name.rsplit("-s", 1)[0] if d.name.startswith("digits") else d.name, []).append(d)
    print("| row | runs | best-val test | last test | last-5 test | detection AUROC (method, selected epoch) | "
          "AUROC (method, last epoch) | AUROC (confidence) | selection precision / recall (last epoch) | tau | s/run |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for key, dirs in groups.items():
        ss = [json.loads((d / "summary.json").read_text()) for d in dirs]
        ss = [s for s in ss if s.get("status") == "finished"]
        if not ss:
            continue
        lasts = [json.loads((d / "metrics.jsonl").read_text().splitlines()[-1]) for d in dirs]
        prec = [r["selection_precision"] for r in lasts if r.get("selection_precision") is not None]
        rec = [r["selection_recall"] for r in lasts if r.get("selection_recall") is not None]
        conf = [s.get("confidence_detection_auroc", s.get("detection_auroc")) for s in ss]
        taus = sorted({round(s["tau"], 3) for s in ss if s.get("tau") is not None})
        print(f"| {key} | {len(ss)} | {_fmt([s['test_accuracy'] for s in ss])} | "
              f"{_fmt([s['last_test_accuracy'] for s in ss])} | {_fmt([s['last5_test_accuracy'] for s in ss])} | "
              f"{_fmt([s['detection_auroc'] for s in ss])} | "
              f"{_fmt([r['detection_auroc'] for r in lasts if r.get('detection_auroc') is not None]) if key.find('erm') < 0 else '-'} | "
              f"{_fmt(conf)} | "
              f"{(_fmt(prec) + ' / ' + _fmt(rec)) if prec else '-'} | {', '.join(map(str, taus)) or '-'} | "
              f"{statistics.mean(s['seconds_total'] for s in ss):.0f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--part", choices=("digits", "cifar"), required=True)
    r.add_argument("--runs", default="runs/coteaching_cpu")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    r.add_argument("--epochs", type=int, default=15)
    r.add_argument("--subset", type=int, default=4000)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--verbose", action="store_true")
    t = sub.add_parser("table")
    t.add_argument("--runs", default="runs/coteaching_cpu")
    args = p.parse_args(argv)
    (run if args.cmd == "run" else table)(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
