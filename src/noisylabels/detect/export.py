"""Export a run's labels after detection: the ``path,label`` CSV ``data.options.labels_csv`` reads.

:func:`export_labels` (``noisylabels export``) drops or relabels the samples a run's
``label_issues.csv`` flags, so train -> detect -> export -> retrain is four commands;
:func:`check_output` is the rule both ``detect`` and ``export`` follow before writing a file
(never over one of the command's inputs; over an existing file only if it is a run's record or
``overwrite`` is given).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import UserError
from ..io import csv_cell
from .relabel import UNSUPPORTED, UNSUPPORTED_DEFAULT, relabel_rule
from .report import load_run_inputs, run_detection, write_issues_csv

__all__ = ["export_labels", "check_output", "DETECT_OUTPUTS", "RUN_INPUTS"]

#: what ``detect`` writes into its ``--out``
DETECT_OUTPUTS = ("label_issues.csv", "detect_summary.json", "joint.png")
#: the files of a run that ``detect --run`` and ``export`` read
RUN_INPUTS = ("labels.csv", "pred_probs.npy", "pred_probs.json", "held_out.npy", "method_scores.npy", "config.yaml")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b) or os.path.abspath(a) == os.path.abspath(b)
    except OSError:
        return False


def check_output(out: Path, *, inputs: list[Path], overwrite: bool) -> None:
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
        ``unsupported_class``; ``unsupported``: the choice applied; with ``relabel`` also the ``threshold`` used,
        whether it was ``calibrated``, the models' out-of-sample ``accuracy``, its ``reference``
        rows and the ``refused_classes``.
    """
    from ..train.records import atomic_write_text  # registers the file in a run's manifest

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
    check_output(out, inputs=[run / n for n in (*RUN_INPUTS, "label_issues.csv")] + _run_label_files(run),
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
