"""Code lines of the method files (and any other Python files): the issue-21 measure.

A *code line* is a line that holds Python code: blank lines, comment-only lines and the lines of
docstrings (the string statement that opens a module, class or function) do not count. Lines
inside other strings (a multi-line message, say) do count: they are code::

    python benchmarks/code_lines.py                      # the method files
    python benchmarks/code_lines.py src/noisylabels/methods/narl.py ...
    python benchmarks/code_lines.py --limits            # and fail (exit 1) above the issue's targets

Targets (issue 21, step 5): NARL, MLC and EMLC at most 90 code lines each, MW-Net at most 60.
"""

from __future__ import annotations

import argparse
import ast
import io
import sys
import tokenize
from pathlib import Path

__all__ = ["code_lines", "docstring_lines", "LIMITS", "main"]

ROOT = Path(__file__).resolve().parents[1]
METHODS = ROOT / "src" / "noisylabels" / "methods"

#: the issue's targets, by method file
LIMITS = {"narl.py": 90, "mlc.py": 90, "emlc.py": 90, "mwnet.py": 60}


def docstring_lines(source: str) -> set[int]:
    """Line numbers (1-based) covered by the docstrings of the module, its classes and functions."""
    out: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                out.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return out


def code_lines(source: str) -> int:
    """The number of lines holding code: not blank, not only a comment, not part of a docstring."""
    docs = docstring_lines(source)
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                        tokenize.ENDMARKER, tokenize.ENCODING):
            continue
        lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in docs)
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="Python files (default: every file of src/noisylabels/methods)")
    ap.add_argument("--limits", action="store_true", help="exit 1 when a method file is above its target")
    args = ap.parse_args(argv)
    files = [Path(f).resolve() for f in args.files] or sorted(METHODS.glob("*.py"))
    over = []
    for path in files:
        n = code_lines(path.read_text(encoding="utf-8"))
        limit = LIMITS.get(path.name) if path.parent.resolve() == METHODS.resolve() else None
        mark = "" if limit is None else f"  (target <= {limit}{', OVER' if n > limit else ''})"
        if limit is not None and n > limit:
            over.append(path.name)
        print(f"{n:5d}  {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}{mark}")
    if args.limits and over:
        print(f"above the target: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
