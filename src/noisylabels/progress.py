"""Progress display: a tqdm bar on a terminal, one plain line per step (epoch, fold, task, run)
elsewhere, so logs and pipes never receive carriage-return bars."""

from __future__ import annotations

import sys
from typing import Any, TextIO

__all__ = ["progress_mode", "on_terminal"]


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``, where tqdm draws) is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(callable(isatty) and isatty())
    except (ValueError, OSError):  # a closed stream
        return False


def progress_mode(setting: Any, *, stream: TextIO | None = None) -> str | None:
    """``None`` (quiet: ``False`` / ``None``), ``"bar"`` (``True`` on a terminal) or ``"lines"``
    (``True`` off a terminal, or ``"lines"``)."""
    if setting is None or setting is False:
        return None
    if setting == "lines":
        return "lines"
    return "bar" if on_terminal(stream) else "lines"
