"""Run configuration: nested defaults, YAML files, ``--set key=value`` overrides.

A configuration is a plain nested ``dict``. :data:`DEFAULTS` fixes the sections and
their keys; the sections in :data:`FREE_SECTIONS` (``model``, ``loss``, ``method``
and the ``options`` sub-dicts) also take any extra key, which is handed to the
corresponding factory as a keyword option (so a misspelt option is reported by
the factory, naming the valid ones).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

__all__ = ["DEFAULTS", "FREE_SECTIONS", "default_config", "merge", "set_value", "parse_assignment",
           "load_config", "save_config", "resolve_config"]

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "out": "runs/latest",
    "device": "cpu",
    "data": {
        "name": "digits",
        "dir": None,            # None: $NOISYLABELS_DATA_DIR, ./data, ../shared/data
        "cache_dir": None,      # None: $NOISYLABELS_CACHE or ~/.cache/noisylabels
        "val_fraction": 0.1,    # validation from training data, labels as noisy as training
        "meta_size": "auto",    # meta set carved from training data; auto: 0, or for meta methods
                                # min(1000, 10% of the training pool) (the papers' 1000 on CIFAR)
        "meta_set": "auto",     # clean: gold labels; noisy: labels corrupted like training;
                                # auto: the method's (rmnw-net, mnw-net: noisy), else clean
        "augment": "auto",      # auto | none | {crop_padding: int, hflip: bool}
        "train_subset": None,   # keep a class-balanced subset of this many pool samples
        "test_subset": None,    # evaluate on a class-balanced subset of this many test samples
        "options": {},          # loader options (e.g. labels_csv, test_fraction)
        "stream": "auto",       # auto | true | false: decode images on demand in loader workers
                                # (image folders / zips too large for memory_budget_gb)
        "stream_workers": 2,    # decoding processes of a streamed source
        "memory_budget_gb": None,  # None: half the physical memory
    },
    "noise": {
        "type": "symmetric",
        "rate": 0.4,
        "options": {},          # e.g. include_true_class, matrix_path, source (open-set)
    },
    "model": {"name": "mlp"},
    "loss": {"name": "auto"},   # auto: CE, or the method's own loss (mwnet, truncated-lq, ...)
    "method": {"name": "erm"},
    "optim": {
        "name": "sgd",          # sgd | adam
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "nesterov": False,
        "betas": [0.9, 0.999],
        "schedule": "cosine",   # none | multistep | cosine
        "milestones": [],       # epochs (multistep)
        "gamma": 0.1,
        "warmup_epochs": 0,     # linear warm-up, per step
    },
    "train": {
        "epochs": 30,
        "batch_size": 64,
        "eval_batch_size": 1000,
        "clip_grad_norm": None,
        "num_threads": None,    # torch threads; None leaves torch's default
        "progress": True,
        "checkpoint": True,
        "amp": "none",          # none | bf16 | fp16: autocast of the training steps (fp16 adds a GradScaler)
        "channels_last": False,  # NHWC memory format for model and batches (faster convolutions on GPUs)
        "compile": False,       # torch.compile the model (methods without a meta step only)
        "cudnn_benchmark": False,  # let cuDNN pick the fastest convolution algorithms (CUDA)
    },
}

# Sections (dotted paths) that accept keys not listed in DEFAULTS.
FREE_SECTIONS = {"model", "loss", "method", "data.options", "noise.options"}


def default_config() -> dict[str, Any]:
    """A fresh deep copy of :data:`DEFAULTS`."""
    return copy.deepcopy(DEFAULTS)


def _check_key(path: list[str], defaults: Mapping[str, Any] | None) -> None:
    prefix = ".".join(path[:-1])
    if prefix in FREE_SECTIONS or defaults is None:
        return
    if path[-1] not in defaults:
        where = f"section {prefix!r}" if prefix else "the top level"
        raise UserError(
            f"unknown config key {'.'.join(path)!r}; valid keys in {where}: {', '.join(sorted(defaults))}"
        )


def merge(base: dict[str, Any], override: Mapping[str, Any], *, _path: tuple[str, ...] = ()) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base``, rejecting unknown keys."""
    out = copy.deepcopy(base)
    defaults: Any = DEFAULTS
    for p in _path:
        defaults = defaults.get(p) if isinstance(defaults, Mapping) else None
    for key, value in override.items():
        key = str(key)
        path = [*_path, key]
        _check_key(path, defaults if isinstance(defaults, Mapping) else None)
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and ".".join(path) not in {"data.augment"}:
            out[key] = merge(out[key], value, _path=tuple(path))
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse ``key.sub=value``; the value is read as YAML (numbers, lists, booleans, null)."""
    if "=" not in text:
        raise UserError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"--set expects key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def set_value(config: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Return a copy of ``config`` with dotted ``key`` set to ``value`` (unknown keys rejected)."""
    parts = key.split(".")
    nested: Any = value
    for p in reversed(parts):
        nested = {p: nested}
    return merge(config, nested)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file (partial: merged over the defaults)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, Mapping):
        raise UserError(f"config file {p} must hold a mapping at the top level")
    return merge(default_config(), data)


def save_config(config: Mapping[str, Any], path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(dict(config), sort_keys=False))


def resolve_config(*, config_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                   assignments: Iterable[str] = ()) -> dict[str, Any]:
    """Defaults, then a YAML file, then dotted ``overrides``, then ``key=value`` assignments."""
    cfg = load_config(config_file) if config_file else default_config()
    for key, value in (overrides or {}).items():
        cfg = set_value(cfg, key, value)
    for text in assignments:
        cfg = set_value(cfg, *parse_assignment(text))
    validate(cfg)
    return cfg


def validate(cfg: Mapping[str, Any]) -> None:
    """Cheap checks of values (names are checked by the registries)."""
    d, t, o = cfg["data"], cfg["train"], cfg["optim"]
    if d["meta_set"] not in ("auto", "clean", "noisy"):
        raise UserError(f"data.meta_set must be 'auto', 'clean' or 'noisy', got {d['meta_set']!r}")
    checks = [("train.epochs", t["epochs"], 1), ("train.batch_size", t["batch_size"], 1)]
    if d["meta_size"] != "auto":
        checks.append(("data.meta_size", d["meta_size"], 0))
    for key, val, lo in checks:
        if not isinstance(val, int) or isinstance(val, bool) or val < lo:
            raise UserError(f"{key} must be an integer >= {lo}, got {val!r}")
    try:
        rate = float(cfg["noise"]["rate"])
    except (TypeError, ValueError):
        raise UserError(f"noise.rate must be a number, got {cfg['noise']['rate']!r}") from None
    if not 0.0 <= rate < 1.0:
        raise UserError(f"noise.rate must be in [0, 1), got {rate}")
    try:
        lr = float(o["lr"])
    except (TypeError, ValueError):
        raise UserError(f"optim.lr must be a number, got {o['lr']!r}") from None
    if not lr > 0:
        raise UserError(f"optim.lr must be positive, got {lr}")
    if str(t.get("amp", "none")).lower() not in ("none", "bf16", "fp16"):
        raise UserError(f"train.amp must be none, bf16 or fp16, got {t['amp']!r}")
    for key in ("channels_last", "compile", "cudnn_benchmark"):
        if not isinstance(t.get(key, False), bool):
            raise UserError(f"train.{key} must be true or false, got {t[key]!r}")
    if not isinstance(cfg["seed"], int):
        raise UserError(f"seed must be an integer, got {cfg['seed']!r}")


__all__ += ["validate"]
