"""Shipped suites: every reference cell lands in a printed table cell, names its table, and matches
the paper's text; every cell's method options are accepted; per-metric sources and labels print."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from noisylabels.bench import list_suites, load_suite
from noisylabels.bench.harness import tabulate

PAPERS = Path(__file__).resolve().parents[3] / "shared" / "papers"
#: the paper whose text each paper-tier suite's reference numbers come from
PAPER_OF_SUITE = {
    "rmnw-paper": "ghosh-lan-2021-rmnw-net.txt",
    "gce-paper": "zhang-sabuncu-2018-gce.txt",
    "l2b-paper": "l2b-learning-to-bootstrap.txt",
    "emlc-paper": "taraday-baskin-2023-emlc.txt",
}
SUITES_WITH_REFERENCES = [n for n in list_suites() if load_suite(n).reference_blocks()]


def _produced(suite):
    """(row labels, column labels) the harness prints for ``suite``."""
    rows = {str(e["label"]) for e in suite.axes[suite.rows]}
    cols = {" / ".join(c.label(a) for a in suite.column_axes) or "all" for c in suite.cells()}
    return rows, cols


def _reference_cells(suite):
    """(metric, row, column, value) of every reference cell: ``reference:`` and each ``references:`` block."""
    for block in suite.reference_blocks():
        yield from block.cells()


def test_the_paper_suites_carry_references():
    assert set(PAPER_OF_SUITE) <= set(SUITES_WITH_REFERENCES)


@pytest.mark.parametrize("name", SUITES_WITH_REFERENCES)
def test_every_reference_cell_names_a_printed_row_and_column(name):
    """A misspelt metric, row or column label would silently print '-' beside our number."""
    suite = load_suite(name)
    rows, cols = _produced(suite)
    cells = list(_reference_cells(suite))
    assert cells, f"{name}: a reference block without cells"
    for metric, row, col, value in cells:
        assert metric in suite.metrics, f"{name}: reference metric {metric!r} is not in metrics {suite.metrics}"
        assert row in rows, f"{name}: reference row {row!r} is not a {suite.rows} label {sorted(rows)}"
        assert col in cols, f"{name}: reference column {col!r} ({metric}, {row}) is not among {sorted(cols)}"
        assert isinstance(value, (int, float)) and 0 <= value <= 100, (name, metric, row, col, value)


@pytest.mark.parametrize("name", SUITES_WITH_REFERENCES)
def test_every_reference_metric_names_its_table(name):
    """Each reference cell's source (its block's, per metric, or its row's) names a table, or a file
    at a commit (a table published only as an image in the authors' repository)."""
    suite = load_suite(name)
    for block in suite.reference_blocks():
        for metric, row, _, _ in block.cells():
            src = block.row_sources.get(row) or block.source_for(metric)
            assert src and re.search(r"\bTables? \d|\bcommit [0-9a-f]{7}", src), (
                f"{name}: the {metric} reference ({block.label!r}, {row}) names no table: {src!r}")


def _numbers(text: str, digits: int) -> set[float]:
    return {round(float(x), digits) for x in re.findall(r"\d+\.\d+", text)}


@pytest.mark.parametrize("name", sorted(PAPER_OF_SUITE))
def test_reference_numbers_appear_in_the_paper_text(name):
    """Each reference value is a number printed in the cited paper, or 100x one (AUC fractions)."""
    path = PAPERS / PAPER_OF_SUITE[name]
    if not path.is_file():
        pytest.skip(f"{path} not present")
    text = path.read_text()
    percents, fractions = _numbers(text, 2), _numbers(text, 4)
    missing = [(m, r, c, v) for m, r, c, v in _reference_cells(load_suite(name))
               if round(float(v), 2) not in percents and round(float(v) / 100, 4) not in fractions]
    assert not missing, f"{name}: values not printed in {path.name}: {missing[:5]}"


def _stand_in_adjuster(tmp_path, path):
    """An adjuster file of the family a T-* cell names (the suite's own files are written by
    ``noisylabels narl-train`` before the suite runs)."""
    from noisylabels.methods.narl import FAMILIES, Adjuster
    from noisylabels.methods.narl_transfer import save_adjuster

    family = Path(path).stem.removeprefix("adjuster-")
    fam = FAMILIES[family]
    net = Adjuster(len(fam.hparams), scale=fam.scale, low=fam.low, high=fam.high)
    out = tmp_path / Path(path).name
    save_adjuster(out, family=family, adjuster=net, snapshots=[net.state_dict()] * 3, snapshot_epochs=[1, 2, 3])
    return str(out)


@pytest.mark.parametrize("name", list_suites())
def test_every_cell_creates_its_method(name, tmp_path):
    """Method options of every cell (paper tiers included) are accepted by the method's factory."""
    from noisylabels.config import resolve_config
    from noisylabels.methods import create_method

    suite = load_suite(name)
    seen = set()
    for cell in suite.cells():
        cfg = resolve_config(overrides={**suite.base, **dict(cell.overrides)})
        opts = dict(cfg["method"])
        key = repr(sorted(opts.items()))
        if key not in seen:
            seen.add(key)
            if opts.get("adjuster") and not Path(opts["adjuster"]).is_file():
                opts["adjuster"] = _stand_in_adjuster(tmp_path, opts["adjuster"])
            create_method(opts.pop("name"), **opts)


def test_per_metric_sources_and_labels_are_printed(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nrows: method\nseeds: [0]\n"
        "axes: {noise: [{label: '40%', set: {}}], method: [{label: CE, set: {}}]}\n"
        "metrics: [test_accuracy, last_test_accuracy]\n"
        "metric_labels: {last_test_accuracy: 'no selection'}\n"
        "reference:\n  source: {test_accuracy: 'Paper A, Table 1', last_test_accuracy: 'Paper B, Table 9'}\n"
        "  test_accuracy: {CE: {'40%': 81.88}}\n  last_test_accuracy: {CE: {'40%': 12.5}}\n")
    suite = load_suite(path)
    key = suite.cells()[0].key
    md, rows = tabulate(suite, {(key, 0): {"test_accuracy": 0.5, "last_test_accuracy": 0.25}}, [0])
    first, second = md.split("### s: last_test_accuracy")
    assert "Paper A, Table 1" in first and "Paper B" not in first and "81.88" in first
    assert second.startswith(": no selection") and "Paper B, Table 9" in second and "12.50" in second
    assert {r["metric"]: r["reference"] for r in rows} == {"test_accuracy": 81.88, "last_test_accuracy": 12.5}
    # one source string applies to every metric
    path.write_text(path.read_text().replace(
        "source: {test_accuracy: 'Paper A, Table 1', last_test_accuracy: 'Paper B, Table 9'}", "source: 'Table 4'"))
    suite = load_suite(path)
    assert suite.reference_source("test_accuracy") == suite.reference_source("last_test_accuracy") == "Table 4"
