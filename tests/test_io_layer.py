"""The bottom I/O layer: it imports nothing of the package but ``errors``, and its writers are atomic."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import noisylabels
from noisylabels.io import atomic_save_npz, atomic_write, atomic_write_text

IO_DIR = Path(noisylabels.__file__).parent / "io"


def _package_imports(path: Path) -> set[str]:
    """Every ``noisylabels`` module a file imports (top level and inside functions), absolute names."""
    here = ["noisylabels", "io"] + ([] if path.name == "__init__.py" else [path.stem])
    pkg = here if path.name == "__init__.py" else here[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out.update(n for n in names if n == "noisylabels" or n.startswith("noisylabels."))
    return out


def test_io_imports_nothing_of_the_package_but_errors():
    files = sorted(IO_DIR.glob("*.py"))
    assert len(files) >= 4
    seen = set().union(*(_package_imports(f) for f in files))
    outside = {m for m in seen if not m.startswith("noisylabels.io") and m != "noisylabels.errors"}
    assert "noisylabels.errors" in seen and not outside, outside


def test_io_loads_alone_in_a_fresh_interpreter(tmp_path):
    # load noisylabels.io without running noisylabels/__init__ (which imports everything): only
    # errors may join it from the package
    code = (
        "import importlib.util, sys, types\n"
        f"root = {str(IO_DIR.parent)!r}\n"
        "pkg = types.ModuleType('noisylabels'); pkg.__path__ = [root]; sys.modules['noisylabels'] = pkg\n"
        "import noisylabels.io\n"
        "print(sorted(m for m in sys.modules if m.startswith('noisylabels')))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    mods = eval(res.stdout.strip())
    assert {m for m in mods if not m.startswith("noisylabels.io")} == {"noisylabels", "noisylabels.errors"}


def test_atomic_write_registers_first_and_leaves_no_temporary_on_failure(tmp_path):
    dest = tmp_path / "sub" / "f.txt"
    calls = []

    def write(tmp):
        calls.append(("write", os.path.dirname(tmp)))
        Path(tmp).write_text("new")

    atomic_write(dest, write, on_write=lambda p: calls.append(("hook", p)))
    assert dest.read_text() == "new" and calls == [("hook", dest), ("write", str(dest.parent))]

    def boom(tmp):
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(dest, boom)
    assert dest.read_text() == "new"  # the old file is untouched
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f.txt"]  # and no temporary is left


def test_atomic_writers_write_exactly_the_path_given(tmp_path):
    atomic_save_npz(tmp_path / "s.bin", {"a": np.arange(3)}, compressed=True)
    atomic_write_text(tmp_path / "t", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.bin", "t"]  # no ".npz" added
    with np.load(tmp_path / "s.bin", allow_pickle=False) as z:
        assert z["a"].tolist() == [0, 1, 2]
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "t").stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600
