"""The detection report ``noisylabels detect`` writes: ``label_issues.csv``, a summary and a PNG.

Inputs are either a finished run directory (``labels.csv``, ``pred_probs.npy``,
``held_out.npy``, ``pred_probs.json``: every sample the user gave, see
:mod:`noisylabels.train.scoring`) or a user's own labels file plus ``pred_probs.npy``.

How the count is chosen (measured: in-sample probabilities rank wrong labels about as well
as cross-fitted ones but count far too few, because the model has fitted the wrong labels):

* every row held out (a cross-fitted run, or the user's own probabilities, taken to be
  out-of-sample): confident learning on all rows, ``find_label_issues(filter_by=...)`` and
  :func:`~noisylabels.detect.count.estimate_noise`;
* some rows in-sample (an ordinary run: the training split was scored by the model that
  fitted it): the noise rate is estimated on the validation split only (held out, labels as
  noisy as training; all held-out rows when it is too small), and the ``rate x n_in-sample``
  lowest-scored in-sample rows are flagged (cleanlab's rank-then-count ``low_*`` filters with
  the count taken from held-out data); each held-out split (validation, meta, test: a test
  split of clean labels should get few flags) gets confident learning of its own.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UserError
from ._validation import check_choice, check_labels_and_probs
from .count import NoiseEstimate, estimate_noise
from .filter import FILTER_METHODS, find_label_issues
from .rank import SCORE_METHODS, _scores
from .relabel import RELIABLE_ACCURACY, reference_rows

__all__ = ["DetectInputs", "DetectionResult", "load_run_inputs", "load_user_inputs", "run_detection",
           "write_issues_csv", "plot_joint", "format_summary", "RANK_CHOICES", "read_label_file", "scoring_accuracy"]

RANK_CHOICES = (*SCORE_METHODS, "method")
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


@dataclass
class DetectionResult:
    """What :func:`run_detection` found (row order of the inputs)."""

    inputs: DetectInputs
    quality: np.ndarray          # lower = more likely wrong
    suggested: np.ndarray        # arg-max class
    is_issue: np.ndarray         # the flags
    estimate: NoiseEstimate      # on the rows the count is estimated from
    estimated_on: str            # "all rows" or "held-out rows (...)"
    num_issues_estimate: int     # estimated number of wrong labels over all rows
    rank_by: str
    filter_by: str
    notes: list[str] = field(default_factory=list)
    scoring_accuracy: float | None = None  # the scoring models' out-of-sample accuracy (None: no held-out rows)
    scoring_reference: str = ""            # the rows and labels it is measured on

    @property
    def order(self) -> np.ndarray:
        """Rows from most to least suspicious (ties by row)."""
        q = np.where(np.isnan(self.quality), np.inf, self.quality)
        return np.argsort(q, kind="stable")


# ----------------------------------------------------------------------------------- inputs

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
        from ..io import load_npy

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


def _load_probs(path: str | Path) -> np.ndarray:
    from ..io import describe_bytes, load_npy

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
    probs = _load_probs(probs_path)
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
    from ..io import load_npy

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
    probs = _load_probs(d / "pred_probs.npy")
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


# -------------------------------------------------------------------------------- detection

def run_detection(inputs: DetectInputs, *, filter_by: str = "prune_by_noise_rate", rank_by: str = "self_confidence",
                  adjust_pred_probs: bool = False) -> DetectionResult:
    """Score, count and flag every row of ``inputs`` (the policy in the module docstring)."""
    check_choice(filter_by, FILTER_METHODS, "filter_by")
    check_choice(rank_by, RANK_CHOICES, "rank_by")
    y, p = check_labels_and_probs(inputs.labels, inputs.pred_probs, allow_missing_classes=True)
    n, k = p.shape
    if rank_by == "method":
        if inputs.method_scores is None or np.all(np.isnan(inputs.method_scores)):
            raise UserError("rank_by=method needs a run whose method wrote its own scores (method_scores.npy)")
        quality = -np.asarray(inputs.method_scores, dtype=np.float64)
    else:
        quality = _scores(y, p, rank_by, adjust_pred_probs).astype(np.float64)
    held = np.asarray(inputs.held_out, dtype=bool)
    notes: list[str] = []
    split = np.asarray(inputs.split if inputs.split is not None else ["" for _ in range(n)], dtype=object)
    names = sorted(set(split), key=lambda s: (s != "train", s != "val", s))
    is_issue = np.zeros(n, dtype=bool)
    q = np.where(np.isnan(quality), np.inf, quality)
    total = 0
    estimates: dict[str, NoiseEstimate] = {}
    in_sample = ~held
    for name in names:  # confident learning on each split whose rows are all out-of-sample
        part = np.flatnonzero((split == name) & held)
        if len(part) and not in_sample[split == name].any() and len(part) > k:
            with warnings.catch_warnings():  # small held-out splits: classes with one sample are left alone
                warnings.simplefilter("ignore", UserWarning)
                is_issue[part] = find_label_issues(y[part], p[part], filter_by=filter_by,
                                                   allow_missing_classes=True)
            estimates[name] = estimate_noise(y[part], p[part], allow_missing_classes=True)
            total += estimates[name].num_issues
    if in_sample.any():
        # the count for in-sample rows comes from the validation split (labels as noisy as training)
        if "val" in estimates and (split == "val").sum() >= 2 * k:
            est_in, where = estimates["val"], "the validation rows (held out, labels as noisy as training)"
        elif held.sum() >= 2 * k:
            est_in, where = estimate_noise(y[held], p[held], allow_missing_classes=True), "the held-out rows"
        else:
            est_in, where = estimate_noise(y, p, allow_missing_classes=True), "all rows"
            notes.append("too few held-out rows to estimate the noise rate out-of-sample; "
                         "the count is an under-estimate: train with --folds K")
        members = np.flatnonzero(in_sample)
        m = int(np.rint(est_in.noise_rate * len(members)))
        is_issue[members[np.argsort(q[members], kind="stable")[:m]]] = True
        total += m
        notes.append(f"{len(members)} rows were scored by the model that trained on them (in-sample): the "
                     f"lowest-ranked {m} are flagged, a count from the noise rate estimated out-of-sample on "
                     f"{where}; held-out splits use confident learning. For out-of-sample scores of every row, "
                     "train with --folds K")
        est, where_all = est_in, where
        filter_by = f"{filter_by} on held-out splits; in-sample rows by rank with the held-out rate"
    elif estimates:
        first = names[0] if names[0] in estimates else next(iter(estimates))
        est = estimates[first]
        where_all = f"the {first} split" if first else "all rows"
        where_all += " (out-of-sample probabilities)"
    else:
        est = estimate_noise(y, p, allow_missing_classes=True)
        is_issue = find_label_issues(y, p, filter_by=filter_by, allow_missing_classes=True)
        total, where_all = est.num_issues, "all rows (out-of-sample probabilities)"
    where = where_all
    accuracy, reference, trusted = scoring_accuracy(inputs.split, held, y, p, test_trusted=inputs.test_trusted)
    if accuracy is not None and accuracy < RELIABLE_ACCURACY:
        what = (f"the scoring models' out-of-sample accuracy is {100 * accuracy:.1f}% (on {reference})" if trusted else
                f"no trusted labels to measure the scoring models on: their out-of-sample agreement with the given "
                f"labels is {100 * accuracy:.1f}% (their accuracy is higher by up to the noise rate)")
        notes.append(f"warning: {what}; below {100 * RELIABLE_ACCURACY:.0f}% accuracy confident learning "
                     "over-counts the wrong labels (by 15-40% at 85-89%, about twice the truth near 50%; "
                     "benchmarks/cl_reliability.py) and many suggestions are wrong: take the count as an upper "
                     "bound, relabel only with export's calibrated rule, or train better scoring models first")
    return DetectionResult(inputs=inputs, quality=quality, suggested=p.argmax(axis=1), is_issue=is_issue,
                           estimate=est, estimated_on=where, num_issues_estimate=int(total), rank_by=rank_by,
                           filter_by=filter_by, notes=notes, scoring_accuracy=accuracy, scoring_reference=reference)


def scoring_accuracy(split: list[str] | None, held_out: np.ndarray, labels: np.ndarray, pred_probs: np.ndarray, *,
                     test_trusted: bool = False) -> tuple[float | None, str, bool]:
    """The arg-max accuracy of the out-of-sample probabilities on
    :func:`~noisylabels.detect.relabel.reference_rows` (``None`` when no row is out-of-sample), what
    the rows are, and whether their labels are trusted."""
    ref, what, trusted = reference_rows(split, held_out, pred_probs.shape[1], test_trusted=test_trusted)
    if len(ref) == 0:
        return None, "", False
    return float((pred_probs[ref].argmax(axis=1) == labels[ref]).mean()), what, trusted


# --------------------------------------------------------------------------------- outputs

def write_issues_csv(path: str | Path, result: DetectionResult) -> None:
    """``label_issues.csv``: every row, most suspicious first."""
    from ..io import csv_cell
    from ..train.records import atomic_write_text  # registers the file in a run's manifest

    inp = result.inputs
    names = inp.classes
    lines = ["rank,index,split,path,given_label,given_name,suggested_label,suggested_name,quality_score,"
             "is_label_issue,held_out"]
    for r, i in enumerate(result.order):
        g, s = int(inp.labels[i]), int(result.suggested[i])
        split = inp.split[i] if inp.split is not None else ""
        fpath = csv_cell(inp.paths[i]) if inp.paths is not None else ""
        q = result.quality[i]
        lines.append(f"{r},{int(inp.index[i])},{split},{fpath},{g},{csv_cell(names[g])},{s},{csv_cell(names[s])},"
                     f"{'' if np.isnan(q) else f'{q:.6g}'},{int(result.is_issue[i])},{int(inp.held_out[i])}")
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


def plot_joint(path: str | Path, result: DetectionResult) -> None:
    """Heat map of the estimated joint :math:`N\\hat Q_{\\tilde y, y^*}` (given label vs estimated true label)."""
    from ..eval.plots import new_figure, save_figure

    est, names = result.estimate, result.inputs.classes
    k = len(names)
    counts = est.joint * est.num_samples
    plt, fig, ax = new_figure(1, width=min(12.0, 2.0 + 0.55 * k), height=min(11.0, 1.6 + 0.5 * k))
    im = ax.imshow(counts, cmap="viridis")
    fig.colorbar(im, ax=ax, shrink=0.8, label="estimated samples")
    if k <= 20:
        ticks = range(k)
        ax.set_xticks(ticks, [str(n)[:12] for n in names], rotation=60, ha="right", fontsize=8)
        ax.set_yticks(ticks, [str(n)[:12] for n in names], fontsize=8)
        top = counts.max() if counts.size else 1
        for i in range(k):
            for j in range(k):
                if counts[i, j] >= 0.5:
                    ax.text(j, i, f"{counts[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="black" if counts[i, j] > 0.6 * top else "white")
    save_figure(plt, fig, path, (ax, "estimated true label", "given label", False),
            title=f"estimated joint of given and true labels ({result.estimated_on.split(' (')[0]}); "
                  f"noise rate {100 * est.noise_rate:.1f}%")


def format_summary(result: DetectionResult, *, top: int = 5) -> str:
    """The lines ``noisylabels detect`` prints."""
    inp, est = result.inputs, result.estimate
    names = inp.classes
    n = len(inp.labels)
    lines = [f"scored {n} samples ({int(inp.held_out.sum())} out-of-sample) from {inp.source}",
             f"  estimated noise rate        {100 * est.noise_rate:.2f}% (confident learning, on {result.estimated_on})",
             f"  estimated wrong labels      {result.num_issues_estimate} of {n}",
             f"  flagged (is_label_issue)    {int(result.is_issue.sum())} ({result.filter_by}); ranked by {result.rank_by}"]
    if result.scoring_accuracy is not None:
        lines.append(f"  scoring models' accuracy    {100 * result.scoring_accuracy:.2f}% out-of-sample, on "
                     f"{result.scoring_reference}")
    conf = est.top_confusions(top)
    if conf:
        m = est.num_samples
        lines.append("  most confused (given -> probably):")
        for i, j, q in conf:
            lines.append(f"    {names[i]} -> {names[j]}: ~{q * m:.0f} of {m} samples ({100 * q:.1f}%)")
    if inp.is_noisy is not None:
        from ..eval.metrics import detection_auroc

        truth = np.asarray(inp.is_noisy, bool)
        hit = int((truth & result.is_issue).sum())
        flagged = int(result.is_issue.sum())
        lines.append(f"  simulated noise (known)     {int(truth.sum())} wrong labels ({100 * truth.mean():.2f}%); "
                     f"flags precision {hit / max(flagged, 1):.3f}, recall {hit / max(int(truth.sum()), 1):.3f}, "
                     f"score AUROC {detection_auroc(-np.nan_to_num(result.quality, nan=np.inf), truth):.3f}")
    if inp.paths is not None and inp.files_root:
        lines.append(f"  {'paths are relative to':<28}{inp.files_root}")
    for note in result.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)
