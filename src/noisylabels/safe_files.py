"""Old home of the safe loaders; they live in :mod:`noisylabels.io.safe_files` (kept for imports by users)."""

from .io.safe_files import describe_bytes, load_npy, load_npz, load_torch_file

__all__ = ["describe_bytes", "load_torch_file", "load_npy", "load_npz"]
