"""Cross-fit a run and find its wrong labels: :func:`noisylabels.train.crossfit.crossfit_pred_probs`
makes the out-of-sample probabilities, this module runs detection on them (``train --folds K``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..train.crossfit import crossfit_pred_probs
from ..train.prepare import RunData
from ..train.rundir import register
from .count import estimate_noise
from .report import load_run_inputs, plot_joint, run_detection, write_issues_csv

__all__ = ["crossfit", "detection_report"]


def crossfit(cfg: dict[str, Any], *, folds: int = 5, progress: bool = False,
             data: RunData | None = None, detect: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """:func:`~noisylabels.train.crossfit.crossfit_pred_probs`, then (with ``detect``) write
    ``label_issues.csv`` / ``joint.png`` and the count estimate into its summary
    (:func:`detection_report`). Each fold's run resolves ``method.forget_rate: estimate`` on its
    own training part (:func:`~noisylabels.detect.forget_rate.resolve_forget_rate`). The other
    arguments and the return value are those of ``crossfit_pred_probs``."""
    from .forget_rate import resolve_forget_rate

    return crossfit_pred_probs(cfg, folds=folds, progress=progress, data=data, overwrite=overwrite,
                               report=detection_report if detect else None, resolve=resolve_forget_rate)


def detection_report(out: Path, data: RunData, probs: np.ndarray, summary: dict[str, Any]) -> dict[str, Any]:
    """Detection on a cross-fit's records in ``out``: writes ``label_issues.csv`` and ``joint.png``
    and returns the summary's count fields (on all rows and on the training split)."""
    fields: dict[str, Any] = {}
    result = run_detection(load_run_inputs(out))
    write_issues_csv(out / "label_issues.csv", result)
    try:
        register(out / "joint.png")  # the run's own record: a later `detect --run` may rewrite it
        plot_joint(out / "joint.png", result)
    except Exception as exc:  # a plot must never lose the results
        fields["plot_error"] = str(exc)
    train_idx = data.splits["train"].numpy()
    train_rows = np.zeros(len(probs), dtype=bool)
    train_rows[train_idx] = True
    truth = data.is_noisy.numpy()
    est_train = estimate_noise(data.labels.numpy()[train_idx], probs[train_idx], allow_missing_classes=True)
    fields.update({
        "estimated_noise_rate_train": est_train.noise_rate,
        "estimated_num_issues_train": est_train.num_issues,
        "estimated_noise_rate": result.estimate.noise_rate,
        "estimated_num_issues": result.num_issues_estimate,
        "num_flagged": int(result.is_issue.sum()),
        "num_flagged_train": int(result.is_issue[train_rows].sum()),
        "true_num_wrong_train": int(truth[train_idx].sum()) if summary["noise"] != "none" else None,
    })
    return fields
