"""Old home of the pickle allowlist; it lives in :mod:`noisylabels.io.safe_pickle` (kept for imports by users)."""

from ..io.safe_pickle import NUMPY_GLOBALS, numpy_globals, numpy_safe_globals, restricted_load

__all__ = ["NUMPY_GLOBALS", "numpy_globals", "numpy_safe_globals", "restricted_load"]
