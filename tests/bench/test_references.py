"""Suite extensions: several reference blocks (each its own source, per-row sources) and ratio_to
(a derived table: each seed's value over the same seed's value of a named row, same column)."""

from __future__ import annotations

import csv
import statistics

import pytest

from noisylabels.bench import load_suite
from noisylabels.bench.harness import tabulate
from noisylabels.errors import UserError

BASE = (
    "name: s\nrows: method\nseeds: [0, 1]\n"
    "axes:\n  noise: [{label: a, set: {}}, {label: b, set: {}}]\n"
    "  method: [{label: CE, set: {}}, {label: clean, set: {}}, {label: X, set: {}}]\n"
    "metrics: [test_accuracy, last_test_accuracy]\n"
)
REFS = (
    "reference:\n  source: 'Paper A, Table 1'\n  test_accuracy: {CE: {a: 81.5}}\n"
    "references:\n"
    "  - label: repro\n    source: {test_accuracy: 'Repro, Table 4', last_test_accuracy: 'Repro, Table 2'}\n"
    "    row_sources: {X: 'Paper C, Table 3'}\n"
    "    test_accuracy: {CE: {a: 70.25, b: 60.0}, X: {b: 65.5}}\n"
    "    last_test_accuracy: {CE: {b: 50.0}}\n"
    "  - label: authors\n    source: 'Paper B, Table 2'\n    test_accuracy: {X: {a: 90.0}}\n"
)


def _suite(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return load_suite(path)


def _results(suite, values):
    """``values[(row, column, seed)] = accuracy`` -> the harness's results mapping."""
    out = {}
    for cell in suite.cells():
        for s in suite.seeds:
            v = values.get((cell.label("method"), cell.label("noise"), s))
            if v is not None:
                out[(cell.key, s)] = {"status": "finished", "test_accuracy": v, "last_test_accuracy": v / 2}
    return out


def test_reference_blocks_print_their_columns_sources_and_row_sources(tmp_path):
    suite = _suite(tmp_path, BASE + REFS)
    assert [b.label for b in suite.reference_blocks()] == ["ref", "repro", "authors"]
    res = _results(suite, {("CE", "a", 0): 0.5, ("X", "b", 1): 0.25})
    md, rows = tabulate(suite, res, suite.seeds)
    first, second = md.split("### s: last_test_accuracy")
    header = next(line for line in first.splitlines() if line.startswith("| method"))
    assert header == "| method | a | a ref | a repro | a authors | b | b ref | b repro | b authors |"
    assert "reference columns ('ref'): Paper A, Table 1" in first
    assert "reference columns ('repro'): Repro, Table 4" in first
    assert "reference columns ('repro'), row X: Paper C, Table 3" in first
    assert "reference columns ('authors'): Paper B, Table 2" in first
    assert "| CE | 50.00 ± 0.00 | 81.50 | 70.25 | - | - | - | 60.00 | - |" in first
    assert "| X | - | - | - | 90.00 | 25.00 ± 0.00 | - | 65.50 | - |" in first
    # the second metric has only the repro block (its own source); the row source of X has no cell there
    header2 = next(line for line in second.splitlines() if line.startswith("| method"))
    assert header2 == "| method | a | a repro | b | b repro |"
    assert "Repro, Table 2" in second and "Table 4" not in second and "Paper C" not in second
    assert "| CE | 25.00 ± 0.00 | - | - | 50.00 |" in second
    by = {(r["metric"], r["row"], r["column"]): r for r in rows}
    r = by[("test_accuracy", "X", "b")]
    assert (r["reference"], r["reference repro"], r["reference authors"]) == (None, 65.5, None)
    assert by[("test_accuracy", "CE", "a")]["reference"] == 81.5
    assert all(list(r) == list(rows[0]) for r in rows)  # one CSV schema for every row


@pytest.mark.parametrize("change, match", [
    ("    last_test_accuracy: {CE: {b: 50.0}}\n", "    last_test_acc: {CE: {b: 50.0}}\n"),
    ("X: {b: 65.5}", "Y: {b: 65.5}"),
    ("X: {b: 65.5}", "X: {c: 65.5}"),
    ("row_sources: {X: ", "row_sources: {Z: "),
    ("label: authors", "label: repro"),
    ("label: authors", "label: ref"),
    ("    source: 'Paper B, Table 2'\n", ""),
    ("X: {b: 65.5}", "X: {b: high}"),
])
def test_reference_block_mistakes_are_one_line_errors(tmp_path, change, match):
    old, new = change, match
    assert old in BASE + REFS
    with pytest.raises(UserError) as err:
        _suite(tmp_path, (BASE + REFS).replace(old, new))
    assert "\n" not in str(err.value)


def test_ratio_to_pairs_seeds_within_a_column(tmp_path):
    """Expected values computed from the definition: per seed, value / the named row's value in
    the same column and seed; mean and sample std over the seeds where both finished."""
    suite = _suite(tmp_path, BASE + "ratio_to: {row: clean, metrics: [test_accuracy]}\n")
    values = {("clean", "a", 0): 0.90, ("clean", "a", 1): 0.80, ("clean", "b", 0): 0.50, ("clean", "b", 1): 0.40,
              ("CE", "a", 0): 0.80, ("CE", "a", 1): 0.60, ("CE", "b", 0): 0.45, ("CE", "b", 1): 0.30,
              ("X", "a", 0): 0.70}  # X: seed 1 did not finish
    md, rows = tabulate(suite, _results(suite, values), suite.seeds)
    part = md.split("### s: test_accuracy / clean")[1]
    ce_a = [0.80 / 0.90, 0.60 / 0.80]
    ce_b = [0.45 / 0.50, 0.30 / 0.40]
    expect = (f"| CE | {statistics.fmean(ce_a):.3f} ± {statistics.stdev(ce_a):.3f} | "
              f"{statistics.fmean(ce_b):.3f} ± {statistics.stdev(ce_b):.3f} |")
    assert expect == "| CE | 0.819 ± 0.098 | 0.825 ± 0.106 |"  # not the ratio of means (0.824, 0.833)
    assert expect in part
    assert "| clean | 1.000 ± 0.000 | 1.000 ± 0.000 |" in part
    assert f"| X | {0.70 / 0.90:.3f} ± 0.000 | - |" in part
    assert "last_test_accuracy / clean" not in md  # only the metrics named
    r = next(r for r in rows if r["metric"] == "test_accuracy / clean" and r["row"] == "CE" and r["column"] == "b")
    assert r["n"] == 2 and r["mean"] == pytest.approx(statistics.fmean(ce_b))


def test_ratio_to_defaults_to_every_metric_and_checks_its_names(tmp_path):
    suite = _suite(tmp_path, BASE + "ratio_to: {row: clean}\n")
    assert suite.ratio_to == {"row": "clean", "metrics": ["test_accuracy", "last_test_accuracy"]}
    for bad in ("{row: Clean}", "{row: clean, metrics: [accuracy]}", "clean", "{row: clean, metric: [x]}"):
        with pytest.raises(UserError, match="ratio_to"):
            _suite(tmp_path, BASE + f"ratio_to: {bad}\n")


def test_ratio_tables_reach_table_csv(tmp_path, monkeypatch):
    """Through run_suite (training replaced by a stub summary): the derived rows and the extra
    reference columns share table.csv's header."""
    from noisylabels.bench import harness, run_suite

    def fake_run(cfg, threads):
        acc = 0.9 if cfg["noise"]["type"] == "none" else 0.6
        return {"status": "finished", "test_accuracy": acc}

    monkeypatch.setattr(harness, "_run_cell", fake_run)

    text = (
        "name: r\nbase: {data.name: digits, data.train_subset: 200, model.name: mlp, model.hidden: [16],\n"
        "       train.epochs: 1, train.checkpoint: false}\nseeds: [0]\nrows: method\n"
        "axes:\n  noise: [{label: '40%', set: {noise.type: symmetric, noise.rate: 0.4}}]\n"
        "  method:\n    - {label: clean, set: {noise.type: none, noise.rate: 0.0}}\n    - {label: CE, set: {}}\n"
        "metrics: [test_accuracy]\nratio_to: {row: clean}\n"
        "references:\n  - {label: paper, source: 'P, Table 1', test_accuracy: {CE: {'40%': 50.0}}}\n")
    path = tmp_path / "r.yaml"
    path.write_text(text)
    res = run_suite(path, out=tmp_path / "out", executor="inline", verbose=False)
    assert res["failed"] == []
    with open(tmp_path / "out" / "table.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["metric"] for r in table] == ["test_accuracy"] * 2 + ["test_accuracy / clean"] * 2
    ce, clean = (next(r for r in table if r["metric"] == "test_accuracy" and r["row"] == k) for k in ("CE", "clean"))
    ratio = next(r for r in table if r["metric"] == "test_accuracy / clean" and r["row"] == "CE")
    assert (float(ce["mean"]), float(clean["mean"])) == pytest.approx((60.0, 90.0))
    assert float(ratio["mean"]) == pytest.approx(0.6 / 0.9)
    assert ce["reference paper"] == "50.0" and ratio["reference paper"] == ""
