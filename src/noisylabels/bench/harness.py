"""Benchmark harness: run a suite's grid of runs in worker processes and tabulate mean ± std.

A suite is a YAML file (shipped ones live in ``noisylabels/bench/suites``)::

    name: smoke
    description: ...
    base: {data.name: digits, train.epochs: 20}     # dotted overrides for every cell
    seeds: [0, 1, 2]
    rows: method                                    # the axis that forms table rows
    axes:                                           # grid = product of the axes, in order
      noise:
        - {label: "0%", set: {noise.type: none, noise.rate: 0.0}}
        - {label: "40%", set: {noise.type: symmetric, noise.rate: 0.4}}
      method:
        - {label: CE, set: {method.name: erm, loss.name: ce}}
    metrics: [test_accuracy]                        # summary.json keys to tabulate (x100)
    # an axis entry may also carry `set_by: {other_axis: {label: {overrides}}}`, applied when the
    # other axis takes that label (e.g. a class-dependent noise map that differs per dataset)
    reference:                                      # optional, e.g. a paper's table
      source: "Zhang & Sabuncu 2018, Table 1"
      test_accuracy: {CE: {"40%": 81.88}}

Every (cell, seed) writes its run into ``OUT/<cell>/seed-<s>/``; cells whose ``summary.json``
says ``finished`` are skipped, and unfinished ones resume from their checkpoint, so an
interrupted suite picks up where it stopped.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import io
import itertools
import json
import math
import multiprocessing as mp
import os
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..config import resolve_config
from ..errors import UserError

__all__ = ["Suite", "Cell", "load_suite", "list_suites", "run_suite", "tabulate"]


@dataclass(frozen=True)
class Cell:
    """One grid point: a label per axis and the merged dotted overrides."""

    labels: tuple[tuple[str, str], ...]   # ((axis, label), ...)
    overrides: tuple[tuple[str, Any], ...]

    @property
    def key(self) -> str:
        text = "__".join(label for _, label in self.labels)
        return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "cell"

    def label(self, axis: str) -> str:
        return dict(self.labels)[axis]


@dataclass
class Suite:
    name: str
    description: str
    base: dict[str, Any]
    seeds: list[int]
    rows: str
    axes: dict[str, list[dict[str, Any]]]
    metrics: list[str]
    reference: dict[str, Any]

    def cells(self) -> list[Cell]:
        out = []
        names = list(self.axes)
        for combo in itertools.product(*(self.axes[a] for a in names)):
            over: dict[str, Any] = {}
            chosen = {a: str(e["label"]) for a, e in zip(names, combo)}
            for entry in combo:
                over.update(entry.get("set", {}))
            for entry in combo:
                for axis, by_label in (entry.get("set_by") or {}).items():
                    over.update((by_label or {}).get(chosen.get(axis), {}))
            out.append(Cell(tuple((a, str(e["label"])) for a, e in zip(names, combo)), tuple(over.items())))
        return out

    @property
    def column_axes(self) -> list[str]:
        return [a for a in self.axes if a != self.rows]


def _suite_dir() -> Path:
    return Path(str(resources.files("noisylabels.bench") / "suites"))


def list_suites() -> list[str]:
    """Names of the suites shipped with the package."""
    return sorted(p.stem for p in _suite_dir().glob("*.yaml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """Load a shipped suite by name, or a suite YAML file by path."""
    p = Path(name_or_path)
    if not p.suffix:
        p = _suite_dir() / f"{name_or_path}.yaml"
        if not p.is_file():
            raise UserError(f"unknown suite {str(name_or_path)!r}; valid names: {', '.join(list_suites())}")
    elif not p.is_file():
        raise UserError(f"suite file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"suite {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    axes = raw.get("axes") or {}
    if not axes:
        raise UserError(f"suite {p} has no axes")
    rows = raw.get("rows", "method")
    if rows not in axes:
        raise UserError(f"suite {p}: rows axis {rows!r} is not among its axes {list(axes)}")
    return Suite(name=str(raw.get("name", p.stem)), description=str(raw.get("description", "")),
                 base=dict(raw.get("base") or {}), seeds=[int(s) for s in raw.get("seeds", [0])], rows=rows,
                 axes={k: list(v) for k, v in axes.items()}, metrics=list(raw.get("metrics", ["test_accuracy"])),
                 reference=dict(raw.get("reference") or {}))


def _run_cell(cfg: dict[str, Any], threads: int) -> dict[str, Any]:
    """Worker: train one (cell, seed); returns its summary or ``{'status': 'error', ...}``."""
    import torch

    from ..train import fit

    torch.set_num_threads(threads)
    cfg["train"]["num_threads"] = threads
    try:
        resume = (Path(cfg["out"]) / "checkpoint.pt").is_file()
        return fit(cfg, resume=resume, progress=False)
    except UserError as exc:
        return {"status": "error", "error": str(exc)}


def _finished(out: Path) -> dict[str, Any] | None:
    p = out / "summary.json"
    if not p.is_file():
        return None
    try:
        s = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return s if s.get("status") == "finished" else None


def run_suite(name_or_path: str | Path, *, out: str | Path | None = None, workers: int | None = None,
              max_seeds: int | None = None, assignments: Sequence[str] = (), verbose: bool = True) -> dict[str, Any]:
    """Run (or resume) a suite; print and write ``table.md`` / ``table.csv``; return the results."""
    suite = load_suite(name_or_path)
    out_dir = Path(out or Path("bench") / suite.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = suite.seeds[:max_seeds] if max_seeds else suite.seeds
    jobs: list[tuple[Cell, int, dict[str, Any]]] = []
    for cell in suite.cells():
        for seed in seeds:
            overrides = {**suite.base, **dict(cell.overrides), "seed": seed,
                         "out": str(out_dir / cell.key / f"seed-{seed}"), "train.progress": False}
            cfg = resolve_config(overrides=overrides, assignments=assignments)  # validates up front
            jobs.append((cell, seed, cfg))

    results: dict[tuple[str, int], dict[str, Any]] = {}
    todo = []
    for cell, seed, cfg in jobs:
        done = _finished(Path(cfg["out"]))
        if done is not None:
            results[(cell.key, seed)] = done
        else:
            todo.append((cell, seed, cfg))
    n_workers = max(1, min(workers or (os.cpu_count() or 1), len(todo) or 1))
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    if verbose:
        print(f"suite {suite.name}: {len(jobs)} runs, {len(jobs) - len(todo)} already finished, "
              f"{len(todo)} to run on {n_workers} worker(s)", flush=True)
    if todo:
        from tqdm.auto import tqdm

        ctx = mp.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
            futures = {pool.submit(_run_cell, cfg, threads): (cell, seed) for cell, seed, cfg in todo}
            for fut in tqdm(cf.as_completed(futures), total=len(futures), desc=suite.name, unit="run",
                            disable=not verbose):
                cell, seed = futures[fut]
                res = fut.result()
                results[(cell.key, seed)] = res
                if res.get("status") == "error" and verbose:
                    print(f"  {cell.key} seed {seed}: error: {res['error']}", flush=True)
    md, rows = tabulate(suite, results, seeds)
    (out_dir / "table.md").write_text(md)
    with open(out_dir / "table.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["metric"])
        writer.writeheader()
        writer.writerows(rows)
    if verbose:
        print(md)
        print(f"tables written to {out_dir / 'table.md'} and {out_dir / 'table.csv'}")
    return {"suite": suite.name, "out": str(out_dir), "results": results, "rows": rows, "markdown": md}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return m, s


def tabulate(suite: Suite, results: Mapping[tuple[str, int], Mapping[str, Any]],
             seeds: Sequence[int]) -> tuple[str, list[dict[str, Any]]]:
    """Markdown tables (one per metric, rows x columns, mean ± std over seeds, x100) and CSV rows."""
    cells = suite.cells()
    row_labels = [str(e["label"]) for e in suite.axes[suite.rows]]
    col_keys: list[tuple[str, ...]] = []
    for c in cells:
        key = tuple(c.label(a) for a in suite.column_axes)
        if key not in col_keys:
            col_keys.append(key)
    by_pos = {(c.label(suite.rows), tuple(c.label(a) for a in suite.column_axes)): c for c in cells}
    buf = io.StringIO()
    csv_rows: list[dict[str, Any]] = []
    src = suite.reference.get("source")
    for metric in suite.metrics:
        ref = suite.reference.get(metric, {}) or {}
        has_ref = bool(ref)
        buf.write(f"\n### {suite.name}: {metric} (x100, mean ± std over {len(seeds)} seed(s))\n")
        if has_ref and src:
            buf.write(f"reference columns ('ref'): {src}\n")
        buf.write("\n")
        header = [suite.rows]
        for ck in col_keys:
            name = " / ".join(ck) or "all"
            header.append(name)
            if has_ref:
                header.append(f"{name} ref")
        buf.write("| " + " | ".join(header) + " |\n")
        buf.write("|" + "---|" * len(header) + "\n")
        for rl in row_labels:
            line = [rl]
            for ck in col_keys:
                cell = by_pos.get((rl, ck))
                vals, errors = [], 0
                for s in seeds:
                    res = results.get((cell.key, s), {}) if cell else {}
                    v = res.get(metric)
                    if res.get("status") == "error":
                        errors += 1
                    if isinstance(v, (int, float)) and math.isfinite(v):
                        vals.append(100.0 * float(v))
                m, sd = _mean_std(vals)
                text = "err" if errors and not vals else ("-" if not vals else f"{m:.2f} ± {sd:.2f}")
                line.append(text)
                colname = " / ".join(ck) or "all"
                rv = (ref.get(rl) or {}).get(colname) if has_ref else None
                if has_ref:
                    line.append("-" if rv is None else f"{float(rv):.2f}")
                csv_rows.append({"metric": metric, "row": rl, "column": colname, "mean": m, "std": sd,
                                 "n": len(vals), "reference": rv})
            buf.write("| " + " | ".join(line) + " |\n")
    return buf.getvalue(), csv_rows
