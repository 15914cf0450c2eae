"""The code-line counter of the method files (``benchmarks/code_lines.py``, issue 21's measure)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
cl = importlib.import_module("code_lines")

SOURCE = '''"""Module docstring,
two lines."""

import os  # a comment after code counts as code


# a comment-only line
def f(x):
    """A docstring."""
    message = """a multi-line string
    that is not a docstring"""
    return (x +
            1)


class C:
    """Doc."""

    y = 2
'''


def test_code_lines_leave_out_blanks_comments_and_docstrings_only():
    # import; def; message (2 lines); return (2 lines); class; y = 2
    assert cl.code_lines(SOURCE) == 8
    assert cl.docstring_lines(SOURCE) == {1, 2, 9, 17}


def test_the_method_files_are_counted_with_their_targets(capsys):
    assert cl.main([]) in (0, 1)
    out = capsys.readouterr().out
    assert "methods/narl.py" in out and "target <= 90" in out and "methods/mwnet.py" in out
