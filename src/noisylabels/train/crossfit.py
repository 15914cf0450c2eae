"""Cross-fitted (out-of-sample) predicted probabilities for every sample of a run.

Confident learning (Northcutt et al. 2021, Sec. 4) assumes out-of-sample probabilities:
a model that trained on a wrong label has fitted it, so its in-sample probabilities rank
the wrong labels about as well but make the confident joint nearly diagonal and the count
of wrong labels far too small. :func:`crossfit_pred_probs` splits the training split into ``K``
stratified folds (``sklearn.model_selection.StratifiedKFold``, shuffled with a seed derived
from the run seed, stratified on the labels training sees) and trains ``K`` models with the
run's own loop (:func:`noisylabels.train.fit`), model ``k`` on the other ``K - 1`` folds,
selected on the run's validation split as usual. Each training sample is scored by the one
model that did not see it; validation, meta and test samples (seen by none) get the mean of
the ``K`` models' probabilities. The choice where the paper is silent: validation samples
select each fold's epoch, so they are not strictly unseen; their probabilities are the
ensemble's.

Records in ``out``: ``fold-<k>/`` (each fold's full run records), and at the top
``pred_probs.npy`` / ``held_out.npy`` / ``pred_probs.json`` (see :mod:`noisylabels.train.scoring`),
``labels.csv``, ``splits.npz``, ``config.yaml``, ``folds.npz`` (``fold``: the fold of each row,
-1 for rows outside the training split; ``train_<k>``: the pool indices model ``k`` trained
on) and ``summary.json``; :func:`noisylabels.detect.crossfit.crossfit` adds ``label_issues.csv``,
``joint.png`` and the count estimate (``train`` never imports ``detect``).
A fold whose records hold a finished run of the same config is reused, not retrained.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from .prepare import RunData, derive_seed, prepare_data
from .records import RunRecorder, atomic_write, atomic_write_text
from .scoring import write_pred_probs

__all__ = ["crossfit_pred_probs", "fold_assignment", "Report"]

# report(out, data, probs, summary) -> fields added to the summary
Report = Callable[[Path, RunData, np.ndarray, dict[str, Any]], dict[str, Any]]


def fold_assignment(labels: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of each position of ``labels``: stratified, shuffled, seeded.

    Raises
    ------
    UserError
        ``folds < 2`` or more folds than samples of the largest class.
    """
    from sklearn.model_selection import StratifiedKFold

    if not isinstance(folds, (int, np.integer)) or isinstance(folds, bool) or folds < 2:
        raise UserError(f"--folds must be an integer >= 2, got {folds!r}")
    y = np.asarray(labels)
    if folds > len(y):
        raise UserError(f"--folds {folds} is more than the {len(y)} training samples")
    counts = np.bincount(y)
    if folds > counts.max():
        raise UserError(f"--folds {folds} is more than the {int(counts.max())} samples of the largest class")
    skf = StratifiedKFold(n_splits=int(folds), shuffle=True, random_state=int(seed) % (2**32))
    out = np.full(len(y), -1, dtype=np.int64)
    import warnings

    with warnings.catch_warnings():  # a class smaller than `folds` is fine: some folds lack it
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, held) in enumerate(skf.split(np.zeros(len(y)), y)):
            out[held] = k
    return out


def _fold_is_done(out: Path, cfg: dict[str, Any]) -> bool:
    from ..config import load_config

    try:
        summary = json.loads((out / "summary.json").read_text())
        same = load_config(out / "config.yaml") == cfg
    except (OSError, ValueError, UserError):
        return False
    return summary.get("status") == "finished" and same and (out / "pred_probs.npy").is_file()


def crossfit_pred_probs(cfg: dict[str, Any], *, folds: int = 5, progress: bool = False,
                        data: RunData | None = None, overwrite: bool = False,
                        report: Report | None = None, resolve: Any = None) -> dict[str, Any]:
    """Train ``folds`` models on ``folds - 1`` folds of the training split each; write
    out-of-sample ``pred_probs.npy`` for every sample (see the module docstring).

    Parameters
    ----------
    cfg:
        A resolved config; ``cfg['out']`` receives the records.
    folds:
        ``K >= 2``.
    progress:
        The folds' epochs as in :func:`~noisylabels.train.fit` (a bar on a terminal, lines
        elsewhere), and one line per finished fold; ``False``: quiet.
    data:
        Pre-built :class:`RunData` (default: built from ``cfg``).
    overwrite:
        Replace a run of another config in ``cfg['out']`` (removing only its records, after the
        data are read); without it such a folder is refused. A cross-fit of the same config
        continues (finished folds are reused).
    report:
        ``report(out, data, probs, summary) -> dict``, called with the cross-fitted probabilities
        before ``summary.json`` is written; its fields join the summary
        (:func:`noisylabels.detect.crossfit.crossfit` runs detection here).
    resolve:
        Handed to each fold's :func:`~noisylabels.train.fit` (e.g. a forget rate estimated on the
        fold's own training part, into ``fold-<k>/``).

    Returns
    -------
    dict
        The summary written to ``summary.json``: folds' test accuracies, the estimated noise
        rate and number of wrong labels, the number flagged and (with simulated noise) the
        true number.
    """
    from ..config import load_config
    from .build import build_method, resolve_method_defaults

    from .rundir import RunDir

    cfg = resolve_method_defaults(cfg)  # e.g. rmnw-net's noisy meta set, before the data are carved
    out = Path(cfg["out"])
    try:  # the same cross-fit again reuses its finished folds; anything else is a new run
        same = (out / "config.yaml").is_file() and load_config(out / "config.yaml") == cfg
    except UserError:
        same = False
    with RunDir(out, resume=same, overwrite=overwrite) as claim:  # locked; nothing removed before the data are read
        if data is None:
            data = prepare_data(cfg, needs_meta_set=build_method(cfg).needs_meta_set)
        claim.start()
        return _crossfit(cfg, folds=folds, progress=progress, data=data, report=report, resolve=resolve)


def _crossfit(cfg: dict[str, Any], *, folds: int, progress: bool, data: RunData, report: Report | None,
              resolve: Any = None) -> dict[str, Any]:
    from ..config import save_config
    from .loop import fit

    seed = int(cfg["seed"])
    out = Path(cfg["out"])
    recorder = RunRecorder(out)
    train_idx = data.splits["train"].numpy()
    fold_of_train = fold_assignment(data.labels.numpy()[train_idx], folds=folds, seed=derive_seed(seed, "crossfit"))
    n_rows = len(data.images) + len(data.test_images)
    fold_of = np.full(n_rows, -1, dtype=np.int64)
    fold_of[train_idx] = fold_of_train
    atomic_write(out / "config.yaml", lambda tmp: save_config(cfg, tmp))
    recorder.write_labels(clean=data.clean_labels.numpy(), observed=data.labels.numpy(),
                          splits={k: v.numpy() for k, v in data.splits.items()},
                          ood=None if data.open_set_mask is None else data.open_set_mask.numpy(),
                          paths=data.paths, test_labels=data.test_labels.numpy(), test_paths=data.test_paths)

    probs = np.zeros((n_rows, data.num_classes), dtype=np.float64)
    ensemble = np.zeros_like(probs)
    trained_on: dict[str, np.ndarray] = {}
    fold_summaries = []
    for k in range(int(folds)):
        fit_idx = train_idx[fold_of_train != k]
        held_idx = train_idx[fold_of_train == k]
        sub = dataclasses.replace(data, splits={**data.splits, "train": torch.from_numpy(fit_idx)})
        cfg_k = copy.deepcopy(cfg)
        cfg_k["out"] = str(out / f"fold-{k}")
        cfg_k["seed"] = derive_seed(seed, f"fold-{k}")
        if _fold_is_done(Path(cfg_k["out"]), cfg_k):
            summary_k = json.loads((Path(cfg_k["out"]) / "summary.json").read_text())
        else:
            summary_k = fit(cfg_k, data=sub, progress=progress, overwrite=True,  # the fold's own folder
                            resolve=resolve)
            if summary_k.get("status") != "finished":
                raise UserError(f"cross-fitting fold {k} ended with status {summary_k.get('status')!r}")
        p_k = np.load(Path(cfg_k["out"]) / "pred_probs.npy", allow_pickle=False).astype(np.float64)
        probs[held_idx] = p_k[held_idx]
        ensemble += p_k / folds
        trained_on[f"train_{k}"] = fit_idx
        fold_summaries.append({"fold": k, "num_train": len(fit_idx), "num_held_out": len(held_idx),
                               "test_accuracy": summary_k.get("test_accuracy"),
                               "best_epoch": summary_k.get("best_epoch")})
        if progress:
            acc = summary_k.get("test_accuracy")
            print(f"fold {k + 1}/{folds}: trained on {len(fit_idx)}, scored {len(held_idx)} held-out samples; "
                  f"test accuracy {'-' if acc is None else f'{acc:.4f}'}", flush=True)
    outside = fold_of < 0
    probs[outside] = ensemble[outside]
    probs /= probs.sum(axis=1, keepdims=True)
    atomic_write(out / "folds.npz", lambda tmp: np.savez(open(tmp, "wb"), fold=fold_of, **trained_on))
    write_pred_probs(recorder, probs.astype(np.float32), held_out=np.ones(n_rows, dtype=bool), data=data)

    summary: dict[str, Any] = {"status": "finished", "kind": "crossfit", "folds": int(folds),
                               "dataset": cfg["data"]["name"], "method": cfg["method"]["name"],
                               "noise": cfg["noise"]["type"], "noise_rate": float(cfg["noise"]["rate"]),
                               "seed": seed, "num_rows": n_rows, "num_train": len(train_idx),
                               "fold_runs": fold_summaries}
    if report is not None:  # e.g. detection on the probabilities, in the same summary
        summary.update(report(out, data, probs, summary))
    atomic_write_text(out / "summary.json", json.dumps(_jsonable(summary), indent=2) + "\n")
    return summary


def _jsonable(x: Any) -> Any:
    from ..io import to_jsonable

    return to_jsonable(x)
