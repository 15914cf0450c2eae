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
import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..detect.filter import FILTER_METHODS
from ..detect.relabel import UNSUPPORTED, UNSUPPORTED_DEFAULT, relabel_rule
from ..detect.report import RANK_CHOICES

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
    from ..detect.report import format_summary, load_run_inputs, load_user_inputs, plot_joint, run_detection, write_issues_csv

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
        ([Path(args.run) / n for n in _RUN_INPUTS] if args.run else [])
    for name in _DETECT_OUTPUTS:
        _check_output(out / name, inputs=inputs_read, overwrite=bool(getattr(args, "overwrite", False)))
    from ..train.rundir import register

    for name in _DETECT_OUTPUTS:  # into a run directory: the run's records from now on
        register(out / name)
    result = run_detection(inputs, filter_by=args.filter_by, rank_by=args.rank_by,
                           adjust_pred_probs=args.adjust_pred_probs)
    out.mkdir(parents=True, exist_ok=True)
    write_issues_csv(out / "label_issues.csv", result)
    est = result.estimate
    summary = {"source": inputs.source, "num_samples": len(inputs.labels),
               "num_out_of_sample": int(inputs.held_out.sum()), "estimated_noise_rate": est.noise_rate,
               "estimated_on": result.estimated_on, "estimated_num_issues": result.num_issues_estimate,
               "num_flagged": int(result.is_issue.sum()), "filter_by": result.filter_by, "rank_by": result.rank_by,
               "top_confusions": [{"given": inputs.classes[i], "probably": inputs.classes[j], "fraction": q}
                                  for i, j, q in est.top_confusions(args.top)],
               "joint": est.joint, "classes": inputs.classes, "notes": result.notes,
               "scoring_accuracy": result.scoring_accuracy, "scoring_accuracy_on": result.scoring_reference}
    atomic_write_text(out / "detect_summary.json", json.dumps(to_jsonable(summary), indent=2) + "\n")
    print(format_summary(result, top=args.top))
    try:
        plot_joint(out / "joint.png", result)
        plotted = ", joint.png"
    except Exception as exc:  # a plot must never lose the results
        plotted = f" (no plot: {exc})"
    print(f"  wrote {out / 'label_issues.csv'}, detect_summary.json{plotted}")
    return 0


#: what ``detect`` writes into its ``--out``
_DETECT_OUTPUTS = ("label_issues.csv", "detect_summary.json", "joint.png")
#: the files of a run that ``detect --run`` and ``export`` read
_RUN_INPUTS = ("labels.csv", "pred_probs.npy", "pred_probs.json", "held_out.npy", "method_scores.npy", "config.yaml")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b) or os.path.abspath(a) == os.path.abspath(b)
    except OSError:
        return False


def _check_output(out: Path, *, inputs: list[Path], overwrite: bool) -> None:
    """Refuse to write ``out`` over an input of the same command (even with ``overwrite``), or over
    an existing file that is not a record of a run (unless ``overwrite``)."""
    from ..train.rundir import read_marker

    for src in inputs:
        if _same_file(out, src):
            raise UserError(f"{out} is an input of this command ({src}); it is never written over: choose another "
                            "--out")
    if out.is_dir():
        raise UserError(f"{out} is a folder; choose another --out")
    if out.exists() or out.is_symlink():
        marker = read_marker(out.parent)
        ours = marker is not None and out.name in marker["manifest"] and not out.is_symlink()
        if not (ours or overwrite):
            raise UserError(f"{out} exists; give --overwrite to replace it, or choose another --out")


def _run_label_files(run: Path) -> list[Path]:
    """The label CSVs a run trained from (``data.options.labels_csv`` / ``trusted_csv``)."""
    import yaml

    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
        data = cfg.get("data", {}) or {}
        options = data.get("options") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return []
    out = []
    for key in ("labels_csv", "trusted_csv"):
        if options.get(key):
            p = Path(str(options[key])).expanduser()
            out.append(p)
            if data.get("dir") and not p.is_absolute():
                out.append(Path(str(data["dir"])) / p)
    return out


def _read_issues(run: Path) -> list[dict[str, str]]:
    path = run / "label_issues.csv"
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    need = {"index", "split", "path", "given_name", "suggested_label", "suggested_name", "is_label_issue"}
    if rows and not need <= set(rows[0]):
        raise UserError(f"{path} lacks columns {', '.join(sorted(need - set(rows[0])))}; rerun noisylabels detect")
    return rows


def export_labels(run: str | Path, out: str | Path, *, mode: str, min_confidence: float | None = None,
                  unsupported: str | None = None, overwrite: bool = False) -> dict[str, int]:
    """Write the ``path,label`` CSV of a run's samples after dropping or relabelling its flagged ones.

    Rows: every sample with a source file whose labels came from the user's training images
    (train / validation / meta splits, and the test split when it was carved out of them),
    in ``labels.csv`` order; ``label`` is a class name. Extra columns ``given_label`` and
    ``action`` (``keep`` / ``relabel`` / ``keep_flagged``) are ignored by the reader. Uses the run's
    ``label_issues.csv`` (``noisylabels detect`` or ``train --folds``), running detection with
    the defaults when there is none. An existing ``out`` is refused unless ``overwrite``; an
    input (the run's files, the labels CSV it trained from) never, with or without it.

    ``relabel``: a flagged sample gets its suggested label only where the evidence supports it
    (:func:`noisylabels.detect.relabel.relabel_decisions`): ``p(suggested)`` at least
    ``min_confidence``, by default the threshold calibrated on the out-of-sample probabilities
    (above it the suggestion is right more often than wrong), and never a class the scoring
    models get wrong more often than right out of sample. The other flagged samples keep their
    given label (``unsupported='keep'``, action ``keep_flagged``) or are left out (``'drop'``);
    ``None``: :data:`noisylabels.detect.relabel.UNSUPPORTED_DEFAULT`.

    Returns
    -------
    dict
        Counts: ``kept``, ``relabelled``, ``kept_flagged``, ``dropped``, ``written``; the
        unsupported flagged samples (kept or dropped) split into ``below_threshold`` and
        ``unsupported_class``; with ``relabel`` also the ``threshold`` used,
        whether it was ``calibrated``, the models' out-of-sample ``accuracy``, its ``reference``
        rows and the ``refused_classes``.
    """
    from ..io import csv_cell
    from ..train.records import atomic_write_text  # registers the file in a run's manifest
    from ..detect.report import load_run_inputs, run_detection, write_issues_csv

    run = Path(run)
    if mode not in ("drop", "relabel"):
        raise UserError(f"export mode must be drop or relabel, got {mode!r}")
    if min_confidence is not None:
        if mode != "relabel":
            raise UserError("--min-confidence goes with --relabel")
        if not 0.0 <= float(min_confidence) <= 1.0:
            raise UserError(f"--min-confidence must be in [0, 1], got {min_confidence}")
    if unsupported is not None and mode != "relabel":
        raise UserError("--unsupported goes with --relabel")
    unsupported = UNSUPPORTED_DEFAULT if unsupported is None else unsupported
    if unsupported not in UNSUPPORTED:
        raise UserError(f"--unsupported must be one of {', '.join(UNSUPPORTED)}, got {unsupported!r}")
    out = Path(out)
    _check_output(out, inputs=[run / n for n in (*_RUN_INPUTS, "label_issues.csv")] + _run_label_files(run),
                  overwrite=overwrite)
    from ..train.rundir import read_marker

    if (out.parent.resolve() == run.resolve() and out.name in (read_marker(run) or {}).get("manifest", [])):
        raise UserError(f"{out} is a record of the run {run}; choose another --out")
    inputs = load_run_inputs(run)
    if inputs.paths is None:
        raise UserError(f"{run}: the run's data has no file paths (export writes path,label rows for image-folder, "
                        "zip or labels-CSV data)")
    if not (run / "label_issues.csv").is_file():
        write_issues_csv(run / "label_issues.csv", run_detection(inputs))
    rows = _read_issues(run)
    by_index = {int(r["index"]): r for r in rows}
    info = json.loads((run / "pred_probs.json").read_text()) if (run / "pred_probs.json").is_file() else {}
    test_from_training = bool(info.get("test_from_training_images", False))
    counts: dict[str, Any] = {"kept": 0, "relabelled": 0, "kept_flagged": 0, "dropped": 0, "written": 0,
                              "below_threshold": 0, "unsupported_class": 0, "unsupported": unsupported}
    rule = None
    if mode == "relabel":
        rule = relabel_rule(inputs.labels, inputs.pred_probs, split=inputs.split, held_out=inputs.held_out,
                            min_confidence=min_confidence, test_trusted=inputs.test_trusted)
        counts.update(threshold=rule.threshold, calibrated=rule.calibrated, accuracy=rule.accuracy,
                      reference=rule.reference, refused_classes=[inputs.classes[j] for j in np.flatnonzero(~rule.allowed)])
    lines = ["path,label,given_label,action"]
    for i, idx in enumerate(inputs.index):
        split, path = inputs.split[i] if inputs.split else "", inputs.paths[i]
        if not path or (split == "test" and not test_from_training):
            continue
        r = by_index.get(int(idx))
        if r is None:
            raise UserError(f"{run / 'label_issues.csv'} has no row for index {int(idx)}; rerun noisylabels detect")
        given = inputs.classes[int(inputs.labels[i])]
        label, action = given, "keep"
        if r["is_label_issue"] == "1":
            if mode == "drop":
                counts["dropped"] += 1
                continue
            sug = int(r["suggested_label"])
            assert rule is not None
            if not rule.allowed[sug] or float(inputs.pred_probs[i, sug]) < rule.threshold:
                counts["unsupported_class" if not rule.allowed[sug] else "below_threshold"] += 1
                if unsupported == "drop":
                    counts["dropped"] += 1
                    continue
                action = "keep_flagged"
                counts["kept_flagged"] += 1
            else:
                label, action = inputs.classes[sug], "relabel"
                counts["relabelled"] += 1
        else:
            counts["kept"] += 1
        lines.append(f"{csv_cell(path)},{csv_cell(label)},{csv_cell(given)},{action}")
        counts["written"] += 1
    if counts["written"] == 0:
        raise UserError(f"nothing to export from {run}: every sample was dropped")
    atomic_write_text(out, "\n".join(lines) + "\n")
    return counts


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

