"""Predicted probabilities for every sample of a run: the files ``noisylabels detect`` reads.

A run scores every image it was given, not only the training split: the rows of
``pred_probs.npy`` are the pool (train, validation and meta samples, by pool index) followed
by the test samples, the same rows and order as ``labels.csv``. ``held_out.npy`` marks the
rows whose probabilities come from a model that never trained on them (validation, meta and
test rows of an ordinary run; every row of a cross-fitted run). ``pred_probs.json`` holds the
class names in column order and whether the test rows are the user's own images carved out of
the training images (``test_from_training_images``; then ``export`` writes them too).
"""

from __future__ import annotations

import json
import numpy as np
import torch

from .prepare import RunData
from .records import RunRecorder, atomic_write, atomic_write_text

__all__ = ["pool_and_test_probs", "write_pred_probs"]


def pool_and_test_probs(model: torch.nn.Module, data: RunData, *, batch_size: int,
                        device: torch.device) -> np.ndarray:
    """Softmax outputs ``(N_pool + N_test, K)`` (float32) of ``model`` on the pool, then the test set."""
    from .context import predict_proba

    kw = dict(mean=data.mean, std=data.std, batch_size=batch_size, device=device)
    pool = predict_proba(model, data.images.to(device), None, **kw)
    test = predict_proba(model, data.test_images.to(device), None, **kw) if len(data.test_images) else None
    parts = [pool] + ([test] if test is not None else [])
    return torch.cat(parts).numpy().astype(np.float32)


def write_pred_probs(recorder: RunRecorder, probs: np.ndarray, *, held_out: np.ndarray,
                     data: RunData, method_scores: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Write ``pred_probs.npy``, ``held_out.npy`` and ``pred_probs.json`` (see the module docstring).

    ``method_scores = (rows, scores)``: the training method's own per-sample suspicion scores
    (``Method.sample_scores``, higher = more suspicious, e.g. minus an MW-Net weight) on some
    rows; written as ``method_scores.npy`` with NaN elsewhere.
    """
    if method_scores is not None:
        full = np.full(len(probs), np.nan, dtype=np.float64)
        full[np.asarray(method_scores[0], dtype=np.int64)] = np.asarray(method_scores[1], dtype=np.float64)
        atomic_write(recorder.path("method_scores.npy"), lambda tmp: np.save(open(tmp, "wb"), full))
    atomic_write(recorder.path("pred_probs.npy"), lambda tmp: np.save(open(tmp, "wb"), np.asarray(probs, np.float32)))
    atomic_write(recorder.path("held_out.npy"), lambda tmp: np.save(open(tmp, "wb"), np.asarray(held_out, bool)))
    info = {"classes": [str(c) for c in data.classes], "rows": "labels.csv rows: the pool, then the test set",
            "test_from_training_images": bool(data.test_carved)}
    atomic_write_text(recorder.path("pred_probs.json"), json.dumps(info, indent=1) + "\n")


def held_out_rows(data: RunData, *, trained_on: np.ndarray) -> np.ndarray:
    """Boolean ``(N_pool + N_test,)``: False exactly at the pool indices ``trained_on``."""
    n = len(data.images) + len(data.test_images)
    out = np.ones(n, dtype=bool)
    out[np.asarray(trained_on, dtype=np.int64)] = False
    return out


__all__ += ["held_out_rows"]
