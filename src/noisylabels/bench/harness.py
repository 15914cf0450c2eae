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
    metric_labels:                                  # optional: what each metric is, printed in its title
      test_accuracy: "test accuracy at the best-validation epoch (the paper's protocol)"
    # an axis entry may also carry `set_by: {other_axis: {label: {overrides}}}`, applied when the
    # other axis takes that label (e.g. a class-dependent noise map that differs per dataset)
    reference:                                      # optional, e.g. a paper's table
      source: "Zhang & Sabuncu 2018, Table 1"       # or one per metric: {test_accuracy: "Table 1", ...}
      test_accuracy: {CE: {"40%": 81.88}}           # reference[metric][row label][column label]
    references:                                     # optional: more reference columns, each its own source
      - label: ReScience                            # printed as the column "<column> ReScience"
        source: "Hudovernik et al. 2026, Table 4"   # or one per metric
        row_sources: {CE: "..."}                    # optional: a row whose cells come from another table
        test_accuracy: {CE: {"40%": 80.1}}
    ratio_to:                                       # optional: derived tables, each seed's value over the
      row: "CE, clean labels"                       # same seed's value of this row in the same column
      metrics: [test_accuracy]                      # default: every metric
    pretrain:                                       # optional: backbones trained before the cells using them
      simclr:                                       # a cell starts from one with the value "pretrain:simclr"
        set: {method.name: simclr, train.epochs: 100}   # (model.init_checkpoint or method.teacher_init)
        set_by: {noise: {"60%": {train.epochs: 50}}}    # optional: by the label of the cell using it

A ``pretrain`` entry is a ``noisylabels pretrain`` run (:data:`noisylabels.config.PRETRAIN_DEFAULTS`)
on the data and model of the cell that uses it: it takes that cell's ``data.*`` and ``model.*``
overrides (the suite's ``base`` and the cell's own, except the supervised augmentation
``data.augment`` / ``data.strong_augment`` / ``data.views`` and ``model.init_*``; ``--set`` included),
then the entry's ``set`` and its ``set_by`` for the cell's labels. So each seed starts from its own
backbone, and cells with the same data and model share one (``set_by`` can make cells share one whose
data differ only in what pretraining does not read: e.g. their label sets, which only the kNN monitor
and the class-balanced validation split see). Pretraining runs live in ``OUT/_pretrain/<name>/seed-<s>-<hash>/``
and run first; the cells that use a failed one are reported failed without running. A cell's
``model.init_checkpoint`` names the pretraining's model: another model there is refused up front.

Every (cell, seed) writes its run into ``OUT/<cell>/seed-<s>-<hash>/``, ``hash`` a hash of the
run's resolved config (:func:`config_hash`): runs whose ``summary.json`` says ``finished`` are
skipped, unfinished ones resume from their checkpoint, so an interrupted suite picks up where it
stopped, and a changed setting gives new directories (the cells affected rerun).

Executors: ``local`` worker processes (:mod:`noisylabels.bench.pool`: Ctrl-C and SIGTERM stop
them within seconds, they die with their parent, ``runs_per_gpu`` pins worker groups to GPUs),
``ray`` tasks on a cluster (:mod:`noisylabels.bench.ray_executor`), or ``inline``. A suite with a
failed run still writes its table (``err`` cells) and reports each failed cell's first error.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import math
import os
import re
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import BOOKKEEPING_KEYS, WEIGHT_FILE_KEYS, resolve_config, weight_files
from ..config import config_hash as _config_hash
from ..errors import UserError

__all__ = ["Suite", "Cell", "ReferenceBlock", "EXECUTORS", "load_suite", "list_suites", "run_suite", "tabulate",
           "config_hash"]


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


@dataclass(frozen=True)
class ReferenceBlock:
    """One set of reference columns: ``tables[metric][row label][column label]`` printed as the
    column ``"<column> <label>"`` beside the suite's own numbers.

    ``source`` names where the numbers come from (one string, or one per metric);
    ``row_sources`` names another source for some rows (e.g. a row quoted from another table).
    The suite's ``reference:`` block is the block labelled ``ref``; ``references:`` adds more.
    """

    label: str
    tables: dict[str, dict[str, dict[str, float]]]
    source: Any = None
    row_sources: dict[str, str] = field(default_factory=dict)

    def source_for(self, metric: str) -> str | None:
        """The source text of this block's ``metric`` cells."""
        src = self.source.get(metric) if isinstance(self.source, Mapping) else self.source
        return None if src is None else str(src)

    def cells(self) -> Iterator[tuple[str, str, str, float]]:
        """``(metric, row, column, value)`` of every cell."""
        for metric, table in self.tables.items():
            for row, cols in (table or {}).items():
                for col, value in (cols or {}).items():
                    yield metric, str(row), str(col), value


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
    metric_labels: dict[str, str] = field(default_factory=dict)
    references: list[ReferenceBlock] = field(default_factory=list)
    #: ``{"row": label, "metrics": [...]}``: print each metric's ratio to that row (same column, same seed)
    ratio_to: dict[str, Any] | None = None
    #: ``{name: {"set": {key: value}, "set_by": {axis: {label: {key: value}}}}}``: pretraining runs whose
    #: ``backbone.pt`` a cell's value ``pretrain:<name>`` names
    pretrain: dict[str, dict[str, Any]] = field(default_factory=dict)

    def reference_source(self, metric: str) -> str | None:
        """The source text of ``metric``'s reference cells (``reference.source``: one string, or
        one per metric)."""
        src = self.reference.get("source")
        if isinstance(src, Mapping):
            src = src.get(metric)
        return None if src is None else str(src)

    def reference_blocks(self) -> list[ReferenceBlock]:
        """Every set of reference columns: the ``reference:`` block (label ``ref``) first, then
        ``references:`` in order."""
        blocks = []
        if self.reference:
            tables = {k: dict(v or {}) for k, v in self.reference.items() if k != "source"}
            blocks.append(ReferenceBlock("ref", tables, self.reference.get("source")))
        return blocks + list(self.references)

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


def _check_suite(p: Path, raw: Mapping[str, Any]) -> None:
    """The shape of a suite file (see the shipped ones): one line naming the first wrong field."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise UserError(f"suite {p}: {what}")

    for key in ("base", "reference", "metric_labels"):
        need(isinstance(raw.get(key) or {}, Mapping), f"{key} must be a mapping")
    need(isinstance(raw.get("axes") or {}, Mapping), "axes must be a mapping of axis: [entries]")
    for axis, entries in (raw.get("axes") or {}).items():
        need(isinstance(entries, list) and bool(entries), f"axis {axis!r} must be a non-empty list of entries")
        for e in entries:
            need(isinstance(e, Mapping) and "label" in e and isinstance(e.get("set") or {}, Mapping)
                 and isinstance(e.get("set_by") or {}, Mapping)
                 and all(isinstance(v or {}, Mapping) for v in (e.get("set_by") or {}).values()),
                 f"axis {axis!r}: each entry is {{label: ..., set: {{key: value}}}}, got {e!r}"[:300])
    seeds = raw.get("seeds", [0])
    need(isinstance(seeds, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds),
         f"seeds must be a list of integers, got {seeds!r}"[:200])
    metrics = raw.get("metrics", ["test_accuracy"])
    need(isinstance(metrics, list) and all(isinstance(m, str) for m in metrics), "metrics must be a list of names")
    need(isinstance(raw.get("rows", "method"), str), "rows must name an axis")
    refs = raw.get("references") or []
    need(isinstance(refs, list), "references must be a list of {label, source, <metric>: {row: {column: value}}}")
    labels = []
    for block in refs:
        need(isinstance(block, Mapping) and isinstance(block.get("label"), str) and block.get("label"),
             f"each references entry needs a label (a string), got {block!r}"[:200])
        label = block["label"]
        need(label != "ref" and label not in labels, f"references: label {label!r} is used twice (or is 'ref')")
        labels.append(label)
        src = block.get("source")
        need(isinstance(src, str) or (isinstance(src, Mapping) and all(isinstance(v, str) for v in src.values())),
             f"references {label!r}: source must be a string or one string per metric")
        rs = block.get("row_sources") or {}
        need(isinstance(rs, Mapping) and all(isinstance(v, str) for v in rs.values()),
             f"references {label!r}: row_sources must map row labels to strings")
        for metric, table in block.items():
            if metric in ("label", "source", "row_sources"):
                continue
            need(isinstance(table, Mapping) and all(
                isinstance(cols, Mapping) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  for v in cols.values()) for cols in table.values()),
                 f"references {label!r}: {metric} must map row labels to {{column: number}}")
    pre = raw.get("pretrain") or {}
    need(isinstance(pre, Mapping), "pretrain must be a mapping of name: {set: {key: value}}")
    for name, entry in pre.items():
        need(isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name) is not None,
             f"pretrain name {name!r} must be letters, digits and _ . + - (it names a folder)")
        need(isinstance(entry, Mapping) and set(entry) <= {"set", "set_by"}
             and isinstance(entry.get("set") or {}, Mapping) and isinstance(entry.get("set_by") or {}, Mapping)
             and all(isinstance(v or {}, Mapping) and all(isinstance(o or {}, Mapping) for o in (v or {}).values())
                     for v in (entry.get("set_by") or {}).values()),
             f"pretrain {name!r}: the entry is {{set: {{key: value}}, set_by: {{axis: {{label: {{key: value}}}}}}}}, "
             f"got {entry!r}"[:300])
    ratio = raw.get("ratio_to")
    if ratio is not None:
        need(isinstance(ratio, Mapping) and isinstance(ratio.get("row"), str)
             and isinstance(ratio.get("metrics", []), list) and set(ratio) <= {"row", "metrics"},
             "ratio_to must be {row: <a row label>, metrics: [names]} (metrics optional)")


def load_suite(name_or_path: str | Path) -> Suite:
    """Load a shipped suite by name, or a suite YAML file by path."""
    p = Path(name_or_path)
    if not p.suffix:
        p = _suite_dir() / f"{name_or_path}.yaml"
        if not p.is_file():
            raise UserError(f"unknown suite {str(name_or_path)!r}; valid names: {', '.join(list_suites())}")
    elif not p.is_file():
        raise UserError(f"suite file not found: {p}")
    from ..config import read_yaml_mapping

    raw = read_yaml_mapping(p, what="suite")
    _check_suite(p, raw)
    axes = raw.get("axes") or {}
    if not axes:
        raise UserError(f"suite {p} has no axes")
    rows = raw.get("rows", "method")
    if rows not in axes:
        raise UserError(f"suite {p}: rows axis {rows!r} is not among its axes {list(axes)}")
    blocks = [ReferenceBlock(label=str(b["label"]), source=b.get("source"),
                             row_sources={str(k): str(v) for k, v in (b.get("row_sources") or {}).items()},
                             tables={str(m): {str(r): {str(c): float(v) for c, v in cols.items()}
                                              for r, cols in t.items()}
                                     for m, t in b.items() if m not in ("label", "source", "row_sources")})
              for b in (raw.get("references") or [])]
    suite = Suite(name=str(raw.get("name", p.stem)), description=str(raw.get("description", "")),
                  base=dict(raw.get("base") or {}), seeds=[int(s) for s in raw.get("seeds", [0])], rows=rows,
                  axes={k: list(v) for k, v in axes.items()}, metrics=list(raw.get("metrics", ["test_accuracy"])),
                  reference=dict(raw.get("reference") or {}),
                  metric_labels={str(k): str(v) for k, v in (raw.get("metric_labels") or {}).items()},
                  references=blocks,
                  pretrain={str(k): {"set": dict((v or {}).get("set") or {}),
                                     "set_by": dict((v or {}).get("set_by") or {})}
                            for k, v in (raw.get("pretrain") or {}).items()})
    _check_references(p, suite)
    _check_pretrain_refs(p, suite)
    ratio = raw.get("ratio_to")
    if ratio is not None:
        row_labels = [str(e["label"]) for e in axes[rows]]
        metrics = [str(m) for m in ratio.get("metrics") or suite.metrics]
        if str(ratio["row"]) not in row_labels:
            raise UserError(f"suite {p}: ratio_to row {ratio['row']!r} is not a {rows} label {row_labels}")
        unknown = [m for m in metrics if m not in suite.metrics]
        if unknown:
            raise UserError(f"suite {p}: ratio_to metrics {unknown} are not among the suite's metrics {suite.metrics}")
        suite.ratio_to = {"row": str(ratio["row"]), "metrics": metrics}
    return suite


def _check_references(p: Path, suite: Suite) -> None:
    """Every ``references:`` cell names a metric, row and column the suite prints, and its
    source: a misspelt label would silently print '-' beside our number."""
    rows = {str(e["label"]) for e in suite.axes[suite.rows]}
    cols = {" / ".join(c.label(a) for a in suite.column_axes) or "all" for c in suite.cells()}
    for block in suite.references:
        for row in block.row_sources:
            if row not in rows:
                raise UserError(f"suite {p}: references {block.label!r}: row_sources names {row!r}, "
                                f"not a {suite.rows} label")
        for metric, row, col, _ in block.cells():
            where = f"suite {p}: references {block.label!r}"
            if metric not in suite.metrics:
                raise UserError(f"{where}: {metric!r} is not among the suite's metrics {suite.metrics}")
            if row not in rows:
                raise UserError(f"{where}: row {row!r} is not a {suite.rows} label {sorted(rows)}"[:300])
            if col not in cols:
                raise UserError(f"{where}: column {col!r} ({metric}, {row}) is not among {sorted(cols)}"[:300])
            if block.source_for(metric) is None and row not in block.row_sources:
                raise UserError(f"{where}: no source for {metric} (give source: or row_sources:)")


#: a cell's value naming a pretraining run of the suite: ``pretrain:<name>``
PRETRAIN_PREFIX = "pretrain:"
#: the axis of the pseudo-cells that stand for pretraining runs in the job lists
_PRETRAIN_AXIS = "_pretrain"
#: the keys a pretraining run takes from the cell that uses it (prefixes), and those it does not
_PRETRAIN_INHERITS = ("data.", "model.", "device")
_PRETRAIN_OWN = ("data.augment", "data.strong_augment", "data.views", "model.init_checkpoint", "model.init_exclude")


def _pretrain_refs(cfg: Mapping[str, Any]) -> dict[str, str]:
    """``{key: pretraining name}`` of a resolved config's weight files
    (:data:`noisylabels.config.WEIGHT_FILE_KEYS`) whose value is ``pretrain:<name>``."""
    return {k: v[len(PRETRAIN_PREFIX):] for k, v in weight_files(cfg).items() if v.startswith(PRETRAIN_PREFIX)}


def _check_pretrain_ref(where: str, suite: Suite, key: str, value: Any) -> None:
    """A ``pretrain:<name>`` value sits on a key of ``WEIGHT_FILE_KEYS`` and names an entry of the
    suite's ``pretrain:``."""
    if not (isinstance(value, str) and value.startswith(PRETRAIN_PREFIX)):
        return
    name = value[len(PRETRAIN_PREFIX):]
    if key not in WEIGHT_FILE_KEYS:
        raise UserError(f"{where}: {key}: {value}: a pretraining's backbone is read only by "
                        f"{' and '.join(WEIGHT_FILE_KEYS)}")
    if name not in suite.pretrain:
        known = ", ".join(suite.pretrain) or "none: add a pretrain: section"
        raise UserError(f"{where}: {key}: {value} names no pretraining of suite {suite.name} (pretrain: {known})")


def _check_pretrain_refs(p: Path, suite: Suite) -> None:
    """Every ``pretrain:<name>`` of the suite's cells (see :func:`_check_pretrain_ref`), and the axes and
    labels of each pretraining's ``set_by`` (a misspelt one would silently change nothing)."""
    for name, entry in suite.pretrain.items():
        for axis, by_label in entry["set_by"].items():
            if axis not in suite.axes:
                raise UserError(f"suite {p}: pretrain {name!r}: set_by names axis {axis!r}, not one of {list(suite.axes)}")
            labels = [str(e["label"]) for e in suite.axes[axis]]
            for label in by_label or {}:
                if str(label) not in labels:
                    raise UserError(f"suite {p}: pretrain {name!r}: set_by {axis}: {label!r} is not a label of axis "
                                    f"{axis!r} {labels}"[:300])
    for cell in suite.cells():
        for key, value in {**suite.base, **dict(cell.overrides)}.items():
            _check_pretrain_ref(f"suite {p}: cell {cell.key}", suite, key, value)


#: config keys that never change a run's numbers (left out of the cell hash)
_HASH_IGNORED = BOOKKEEPING_KEYS


def config_hash(cfg: Mapping[str, Any]) -> str:
    """A 10-hex-digit hash of a resolved run config (its seed included), without the keys that
    do not change results (``out``, ``train.progress``, ``train.num_threads``, ``data.cache_dir``).

    A finished bench run is reused only when its directory carries the hash of the config the
    suite resolves to now, so changing a suite, ``--set`` or a default reruns the cells affected.
    """
    return _config_hash(cfg, ignore=BOOKKEEPING_KEYS)


def _run_cell(cfg: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """Worker: train one (cell, seed) in ``cfg['out']``, resuming a checkpoint left there; the summary.

    ``threads``: torch threads (``None`` leaves the process's setting). Errors propagate (the
    executor turns them into ``{'status': 'error', ...}`` results).
    """
    from ..detect import resolve_forget_rate
    from ..train import fit

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
        cfg["train"]["num_threads"] = threads
    resume = (Path(cfg["out"]) / "checkpoint.pt").is_file()
    # the cell's folder is its own (keyed by the config hash): a run that left no checkpoint starts over there
    return fit(cfg, resume=resume, overwrite=not resume, progress=False, resolve=resolve_forget_rate)


def _finished(out: Path, *files: str) -> dict[str, Any] | None:
    """The summary of a finished run in ``out`` (``None`` if unfinished or any of ``files`` is missing)."""
    p = out / "summary.json"
    if not p.is_file() or not all((out / f).is_file() for f in files):
        return None
    try:
        s = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return s if s.get("status") == "finished" else None


EXECUTORS = ("local", "ray", "inline")


def _check_int(flag: str, value: Any, lo: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise UserError(f"{flag} must be an integer >= {lo}, got {value!r}")
    return value


def _check_options(executor: str, *, workers: int | None, runs_per_gpu: int | None, address: str | None,
                   gpus_per_run: float | None, cpus_per_run: float | None, nproc_per_run: int | None = None) -> int:
    """Check the executor's options (one line naming the first wrong one); the processes per run."""
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    _check_int("--workers", workers, 1)
    _check_int("--runs-per-gpu", runs_per_gpu, 1)
    if workers is not None and runs_per_gpu is not None:
        raise UserError("give --workers or --runs-per-gpu, not both (--runs-per-gpu N runs N workers per GPU)")
    for flag, v, lo in (("--gpus-per-run", gpus_per_run, 0.0), ("--cpus-per-run", cpus_per_run, 0.0)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= lo
                              or not math.isfinite(v) or (flag == "--cpus-per-run" and v == 0)):
            raise UserError(f"{flag} must be a number {'> 0' if flag == '--cpus-per-run' else '>= 0'}, got {v!r}")
    if executor != "ray":
        given = [f for f, v in (("--address", address), ("--gpus-per-run", gpus_per_run),
                                ("--cpus-per-run", cpus_per_run), ("--nproc-per-run", nproc_per_run)) if v is not None]
        if given:
            raise UserError(f"{', '.join(given)} apply to --executor ray only")
    else:
        given = [f for f, v in (("--workers", workers), ("--runs-per-gpu", runs_per_gpu)) if v is not None]
        if given:
            raise UserError(f"{', '.join(given)} apply to the local executor; Ray sizes runs with "
                            "--cpus-per-run / --gpus-per-run")
    if executor == "inline" and runs_per_gpu is not None:
        raise UserError("--runs-per-gpu applies to the local executor")
    if executor != "ray":
        return 1
    from .ray_executor import run_resources  # imports no Ray

    return run_resources(gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run, nproc_per_run=nproc_per_run).nproc


def run_suite(name_or_path: str | Path, *, out: str | Path | None = None, workers: int | None = None,
              max_seeds: int | None = None, assignments: Sequence[str] = (), verbose: bool = True,
              executor: str = "local", runs_per_gpu: int | None = None, address: str | None = None,
              gpus_per_run: float | None = None, cpus_per_run: float | None = None,
              nproc_per_run: int | None = None, dry_run: bool = False,
              rows: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or resume) a suite; print and write ``table.md`` / ``table.csv``; return the results.

    Parameters
    ----------
    name_or_path:
        A shipped suite's name or a suite YAML file.
    out:
        Output folder (default ``bench/<suite>``). Run ``(cell, seed)`` lives in
        ``OUT/<cell>/seed-<s>-<hash>/`` with ``hash`` = :func:`config_hash` of its resolved config.
    workers:
        Local worker processes (default: one per core, at most one per run).
    max_seeds:
        Use only the first N seeds of the suite (1 <= N <= the suite's seeds).
    assignments:
        ``key=value`` overrides applied to every cell.
    executor:
        ``local`` (worker processes on this machine), ``ray`` (one Ray task per run, see
        :mod:`noisylabels.bench.ray_executor`) or ``inline`` (one run after another in this
        process; for debugging and tests).
    runs_per_gpu:
        Local executor: ``N`` worker processes per visible GPU, each group pinned to its GPU with
        ``CUDA_VISIBLE_DEVICES`` (combine with ``--set device=cuda``).
    address, gpus_per_run, cpus_per_run:
        Ray executor: the cluster (``None``: an already initialised Ray, else a local one started
        for the call) and each task's resources (default 1 CPU, 0 GPUs). A fraction of a GPU shares
        it between runs; an integer ``gpus_per_run > 1`` makes each run data-parallel over that
        many GPUs of one node (:func:`noisylabels.bench.ray_executor.run_resources`).
    nproc_per_run:
        Ray executor: processes per run (default ``gpus_per_run`` when it is an integer > 1, else
        1); > 1 trains each run data-parallel, as ``noisylabels train --nproc N`` would (on CPUs,
        gloo, when ``gpus_per_run`` is 0). ``train.batch_size`` must divide by it.
    rows:
        Run and tabulate only these labels of the suite's rows axis (``None``: every row). The
        cells keep their folders, so a later full run reuses them. The ``ratio_to`` row is added
        when it is missing (the ratios need it).
    dry_run:
        Resolve every run's config and make the checks a run makes before loading data (names,
        method, model and noise options, weight files), print the plan (each cell's overrides, each run's
        folder and whether it is finished, resumable or new) and return without training or
        writing anything.

    Returns
    -------
    dict
        ``suite``, ``out``, ``results`` (``(cell key, seed) -> summary``), ``rows``, ``markdown``
        and ``failed``: ``[(cell key, seed, first error line), ...]`` (empty when every run finished).
        With ``dry_run``: ``suite``, ``out``, ``failed`` (empty) and ``plan``: ``[(cell key, seed,
        run folder, 'finished' | 'resume' | 'new'), ...]``.

    Raises
    ------
    BenchInterrupted
        After Ctrl-C or SIGTERM, once every worker has stopped (finished runs are kept).
    """
    nproc = _check_options(executor, workers=workers, runs_per_gpu=runs_per_gpu, address=address,
                           gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run, nproc_per_run=nproc_per_run)
    suite = load_suite(name_or_path)
    if rows is not None:
        _select_rows(suite, rows)
    _check_int("--seeds", max_seeds, 1)
    if max_seeds is not None and max_seeds > len(suite.seeds):
        raise UserError(f"--seeds {max_seeds}: suite {suite.name} has {len(suite.seeds)} seed(s)")
    out_dir = Path(out or Path("bench") / suite.name)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder")
    seeds = suite.seeds[:max_seeds] if max_seeds else suite.seeds
    jobs: list[tuple[Cell, int, dict[str, Any]]] = []
    pre_jobs: dict[str, tuple[Cell, int, dict[str, Any]]] = {}  # folder -> (pretraining, seed, config)
    needs: dict[tuple[str, int], list[str]] = {}  # (cell key, seed) -> the pretraining folders it starts from
    for cell in suite.cells():
        for seed in seeds:
            overrides = {**suite.base, **dict(cell.overrides), "seed": seed, "train.progress": False}
            cfg = resolve_config(overrides=overrides, assignments=assignments)  # validates up front
            for key, pname in _pretrain_refs(cfg).items():  # after --set, which may name one too
                _check_pretrain_ref(f"cell {cell.key}", suite, key, PRETRAIN_PREFIX + pname)
                pcfg = _pretrain_config(suite, pname, cfg, cell=cell, key=key)
                pdir = out_dir / "_pretrain" / pname / f"seed-{seed}-{config_hash(pcfg)}"
                pcfg["out"] = str(pdir)
                if nproc > 1 and int(pcfg["train"]["batch_size"]) % nproc:
                    raise UserError(f"pretraining {pname}: train.batch_size {pcfg['train']['batch_size']} is the "
                                    f"global batch of the run's {nproc} processes and must be divisible by {nproc}")
                pre_jobs.setdefault(str(pdir), (Cell(((_PRETRAIN_AXIS, pname),), ()), seed, pcfg))
                section, name = key.split(".", 1)
                cfg[section][name] = str(pdir / "backbone.pt")
                needs.setdefault((cell.key, seed), []).append(str(pdir))
            if gpus_per_run and cfg["device"] == "cpu":
                raise UserError(f"--gpus-per-run {gpus_per_run} reserves GPUs but cell {cell.key} runs on "
                                "device cpu: add --set device=cuda")
            if nproc > 1 and int(cfg["train"]["batch_size"]) % nproc:
                raise UserError(f"cell {cell.key}: train.batch_size {cfg['train']['batch_size']} is the global batch of "
                                f"the run's {nproc} processes and must be divisible by {nproc}")
            cfg["out"] = str(out_dir / cell.key / f"seed-{seed}-{config_hash(cfg)}")
            jobs.append((cell, seed, cfg))
    pending = {str(Path(c[2]["out"]) / "backbone.pt") for c in pre_jobs.values()}
    _check_runs([*pre_jobs.values(), *jobs], pending, device=executor != "ray")
    if dry_run:
        return _dry_run(suite, out_dir, jobs, list(pre_jobs.values()), verbose=verbose)
    out_dir.mkdir(parents=True, exist_ok=True)

    results: dict[tuple[str, int], dict[str, Any]] = {}
    todo = []
    for cell, seed, cfg in jobs:
        done = _finished(Path(cfg["out"]))
        if done is not None:
            results[(cell.key, seed)] = done
        else:
            todo.append((cell, seed, cfg))
    failed: list[tuple[str, int, str]] = []

    def record(cell: Cell, seed: int, cfg: Mapping[str, Any], status: str, value: Any) -> None:
        if status == "ok":
            res = dict(value)
        elif status == "error":
            res = dict(value)
            _write_error(Path(cfg["out"]), res)
            failed.append((cell.key, seed, res["error"]))
            if verbose:
                print(f"  {cell.key} seed {seed}: error: {res['error']}", flush=True)
        else:
            return
        results[(cell.key, seed)] = res

    run_options = dict(executor=executor, workers=workers, runs_per_gpu=runs_per_gpu, address=address,
                       gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run, nproc_per_run=nproc_per_run,
                       verbose=verbose)
    needed = {d for cell, seed, _ in todo for d in needs.get((cell.key, seed), [])}
    pre_todo = [job for d, job in pre_jobs.items() if d in needed and _finished(Path(d), "backbone.pt") is None]
    pre_failed: dict[str, str] = {}

    def record_pretrain(cell: Cell, seed: int, cfg: Mapping[str, Any], status: str, value: Any) -> None:
        if status == "error":
            _write_error(Path(cfg["out"]), value)
            pre_failed[str(cfg["out"])] = value["error"]
            if verbose:
                print(f"  pretraining {cell.key} seed {seed}: error: {value['error']}", flush=True)

    if pre_todo:  # the backbones first: the cells below start from them
        _execute(f"{suite.name} pretraining", pre_todo, record_pretrain, total=len(needed), **run_options)
    for cell, seed, cfg in list(todo):
        broken = [d for d in needs.get((cell.key, seed), []) if d in pre_failed]
        if broken:
            todo.remove((cell, seed, cfg))
            name = Path(broken[0]).parent.name
            record(cell, seed, cfg, "error", {"error": f"pretraining {name} (seed {seed}) failed, so this run did not "
                                                       f"start: {pre_failed[broken[0]]}", "traceback": None})
    if todo:
        _execute(suite.name, todo, record, total=len(jobs), **run_options)
    elif verbose:
        print(f"suite {suite.name}: {len(jobs)} runs, {len(jobs)} already finished, 0 to run", flush=True)
    md, rows = tabulate(suite, results, seeds)
    (out_dir / "table.md").write_text(md)
    with open(out_dir / "table.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["metric"])
        writer.writeheader()
        writer.writerows(rows)
    if verbose:
        print(md)
        print(f"tables written to {out_dir / 'table.md'} and {out_dir / 'table.csv'}")
        if failed:
            print(f"{len(failed)} run(s) failed; the first error of each failed cell:")
            first: dict[str, tuple[int, str]] = {}
            for key, seed, err in failed:
                first.setdefault(key, (seed, err))
            for key, (seed, err) in first.items():
                print(f"  {key} (seed {seed}): {err}")
    return {"suite": suite.name, "out": str(out_dir), "results": results, "rows": rows, "markdown": md,
            "failed": failed}


def _select_rows(suite: Suite, rows: Sequence[str]) -> None:
    """Keep only the ``rows`` labels of the suite's rows axis (and its ``ratio_to`` row); an unknown
    label is a one-line error naming the valid ones."""
    entries = suite.axes[suite.rows]
    labels = [str(e["label"]) for e in entries]
    unknown = [r for r in rows if r not in labels]
    if unknown or not rows:
        raise UserError(f"--row {unknown[0] if unknown else '(none)'!r}: suite {suite.name} has no such {suite.rows}; "
                        f"valid: {', '.join(map(repr, labels))}"[:600])
    keep = set(rows) | ({suite.ratio_to["row"]} if suite.ratio_to else set())
    suite.axes[suite.rows] = [e for e in entries if str(e["label"]) in keep]


def _pretrain_config(suite: Suite, name: str, cell_cfg: Mapping[str, Any], *, cell: Cell, key: str) -> dict[str, Any]:
    """The resolved config of pretraining ``name`` for a cell (``cell_cfg``: its resolved config):
    the cell's data (without its supervised augmentation), model (without ``init_*``) and device,
    then the entry's ``set`` (module docstring)."""
    from ..config import PRETRAIN_DEFAULTS

    inherited: dict[str, Any] = {"seed": cell_cfg["seed"], "train.progress": False, "device": cell_cfg["device"]}
    for section in ("data", "model"):
        for k, v in cell_cfg[section].items():
            if f"{section}.{k}" not in _PRETRAIN_OWN:
                inherited[f"{section}.{k}"] = copy.deepcopy(v)
    entry = suite.pretrain[name]
    own = dict(entry["set"])
    for axis, by_label in entry["set_by"].items():
        own.update((by_label or {}).get(dict(cell.labels).get(axis), {}))
    pcfg = resolve_config(overrides={**inherited, **own}, base=PRETRAIN_DEFAULTS)
    if key == "model.init_checkpoint":
        mine = {k: v for k, v in cell_cfg["model"].items() if not k.startswith("init_")}
        theirs = {k: v for k, v in pcfg["model"].items() if not k.startswith("init_")}
        if mine != theirs:
            raise UserError(f"suite {suite.name}: cell {cell.key} starts its model ({mine}) from pretraining {name}, "
                            f"which trains another ({theirs})"[:400])
    return pcfg


def _check_runs(jobs: Sequence[tuple[Cell, int, dict[str, Any]]], pending: set[str], *, device: bool) -> None:
    """What every run will read, before anything runs (:func:`noisylabels.train.build.check_names`
    per cell: names, options, weight files; the device where the runs run on this machine).
    ``pending``: weight files the suite's pretraining writes first (not read yet)."""
    from ..train.build import check_names

    checked = set()
    for cell, _, cfg in jobs:
        if cell.labels in checked:  # the seeds of a cell differ only in the seed (and its backbone's path)
            continue
        checked.add(cell.labels)
        probe = copy.deepcopy(cfg)
        for key, path in weight_files(cfg).items():
            if path in pending:
                section, name = key.split(".")
                probe[section][name] = None
        try:
            check_names(probe, device=device)
        except UserError as exc:
            axis, label = cell.labels[0]
            raise UserError(f"{'pretraining ' + label if axis == _PRETRAIN_AXIS else 'cell ' + cell.key}: {exc}") \
                from None


def _run_state(run_dir: Path, *files: str) -> str:
    return ("finished" if _finished(run_dir, *files) is not None
            else "resume" if (run_dir / "checkpoint.pt").is_file() else "new")


def _dry_run(suite: Suite, out_dir: Path, jobs: Sequence[tuple[Cell, int, dict[str, Any]]],
             pre_jobs: Sequence[tuple[Cell, int, dict[str, Any]]] = (), *, verbose: bool) -> dict[str, Any]:
    """The plan of :func:`run_suite` (``dry_run=True``), after the checks every run makes before it
    loads data (:func:`_check_runs`: names, method, model and noise options, weight files, device),
    so a wrong option is the one-line error the run would give; nothing is trained or written.
    The plan's pretraining runs (first) have the cell key ``_pretrain/<name>``."""
    plan = [(f"{_PRETRAIN_AXIS}/{cell.labels[0][1]}", seed, cfg["out"], _run_state(Path(cfg["out"]), "backbone.pt"))
            for cell, seed, cfg in pre_jobs]
    for cell, seed, cfg in jobs:
        plan.append((cell.key, seed, str(cfg["out"]), _run_state(Path(cfg["out"]))))
    if verbose:
        plan_cells = plan[len(pre_jobs):]
        counts = {s: sum(p[3] == s for p in plan_cells) for s in ("finished", "resume", "new")}
        n_cells = len(suite.cells())
        print(f"suite {suite.name} (dry run): {n_cells} cells x {len(plan_cells) // max(n_cells, 1)} "
              f"seed(s) = {len(plan_cells)} runs in {out_dir}: {counts['finished']} finished, "
              f"{counts['resume']} to resume, {counts['new']} new"
              + (f"; {len(pre_jobs)} pretraining run(s) first" if pre_jobs else "") + "; nothing trained")
        base = ", ".join(f"{k}={v}" for k, v in suite.base.items())
        print(f"  base: {base}")
        for key, seed, run_dir, state in plan[:len(pre_jobs)]:
            print(f"  pretraining {key.split('/', 1)[1]} seed {seed}: {state} ({run_dir})")
        by_cell: dict[str, list[tuple[int, str]]] = {}
        for key, seed, _, state in plan_cells:
            by_cell.setdefault(key, []).append((seed, state))
        for cell in suite.cells():
            over = ", ".join(f"{k}={v}" for k, v in cell.overrides)
            runs = " ".join(f"seed {s}: {st}" for s, st in by_cell.get(cell.key, []))
            print(f"  {cell.key}: {over or '(base)'} [{runs}]")
    return {"suite": suite.name, "out": str(out_dir), "failed": [], "plan": plan}


def _write_error(run_dir: Path, res: Mapping[str, Any]) -> None:
    """Keep a failed run's traceback beside its records (``error.txt``)."""
    from ..train.rundir import mark_run_dir, read_marker, register

    try:
        if read_marker(run_dir) is None and not (run_dir.is_dir() and any(run_dir.iterdir())):
            mark_run_dir(run_dir)  # the cell's folder is ours: the rerun replaces error.txt with its records
        register(run_dir / "error.txt")
        (run_dir / "error.txt").write_text((res.get("traceback") or res["error"]) + "\n")
    except OSError:
        pass


def _execute(name: str, todo: list[tuple[Cell, int, dict[str, Any]]], record: Callable[..., None], *,
             executor: str, workers: int | None, runs_per_gpu: int | None, address: str | None,
             gpus_per_run: float | None, cpus_per_run: float | None, verbose: bool, total: int,
             nproc_per_run: int | None = None) -> None:
    from tqdm.auto import tqdm

    from .pool import Job, WorkerPool, error_result, gpu_groups, visible_gpus, terminating_signals

    cores = os.cpu_count() or 1
    if executor == "local":
        envs = None
        if runs_per_gpu is not None:
            envs = gpu_groups(visible_gpus(), runs_per_gpu)
            n_workers = len(envs)
        else:
            n_workers = workers or cores
        n_workers = max(1, min(n_workers, len(todo)))
        envs = envs[:n_workers] if envs is not None else None
        where = f"on {n_workers} worker(s)"
    elif executor == "inline":
        n_workers = 1
        where = "in this process"
    else:
        where = "as Ray tasks"
        if nproc_per_run is not None or (gpus_per_run or 0) > 1:
            from .ray_executor import run_resources

            n = run_resources(gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run, nproc_per_run=nproc_per_run).nproc
            where += f" (each data-parallel over {n} processes)" if n > 1 else ""
    if verbose:
        print(f"suite {name}: {total} runs, {total - len(todo)} already finished, {len(todo)} to run {where}",
              flush=True)
    from ..progress import progress_mode

    mode = progress_mode(verbose)  # off a terminal one line per finished run, not a carriage-return bar
    bar = tqdm(total=len(todo), desc=name, unit="run", disable=mode != "bar")
    by_id = {i: item for i, item in enumerate(todo)}
    done = [0]

    def on_result(job: Job, status: str, value: Any) -> None:
        cell, seed, cfg = by_id[job.id]
        record(cell, seed, cfg, status, value)
        if status != "interrupted":
            bar.update(1)
            done[0] += 1
            if mode == "lines":
                acc = value.get("test_accuracy") if status == "ok" and isinstance(value, Mapping) else None
                what = f"test accuracy {acc:.4f}" if isinstance(acc, float) else status
                print(f"{name}: run {done[0]}/{len(todo)} done ({cell.key} seed {seed}: {what})", flush=True)

    fn = f"{__name__}:_run_cell"
    try:
        if executor == "local":
            threads = max(1, cores // n_workers)
            jobs = [Job(i, fn, (cfg, threads)) for i, (_, _, cfg) in by_id.items()]
            WorkerPool(n_workers, envs=envs).run(jobs, on_result)
        elif executor == "inline":
            with terminating_signals():
                for i, (_, _, cfg) in by_id.items():
                    job = Job(i, fn, (cfg, None))
                    try:
                        value, status = _run_cell(copy.deepcopy(cfg), None), "ok"
                    except KeyboardInterrupt:
                        on_result(job, "interrupted", None)
                        raise
                    except Exception as exc:  # noqa: BLE001  (reported per cell)
                        value, status = error_result(exc), "error"
                    on_result(job, status, value)
        else:
            from .ray_executor import run_ray

            run_ray([Job(i, fn, (cfg,)) for i, (_, _, cfg) in by_id.items()], on_result, address=address,
                    gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run, nproc_per_run=nproc_per_run,
                    verbose=verbose)
    finally:
        bar.close()


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return m, s


def tabulate(suite: Suite, results: Mapping[tuple[str, int], Mapping[str, Any]],
             seeds: Sequence[int]) -> tuple[str, list[dict[str, Any]]]:
    """Markdown tables (one per metric, rows x columns, mean ± std over seeds, x100) and CSV rows.

    Reference columns (``reference:`` as ``<column> ref``, each ``references:`` block as
    ``<column> <label>``) sit beside each column, their sources printed above the table. With
    ``ratio_to``, one more table per metric gives each seed's value divided by the same seed's
    value of the ``ratio_to`` row in the same column (mean ± std over the seeds where both
    finished; CSV metric ``"<metric> / <row>"``).
    """
    cells = suite.cells()
    row_labels = [str(e["label"]) for e in suite.axes[suite.rows]]
    col_keys: list[tuple[str, ...]] = []
    for c in cells:
        key = tuple(c.label(a) for a in suite.column_axes)
        if key not in col_keys:
            col_keys.append(key)
    by_pos = {(c.label(suite.rows), tuple(c.label(a) for a in suite.column_axes)): c for c in cells}
    all_blocks = suite.reference_blocks()
    buf = io.StringIO()
    csv_rows: list[dict[str, Any]] = []

    def seed_values(rl: str, ck: tuple[str, ...], metric: str) -> tuple[dict[int, float], int]:
        cell = by_pos.get((rl, ck))
        vals, errors = {}, 0
        for s in seeds:
            res = results.get((cell.key, s), {}) if cell else {}
            v = res.get(metric)
            if res.get("status") == "error":
                errors += 1
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                vals[s] = float(v)
        return vals, errors

    def csv_row(metric: str, rl: str, colname: str, m: float, sd: float, n: int,
                refs: Mapping[str, Any]) -> dict[str, Any]:
        row = {"metric": metric, "row": rl, "column": colname, "mean": m, "std": sd, "n": n,
               "reference": refs.get("ref")}
        row.update({f"reference {b.label}": refs.get(b.label) for b in suite.references})
        return row

    for metric in suite.metrics:
        blocks = [b for b in all_blocks if b.tables.get(metric)]
        label = suite.metric_labels.get(metric)
        title = f"{metric}: {label}" if label else metric
        buf.write(f"\n### {suite.name}: {title} (x100, mean ± std over {len(seeds)} seed(s))\n")
        for b in blocks:
            src = b.source_for(metric)
            if src:
                buf.write(f"reference columns ('{b.label}'): {src}\n")
            for rl, rs in b.row_sources.items():
                if b.tables[metric].get(rl):
                    buf.write(f"reference columns ('{b.label}'), row {rl}: {rs}\n")
        buf.write("\n")
        header = [suite.rows]
        for ck in col_keys:
            name = " / ".join(ck) or "all"
            header.append(name)
            header.extend(f"{name} {b.label}" for b in blocks)
        buf.write("| " + " | ".join(header) + " |\n")
        buf.write("|" + "---|" * len(header) + "\n")
        for rl in row_labels:
            line = [rl]
            for ck in col_keys:
                vals, errors = seed_values(rl, ck, metric)
                m, sd = _mean_std([100.0 * v for v in vals.values()])
                line.append("err" if errors and not vals else ("-" if not vals else f"{m:.2f} ± {sd:.2f}"))
                colname = " / ".join(ck) or "all"
                refs = {b.label: (b.tables[metric].get(rl) or {}).get(colname) for b in blocks}
                line.extend("-" if refs[b.label] is None else f"{float(refs[b.label]):.2f}" for b in blocks)
                csv_rows.append(csv_row(metric, rl, colname, m, sd, len(vals), refs))
            buf.write("| " + " | ".join(line) + " |\n")
    if suite.ratio_to:
        base_row = suite.ratio_to["row"]
        for metric in suite.ratio_to["metrics"]:
            buf.write(f"\n### {suite.name}: {metric} / {base_row} (each seed's value over the same seed's "
                      f"{base_row} in the same column; mean ± std over the seeds where both finished)\n\n")
            header = [suite.rows] + [" / ".join(ck) or "all" for ck in col_keys]
            buf.write("| " + " | ".join(header) + " |\n")
            buf.write("|" + "---|" * len(header) + "\n")
            for rl in row_labels:
                line = [rl]
                for ck in col_keys:
                    vals, _ = seed_values(rl, ck, metric)
                    base, _ = seed_values(base_row, ck, metric)
                    ratios = [vals[s] / base[s] for s in vals if s in base and base[s] > 0]
                    m, sd = _mean_std(ratios)
                    line.append("-" if not ratios else f"{m:.3f} ± {sd:.3f}")
                    csv_rows.append(csv_row(f"{metric} / {base_row}", rl, " / ".join(ck) or "all", m, sd,
                                            len(ratios), {}))
                buf.write("| " + " | ".join(line) + " |\n")
    return buf.getvalue(), csv_rows
