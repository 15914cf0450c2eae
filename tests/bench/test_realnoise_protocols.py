"""benchmarks/realnoise_protocols.md holds the rows (and reference cells) of methods not registered
yet: they must paste into the shipped suites as they are, and, once a method is registered, its
options must be ones the method accepts."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest
import yaml

from noisylabels.bench import load_suite

DOC = Path(__file__).resolve().parents[2] / "benchmarks" / "realnoise_protocols.md"
TABLE = re.compile(r"\bTables? \d|\bcommit [0-9a-f]{7}")


def _snippets() -> dict[str, object]:
    text = DOC.read_text()
    found = re.findall(r"<!-- paste: (.+?) -->\n```yaml\n(.*?)```", text, re.S)
    return {name: yaml.safe_load(body) for name, body in found}


def _suite_raw(name: str) -> dict:
    return yaml.safe_load((resources.files("noisylabels.bench") / "suites" / f"{name}.yaml").read_text())


def _pasted(tmp_path, name: str) -> tuple[dict, Path]:
    """The shipped suite with the document's rows (and reference cells) pasted in, as a file."""
    snips = _snippets()
    raw = _suite_raw(name)
    raw["axes"]["method"] += snips[f"{name} rows"]
    for block in raw.get("references") or []:
        extra = snips.get(f"{name} references {block['label']}")
        if extra:
            block["test_accuracy"].update(extra["test_accuracy"])
            block.setdefault("row_sources", {}).update(extra.get("row_sources") or {})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return raw, path


def test_the_document_has_every_snippet():
    assert set(_snippets()) == {"cifar-n-paper rows", "cifar-n-paper references CIFAR-N",
                                "cifar-n-paper references ReScience-T2", "cifar-n-paper references ReScience-T4",
                                "realnoise-cpu rows"}


@pytest.mark.parametrize("name", ["cifar-n-paper", "realnoise-cpu"])
def test_rows_and_reference_cells_paste_into_the_suite(tmp_path, name):
    """load_suite refuses a reference cell whose row, column or metric the suite does not print."""
    raw, path = _pasted(tmp_path, name)
    suite = load_suite(path)
    labels = [str(e["label"]) for e in suite.axes["method"]]
    assert len(labels) == len(set(labels)), labels
    for block in suite.reference_blocks():
        for metric, row, _, _ in block.cells():
            src = block.row_sources.get(row) or block.source_for(metric)
            assert src and TABLE.search(src), (block.label, row, src)
    if name == "cifar-n-paper":
        cited = {row for block in suite.references for _, row, _, _ in block.cells()}
        future = [str(e["label"]) for e in _snippets()["cifar-n-paper rows"]]
        # every future row but C2D (no published CIFAR-N number) gets reference cells
        assert sorted(set(future) - cited) == ["C2D (PreAct ResNet-18)"]


@pytest.mark.parametrize("name", ["cifar-n-paper", "realnoise-cpu"])
def test_registered_methods_accept_the_pasted_options(tmp_path, name):
    """A row whose method exists must name only options the method accepts (caught when the method
    lands with other option names than the document's)."""
    from noisylabels.methods import create_method, list_methods

    raw, path = _pasted(tmp_path, name)
    suite = load_suite(path)
    for cell in suite.cells():
        over = dict(cell.overrides)
        opts = {k.split(".", 1)[1]: v for k, v in over.items() if k.startswith("method.")}
        method = opts.pop("name", None)
        if method in list_methods():
            create_method(method, **opts)
