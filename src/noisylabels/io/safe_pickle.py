"""Reading pickled numpy data without running code: one allowlist for every pickle format we read.

A pickle can name any importable callable and call it while loading (``__reduce__``), so a
file a user hands us is never given to plain :func:`pickle.load`. The formats we accept (the
CIFAR python batches, the CIFAR-N ``.pt`` label files) hold only dicts, lists, bytes, strings,
numbers and numpy arrays; :data:`NUMPY_GLOBALS` names the few callables numpy's array
reconstruction needs, and nothing else may be looked up.

* :func:`restricted_load` reads a plain pickle (``pickle.Unpickler`` with ``find_class``
  limited to the allowlist);
* :func:`numpy_safe_globals` gives the same allowlist in the form
  ``torch.serialization.safe_globals`` takes, for ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import pickle
from typing import Any, BinaryIO

__all__ = ["NUMPY_GLOBALS", "numpy_globals", "numpy_safe_globals", "restricted_load"]

#: (module, name) pairs a pickled numpy array may look up (numpy 1 and 2 spellings), plus
#: ``_codecs.encode``, which Python 3 writes for ``bytes`` in pickle protocols below 3
NUMPY_GLOBALS = (
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
)


def _import(module: str, name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module), name)


def numpy_globals() -> dict[tuple[str, str], Any]:
    """The allowlisted callables, keyed by ``(module, name)`` as a pickle names them; numpy's
    per-type dtype classes (``numpy.dtypes.UInt8DType`` ...) come with ``numpy.dtype``."""
    import numpy.dtypes as ndt

    out: dict[tuple[str, str], Any] = {}
    for module, name in NUMPY_GLOBALS:
        # numpy 2 spelling first (importing numpy.core there warns), numpy 1's second
        v2, v1 = module.replace("numpy.core.", "numpy._core."), module.replace("numpy._core.", "numpy.core.")
        for where in dict.fromkeys((v2, v1)):
            try:
                out[(module, name)] = _import(where, name)
                break
            except (ImportError, AttributeError):
                continue
    for n in dir(ndt):
        if n.endswith("DType"):
            out[("numpy.dtypes", n)] = getattr(ndt, n)
    return out


def numpy_safe_globals() -> list[Any]:
    """:func:`numpy_globals` as ``torch.serialization.safe_globals`` takes it (objects, and
    ``(object, "module.name")`` for names under which torch would not find them)."""
    out: list[Any] = []
    for (module, name), obj in numpy_globals().items():
        if module == "_codecs":  # torch's weights_only unpickler handles bytes itself
            continue
        out.append((obj, f"{module}.{name}") if f"{obj.__module__}.{obj.__name__}" != f"{module}.{name}" else obj)
    return out


class _Restricted(pickle.Unpickler):
    def __init__(self, fh: BinaryIO, allowed: dict[tuple[str, str], Any], **kw: Any) -> None:
        super().__init__(fh, **kw)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        obj = self._allowed.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which is not allowed here "
                                         "(only dicts, lists, strings, numbers and numpy arrays)")
        return obj


def restricted_load(fh: BinaryIO, *, encoding: str = "ASCII") -> Any:
    """:func:`pickle.load` that can build only plain containers, strings, numbers and numpy arrays.

    Raises
    ------
    pickle.UnpicklingError
        The file names any other callable (nothing is called), or is not a pickle.
    """
    return _Restricted(fh, numpy_globals(), encoding=encoding).load()

