"""``noisylabels config [--method NAME]`` and ``train --help``: an installed user sees every
setting, its default and what it does, without reading ``config.py``."""

from __future__ import annotations

import argparse

import pytest
import yaml

from noisylabels.cli import build_parser, main
from noisylabels.config import DEFAULTS, default_config, resolve_config
from noisylabels.config_doc import FIELD_DOCS, leaf_keys
from noisylabels.errors import UserError
from noisylabels.methods import METHODS


def _sub(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


@pytest.mark.parametrize("command", ["train", "narl-train"])
def test_every_run_flag_has_a_help_line_with_its_default(command):
    p = _sub(command)
    flags = [a for a in p._actions if a.option_strings and a.dest != "help"]
    assert len(flags) >= 18
    for a in flags:
        assert a.help, f"{a.option_strings} has no help"
        if a.dest not in ("config", "set", "task", "adjuster_out"):
            assert "default" in a.help, f"{a.option_strings}: no default in {a.help!r}"
    helps = {a.dest: a.help for a in flags}
    assert "default 30; config key train.epochs" in helps["epochs"]
    assert "default 0.1; config key optim.lr" in helps["lr"]
    if command == "narl-train":
        assert "default narl" in helps["method"] and "default runs/narl-train" in helps["out"]
    text = p.format_help()
    assert "noisylabels datasets | methods | models | losses" in " ".join(text.split())
    assert "noisylabels config" in text


def test_field_docs_cover_every_field_of_the_defaults():
    assert set(FIELD_DOCS) == set(leaf_keys(DEFAULTS))
    assert all(doc and "\n" not in doc for doc in FIELD_DOCS.values())


def test_config_prints_the_defaults_as_commented_yaml(capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out) == default_config()
    for key in leaf_keys(DEFAULTS):
        leaf = key.rsplit(".", 1)[-1]
        line = next(line for line in out.splitlines() if line.strip().startswith(f"{leaf}:")
                    or line.strip() == f"{leaf}:")
        prev = out.splitlines()[out.splitlines().index(line) - 1]
        assert "# " in line or prev.strip().startswith("# "), f"{key}: no comment"
    assert "lr: 0.1  # learning rate (> 0)" in out


@pytest.mark.parametrize("method", METHODS.names())
def test_config_for_a_method_round_trips_through_config(method, tmp_path, capsys):
    from noisylabels.train.loop import check_names

    assert main(["config", "--method", method]) == 0
    out = capsys.readouterr().out
    (tmp_path / "c.yaml").write_text(out)
    printed = yaml.safe_load(out)
    back = resolve_config(config_file=tmp_path / "c.yaml")
    # `auto` is printed (the file suits any device) and resolved by the run's device
    assert printed["train"]["eval_batch_size"] == "auto" and back["train"]["eval_batch_size"] == 64
    printed["train"]["eval_batch_size"] = 64
    assert back == printed and back["method"]["name"] == method
    assert resolve_config(overrides={"method.name": method})["method"].items() <= back["method"].items()
    cls = METHODS.get(method)
    if cls.needs_meta_set:
        assert back["data"]["meta_set"] in ("clean", "noisy")  # the preset's, not "auto"
    if method == "t-narl":  # needs the user's adjuster file
        with pytest.raises(UserError, match="adjuster"):
            check_names(back)
    else:
        check_names(back)  # every printed option is one the method accepts
    code = main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r"),
                 "--set", "method.name=no-such"])
    assert code == 2  # the file itself is accepted; only the bad name is refused
    assert "unknown" in capsys.readouterr().err


def test_config_of_an_unknown_method_is_a_one_line_error(capsys):
    assert main(["config", "--method", "nope"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "'nope'" in err and "erm" in err  # names the valid ones
