"""The benchmark harness: tables, resume keyed by config hash, failures reported, option errors."""

from pathlib import Path

import pytest

from noisylabels.bench import config_hash, list_suites, load_suite, run_suite
from noisylabels.cli import main
from noisylabels.config import resolve_config
from noisylabels.errors import UserError

SUITES = Path(__file__).parent / "suites"
TINY = str(SUITES / "tiny.yaml")


def test_suites_listed_and_loadable():
    assert "smoke" in list_suites()
    suite = load_suite("smoke")
    assert len(suite.cells()) == 3 and suite.seeds == [0, 1, 2]


def test_unknown_suite():
    with pytest.raises(UserError, match="unknown suite"):
        load_suite("nope")


def test_table_and_resume_skip_finished_runs(tmp_path, capsys):
    """Inline executor (the process pool is tested in test_bench_pool.py): the table, and a rerun
    that skips every finished run and rewrites the same table."""
    out = tmp_path / "tiny"
    assert main(["bench", TINY, "--out", str(out), "--executor", "inline", "--seeds", "1"]) == 0
    text = capsys.readouterr().out
    assert "2 runs, 0 already finished, 2 to run in this process" in text
    table = (out / "table.md").read_text()
    assert "| method | 0% | 60% |" in table and "| CE |" in table
    assert (out / "table.csv").read_text().count("\n") == 1 + 2
    res = run_suite(TINY, out=out, executor="inline", max_seeds=1, verbose=False)
    assert res["failed"] == []
    acc = {r["column"]: r["mean"] for r in res["rows"]}
    assert acc["0%"] > acc["60%"] > 10
    assert [p.name.rsplit("-", 1)[0] for p in (out / "0___CE").iterdir()] == ["seed-0"]
    main(["bench", TINY, "--out", str(out), "--executor", "inline", "--seeds", "1"])
    assert "2 runs, 2 already finished, 0 to run" in capsys.readouterr().out
    assert (out / "table.md").read_text() == table


def test_changed_settings_rerun_instead_of_reusing_old_runs(tmp_path, capsys):
    out = tmp_path / "one"
    args = ["bench", str(SUITES / "one.yaml"), "--out", str(out), "--executor", "inline"]
    main(args)
    table = (out / "table.md").read_text()
    main(args + ["--set", "optim.lr=0.001"])
    assert "1 runs, 0 already finished, 1 to run" in capsys.readouterr().out.split("suite one:")[-1]
    assert len(list((out / "CE").iterdir())) == 2 and (out / "table.md").read_text() != table
    main(args)  # back to the first settings: its run is still there
    assert "1 runs, 1 already finished, 0 to run" in capsys.readouterr().out
    assert (out / "table.md").read_text() == table


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    """--dry-run resolves every run's config and reports each run's state; nothing is trained or written."""
    import json

    out = tmp_path / "tiny"
    assert main(["bench", TINY, "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "2 cells x 2 seed(s) = 4 runs" in text and "4 new" in text and "0___CE:" in text
    assert not out.exists()
    plan = run_suite(TINY, out=out, dry_run=True, verbose=False)["plan"]
    assert [(key, seed, state) for key, seed, _, state in plan][:2] == [("0___CE", s, "new") for s in (0, 1)]
    # a finished run and one that left a checkpoint, in the folders the plan names
    Path(plan[0][2]).mkdir(parents=True)
    Path(plan[0][2], "summary.json").write_text(json.dumps({"status": "finished"}))
    Path(plan[1][2]).mkdir(parents=True)
    Path(plan[1][2], "checkpoint.pt").write_bytes(b"")
    again = run_suite(TINY, out=out, dry_run=True, verbose=False)["plan"]
    assert [state for *_, state in again] == ["finished", "resume", "new", "new"]
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["checkpoint.pt", "summary.json"]
    with pytest.raises(UserError, match="unknown method"):
        run_suite(TINY, out=out, dry_run=True, assignments=["method.name=nope"], verbose=False)


def test_config_hash_covers_results_not_bookkeeping():
    base = resolve_config(overrides={"out": "a"})
    same = resolve_config(overrides={"out": "b", "train.progress": False, "train.num_threads": 3,
                                     "data.cache_dir": "/tmp/x"})
    assert config_hash(base) == config_hash(same)
    for key, value in (("seed", 1), ("train.epochs", 31), ("noise.rate", 0.2), ("model.hidden", [64]),
                       ("device", "cuda")):
        assert config_hash(resolve_config(overrides={key: value})) != config_hash(base), key


def test_failed_cells_exit_nonzero_with_first_error(tmp_path, capsys):
    out = tmp_path / "broken"
    code = main(["bench", str(SUITES / "broken.yaml"), "--out", str(out), "--executor", "inline"])
    text = capsys.readouterr().out
    assert code == 1
    assert "2 run(s) failed; the first error of each failed cell:" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("  nope (seed 0): ")]
    assert len(lines) == 1 and "non-finite loss" in lines[0] and "\n" not in lines[0]
    assert "| mlp |" in (out / "table.md").read_text() and "| nope | err |" in (out / "table.md").read_text()
    err_files = list((out / "nope").glob("seed-*/error.txt"))
    assert len(err_files) == 2 and "non-finite loss" in err_files[0].read_text()
    # the failed runs are not "finished": a rerun tries them again, the good ones are skipped
    main(["bench", str(SUITES / "broken.yaml"), "--out", str(out), "--executor", "inline"])
    assert "4 runs, 2 already finished, 2 to run" in capsys.readouterr().out


def test_a_cell_that_cannot_start_is_refused_before_any_run(tmp_path, capsys):
    """Names, options and weight files of every cell are checked before the first run (one line,
    exit 2, nothing written), not found by that cell's run after the others trained."""
    suite = tmp_path / "s.yaml"
    suite.write_text((SUITES / "broken.yaml").read_text().replace(
        "{model.name: mlp, optim.lr: 1.0e+30}", "{model.name: no-such-model}"))
    out = tmp_path / "o"
    code = main(["bench", str(suite), "--out", str(out), "--executor", "inline"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("noisylabels: error: cell nope: ") and "no-such-model" in err
    assert len(err.splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "--seeds must be an integer >= 1, got 0"),
    (["--seeds", "3"], "--seeds 3: suite tiny has 2 seed(s)"),
    (["--workers", "0"], "--workers must be an integer >= 1, got 0"),
    (["--workers", "-3"], "--workers must be an integer >= 1, got -3"),
    (["--runs-per-gpu", "0"], "--runs-per-gpu must be an integer >= 1, got 0"),
    (["--runs-per-gpu", "2", "--workers", "2"], "give --workers or --runs-per-gpu, not both"),
    (["--address", "auto"], "--address apply to --executor ray only"),
    (["--executor", "ray", "--workers", "2"], "--workers apply to the local executor"),
    (["--executor", "ray", "--cpus-per-run", "0"], "--cpus-per-run must be a number > 0"),
    (["--executor", "ray", "--gpus-per-run", "1"], "reserves GPUs but cell 0___CE runs on device cpu"),
])
def test_bad_bench_options_are_one_line_errors(tmp_path, capsys, argv, message):
    code = main(["bench", TINY, "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_runs_per_gpu_without_gpu_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert main(["bench", TINY, "--out", str(tmp_path / "o"), "--runs-per-gpu", "2"]) == 2
    assert "--runs-per-gpu: no GPU is visible" in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_table_and_resume(tmp_path, capsys):
    """The shipped smoke suite through the process pool (2 workers), then resumed."""
    out = tmp_path / "smoke"
    code = main(["bench", "smoke", "--out", str(out), "--workers", "2", "--set", "train.epochs=4"])
    text = capsys.readouterr().out
    assert code == 0
    table = (out / "table.md").read_text()
    assert "| CE |" in table and "0% | 40% | 60%" in table.replace(" / ", " | ")
    assert (out / "table.csv").read_text().count("\n") == 1 + 2 * 3
    res = run_suite("smoke", out=out, assignments=["train.epochs=4"], verbose=False)
    acc = {r["column"]: r["mean"] for r in res["rows"] if r["metric"] == "test_accuracy"}
    assert acc["0%"] > acc["60%"]
    assert "9 runs, 0 already finished" in text
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


def test_row_selection_runs_only_those_rows_in_the_folders_of_a_full_run(tmp_path, capsys):
    pre = str(SUITES / "pretrain.yaml")
    full = run_suite(pre, out=tmp_path / "o", dry_run=True, verbose=False)["plan"]
    only = run_suite(pre, out=tmp_path / "o", dry_run=True, verbose=False, rows=["CE"])["plan"]
    assert only == [p for p in full if p[0] == "scratch__CE"]  # no pretraining: no selected row needs it
    # the ratio_to row comes along (the ratios need it), and the pretraining the selected row needs
    plan = run_suite("realnoise-cpu", out=tmp_path / "r", dry_run=True, verbose=False, rows=["C2D"], max_seeds=1)["plan"]
    assert [p[0] for p in plan] == ["_pretrain/simclr", "random1_10k__CE_clean_labels", "random1_10k__C2D"]
    code = main(["bench", pre, "--row", "CE", "--row", "C2", "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("noisylabels: error: --row 'C2': suite pretrain has no such method; valid: 'CE'")
