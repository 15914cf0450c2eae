"""The ``detect`` and ``export`` subcommands and ``train --folds`` (wired into :mod:`noisylabels.cli`).

* ``noisylabels detect --run DIR`` or ``--labels FILE --pred-probs probs.npy``: score, count
  and flag every sample; write ``label_issues.csv``, ``joint.png`` and
  ``detect_summary.json`` (into ``--out``, default the run directory or the labels file's
  folder) and print a summary.
* ``noisylabels export --run DIR --drop-issues | --relabel [--min-confidence P] [--unsupported keep|drop] --out clean.csv``:
  the ``path,label`` CSV that ``data.options.labels_csv`` reads, so train -> detect -> export
  -> retrain is four commands.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..detect.export import DETECT_OUTPUTS, RUN_INPUTS, check_output, export_labels
from ..detect.filter import FILTER_METHODS
from ..detect.relabel import UNSUPPORTED, UNSUPPORTED_DEFAULT
from ..detect.report import RANK_CHOICES
from ..errors import UserError

__all__ = ["add_parsers", "cmd_detect", "cmd_export", "cmd_crossfit", "export_labels"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``detect`` and ``export`` to the CLI's subparsers."""
    p = sub.add_parser("detect", help="find the wrong labels: label_issues.csv, a summary and a PNG of the joint")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", help="a finished run directory (noisylabels train [--folds K])")
    src.add_argument("--labels", help="given labels: .npy, or CSV (path,label / label / a run's labels.csv)")
    p.add_argument("--pred-probs", help="(N, K) predicted probabilities, .npy (with --labels; taken as out-of-sample)")
    p.add_argument("--classes", help="class names in pred_probs column order: a,b,c or a file (one per line)")
    p.add_argument("--filter-by", default="prune_by_noise_rate", choices=FILTER_METHODS,
                   help="confident-learning filter for out-of-sample rows (cleanlab's filter_by)")
    p.add_argument("--rank-by", default="self_confidence", choices=RANK_CHOICES,
                   help="score that ranks the rows (method: the training method's own score, e.g. MW-Net weights)")
    p.add_argument("--adjust-pred-probs", action="store_true", help="subtract per-class thresholds before scoring")
    p.add_argument("--out", help="output folder (default: the run directory / the labels file's folder)")
    p.add_argument("--top", type=int, default=5, help="confused class pairs to print")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing label_issues.csv / detect_summary.json / joint.png that are not a run's "
                        "records (an input of the command is never written over)")

    e = sub.add_parser("export", help="write a cleaned path,label CSV (for data.options.labels_csv) from a run")
    e.add_argument("--run", required=True, help="a finished run directory")
    how = e.add_mutually_exclusive_group(required=True)
    how.add_argument("--drop-issues", action="store_true", help="leave out the samples flagged is_label_issue")
    how.add_argument("--relabel", action="store_true",
                     help="give flagged samples their suggested label where the evidence supports it (the others: "
                          "--unsupported)")
    e.add_argument("--min-confidence", type=float, default=None, metavar="P",
                   help="with --relabel: relabel only when p(suggested) >= P (default: the threshold calibrated on the "
                        "out-of-sample probabilities)")
    e.add_argument("--unsupported", choices=UNSUPPORTED, default=None,
                   help=f"with --relabel: a flagged sample whose suggestion is not supported keeps its given label "
                        f"(keep) or is left out (drop); default: {UNSUPPORTED_DEFAULT}")
    e.add_argument("--out", required=True, help="the CSV to write (an existing file is refused unless --overwrite)")
    e.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (never an input: the run's files, the labels CSV it trained on)")


def cmd_detect(args: argparse.Namespace) -> int:
    from ..io import to_jsonable
    from ..train.records import atomic_write_text  # registers the file in a run's manifest
    from ..detect.report import (detection_summary, format_summary, load_run_inputs, load_user_inputs, plot_joint,
                                 run_detection, write_issues_csv)

    if args.run:
        if args.pred_probs:
            raise UserError("--pred-probs goes with --labels, not --run")
        inputs = load_run_inputs(args.run)
        out = Path(args.out or args.run)
    elif args.labels:
        if not args.pred_probs:
            raise UserError("--labels needs --pred-probs (an (N, K) .npy of predicted probabilities)")
        inputs = load_user_inputs(args.labels, args.pred_probs, classes=args.classes)
        out = Path(args.out or Path(args.labels).parent)
    else:
        raise UserError("give --run DIR, or --labels FILE --pred-probs probs.npy")
    if args.top < 0:
        raise UserError(f"--top must be >= 0, got {args.top}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    inputs_read = [Path(p) for p in (args.labels, args.pred_probs, args.classes) if p] + \
        ([Path(args.run) / n for n in RUN_INPUTS] if args.run else [])
    for name in DETECT_OUTPUTS:
        check_output(out / name, inputs=inputs_read, overwrite=bool(getattr(args, "overwrite", False)))
    from ..train.rundir import register

    for name in DETECT_OUTPUTS:  # into a run directory: the run's records from now on
        register(out / name)
    result = run_detection(inputs, filter_by=args.filter_by, rank_by=args.rank_by,
                           adjust_pred_probs=args.adjust_pred_probs)
    out.mkdir(parents=True, exist_ok=True)
    write_issues_csv(out / "label_issues.csv", result)
    summary = detection_summary(result, top=args.top)
    atomic_write_text(out / "detect_summary.json", json.dumps(to_jsonable(summary), indent=2) + "\n")
    print(format_summary(result, top=args.top))
    try:
        plot_joint(out / "joint.png", result)
        plotted = ", joint.png"
    except Exception as exc:  # a plot must never lose the results
        plotted = f" (no plot: {exc})"
    print(f"  wrote {out / 'label_issues.csv'}, detect_summary.json{plotted}")
    return 0



def cmd_export(args: argparse.Namespace) -> int:
    counts = export_labels(args.run, args.out, mode="drop" if args.drop_issues else "relabel",
                           min_confidence=args.min_confidence, unsupported=args.unsupported, overwrite=args.overwrite)
    if args.relabel:
        how = "calibrated: right more often than wrong above it" if counts["calibrated"] else "--min-confidence"
        refused = ", ".join(counts["refused_classes"]) or "none"
        fate = "kept under their given label" if counts["unsupported"] == "keep" else "left out"
        print(f"relabel rule: p(suggested) >= {counts['threshold']:.3f} ({how}); scoring models' out-of-sample "
              f"accuracy {100 * counts['accuracy']:.1f}% on {counts['reference']}; classes never relabelled to "
              f"(precision <= 1/2): {refused}; unsupported ({fate}, --unsupported): {counts['below_threshold']} "
              f"below the threshold, {counts['unsupported_class']} to a refused class")
    flagged_kept = f"{counts['kept_flagged']} flagged kept as given, " if counts["kept_flagged"] else ""
    print(f"wrote {args.out}: {counts['written']} rows ({counts['kept']} kept, {counts['relabelled']} relabelled, "
          f"{flagged_kept}{counts['dropped']} left out); retrain with --set data.options.labels_csv={args.out} "
          f"--noise none")
    return 0


def cmd_crossfit(cfg: dict[str, Any], args: argparse.Namespace) -> int:
    """``noisylabels train --folds K``."""
    from ..detect.crossfit import crossfit
    from ..detect.report import format_summary, load_run_inputs, run_detection

    if args.resume:
        raise UserError("--resume does not apply to --folds (finished folds are reused automatically)")
    summary = crossfit(cfg, folds=args.folds, progress=not args.quiet,
                       overwrite=bool(getattr(args, "overwrite", False)))
    from .common import _noise_text

    print(f"noisylabels cross-fit ({args.folds} folds) {cfg['method']['name']} ({cfg['loss']['name']}, "
          f"{cfg['model']['name']}) on {cfg['data']['name']}, {_noise_text(cfg)}, seed {cfg['seed']}")
    accs = [f["test_accuracy"] for f in summary["fold_runs"] if f["test_accuracy"] is not None]
    if accs:
        print(f"  fold test accuracies        {', '.join(f'{100 * a:.2f}%' for a in accs)}")
    print(format_summary(run_detection(load_run_inputs(cfg["out"]))))
    print(f"  records                     {cfg['out']} (pred_probs.npy, label_issues.csv, joint.png, fold-*/)")
    return 0

