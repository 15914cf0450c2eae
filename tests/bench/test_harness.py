"""The benchmark harness: the shipped smoke suite produces its table and resumes."""

import pytest

from noisylabels.bench import list_suites, load_suite, run_suite
from noisylabels.cli import main
from noisylabels.errors import UserError


def test_suites_listed_and_loadable():
    assert "smoke" in list_suites()
    suite = load_suite("smoke")
    assert len(suite.cells()) == 3 and suite.seeds == [0, 1, 2]


def test_unknown_suite():
    with pytest.raises(UserError, match="unknown suite"):
        load_suite("nope")


def test_smoke_table_and_resume(tmp_path, capsys):
    out = tmp_path / "smoke"
    code = main(["bench", "smoke", "--out", str(out), "--workers", "2", "--set", "train.epochs=4"])
    text = capsys.readouterr().out
    assert code == 0
    table = (out / "table.md").read_text()
    assert "| CE |" in table and "0% | 40% | 60%" in table.replace(" / ", " | ")
    assert (out / "table.csv").read_text().count("\n") == 1 + 2 * 3
    # the clean column beats the 60% column
    res = run_suite("smoke", out=out, assignments=["train.epochs=4"], verbose=False)
    acc = {r["column"]: r["mean"] for r in res["rows"] if r["metric"] == "test_accuracy"}
    assert acc["0%"] > acc["60%"]
    assert "9 runs, 0 already finished" in text
    # a second call skips every finished cell
    main(["bench", "smoke", "--out", str(out), "--set", "train.epochs=4"])
    assert "9 already finished, 0 to run" in capsys.readouterr().out


@pytest.mark.slow
def test_smoke_full(tmp_path):
    res = run_suite("smoke", out=tmp_path / "smoke", verbose=False)
    acc = {r["column"]: r["mean"] for r in res["rows"] if r["metric"] == "test_accuracy"}
    assert acc["0%"] > 90


@pytest.mark.parametrize("name", list_suites())
def test_every_shipped_suite_cell_names_registered_components(name):
    """Each cell of each shipped suite (paper tiers included, which CI never runs) resolves and names
    a registered dataset, model, method, loss and noise type."""
    from noisylabels.config import resolve_config
    from noisylabels.data.registry import list_datasets
    from noisylabels.losses import list_losses
    from noisylabels.methods import METHODS, list_methods
    from noisylabels.models import list_models
    from noisylabels.noise import list_noise_types
    from noisylabels.train import resolve_method_defaults  # refuses a loss section a method would ignore

    suite = load_suite(name)
    for cell in suite.cells():
        cfg = resolve_method_defaults(resolve_config(overrides={**suite.base, **dict(cell.overrides)}))
        assert cfg["data"]["name"] in list_datasets(), cell.key
        assert cfg["model"]["name"] in list_models(), cell.key
        assert cfg["method"]["name"] in list_methods(), cell.key
        own = METHODS.get(cfg["method"]["name"]).own_loss is not None  # e.g. narl: a-gce
        assert own or cfg["loss"]["name"] in list_losses(), cell.key
        assert cfg["noise"]["type"] in list_noise_types(), cell.key
