"""A suite's ``pretrain:`` stage: backbones trained first, one per seed and per data/model, cells
started from them, failures and missing files reported before anything runs."""

import re
from pathlib import Path

import pytest
import torch
import yaml

from noisylabels.bench import harness, load_suite, run_suite
from noisylabels.cli import main
from noisylabels.errors import UserError

SUITE = Path(__file__).parent / "suites" / "pretrain.yaml"


def _suite(tmp_path, **edit):
    raw = yaml.safe_load(SUITE.read_text())
    for key, value in edit.items():
        raw[key] = value
    p = tmp_path / "suite.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _config(run_dir):
    return yaml.safe_load((Path(run_dir) / "config.yaml").read_text())


def test_cells_start_from_their_seeds_backbone_and_a_rerun_trains_nothing(tmp_path, capsys):
    out = tmp_path / "o"
    res = run_suite(SUITE, out=out, executor="inline", verbose=False)
    assert res["failed"] == []
    pre = sorted((out / "_pretrain" / "ssl").iterdir())
    assert [p.name.split("-")[1] for p in pre] == ["0", "1"]  # one backbone per seed
    for run in (out / "scratch__CE_from_SimCLR").iterdir():
        cfg = _config(run)
        backbone = Path(cfg["model"]["init_checkpoint"])
        assert backbone.name == "backbone.pt" and backbone.parent.parent == out / "_pretrain" / "ssl"
        pcfg = _config(backbone.parent)
        assert pcfg["seed"] == cfg["seed"] and pcfg["method"]["name"] == "simclr"
        # the cell's data and model, not its supervised augmentation; the entry's own settings
        assert pcfg["data"]["train_subset"] == cfg["data"]["train_subset"] == 200
        assert pcfg["model"] == {k: v for k, v in cfg["model"].items() if k != "init_checkpoint"}
        assert pcfg["data"]["strong_augment"]["name"] == "simclr" and pcfg["train"]["batch_size"] == 64
        assert torch.load(backbone, weights_only=True)  # a state dict the cell loaded
    for run in (out / "scratch__CE").iterdir():
        assert _config(run)["model"].get("init_checkpoint") is None
    assert main(["bench", str(SUITE), "--out", str(out), "--executor", "inline"]) == 0
    text = capsys.readouterr().out
    assert "4 runs, 4 already finished, 0 to run" in text and "pretraining" not in text


def test_a_cell_starts_from_the_backbone_weights(tmp_path, monkeypatch):
    """The weights the cell's model starts from are the backbone's (captured before training)."""
    from noisylabels.train import context as tctx

    seen = []
    real = tctx.TrainContext.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        seen.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})

    monkeypatch.setattr(tctx.TrainContext, "__init__", spy)
    suite = _suite(tmp_path, seeds=[0], axes={"init": [{"label": "x", "set": {}}], "method": [
        {"label": "C", "set": {"method.name": "erm", "model.init_checkpoint": "pretrain:ssl"}}]})
    out = tmp_path / "o"
    assert run_suite(suite, out=out, executor="inline", verbose=False)["failed"] == []
    (backbone,) = (out / "_pretrain" / "ssl").glob("*/backbone.pt")
    sd = torch.load(backbone, weights_only=True)
    first = seen[-1]
    assert sd and all(torch.equal(first[k], v) for k, v in sd.items())


def test_pretraining_settings_enter_the_cells_hash(tmp_path):
    a = run_suite(SUITE, out=tmp_path / "o", executor="inline", verbose=False, dry_run=True)["plan"]
    other = _suite(tmp_path, pretrain={"ssl": {"set": {"train.epochs": 2, "train.batch_size": 64,
                                                       "method.knn_k": 10}}})
    b = run_suite(other, out=tmp_path / "o", executor="inline", verbose=False, dry_run=True)["plan"]
    dirs = lambda plan, key: {p[2] for p in plan if p[0] == key}  # noqa: E731
    assert dirs(a, "scratch__CE") == dirs(b, "scratch__CE")
    assert dirs(a, "scratch__CE_from_SimCLR").isdisjoint(dirs(b, "scratch__CE_from_SimCLR"))
    assert dirs(a, "_pretrain/ssl").isdisjoint(dirs(b, "_pretrain/ssl"))
    # --set reaches the pretraining through the cell's data: a new backbone, a new cell
    c = run_suite(SUITE, out=tmp_path / "o", executor="inline", verbose=False, dry_run=True,
                  assignments=["data.train_subset=150"])["plan"]
    assert dirs(a, "_pretrain/ssl").isdisjoint(dirs(c, "_pretrain/ssl"))


def test_a_failed_pretraining_fails_only_its_cells(tmp_path, monkeypatch, capsys):
    real = harness._run_cell

    def fail_ssl(cfg, threads):
        if cfg["method"]["name"] == "simclr" and cfg["seed"] == 1:
            raise RuntimeError("planted failure")
        return real(cfg, threads)

    monkeypatch.setattr(harness, "_run_cell", fail_ssl)
    out = tmp_path / "o"
    res = run_suite(SUITE, out=out, executor="inline", verbose=False)
    assert [(k, s) for k, s, _ in res["failed"]] == [("scratch__CE_from_SimCLR", 1)]
    assert "pretraining ssl (seed 1) failed" in res["failed"][0][2] and "planted failure" in res["failed"][0][2]
    assert {(k, s) for k, s in res["results"]} == {(c, s) for c in ("scratch__CE", "scratch__CE_from_SimCLR")
                                                  for s in (0, 1)}
    (err,) = (out / "_pretrain" / "ssl").glob("seed-1-*/error.txt")
    assert "planted failure" in err.read_text()
    # the rerun pretrains only what failed, then runs the cell that waited for it
    monkeypatch.setattr(harness, "_run_cell", real)
    assert main(["bench", str(SUITE), "--out", str(out), "--executor", "inline"]) == 0
    text = capsys.readouterr().out
    assert "pretraining: 1 runs, 0 already finished, 1 to run" in text
    assert "4 runs, 3 already finished, 1 to run" in text


@pytest.mark.parametrize("edit, message", [
    ({"pretrain": {"other": {"set": {}}}}, "pretrain:ssl names no pretraining of suite pretrain (pretrain: other)"),
    ({"pretrain": {"ssl": {"sett": {}}}}, "pretrain 'ssl': the entry is {set: {key: value}, set_by: "),
    ({"pretrain": {"ssl": {"set": {}, "set_by": {"init": {"scratchh": {}}}}}},
     "pretrain 'ssl': set_by init: 'scratchh' is not a label of axis 'init'"),
    ({"pretrain": {"ssl": {"set": {}, "set_by": {"noise": {}}}}}, "pretrain 'ssl': set_by names axis 'noise'"),
    ({"pretrain": {"a/b": {"set": {}}}}, "pretrain name 'a/b' must be letters"),
    ({"base": {"data.name": "digits", "data.dir": "pretrain:ssl"}}, "a pretraining's backbone is read only by"),
])
def test_bad_pretrain_sections_are_one_line_errors(tmp_path, edit, message):
    with pytest.raises(UserError, match="^suite .*" + re.escape(message)):
        load_suite(_suite(tmp_path, **edit))


def test_missing_files_and_other_models_are_refused_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["bench", str(SUITE), "--out", str(out), "--set", "model.init_checkpoint=nope.pt"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "noisylabels: error: cell scratch__CE: model.init_checkpoint: file not found: nope.pt"
    assert not out.exists()
    # a pretraining that trains another model than the cell that starts from it
    other = _suite(tmp_path, pretrain={"ssl": {"set": {"model.hidden": [16]}}})
    code = main(["bench", str(other), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cell scratch__CE_from_SimCLR starts its model" in err and "[16]" in err
    assert len(err.splitlines()) == 1 and not out.exists()
    # a wrong option of the pretraining: named as such, before anything runs
    bad = _suite(tmp_path, pretrain={"ssl": {"set": {"method.knn": 3}}})
    code = main(["bench", str(bad), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("noisylabels: error: pretraining ssl: ") and "knn" in err
    assert not out.exists()


def test_a_pretraining_batch_that_does_not_split_over_the_processes_is_refused_up_front(tmp_path, capsys):
    pytest.importorskip("ray")
    odd = _suite(tmp_path, pretrain={"ssl": {"set": {"train.batch_size": 63}}})
    code = main(["bench", str(odd), "--out", str(tmp_path / "o"), "--executor", "ray", "--nproc-per-run", "2",
                 "--set", "train.batch_size=64"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == ("noisylabels: error: pretraining ssl: train.batch_size 63 is the global batch of "
                                 "the run's 2 processes and must be divisible by 2")
    assert not (tmp_path / "o").exists()
