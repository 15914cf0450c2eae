"""Run records: config, per-epoch metrics, summary, labels, splits, checkpoints, plots.

Every file is written atomically (temporary file + ``os.replace``) so an interrupted run never
leaves a half-written record behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import save_config
from ..errors import UserError
from ..io import atomic_torch_save as _io_torch_save
from ..io import atomic_write as _io_write
from ..io import csv_cell, read_metrics, to_jsonable
from ..io import atomic_write_text as _io_write_text
from .rundir import RUN_MARKERS, register

__all__ = ["RunRecorder", "atomic_write", "atomic_write_text", "atomic_torch_save", "to_jsonable", "csv_cell", "RUN_MARKERS",
           "read_metrics"]


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then an atomic rename to ``path`` (:func:`noisylabels.io.atomic_write`), and
    ``path`` registered in its run directory's manifest on first write, so a later ``--overwrite``
    removes it (and only it)."""
    _io_write(path, write, on_write=register)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` atomically and register ``path`` in its run directory's manifest."""
    _io_write_text(path, text, on_write=register)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` atomically and register ``path`` in its run directory's manifest."""
    _io_torch_save(obj, path, on_write=register)


class RunRecorder:
    """Writes a run's records into ``out_dir``.

    Files: ``config.yaml``, ``metrics.jsonl`` (one line per epoch), ``summary.json``,
    ``labels.csv`` (index, split, clean and observed label), ``splits.npz``, ``checkpoint.pt``
    (last epoch, for resume), ``best_model.pt``, ``suspects.csv``, ``curves.png``.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        """``out / name``, registered in the run's manifest (whoever writes it: the loop, a method, a plot)."""
        register(self.out / name)
        return self.out / name

    def write_config(self, cfg: Mapping[str, Any]) -> None:
        atomic_write(self.path("config.yaml"), lambda tmp: save_config(cfg, tmp))

    def write_metrics(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Rewrite ``metrics.jsonl`` from the full history (so a resumed run has no duplicates)."""
        text = "".join(json.dumps(to_jsonable(row)) + "\n" for row in history)
        atomic_write_text(self.path("metrics.jsonl"), text)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_text(self.path("summary.json"), json.dumps(to_jsonable(summary), indent=2) + "\n")

    def write_labels(self, *, clean: np.ndarray, observed: np.ndarray, splits: Mapping[str, np.ndarray],
                     ood: np.ndarray | None = None, paths: Sequence[str] | None = None,
                     test_labels: np.ndarray | None = None, test_paths: Sequence[str] | None = None) -> None:
        """``labels.csv``: one row per pool sample (index = pool position), then one per test
        sample (split ``test``, index continuing after the pool); ``path`` is the source file
        (empty when the data did not come from files). Rows align with ``pred_probs.npy``."""
        split_name = np.full(len(clean), "", dtype=object)
        for name, idx in splits.items():
            split_name[np.asarray(idx)] = name
        lines = ["index,split,clean_label,observed_label,is_noisy,path"]
        wrong = (np.asarray(clean) != np.asarray(observed))
        if ood is not None:
            wrong = wrong | np.asarray(ood, dtype=bool)
        path = (lambda ps, i: csv_cell(ps[i]) if ps is not None else "")  # noqa: E731
        lines += [f"{i},{split_name[i]},{int(clean[i])},{int(observed[i])},{int(wrong[i])},{path(paths, i)}"
                  for i in range(len(clean))]
        n = len(clean)
        if test_labels is not None:
            lines += [f"{n + j},test,{int(c)},{int(c)},0,{path(test_paths, j)}" for j, c in enumerate(test_labels)]
        atomic_write_text(self.path("labels.csv"), "\n".join(lines) + "\n")
        atomic_write(self.path("splits.npz"),
                lambda tmp: np.savez(open(tmp, "wb"), **{k: np.asarray(v) for k, v in splits.items()}))

    def write_suspects(self, *, index: np.ndarray, given: np.ndarray, predicted: np.ndarray,
                       score: np.ndarray, classes: Sequence[str] | None = None,
                       paths: Sequence[str] | None = None, score_column: str = "score_1_minus_p_given") -> None:
        """``suspects.csv``: training samples from most to least likely mislabeled; ``path``
        is the source file of each (pool-indexed ``paths``; empty without files); the last
        column, named ``score_column``, is the suspicion score (``score_1_minus_p_given``: one
        minus the selected model's probability of the given label; ``score_neg_weight``: minus
        a meta method's weight at the selected epoch, ...)."""
        order = np.argsort(-np.asarray(score), kind="stable")
        name = (lambda c: csv_cell(classes[int(c)])) if classes else (lambda c: str(int(c)))
        lines = [f"rank,index,given_label,predicted_label,given_name,predicted_name,path,{score_column}"]
        for r, o in enumerate(order):
            p = csv_cell(paths[int(index[o])]) if paths is not None else ""
            lines.append(f"{r},{int(index[o])},{int(given[o])},{int(predicted[o])},"
                         f"{name(given[o])},{name(predicted[o])},{p},{float(score[o]):.6g}")
        atomic_write_text(self.path("suspects.csv"), "\n".join(lines) + "\n")

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        atomic_torch_save(dict(state), self.path("checkpoint.pt"))

    def load_checkpoint(self) -> dict[str, Any] | None:
        p = self.path("checkpoint.pt")
        if not p.is_file():
            return None
        from ..io import load_torch_file

        # tensors and plain containers only: a checkpoint can never run code
        try:
            state = load_torch_file(p, what="checkpoint", expected="noisylabels checkpoint")
        except UserError as err:
            raise UserError(f"cannot resume from {p}: {str(err).removeprefix(f'checkpoint {p} is ')}") from None
        if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
            raise UserError(f"cannot resume from {p}: not a noisylabels checkpoint")
        return state

    def save_best_model(self, model_state: Mapping[str, Any]) -> None:
        atomic_torch_save(dict(model_state), self.path("best_model.pt"))

    def plot_curves(self, history: Sequence[Mapping[str, Any]], title: str = "",
                    test_label: str = "test (clean)") -> None:
        from ..eval.plots import plot_curves

        atomic_write(self.path("curves.png"), lambda tmp: plot_curves(history, tmp, title=title, test_label=test_label))
