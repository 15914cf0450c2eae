"""Reading what ``noisylabels detect`` scores: a finished run directory or a user's labels and probabilities.

* :func:`load_run_inputs` -- every sample of a finished run (``labels.csv``, ``pred_probs.npy``,
  ``held_out.npy``, ``pred_probs.json``, ``method_scores.npy``; see :mod:`noisylabels.train.scoring`);
* :func:`load_user_inputs` -- a user's labels file (:func:`read_label_file`: ``.npy`` or CSV, ids
  or class names) and probabilities (:func:`read_pred_probs`: ``.npy`` or CSV), taken as out-of-sample.

Every malformed input is a one-line :class:`~noisylabels.errors.UserError`. What is done with the
inputs (scoring, counting, flagging) and what is written is :mod:`noisylabels.detect.report`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UserError
from ..io import describe_bytes, load_npy

__all__ = ["DetectInputs", "load_run_inputs", "load_user_inputs", "read_label_file", "read_pred_probs"]

_LABEL_COLUMNS = ("given_label", "observed_label", "noisy_label", "label", "labels", "noisy", "class", "target", "y")
_PATH_COLUMNS = ("path", "file", "filename", "file_name", "image", "img", "relpath")


@dataclass
class DetectInputs:
    """Labels and probabilities of every sample to score, with what is known about each row."""

    labels: np.ndarray                     # (N,) given labels
    pred_probs: np.ndarray                 # (N, K)
    classes: list[str]
    held_out: np.ndarray                   # (N,) True where the probabilities are out-of-sample
    index: np.ndarray                      # (N,) the row's index in the source (pool index, or row number)
    split: list[str] | None = None
    paths: list[str] | None = None
    is_noisy: np.ndarray | None = None     # ground truth when the noise was simulated
    method_scores: np.ndarray | None = None  # the training method's own suspicion (higher = worse), NaN = none
    source: str = ""
    files_root: str = ""                   # where the paths are relative to, when known
    test_trusted: bool = False             # the "test" rows carry the data set's own labels (not the user's)



def _read_csv(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return [row for row in csv.reader(fh) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"cannot read labels file {path}: {err}") from None


def _parse_classes(classes: str | Sequence[str] | None) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, str):
        p = Path(classes)
        if p.is_file():
            return [line.strip() for line in p.read_text().splitlines() if line.strip()]
        return [c.strip() for c in classes.split(",") if c.strip()]
    return [str(c) for c in classes]


def _is_int(cell: str) -> bool:
    try:
        return float(cell) == int(float(cell))
    except (ValueError, OverflowError):
        return False


def read_label_file(path: str | Path, *, num_classes: int,
                    classes: Sequence[str] | None = None) -> tuple[np.ndarray, list[str] | None, list[str]]:
    """Read given labels, one per ``pred_probs`` row, from ``.npy`` or CSV.

    A CSV with a header uses the first of the columns ``given_label``, ``observed_label``,
    ``noisy_label``, ``label``, ... and an optional ``path`` column (a run's ``labels.csv`` and
    the ``path,label`` files ``data.options.labels_csv`` reads both work). Without a header:
    one column is the label, two or more are ``path,label``. Labels are ids in ``[0, K)`` or
    class names mapped through ``classes`` (the names in ``pred_probs`` column order); without
    ``classes`` names are refused (no order is guessed) and labels must be the integers ``0..K-1``.

    Returns
    -------
    labels, paths, class names
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"labels file {p} not found")
    paths: list[str] | None = None
    if p.suffix.lower() == ".npy":
        raw = load_npy(p, what="labels file")
        cells = [str(v) for v in np.asarray(raw).reshape(-1)] if np.asarray(raw).ndim == 1 else None
        if cells is None:
            raise UserError(f"labels file {p} must hold a 1-D array, got shape {np.asarray(raw).shape}")
    else:
        rows = _read_csv(p)
        if not rows:
            raise UserError(f"labels file {p} is empty")
        header = [c.strip().lower() for c in rows[0]]
        label_col = next((header.index(c) for c in _LABEL_COLUMNS if c in header), None)
        path_col = next((header.index(c) for c in _PATH_COLUMNS if c in header), None)
        if label_col is not None:
            body = rows[1:]
        else:
            body = rows
            if len(rows[0]) == 1:
                label_col = 0
            else:
                path_col, label_col = 0, 1
        cells = []
        for line, r in enumerate(body, start=2 if body is not rows else 1):
            if label_col >= len(r) or not r[label_col].strip():
                raise UserError(f"labels file {p} line {line}: no label in {r!r}")
            cells.append(r[label_col].strip())
        if path_col is not None:
            paths = [r[path_col].strip() if path_col < len(r) else "" for r in body]
            if not any(paths):
                paths = None
    names = _parse_classes(classes)
    as_int: list[int] | None = []
    for c in cells:
        try:
            as_int.append(int(float(c)) if float(c) == int(float(c)) else None)  # type: ignore[arg-type]
        except ValueError:
            as_int = None
            break
    if as_int is not None and None not in as_int and not (names and all(c in names for c in cells)):
        labels = np.asarray(as_int, dtype=np.int64)
        if names is None:
            names = [str(k) for k in range(num_classes)]
    else:
        if names is None:  # nothing says which column is which name: never guess (e.g. alphabetically)
            example = next(c for c in cells if not _is_int(c))
            raise UserError(f"labels file {p} holds class names (e.g. {example!r}) but nothing says which pred_probs "
                            f"column is which class: pass --classes with the {num_classes} names in column order "
                            "(or keep the run's pred_probs.json beside the probabilities)")
        lookup = {c: k for k, c in enumerate(names)}
        bad = [c for c in cells if c not in lookup]
        if bad:
            raise UserError(f"labels file {p}: unknown class {bad[0]!r}; classes: {', '.join(names)}")
        labels = np.asarray([lookup[c] for c in cells], dtype=np.int64)
    if len(names) != num_classes:
        raise UserError(f"{len(names)} class names given but pred_probs has {num_classes} columns")
    return labels, paths, names


def read_pred_probs(path: str | Path) -> np.ndarray:
    """An ``(N, K)`` array of predicted probabilities from ``.npy`` or CSV (one row per sample, an
    optional header row of class names); a missing or malformed file is a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"pred_probs file {p} not found")
    with open(p, "rb") as fh:
        head = fh.read(512)
    if describe_bytes(head, p.stat().st_size).startswith("a text file"):
        return _probs_from_csv(p)
    arr = load_npy(p, what="pred_probs file")
    if not isinstance(arr, np.ndarray):
        raise UserError(f"pred_probs file {p} must hold one array (.npy), got {type(arr).__name__}")
    return arr


def _classes_beside(probs_path: Path) -> list[str] | None:
    """The ``classes`` of the ``pred_probs.json`` beside a run's ``pred_probs.npy`` (``None``: none there)."""
    meta = probs_path.with_name("pred_probs.json")
    if not meta.is_file():
        return None
    try:
        names = json.loads(meta.read_text())["classes"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"cannot read {meta}: {err}") from None
    if not isinstance(names, list):
        raise UserError(f"{meta}: 'classes' must be a list of class names")
    return [str(c) for c in names]


def _probs_from_csv(p: Path) -> np.ndarray:
    """An (N, K) CSV of probabilities, one row per sample (a header row of class names is skipped)."""
    rows = _read_csv(p)
    values: list[list[float]] = []
    for line, row in enumerate(rows, start=1):
        try:
            values.append([float(c) for c in row])
        except ValueError:
            if line == 1:  # a header
                continue
            raise UserError(f"pred_probs file {p} line {line}: not a row of numbers ({','.join(row)[:80]!r}); "
                            "expected one row of K probabilities per sample (CSV) or a .npy array") from None
    if not values or len({len(v) for v in values}) != 1:
        raise UserError(f"pred_probs file {p}: expected rows of K probabilities, all of the same length "
                        f"(got {sorted({len(v) for v in values})} values per row)")
    return np.asarray(values, dtype=np.float64)


def load_user_inputs(labels_path: str | Path, probs_path: str | Path, *,
                     classes: str | Sequence[str] | None = None) -> DetectInputs:
    """A user's labels file and ``pred_probs.npy`` (rows aligned; probabilities taken as out-of-sample)."""
    probs = read_pred_probs(probs_path)
    if probs.ndim != 2:
        raise UserError(f"pred_probs file {probs_path} must hold an (N, K) array, got shape {probs.shape}")
    if classes is None:  # a run's probabilities carry their column names beside them
        classes = _classes_beside(Path(probs_path))
    labels, paths, names = read_label_file(labels_path, num_classes=probs.shape[1], classes=classes)
    if len(labels) != len(probs):
        raise UserError(f"labels file {labels_path} has {len(labels)} labels but pred_probs has {len(probs)} rows")
    return DetectInputs(labels=labels, pred_probs=probs, classes=names, held_out=np.ones(len(labels), bool),
                        index=np.arange(len(labels)), paths=paths, source=str(labels_path))


def _run_array(p: Path, *, rows: int, kind: str) -> np.ndarray:
    """A run's 1-D per-row array (``held_out.npy``, ``method_scores.npy``), checked: a file edited
    or replaced since the run wrote it is a one-line error."""
    arr = load_npy(p, what="run file")
    if not isinstance(arr, np.ndarray) or arr.ndim != 1 or len(arr) != rows or arr.dtype.kind not in kind:
        got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise UserError(f"run file {p} must hold {rows} {'booleans' if kind == 'b' else 'numbers'}, one per row of "
                        f"labels.csv, got {got}: it was changed after the run wrote it (train again)")
    return arr


def load_run_inputs(run_dir: str | Path) -> DetectInputs:
    """Every sample of a finished run (``noisylabels train`` or ``train --folds``)."""
    d = Path(run_dir)
    if not d.is_dir():
        raise UserError(f"run directory {d} does not exist")
    for name in ("labels.csv", "pred_probs.npy"):
        if not (d / name).is_file():
            raise UserError(f"{d} has no {name}: not a finished run (train it to the end, or use "
                            "--labels/--pred-probs)")
    probs = read_pred_probs(d / "pred_probs.npy")
    rows = _read_csv(d / "labels.csv")
    header = [c.strip() for c in rows[0]] if rows else []
    need = ("index", "split", "observed_label", "clean_label")
    if any(c not in header for c in need):
        raise UserError(f"{d / 'labels.csv'} lacks the columns {', '.join(need)}")
    col = {c: header.index(c) for c in header}
    body = rows[1:]
    if len(body) != len(probs):
        raise UserError(f"{d}: labels.csv has {len(body)} rows but pred_probs.npy {len(probs)}")
    try:
        labels = np.asarray([int(r[col["observed_label"]]) for r in body], dtype=np.int64)
        clean = np.asarray([int(r[col["clean_label"]]) for r in body], dtype=np.int64)
        index = np.asarray([int(r[col["index"]]) for r in body], dtype=np.int64)
        noisy = np.asarray([int(r[col["is_noisy"]]) for r in body], dtype=bool) if "is_noisy" in col else labels != clean
    except (ValueError, IndexError) as err:
        raise UserError(f"{d / 'labels.csv'}: malformed row ({err})") from None
    split = [r[col["split"]] for r in body]
    paths = [r[col["path"]] if col["path"] < len(r) else "" for r in body] if "path" in col else None
    if paths is not None and not any(paths):
        paths = None
    held = _run_array(d / "held_out.npy", rows=len(body), kind="b") if (d / "held_out.npy").is_file() else \
        np.asarray([s != "train" for s in split])
    classes = [str(k) for k in range(probs.shape[1])]
    if (d / "pred_probs.json").is_file():
        try:
            classes = [str(c) for c in json.loads((d / "pred_probs.json").read_text())["classes"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"cannot read {d / 'pred_probs.json'}: {err}") from None
    scores = _run_array(d / "method_scores.npy", rows=len(body), kind="biuf") \
        if (d / "method_scores.npy").is_file() else None
    try:
        info = json.loads((d / "pred_probs.json").read_text()) if (d / "pred_probs.json").is_file() else {}
    except (OSError, ValueError):
        info = {}
    test_trusted = isinstance(info, dict) and "test_from_training_images" in info and \
        not bool(info["test_from_training_images"])
    simulated, root = True, ""
    if (d / "config.yaml").is_file():
        import yaml

        try:
            cfg = yaml.safe_load((d / "config.yaml").read_text()) or {}
            simulated = str(cfg.get("noise", {}).get("type", "none")).lower() != "none"
            data = cfg.get("data", {}) or {}
            root = str((data.get("options") or {}).get("path") or data.get("dir") or "")
        except (OSError, yaml.YAMLError, AttributeError):
            simulated = False
    return DetectInputs(labels=labels, pred_probs=probs, classes=classes, held_out=np.asarray(held, bool),
                        index=index, split=split, paths=paths, is_noisy=noisy if simulated else None,
                        method_scores=scores, source=str(d), files_root=root if paths is not None else "",
                        test_trusted=test_trusted)
