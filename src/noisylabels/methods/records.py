"""Named per-sample records: what a method learns about each training sample, by dataset index.

A method declares its records (``weight`` for MW-Net and L2RW, ``alpha`` / ``beta`` for L2B,
later ``q`` for NARL, ``gate`` for EMLC) as :class:`Record` specs; during an epoch it adds the
values each batch was trained with; :class:`SampleRecords` keeps, per record, the mean over the
epoch's visits of every training sample (NaN if unvisited), the per-epoch history, one ``.npz``
file, and checkpoint state made of tensors only (loadable with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_save_npz

__all__ = ["Record", "SampleRecords", "RECORDS_FILE"]

#: the file a run's per-sample records go to
RECORDS_FILE = "sample_records.npz"


@dataclass(frozen=True)
class Record:
    """One named per-sample quantity a method records.

    Attributes
    ----------
    name:
        Record name (a valid identifier: it names arrays and metrics, e.g. ``mean_weight_noisy``).
    plain_value:
        Value recorded on plain steps (CE warm-up), e.g. weight 1; ``None``: not recorded there.
    """

    name: str
    plain_value: float | None = None


class SampleRecords:
    """Per-epoch means of named per-sample quantities, by dataset index.

    Parameters
    ----------
    names:
        The record names.
    num_samples:
        Size of the training pool (dataset indices run over ``[0, num_samples)``).
    train_index:
        Indices of the training split: histories hold one value per training sample, in this order.
    device:
        Where the running sums live (the training device: no host synchronisation per step).
    """

    def __init__(self, names: Sequence[str], *, num_samples: int, train_index: torch.Tensor,
                 device: torch.device | str = "cpu") -> None:
        self.names = list(names)
        self.train_index = train_index.cpu()
        self._idx = train_index.to(device)
        self._sum = {n: torch.zeros(num_samples, device=device) for n in self.names}
        self._cnt = {n: torch.zeros(num_samples, device=device) for n in self.names}
        self.history: dict[str, dict[int, np.ndarray]] = {n: {} for n in self.names}

    def start_epoch(self) -> None:
        for n in self.names:
            self._sum[n].zero_()
            self._cnt[n].zero_()

    def add(self, index: torch.Tensor, values: Mapping[str, torch.Tensor | float]) -> None:
        """Accumulate one batch's values (per sample, or a scalar for all) of the named records."""
        for name, v in values.items():
            s = self._sum[name]
            t = torch.as_tensor(v, device=s.device).detach().to(s.dtype)
            s.index_add_(0, index, t.expand(len(index)) if t.ndim == 0 else t)
            self._cnt[name].index_add_(0, index, torch.ones_like(s[index]))

    def sums_and_counts(self) -> list[torch.Tensor]:
        """The running sums and counts of the epoch (a data-parallel run all-reduces them in place)."""
        return [self._sum[n] for n in self.names] + [self._cnt[n] for n in self.names]

    def end_epoch(self, epoch: int) -> dict[str, np.ndarray]:
        """Store and return the epoch's per-training-sample means of every record that was visited."""
        out = {}
        for n in self.names:
            cnt = self._cnt[n][self._idx]
            if not bool((cnt > 0).any()):
                continue
            mean = torch.where(cnt > 0, self._sum[n][self._idx] / cnt.clamp_min(1), torch.nan)
            out[n] = self.history[n][epoch] = mean.cpu().numpy().astype(np.float32)
        return out

    def at(self, name: str, epoch: int | None) -> np.ndarray | None:
        """The record of ``epoch`` (e.g. the best-validation one) if it exists, else the last one."""
        hist = self.history.get(name) or {}
        if not hist:
            return None
        return hist[epoch if epoch in hist else max(hist)]

    def save_npz(self, path: str | Path) -> None:
        """``epochs`` (E,), ``index`` (N,) dataset indices, and one (E, N) array per record (NaN: not
        recorded that epoch). Written atomically."""
        epochs = sorted({e for h in self.history.values() for e in h})
        n = len(self.train_index)
        arrays: dict[str, Any] = {"epochs": np.asarray(epochs, dtype=np.int64), "index": self.train_index.numpy()}
        for name, hist in self.history.items():
            arrays[name] = np.stack([hist.get(e, np.full(n, np.nan, np.float32)) for e in epochs]) if epochs \
                else np.zeros((0, n), np.float32)
        atomic_save_npz(path, arrays, compressed=True)

    # -- resume: tensors only ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {name: {"epochs": torch.tensor(sorted(hist), dtype=torch.long),
                       "values": torch.from_numpy(np.stack([hist[e] for e in sorted(hist)])) if hist
                       else torch.zeros(0, len(self.train_index))}
                for name, hist in self.history.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, entry in state.items():
            if name in self.history:
                values = entry["values"].numpy()
                self.history[name] = {int(e): values[i] for i, e in enumerate(entry["epochs"].tolist())}
