"""Read a ``path,label`` CSV that replaces the training labels of an image folder.

This is how real noisy label sets (CIFAR-N, Clothing1M-style annotations) are
brought in: the CSV lists training images and the label a (noisy) annotator
gave each of them. The training pool becomes exactly the CSV's rows, in CSV
order.

Format
------
* One row per image: ``path,label``; extra columns are ignored; blank lines are
  skipped. A first row whose first cell is ``path``/``file``/``filename``/
  ``image`` or whose second cell is ``label``/``class``/``target`` is a header.
* ``path`` is relative to the split folder root and may be given with or
  without the tree's prefix and split, e.g. ``train/cat/0001.jpg``,
  ``cifar10/train/cat/0001.jpg`` or ``cat/0001.jpg``.
* ``label`` is a class name or an integer class id in ``[0, K)``; a class name
  wins when a name is also a number.

Any layout (a flat folder, or a tree whose folders are not classes): when the CSV's labels
are not the folder names (or ``classes_from="csv"``), the classes come from the CSV itself
(:func:`labels_from_csv_rows`), ``path`` is the file's path inside the folder or zip, and
there are no "clean" folder labels.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import UserError

__all__ = ["read_labels_csv", "path_keys", "read_csv_rows", "labels_from_csv_rows"]

_PATH_HEADERS = {"path", "file", "filename", "file_name", "image", "img", "relpath", "name"}
_LABEL_HEADERS = {"label", "labels", "class", "target", "noisy_label", "y"}


def _norm(p: str) -> str:
    p = p.strip().replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    return p.lstrip("/")


def path_keys(relpath: str, prefix: str) -> list[str]:
    """The spellings under which a CSV row may name a file of the tree.

    Parameters
    ----------
    relpath:
        The file's path inside its source, e.g. ``cifar10/train/cat/0001.jpg``.
    prefix:
        The tree's prefix (``cifar10``) or ``""``.

    Returns
    -------
    list of str
        The full path, the path without the prefix, and ``class/file``.
    """
    keys = [relpath]
    if prefix and relpath.startswith(prefix + "/"):
        keys.append(relpath[len(prefix) + 1:])
    parts = relpath.split("/")
    keys.append("/".join(parts[-2:]))
    return keys


def read_labels_csv(
    path: str | os.PathLike[str],
    *,
    classes: Sequence[str],
    train_paths: Sequence[str],
    prefix: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Match a labels CSV to the training files.

    Parameters
    ----------
    path:
        The CSV file.
    classes:
        Class names; label ``k`` is ``classes[k]``.
    train_paths:
        Paths of the training files inside their source (as in ``paths_train``).
    prefix:
        The tree's prefix, which CSV paths may omit.

    Returns
    -------
    positions, labels:
        int64 arrays of equal length: for each CSV row (in order) the position
        of its file in ``train_paths`` and its label.

    Raises
    ------
    UserError
        Unreadable or empty file, a row without two cells, a path that is not
        a training file, a duplicate path, or an unknown class / out-of-range
        id; the message names the file, the row number and the value.
    """
    p = Path(path)
    lookup: dict[str, int] = {}
    for i, rel in enumerate(train_paths):
        for k in path_keys(rel, prefix):
            lookup.setdefault(k, i)
    name_to_id = {c: k for k, c in enumerate(classes)}
    positions: list[int] = []
    labels: list[int] = []
    first_row: dict[int, int] = {}
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header_checked = False
            for row in reader:
                row_no = reader.line_num
                cells = [c.strip() for c in row]
                if not any(cells):
                    continue
                if not header_checked:
                    header_checked = True
                    if cells[0].lower() in _PATH_HEADERS or (
                        len(cells) > 1 and cells[1].lower() in _LABEL_HEADERS
                    ):
                        continue
                if len(cells) < 2 or not cells[0] or not cells[1]:
                    raise UserError(f"labels_csv {p} row {row_no}: expected 'path,label', got {row!r}")
                rel, lab = _norm(cells[0]), cells[1]
                pos = lookup.get(rel)
                if pos is None:
                    raise UserError(
                        f"labels_csv {p} row {row_no}: path {cells[0]!r} is not a training image of the folder"
                    )
                if lab in name_to_id:
                    label = name_to_id[lab]
                else:
                    try:
                        label = int(lab)
                    except ValueError:
                        raise UserError(
                            f"labels_csv {p} row {row_no}: unknown class {lab!r}; "
                            f"valid: {', '.join(classes)} or ids 0..{len(classes) - 1} "
                            "(if the folders are not classes, set classes_from=csv)"
                        ) from None
                    if not 0 <= label < len(classes):
                        raise UserError(
                            f"labels_csv {p} row {row_no}: label id {label} outside [0, {len(classes)})"
                        )
                if pos in first_row:
                    raise UserError(
                        f"labels_csv {p} row {row_no}: path {cells[0]!r} already listed in row {first_row[pos]}"
                    )
                first_row[pos] = row_no
                positions.append(pos)
                labels.append(label)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"cannot read labels_csv {p}: {err}") from None
    if not positions:
        raise UserError(f"labels_csv {p} has no rows")
    return np.asarray(positions, dtype=np.int64), np.asarray(labels, dtype=np.int64)


def read_csv_rows(path: str | os.PathLike[str]) -> list[tuple[int, str, str]]:
    """``(row number, normalised path, label text)`` for each data row of a ``path,label`` CSV.

    Raises
    ------
    UserError
        Unreadable or empty file, or a row without two cells.
    """
    p = Path(path)
    out: list[tuple[int, str, str]] = []
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header_checked = False
            for row in reader:
                cells = [c.strip() for c in row]
                if not any(cells):
                    continue
                if not header_checked:
                    header_checked = True
                    if cells[0].lower() in _PATH_HEADERS or (len(cells) > 1 and cells[1].lower() in _LABEL_HEADERS):
                        continue
                if len(cells) < 2 or not cells[0] or not cells[1]:
                    raise UserError(f"labels_csv {p} row {reader.line_num}: expected 'path,label', got {row!r}")
                out.append((reader.line_num, _norm(cells[0]), cells[1]))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"cannot read labels_csv {p}: {err}") from None
    if not out:
        raise UserError(f"labels_csv {p} has no rows")
    return out


def labels_from_csv_rows(rows: Sequence[tuple[int, str, str]], *, classes: Sequence[str] | None,
                         where: str) -> tuple[np.ndarray, list[str]]:
    """Labels and class names defined by the CSV itself.

    ``classes`` given: labels are names from it or ids into it. Otherwise all-integer labels
    give classes ``"0" .. str(max)``, and names give their sorted distinct values.
    """
    texts = [lab for _, _, lab in rows]
    if classes is not None:
        names = [str(c) for c in classes]
        lookup = {c: k for k, c in enumerate(names)}
        out = []
        for (row_no, _, lab) in rows:
            if lab in lookup:
                out.append(lookup[lab])
                continue
            try:
                k = int(lab)
            except ValueError:
                raise UserError(f"labels_csv {where} row {row_no}: unknown class {lab!r}; "
                                f"valid: {', '.join(names)}") from None
            if not 0 <= k < len(names):
                raise UserError(f"labels_csv {where} row {row_no}: label id {k} outside [0, {len(names)})")
            out.append(k)
        return np.asarray(out, dtype=np.int64), names
    try:
        ids = [int(t) for t in texts]
    except ValueError:
        names = sorted(set(texts))
        lookup = {c: k for k, c in enumerate(names)}
        return np.asarray([lookup[t] for t in texts], dtype=np.int64), names
    if min(ids) < 0:
        i = ids.index(min(ids))
        raise UserError(f"labels_csv {where} row {rows[i][0]}: negative label id {ids[i]}")
    return np.asarray(ids, dtype=np.int64), [str(k) for k in range(max(ids) + 1)]
