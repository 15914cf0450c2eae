"""What the command modules share: the run flags, the tables and the run header."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

# flag -> dotted config key
TRAIN_FLAGS = {
    "dataset": "data.name", "data_dir": "data.dir", "noise": "noise.type", "noise_rate": "noise.rate",
    "meta_size": "data.meta_size", "meta_set": "data.meta_set", "method": "method.name", "loss": "loss.name",
    "model": "model.name", "epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "optim.lr",
    "seed": "seed", "out": "out",
}


#: what each run flag sets, for its --help line (the default is read from the config's DEFAULTS)
_FLAG_HELP = {
    "dataset": "dataset (list: noisylabels datasets)", "data_dir": "folder holding the data",
    "noise": "simulated noise type (list: noisylabels noise --list)", "noise_rate": "fraction of corrupted labels",
    "meta_size": "meta-set size for meta methods", "meta_set": "meta-set labels: clean or noisy",
    "method": "training method (list: noisylabels methods)", "loss": "loss (list: noisylabels losses)",
    "model": "model (list: noisylabels models)", "epochs": "training epochs", "batch_size": "training batch size",
    "lr": "learning rate", "seed": "run seed (noise, splits, initialisation, batch order)",
    "out": "output directory",
}


def _flag_help(flag: str, *, defaults: dict[str, str] | None = None) -> str:
    from ..config import DEFAULTS

    d: Any = DEFAULTS
    for part in TRAIN_FLAGS[flag].split("."):
        d = d[part]
    shown = (defaults or {}).get(flag, "null" if d is None else str(d))
    if flag == "data_dir":
        shown = "$NOISYLABELS_DATA_DIR, else ./data, else ../shared/data"
    return f"{_FLAG_HELP[flag]} (default {shown}; config key {TRAIN_FLAGS[flag]})".replace("%", "%%")


def _add_run_options(p: argparse.ArgumentParser, *, defaults: dict[str, str] | None = None) -> None:
    """The options that describe a run (shared by ``train`` and ``narl-train``); every help line
    names the default and the config key the flag sets."""
    p.add_argument("--config", help="YAML config file merged over the defaults (see `noisylabels config`)")
    types = {"noise_rate": float, "lr": float, "meta_size": int, "epochs": int, "batch_size": int, "seed": int}
    for flag in TRAIN_FLAGS:
        kw: dict[str, Any] = {"type": types[flag]} if flag in types else {}
        if flag == "meta_set":
            kw["choices"] = ["clean", "noisy"]
        p.add_argument(f"--{flag.replace('_', '-')}", help=_flag_help(flag, defaults=defaults), **kw)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any config field, e.g. --set loss.q=0.7 (repeatable; every field and its default: "
                        "noisylabels config)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (the saved config; "
                   "only more --epochs may be added, other differing settings are refused; default: a new run)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines (default: a bar on a "
                   "terminal, one line per epoch elsewhere)")


_LISTS = ("names: noisylabels datasets | methods | models | losses, noisylabels noise --list; every config field "
          "with its default: noisylabels config [--method NAME]")



def _print_table(rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def _fmt(v: Any, pct: bool = True) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{100 * v:.2f}%" if pct else f"{v:.1f}"
    return str(v)


def _noise_text(run: dict[str, Any]) -> str:
    from ..config import labels_from_user

    options = run["data"].get("options") or {}
    source = ""
    if options.get("labels_csv"):
        source = f"labels from {options['labels_csv']}, "
    elif labels_from_user(run):
        source = "its real noisy labels, "
    if str(run["noise"]["type"]).lower() == "none":
        return f"{source}no simulated noise"
    return f"{source}{run['noise']['type']} noise {run['noise']['rate']}" + (" simulated on top" if source else "")


def _header(cfg: dict[str, Any]) -> str:
    """One line naming what the run trains, with the settings the method resolved."""
    from ..methods import METHODS
    from ..train import resolve_method_defaults

    run = resolve_method_defaults(cfg)
    cls = METHODS.get(run["method"]["name"])
    text = (f"noisylabels {run['method']['name']} (loss {run['loss']['name']}, {run['model']['name']}) on "
            f"{run['data']['name']}, {_noise_text(run)}, seed {run['seed']}")
    if cls.needs_meta_set:
        why = f", the {run['method']['name']} preset's" if cls.meta_set_kind else ""
        kind = run["data"]["meta_set"]
        if (run["data"].get("options") or {}).get("trusted_csv"):
            kind = f"clean (trusted labels from {run['data']['options']['trusted_csv']})"
        text += f"; meta set: {kind}{why}"
    return text


#: settings a resumed run may take from the command line without changing its numbers
