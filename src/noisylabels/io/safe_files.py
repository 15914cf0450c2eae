"""Read a user's torch and numpy files without unpickling, every failure one clear line.

``torch.load(weights_only=True)`` and ``np.load(allow_pickle=False)`` never run a file's code,
but what they say about a file that is not what we expect is cryptic: a text file is
``KeyError: 101`` (the byte ``e`` read as a pickle opcode), a cut file mentions "Re-running
`torch.load` with `weights_only` set to `False`", which the user must never do for a file they
do not trust, and a CSV handed as ``.npy`` "contains pickled data". :func:`load_torch_file` and
:func:`load_npy` look at the first bytes first and say what the file is instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = ["describe_bytes", "load_torch_file", "load_npy", "load_npz"]

_ZIP = b"PK\x03\x04"
_NPY = b"\x93NUMPY"


def describe_bytes(head: bytes, size: int) -> str:
    """What a file that starts with ``head`` (and has ``size`` bytes) looks like, in a few words."""
    if size == 0:
        return "an empty file"
    if head.startswith(_ZIP):
        return "a zip archive"
    if head.startswith(_NPY):
        return "a numpy .npy array"
    if head[:1] == b"\x80":
        return "a pickle"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"a binary file of {size} byte(s) in no format we read"
    return "a text file" + (" (CSV?)" if "," in text else "")


def _head(p: Path, what: str) -> tuple[bytes, int]:
    if not p.is_file():
        raise UserError(f"{what}: file not found: {p}")
    try:
        with open(p, "rb") as fh:
            return fh.read(512), p.stat().st_size
    except OSError as err:
        raise UserError(f"{what}: cannot read {p}: {err.strerror or err}") from None


def _first_line(err: BaseException) -> str:
    """The first sentence of an error, without torch's advice to load with ``weights_only=False``."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    for cut in (" Re-running `torch.load`", " In PyTorch 2.6,"):
        text = text.split(cut)[0]
    text = text.split(". ")[0]  # the first sentence (torch and miniz add advice after it)
    return text.strip().rstrip(".")[:200] or type(err).__name__


def load_torch_file(path: str | os.PathLike[str], *, what: str, expected: str = "PyTorch file",
                    safe_globals: Iterable[Any] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; any failure a one-line
    :class:`~noisylabels.errors.UserError` naming ``what`` (the option or role of the file) and
    saying what the file is (empty, text, truncated, holding code or objects we do not load).

    ``safe_globals`` are extra callables the unpickler may use (numpy's array reconstruction for
    CIFAR-N label files); nothing else ever runs.
    """
    import torch

    p = Path(path).expanduser()
    head, size = _head(p, what)
    kind = describe_bytes(head, size)
    where = f"{what} {p} is not a readable {expected}"
    if kind not in ("a zip archive", "a pickle"):
        raise UserError(f"{where} (it is {kind}, not a file written by torch.save)")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (every failure of a user's file is one line)
        full = str(err)
        if "Weights only load failed" in full or "Unsupported global" in full:
            detail = next((line.strip().split(". ")[0] for line in full.splitlines()
                           if "GLOBAL" in line or "Unsupported global" in line), "")
            raise UserError(f"{where} (weights_only load: it holds objects other than tensors and plain "
                            f"containers, refused without running them{': ' + detail[:160] if detail else ''})") \
                from None
        text = _first_line(err)
        if isinstance(err, (EOFError, IndexError)) or any(w in full for w in ("central directory", "truncated",
                                                                              "failed finding", "EOF")):
            raise UserError(f"{where} (truncated or damaged, {size} bytes: {text})") from None
        raise UserError(f"{where} ({text})") from None


def load_npy(path: str | os.PathLike[str], *, what: str) -> Any:
    """``np.load(path, allow_pickle=False)`` of one ``.npy`` array; a file of another kind (a
    CSV, text, an object array, a cut file) is a one-line error naming ``what``."""
    import numpy as np

    p = Path(path).expanduser()
    head, size = _head(p, what)
    if not head.startswith(_NPY):
        raise UserError(f"{what} {p} is {describe_bytes(head, size)}, not a .npy array (numpy.save)")
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err):
            raise UserError(f"{what} {p} holds an object array (Python objects; no pickles are read): save a "
                            "numeric array") from None
        raise UserError(f"{what} {p} is a damaged .npy file ({_first_line(err)})") from None
    except Exception as err:  # noqa: BLE001  (cut header, bad shape, short data)
        raise UserError(f"{what} {p} is a damaged .npy file ({_first_line(err)})") from None
    return arr


def load_npz(path: str | os.PathLike[str], *, what: str) -> dict[str, Any]:
    """The arrays of an ``.npz`` archive (``allow_pickle=False``) as ``{name: array}``; anything
    else (a bare ``.npy``, text, a damaged zip, object arrays) is a one-line error naming ``what``."""
    import numpy as np

    p = Path(path).expanduser()
    head, size = _head(p, what)
    if not head.startswith(_ZIP):
        raise UserError(f"{what} {p} is {describe_bytes(head, size)}, not an .npz archive (numpy.savez)")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as err:  # noqa: BLE001  (damaged zip, bad member, object arrays)
        if "pickle" in str(err):
            raise UserError(f"{what} {p} holds object arrays (Python objects), which are not read") from None
        raise UserError(f"{what} {p} is a damaged .npz archive ({_first_line(err)})") from None
