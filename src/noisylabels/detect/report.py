"""The detection report ``noisylabels detect`` writes: ``label_issues.csv``, a summary and a PNG.

:func:`run_detection` scores, counts and flags the rows of :class:`~noisylabels.detect.inputs.DetectInputs`
(read by :mod:`noisylabels.detect.inputs`: a finished run directory, or a user's own labels file
plus ``pred_probs.npy``); :func:`write_issues_csv`, :func:`detection_summary`, :func:`plot_joint`
and :func:`format_summary` write and print what it found.

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

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ._validation import check_choice, check_labels_and_probs
from .count import NoiseEstimate, estimate_noise
from .filter import FILTER_METHODS, find_label_issues
# the readers, importable from here as before the split
from .inputs import DetectInputs, load_run_inputs, load_user_inputs, read_label_file
from .rank import SCORE_METHODS, _scores
from .relabel import RELIABLE_ACCURACY, reference_rows

__all__ = ["DetectionResult", "run_detection", "scoring_accuracy", "write_issues_csv", "detection_summary", "plot_joint",
           "format_summary", "RANK_CHOICES", "DetectInputs", "load_run_inputs", "load_user_inputs", "read_label_file"]

RANK_CHOICES = (*SCORE_METHODS, "method")


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


def detection_summary(result: DetectionResult, *, top: int = 5) -> dict[str, Any]:
    """What ``detect_summary.json`` holds (plain values: the estimate, the flags, the ``top`` most
    confused class pairs, the notes, the scoring models' accuracy)."""
    inputs, est = result.inputs, result.estimate
    return {"source": inputs.source, "num_samples": len(inputs.labels),
            "num_out_of_sample": int(inputs.held_out.sum()), "estimated_noise_rate": est.noise_rate,
            "estimated_on": result.estimated_on, "estimated_num_issues": result.num_issues_estimate,
            "num_flagged": int(result.is_issue.sum()), "filter_by": result.filter_by, "rank_by": result.rank_by,
            "top_confusions": [{"given": inputs.classes[i], "probably": inputs.classes[j], "fraction": q}
                               for i, j, q in est.top_confusions(top)],
            "joint": est.joint, "classes": inputs.classes, "notes": result.notes,
            "scoring_accuracy": result.scoring_accuracy, "scoring_accuracy_on": result.scoring_reference}


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
