"""The real-noise suites (``realnoise-cpu``, ``cifar-n-paper``) ship the rows and reference cells of
every method of issues 22/23, C2D's from the suite's own SimCLR pretraining;
``benchmarks/realnoise_protocols.md`` keeps no row to paste any more (anything it would keep must
paste into the shipped suites as it is), and every row's method options must be ones the method
accepts."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest
import yaml

from noisylabels.bench import load_suite

DOC = Path(__file__).resolve().parents[2] / "benchmarks" / "realnoise_protocols.md"
TABLE = re.compile(r"\bTables? \d|\bcommit [0-9a-f]{7}")
SUITES = ["cifar-n-paper", "realnoise-cpu"]
#: the methods of issues 22 and 23 that are registered: each has a row in both suites
ISSUE_METHODS = {"elr", "elr-plus", "sop", "sop-plus", "coteaching", "coteaching-plus", "dividemix", "promix"}


def _snippets() -> dict[str, object]:
    text = DOC.read_text()
    found = re.findall(r"<!-- paste: (.+?) -->\n```yaml\n(.*?)```", text, re.S)
    return {name: yaml.safe_load(body) for name, body in found}


def _suite_raw(name: str) -> dict:
    return yaml.safe_load((resources.files("noisylabels.bench") / "suites" / f"{name}.yaml").read_text())


def _pasted(tmp_path, name: str) -> Path:
    """The shipped suite with the document's remaining rows (and reference cells) pasted in, as a file."""
    snips = _snippets()
    raw = _suite_raw(name)
    raw["axes"]["method"] += snips.get(f"{name} rows") or []
    for block in raw.get("references") or []:
        extra = snips.get(f"{name} references {block['label']}")
        if extra:
            block["test_accuracy"].update(extra["test_accuracy"])
            block.setdefault("row_sources", {}).update(extra.get("row_sources") or {})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _check_labels_and_sources(suite) -> None:
    labels = [str(e["label"]) for e in suite.axes["method"]]
    assert len(labels) == len(set(labels)), labels
    for block in suite.reference_blocks():
        for metric, row, _, _ in block.cells():
            src = block.row_sources.get(row) or block.source_for(metric)
            assert src and TABLE.search(src), (block.label, row, src)


def _method_options(cell) -> tuple[str | None, dict]:
    opts = {k.split(".", 1)[1]: v for k, v in dict(cell.overrides).items() if k.startswith("method.")}
    return opts.pop("name", None), opts


def test_the_document_keeps_no_rows_to_paste():
    """Every row and reference cell was moved into the suites, not copied (C2D's too, now that
    SimCLR pretraining runs as the suites' pretrain stage)."""
    assert _snippets() == {}


@pytest.mark.parametrize("name", SUITES)
def test_the_c2d_row_is_dividemix_from_the_suites_simclr_backbone(tmp_path, name):
    """The dry run's plan: one SimCLR pretraining per seed (and per data set that SimCLR sees
    differently), which every C2D cell of that seed starts from, with the DivideMix row's settings."""
    from noisylabels.bench import run_suite

    suite = load_suite(name)
    (c2d,) = [e for e in suite.axes["method"] if str(e["label"]).startswith("C2D")]
    (dm,) = [e for e in suite.axes["method"] if str(e["label"]).startswith("DivideMix")]
    assert c2d["set"].pop("model.init_checkpoint") == "pretrain:simclr"
    assert c2d["set"] == dm["set"] and c2d.get("set_by") == dm.get("set_by")
    assert suite.pretrain["simclr"]["set"]["method.name"] == "simclr"
    plan = run_suite(name, out=tmp_path / "o", dry_run=True, verbose=False)["plan"]
    pre = [p for p in plan if p[0] == "_pretrain/simclr"]
    n_data = 2 if name == "cifar-n-paper" else 1  # the three CIFAR-10N label sets share one backbone
    assert len(pre) == n_data * len(suite.seeds) and all(p[3] == "new" for p in pre)
    assert {p[1] for p in pre} == set(suite.seeds)


@pytest.mark.parametrize("name", SUITES)
def test_the_shipped_suite_has_a_row_per_issue_method(name):
    suite = load_suite(name)
    _check_labels_and_sources(suite)
    methods = {_method_options(cell)[0] for cell in suite.cells()}
    assert ISSUE_METHODS <= methods, sorted(ISSUE_METHODS - methods)


def test_every_issue_method_row_of_the_paper_tier_has_reference_cells():
    """Every row of cifar-n-paper but the PreAct CE baseline, GCE and C2D (no published CIFAR-N
    number) carries at least one reference cell."""
    suite = load_suite("cifar-n-paper")
    cited = {row for block in suite.references for _, row, _, _ in block.cells()}
    rows = {str(e["label"]) for e in suite.axes["method"]}
    assert sorted(rows - cited) == ["C2D (PreAct ResNet-18)", "CE (PreAct ResNet-18)", "GCE (ResNet-34)"]


def test_realnoise_cpu_runs_the_measured_budget():
    """The budget the lead's pilot measured and the description's numbers refer to."""
    suite = load_suite("realnoise-cpu")
    assert {k: suite.base[k] for k in ("model.name", "train.epochs", "optim.lr", "optim.schedule",
                                      "train.batch_size", "data.train_subset")} == {
        "model.name": "resnet8", "train.epochs": 40, "optim.lr": 0.1, "optim.schedule": "cosine",
        "train.batch_size": 128, "data.train_subset": 10000}
    assert "placeholder" not in suite.description


@pytest.mark.parametrize("name", SUITES)
def test_remaining_rows_paste_into_the_suite(tmp_path, name):
    """load_suite refuses a reference cell whose row, column or metric the suite does not print."""
    suite = load_suite(_pasted(tmp_path, name))
    _check_labels_and_sources(suite)


@pytest.mark.parametrize("name", SUITES)
def test_every_row_names_options_its_method_accepts(tmp_path, name):
    """Shipped rows and the document's remaining rows name only registered methods and options
    those methods accept (caught when a method's option is renamed)."""
    from noisylabels.methods import create_method, list_methods

    suite = load_suite(_pasted(tmp_path, name))
    seen = set()
    for cell in suite.cells():
        method, opts = _method_options(cell)
        key = (method, repr(sorted(opts.items())))
        if method is None or key in seen:
            continue
        seen.add(key)
        assert method in list_methods(), (cell.key, method)
        create_method(method, **opts)


@pytest.mark.parametrize("name", SUITES)
def test_every_cell_passes_the_config_checks(name):
    """Each cell's config (its optimiser and schedule options included: e.g. ``optim.decay_start``
    below ``train.epochs``, ``decay_beta1`` only with Adam) passes :func:`noisylabels.config.validate`."""
    from noisylabels.config import resolve_config, validate

    suite = load_suite(resources.files("noisylabels.bench.suites") / f"{name}.yaml")
    for cell in suite.cells():
        validate(resolve_config(overrides=dict(cell.overrides)))


def test_coteaching_plus_rows_count_the_codes_epochs_from_one():
    """The official code trains epochs 1..199 and uses plain Co-teaching while ``epoch < init_epoch``
    (CIFAR-10: 20, CIFAR-100: 5): init_epoch - 1 trained epochs, which is ``init_epochs`` here."""
    code_init_epoch = {"C10N": 20, "C100N": 5}
    suite = load_suite("cifar-n-paper")
    rows = [c for c in suite.cells() if c.label("method").startswith("Co-teaching+")]
    assert len(rows) == 4
    for cell in rows:
        over = dict(cell.overrides)
        assert over["train.epochs"] == 199
        assert over["method.init_epochs"] == code_init_epoch[cell.label("labels").split()[0]] - 1
