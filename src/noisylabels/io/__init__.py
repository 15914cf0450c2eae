"""The bottom I/O layer: atomic writers, JSON/CSV conversion, ``read_metrics`` and the safe loaders.

It imports nothing from the rest of the package but :mod:`noisylabels.errors` (a test checks
it), so every layer (``data``, ``methods``, ``train``, ``detect``, ``bench``) may use it.

* :mod:`.atomic`: temporary file + :func:`os.replace` writers (text, bytes, torch, ``.npy``,
  ``.npz``), with an ``on_write`` hook for a run directory's manifest;
* :mod:`.jsonable`: :func:`to_jsonable`, :func:`csv_cell`, :func:`read_metrics`;
* :mod:`.safe_files`: torch / numpy files of a user, read without unpickling, one-line errors;
* :mod:`.safe_pickle`: the numpy allowlist for pickle formats (CIFAR batches, CIFAR-N ``.pt``).
"""

from .atomic import (atomic_save_npy, atomic_save_npz, atomic_torch_save, atomic_write, atomic_write_bytes,
                     atomic_write_text)
from .jsonable import csv_cell, read_metrics, to_jsonable
from .safe_files import describe_bytes, load_npy, load_npz, load_torch_file
from .safe_pickle import NUMPY_GLOBALS, numpy_globals, numpy_safe_globals, restricted_load

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_bytes", "atomic_torch_save", "atomic_save_npy",
           "atomic_save_npz", "to_jsonable", "csv_cell", "read_metrics", "describe_bytes", "load_torch_file",
           "load_npy", "load_npz", "NUMPY_GLOBALS", "numpy_globals", "numpy_safe_globals", "restricted_load"]
