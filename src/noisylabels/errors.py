"""User-facing errors.

Anything a user can cause (an unknown name, a rate out of range, a missing or
corrupt file, a diverging loss) raises :class:`UserError` with a one-line
message. The CLI prints it on stderr and exits with status 2; library callers
can catch it like any exception.
"""

from __future__ import annotations

__all__ = ["UserError", "NonFiniteLossError"]


class UserError(ValueError):
    """An error caused by the user's input, reported without a traceback."""


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite.

    The training loop stops, keeps the last checkpoint and the records written
    so far, and re-raises this error so the CLI can say so.
    """
