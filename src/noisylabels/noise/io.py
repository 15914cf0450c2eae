"""Reading and writing noisy-label files, and printing transition matrices.

CSV layout written by :func:`write_noisy_labels_csv` (header line first)::

    index,clean,noisy[,split]
    0,3,5,train
    ...

``index`` is the sample's position in the dataset, ``clean`` and ``noisy`` are
integer labels, ``split`` an optional free-text column (e.g. train / val).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError

__all__ = ["NoisyLabelsTable", "write_noisy_labels_csv", "read_noisy_labels_csv", "format_matrix",
           "write_labels_csv"]


@dataclass(frozen=True, eq=False)
class NoisyLabelsTable:
    """Contents of a noisy-labels CSV: int64 ``index``/``noisy``, ``clean`` (or None), ``split`` (or None)."""

    index: np.ndarray
    clean: np.ndarray | None
    noisy: np.ndarray
    split: np.ndarray | None = None

    @property
    def noisy_mask(self) -> np.ndarray:
        """True where the noisy label differs from the clean one (needs the clean column)."""
        if self.clean is None:
            raise UserError("this noisy-labels file has no clean column")
        return self.noisy != self.clean


def _int_column(name: str, values: Any, n: int | None, path: Path) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1:
        raise UserError(f"{path}: column {name} must be 1-D, got shape {a.shape}")
    if a.size and a.dtype.kind not in "iu":
        raise UserError(f"{path}: column {name} must be integers, got dtype {a.dtype}")
    if n is not None and a.shape[0] != n:
        raise UserError(f"{path}: column {name} has {a.shape[0]} entries, expected {n}")
    return a.astype(np.int64)


def write_noisy_labels_csv(
    path: str | Path,
    *,
    index: Any,
    clean: Any,
    noisy: Any,
    split: Sequence[str] | np.ndarray | str | None = None,
) -> Path:
    """Write ``index,clean,noisy[,split]`` rows to ``path`` (parent folders are created).

    Parameters
    ----------
    path:
        Destination ``.csv``.
    index, clean, noisy:
        Equal-length integer arrays.
    split:
        Optional per-row strings, or one string used for every row.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    p = Path(path)
    idx = _int_column("index", index, None, p)
    n = idx.shape[0]
    c = _int_column("clean", clean, n, p)
    y = _int_column("noisy", noisy, n, p)
    sp: list[str] | None = None
    if split is not None:
        sp = [split] * n if isinstance(split, str) else [str(s) for s in split]
        if len(sp) != n:
            raise UserError(f"{p}: column split has {len(sp)} entries, expected {n}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["index", "clean", "noisy"] + (["split"] if sp is not None else []))
            if sp is None:
                w.writerows(zip(idx.tolist(), c.tolist(), y.tolist()))
            else:
                w.writerows(zip(idx.tolist(), c.tolist(), y.tolist(), sp))
    except OSError as e:
        raise UserError(f"cannot write noisy labels to {p}: {e.strerror or e}") from None
    return p


def read_noisy_labels_csv(path: str | Path) -> NoisyLabelsTable:
    """Read a file written by :func:`write_noisy_labels_csv`.

    Needs the columns ``index`` and ``noisy``; ``clean`` and ``split`` are
    optional (a user-supplied noisy-label file may not know the clean labels).

    Raises
    ------
    UserError
        Missing file, missing column or a non-integer label; the message names the file and line.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"noisy labels file not found: {p}")
    try:
        with p.open(newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read noisy labels file {p}: {e}") from None
    if not rows:
        raise UserError(f"noisy labels file {p} is empty (expected header index,clean,noisy[,split])")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in ("index", "noisy") if c not in header]
    if missing:
        raise UserError(f"noisy labels file {p} lacks column(s) {', '.join(missing)}; header is {rows[0]}")
    col = {h: i for i, h in enumerate(header)}
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    out: dict[str, np.ndarray] = {}
    for name in ("index", "clean", "noisy"):
        if name not in col:
            continue
        j = col[name]
        vals = np.empty(len(body), dtype=np.int64)
        for line, r in enumerate(body, start=2):
            try:
                vals[line - 2] = int(r[j])
            except (IndexError, ValueError):
                cell = r[j] if j < len(r) else "(missing)"
                raise UserError(f"{p} line {line}: column {name} must be an integer, got {cell!r}") from None
        out[name] = vals
    split = None
    if "split" in col:
        j = col["split"]
        split = np.array([r[j] if j < len(r) else "" for r in body], dtype=str)
    return NoisyLabelsTable(index=out["index"], clean=out.get("clean"), noisy=out["noisy"], split=split)


def format_matrix(T: Any, classes: Sequence[str] | None = None) -> str:
    """Pretty-print a transition matrix with 2 decimals (rows: clean class, columns: noisy class).

    Parameters
    ----------
    T:
        ``(K, K)`` array-like.
    classes:
        Optional ``K`` class names; defaults to ``0 .. K-1``.

    Returns
    -------
    str
        A right-aligned table, first line the header, no trailing newline.
    """
    M = np.asarray(T, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise UserError(f"transition matrix must be square, got shape {M.shape}")
    k = M.shape[0]
    names = [str(i) for i in range(k)] if classes is None else [str(c) for c in classes]
    if len(names) != k:
        raise UserError(f"{len(names)} class names given for a {k}x{k} matrix")
    corner = "clean\\noisy"
    row_w = max([len(corner)] + [len(s) for s in names])
    cells = [[f"{v:.2f}" for v in row] for row in M]
    col_w = max([4] + [len(s) for s in names] + [len(c) for r in cells for c in r])
    lines = [corner.ljust(row_w) + "".join(" " + s.rjust(col_w) for s in names)]
    for name, r in zip(names, cells):
        lines.append(name.ljust(row_w) + "".join(" " + c.rjust(col_w) for c in r))
    return "\n".join(lines)


def write_labels_csv(path: str | Path, *, paths: Sequence[str], labels: Any, classes: Sequence[str],
                     clean: Any | None = None) -> Path:
    """Write ``path,label[,clean_label,index]`` rows: the file ``data.options.labels_csv`` reads
    (labels as class names; the extra columns are ignored by the reader).

    Raises
    ------
    UserError
        Lengths differ, a label outside ``[0, K)``, or the file cannot be written.
    """
    p = Path(path)
    y = _int_column("label", labels, len(paths), p)
    c = None if clean is None else _int_column("clean_label", clean, len(paths), p)
    k = len(classes)
    for arr in (y,) if c is None else (y, c):
        if arr.size and (arr.min() < 0 or arr.max() >= k):
            raise UserError(f"{p}: labels must be in [0, {k})")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label"] + (["clean_label", "index"] if c is not None else []))
            for i, (fp, lab) in enumerate(zip(paths, y.tolist())):
                row = [fp, classes[lab]]
                if c is not None:
                    row += [classes[int(c[i])], i]
                w.writerow(row)
    except OSError as e:
        raise UserError(f"cannot write labels to {p}: {e.strerror or e}") from None
    return p
