"""No package-level import cycle in ``src/noisylabels``, counting imports inside functions, and no
private name imported from another package.

Every module is parsed with :mod:`ast` (not imported), so an import deferred into a function
counts as much as one at the top of the file. Each import is reduced to the top-level entry it
comes from (``noisylabels.train.loop`` -> ``train``; ``noisylabels/estimator.py`` -> ``estimator``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import noisylabels

ROOT = Path(noisylabels.__file__).resolve().parent

# Known remaining cycles (sorted member tuples); this set may only shrink.
ALLOWED_CYCLES: set[tuple[str, ...]] = set()


def _top(path: Path, root: Path) -> str:
    first = path.relative_to(root).parts[0]
    return first.removesuffix(".py")


def _imported(path: Path, root: Path, tree: ast.AST) -> set[tuple[str, ...]]:
    """Dotted names (as part tuples below ``noisylabels``) that ``path`` imports, anywhere in it."""
    parts = ("noisylabels",) + path.relative_to(root).with_suffix("").parts
    package = parts[:-1]  # what a single dot names, for a package's __init__ and a module alike
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(tuple(a.name.split(".")) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                mod = base + tuple(node.module.split(".")) if node.module else base
            else:
                mod = tuple(node.module.split("."))
            out.add(mod)
            if len(mod) == 1 and mod[0] == "noisylabels":  # from noisylabels import train
                out.update(mod + (a.name,) for a in node.names)
    return {m[1:] for m in out if m[0] == "noisylabels" and len(m) > 1}


def package_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Top-level entry -> the other top-level entries it imports (existing ones only)."""
    entries = {p.name.removesuffix(".py") for p in root.iterdir()
               if ((p.is_dir() and (p / "__init__.py").is_file()) or p.suffix == ".py") and p.name != "__init__.py"}
    graph: dict[str, set[str]] = {e: set() for e in entries}
    for path in root.rglob("*.py"):
        src = _top(path, root)
        if src == "__init__":
            continue  # the package's own re-exports sit above every entry
        for mod in _imported(path, root, ast.parse(path.read_text(encoding="utf-8"))):
            if mod[0] in entries and mod[0] not in (src, "__init__"):
                graph[src].add(mod[0])
    return graph


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components with more than one member (Tarjan), as sorted tuples."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.add(tuple(sorted(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"cli": {"detect"}, "detect": {"train"}, "train": {"detect", "errors"}, "errors": set()}
    assert cycles(graph) == {("detect", "train")}
    graph["detect"].add("cli")
    assert cycles(graph) == {("cli", "detect", "train")}
    assert cycles({"a": {"b"}, "b": set()}) == set()


def test_imports_inside_functions_count(tmp_path):
    pkg = tmp_path / "noisylabels"
    (pkg / "train").mkdir(parents=True)
    (pkg / "detect").mkdir()
    for p in (pkg / "__init__.py", pkg / "train" / "__init__.py", pkg / "detect" / "__init__.py"):
        p.write_text("")
    (pkg / "train" / "crossfit.py").write_text("def f():\n    from ..detect.report import x\n")
    (pkg / "detect" / "report.py").write_text("from noisylabels.train import loop\n")
    assert package_graph(pkg) == {"train": {"detect"}, "detect": {"train"}}


def test_no_package_import_cycle():
    found = cycles(package_graph())
    assert found <= ALLOWED_CYCLES, f"new package import cycles: {sorted(found - ALLOWED_CYCLES)}"
    assert found == ALLOWED_CYCLES, f"cycles gone, shrink ALLOWED_CYCLES: {sorted(ALLOWED_CYCLES - found)}"


# -- the rooms: which top-level entries each package may import (DESIGN.md, "Layers") ------------------------
_GROUND = {"errors", "seeding", "progress"}
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(), "seeding": set(), "progress": set(), "eval": set(),
    "io": {"errors"}, "registry": {"errors"}, "config": {"errors"}, "safe_files": {"io"},
    "meta": {"errors"},
    "losses": _GROUND | {"registry", "io"}, "noise": _GROUND | {"registry", "io"},
    "models": _GROUND | {"registry", "io"}, "data": _GROUND | {"registry", "io"},
    # methods see a run only through MethodContext: never train/, data/, detect/, bench/, cli/
    "methods": _GROUND | {"registry", "io", "eval", "losses", "meta", "models"},
    "train": _GROUND | {"registry", "io", "eval", "config", "losses", "meta", "models", "noise", "data", "methods"},
    "detect": _GROUND | {"io", "eval", "train"},            # reads run records through train/, never cli/
    "bench": _GROUND | {"io", "config", "train", "detect"},  # detect: resolve_forget_rate for a cell
    "config_doc": _GROUND | {"config", "methods", "train"},
    "estimator": _GROUND | {"config", "data", "detect", "train", "models", "methods"},
}


def test_each_package_imports_only_the_rooms_below_it():
    graph = package_graph()
    for pkg, imported in graph.items():
        if pkg in ("cli", "__main__"):
            continue  # the top: may import anything, and nothing imports it
        assert pkg in MAY_IMPORT, f"a new top-level entry {pkg!r}: give it its rooms in MAY_IMPORT and DESIGN.md"
        assert imported <= MAY_IMPORT[pkg], f"{pkg} imports {sorted(imported - MAY_IMPORT[pkg])}"
    assert not any("cli" in imported for pkg, imported in graph.items() if pkg not in ("cli", "__main__"))


# -- private names stay in their package ----------------------------------------------------------------------
# ``(importing file, imported dotted name)`` pairs allowed to cross packages; this set may only shrink.
ALLOWED_PRIVATE: set[tuple[str, str]] = set()


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def private_cross_imports(root: Path = ROOT) -> set[tuple[str, str]]:
    """``(file, dotted name)`` of every import of a private name (a module or a name starting with one
    underscore: ``from ..eval.plots import _figure``, ``from ..detect._validation import x``) whose
    top-level package differs from the importing file's, anywhere in the file (functions included)."""
    found = set()
    for path in root.rglob("*.py"):
        src = _top(path, root)
        parts = ("noisylabels",) + path.relative_to(root).with_suffix("").parts
        package = parts[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[:len(package) - (node.level - 1)]
                    mod = base + tuple(node.module.split(".")) if node.module else base
                else:
                    mod = tuple(node.module.split("."))
                names = [mod + (a.name,) for a in node.names]
            elif isinstance(node, ast.Import):
                names = [tuple(a.name.split(".")) for a in node.names]
            else:
                continue
            for full in names:
                inner = full[1:]
                if full[0] != "noisylabels" or not inner:
                    continue
                target = inner[0].removesuffix(".py")
                if target != src and any(_private(p) for p in inner):
                    found.add((str(path.relative_to(root)), ".".join(full)))
    return found


def test_the_private_import_finder_finds_planted_ones(tmp_path):
    pkg = tmp_path / "noisylabels"
    for d in ("eval", "detect", "train"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "registry.py").write_text("def _keyword_options(): pass\n")
    (pkg / "detect" / "report.py").write_text(
        "from ._validation import check\n"               # same package: allowed
        "from .rank import _scores\n"                    # same package: allowed
        "def f():\n    from ..eval.plots import _figure, new_figure\n")
    (pkg / "train" / "precheck.py").write_text("import noisylabels.detect._validation\n"
                                               "from ..registry import _keyword_options\n")
    assert private_cross_imports(pkg) == {
        (str(Path("detect") / "report.py"), "noisylabels.eval.plots._figure"),
        (str(Path("train") / "precheck.py"), "noisylabels.detect._validation"),
        (str(Path("train") / "precheck.py"), "noisylabels.registry._keyword_options")}


def test_no_private_name_is_imported_across_packages():
    found = private_cross_imports()
    assert found <= ALLOWED_PRIVATE, f"private names imported across packages: {sorted(found - ALLOWED_PRIVATE)}"
    assert found == ALLOWED_PRIVATE, f"gone, shrink ALLOWED_PRIVATE: {sorted(ALLOWED_PRIVATE - found)}"
