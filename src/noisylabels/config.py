"""Run configuration: nested defaults, YAML files, ``--set key=value`` overrides.

A configuration is a plain nested ``dict``. :data:`DEFAULTS` fixes the sections and
their keys; the sections in :data:`FREE_SECTIONS` (``model``, ``loss``, ``method``
and the ``options`` sub-dicts) also take any extra key, which is handed to the
corresponding factory as a keyword option (so a misspelt option is reported by
the factory, naming the valid ones).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

__all__ = ["DEFAULTS", "PRETRAIN_DEFAULTS", "FREE_SECTIONS", "default_config", "merge", "set_value", "parse_assignment",
           "read_yaml_mapping", "load_config", "save_config", "resolve_config"]

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
        "views": "auto",        # auto: the method's views; or a list of weak | strong | none, one per view
        "strong_augment": "randaugment+cutout",  # the strong view's policy (methods that ask for one):
                                # none | a name | {name: ..., option: value}; default FixMatch's
                                # RandAugment (N=2, M=10) + Cutout 16 (noisylabels.data.policies)
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
        "schedule": "cosine",   # none | multistep | cosine | cosine-restarts | linear-decay
        "milestones": [],       # epochs (multistep)
        "gamma": 0.1,
        "warmup_epochs": 0,     # linear warm-up, per step
        "restart_epochs": 10,   # cosine-restarts: the first period T_0, in epochs
        "restart_mult": 1,      # cosine-restarts: each period this many times the last (T_mult)
        "min_lr": 0.0,          # cosine, cosine-restarts: the floor (eta_min)
        "decay_start": 0,       # linear-decay: the epoch the linear decay to 0 starts
        "decay_beta1": None,    # linear-decay: Adam's beta1 from decay_start on (None: unchanged)
    },
    "train": {
        "epochs": 30,
        "batch_size": 64,
        "eval_batch_size": "auto",  # auto: 64 on the CPU (large batches fall out of its caches), 1000 on a GPU
        "clip_grad_norm": None,
        "num_threads": None,    # torch threads; None leaves torch's default
        "progress": True,
        "checkpoint": True,
        "amp": "none",          # none | bf16 | fp16: autocast of the training steps (fp16 adds a GradScaler)
        "channels_last": False,  # NHWC memory format for model and batches (faster convolutions on GPUs)
        "compile": False,       # torch.compile the model (methods without a meta step only)
        "cudnn_benchmark": False,  # let cuDNN pick the fastest convolution algorithms (CUDA)
        "sync_batchnorm": False,  # several processes: BatchNorm statistics over the global batch
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


def _check_section(path: list[str], default: Any, value: Any) -> None:
    """A section (a mapping in :data:`DEFAULTS`, or a free section) given a scalar is refused."""
    dotted = ".".join(path)
    if (isinstance(default, Mapping) or dotted in FREE_SECTIONS) and not isinstance(value, Mapping):
        example = next(iter(default), "<key>") if isinstance(default, Mapping) and default else "<key>"
        raise UserError(f"config key {dotted!r} is a section and takes key: value pairs (e.g. --set "
                        f"{dotted}.{example}=...), got {value!r}")


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
        _check_section(path, defaults.get(key) if isinstance(defaults, Mapping) else None, value)
        if ".".join(path) == "data.strong_augment" and isinstance(value, Mapping) and "name" not in value \
                and isinstance(out.get(key), str) and out[key].strip().lower() not in ("none", defaults[key]):
            # options of a policy named over the default (pretrain's simclr): --set data.strong_augment.x=
            # tunes that policy, not the default's (a dict without a name means the default's)
            value = {"name": out[key], **value}
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


def read_yaml_mapping(path: str | Path, *, what: str = "config file") -> dict[str, Any]:
    """The mapping a YAML file holds (``yaml.safe_load``; empty: ``{}``); a missing, unreadable,
    non-UTF-8 or invalid file, or one holding something else, is a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{what} {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} {p} is not a text file (not UTF-8)") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    if not isinstance(data, Mapping):
        raise UserError(f"{what} {p} must hold a mapping at the top level, got {type(data).__name__}")
    return dict(data)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file (partial: merged over the defaults)."""
    return merge(default_config(), read_yaml_mapping(path))


def save_config(config: Mapping[str, Any], path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(dict(config), sort_keys=False))


#: datasets whose training labels are a real (human) noisy label set: no simulated noise unless asked for
REAL_LABEL_DATASETS = ("cifar10n", "cifar100n", "clothing1m")


def labels_from_user(cfg: Mapping[str, Any]) -> bool:
    """Whether the training labels are a real label set (``data.options.labels_csv``, CIFAR-N,
    Clothing1M) rather than a dataset's ground truth that the noise simulator corrupts."""
    options = cfg["data"].get("options") or {}
    return bool(options.get("labels_csv")) or str(cfg["data"]["name"]).lower() in REAL_LABEL_DATASETS


def _explicit_noise_keys(config_file: str | Path | None, overrides: Mapping[str, Any],
                         assignments: Iterable[str]) -> set[str]:
    """Which of ``noise.type`` / ``noise.rate`` the caller set (file, overrides or assignments)."""
    keys: set[str] = set()

    def note(key: str, value: Any) -> None:
        if key in ("noise.type", "noise.rate"):
            keys.add(key)
        elif key == "noise" and isinstance(value, Mapping):
            keys.update(f"noise.{k}" for k in value if k in ("type", "rate"))

    if config_file:
        for k, v in read_yaml_mapping(config_file).items():
            note(str(k), v)
    for k, v in (overrides or {}).items():
        note(str(k), v)
    for text in assignments:
        note(*parse_assignment(text))
    return keys


#: what ``noisylabels pretrain`` changes in :data:`DEFAULTS`: SimCLR on two ``simclr`` views with no
#: pad-and-crop before them, no simulated noise (the labels, if any, only feed the kNN monitor), and
#: SupContrast's SGD settings (the SimCLR code C2D pretrained with: momentum 0.9, weight decay 1e-4,
#: cosine; lr 0.5) at the batch of SimCLR's CIFAR-10 command (512)
PRETRAIN_DEFAULTS: dict[str, Any] = {
    "out": "runs/pretrain",
    "method": {"name": "simclr"},
    "noise": {"type": "none", "rate": 0.0},
    "data": {"augment": "none", "strong_augment": "simclr"},
    "optim": {"name": "sgd", "lr": 0.5, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "cosine"},
    "train": {"batch_size": 512},
}


def resolve_config(*, config_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                   assignments: Iterable[str] = (), base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, then a YAML file, then dotted ``overrides``, then ``key=value`` assignments.

    ``base`` is merged over :data:`DEFAULTS` first (a command's own defaults, e.g.
    :data:`PRETRAIN_DEFAULTS`). Real labels are never corrupted by default: when the labels are the
    user's (:func:`labels_from_user`) and ``noise.type`` is not given, it is ``none``; a
    ``noise.type: none`` without a given ``noise.rate`` has rate 0.
    """
    assignments = list(assignments)
    cfg = default_config() if base is None else merge(default_config(), base)
    if config_file:
        cfg = merge(cfg, read_yaml_mapping(config_file))
    for key, value in (overrides or {}).items():
        cfg = set_value(cfg, key, value)
    for text in assignments:
        cfg = set_value(cfg, *parse_assignment(text))
    explicit = _explicit_noise_keys(config_file, overrides or {}, assignments)
    if labels_from_user(cfg) and "noise.type" not in explicit:
        cfg["noise"]["type"] = "none"
    if str(cfg["noise"]["type"]).lower() == "none" and "noise.rate" not in explicit:
        cfg["noise"]["rate"] = 0.0
    if cfg["train"].get("eval_batch_size") == "auto":  # the run's config (and hash) holds the number used
        cfg["train"]["eval_batch_size"] = eval_batch_size(cfg)
    validate(cfg)
    return cfg


#: the settings that name a weight file a run loads (a suite's ``pretrain:<name>`` may stand for one; a
#: Ray task carries them to its node)
WEIGHT_FILE_KEYS = ("model.init_checkpoint", "method.teacher_init")


def weight_files(cfg: Mapping[str, Any]) -> dict[str, str]:
    """``{key: value}`` of the :data:`WEIGHT_FILE_KEYS` a config sets (not ``None``)."""
    out = {}
    for key in WEIGHT_FILE_KEYS:
        section, name = key.split(".")
        value = (cfg.get(section) or {}).get(name)
        if value is not None:
            out[key] = str(value)
    return out


#: ``train.eval_batch_size: auto`` by device type. On the CPU, evaluation passes in batches of 1000
#: ran 1.7-3.0x slower per image than in batches of 64 for convolutional networks (one thread, eval
#: mode; ``benchmarks/eval_batch.py``): the activations of a large batch fall out of the caches. A
#: GPU wants large batches.
EVAL_BATCH_AUTO = {"cpu": 64, "cuda": 1000, "mps": 1000}


def eval_batch_size(cfg: Mapping[str, Any]) -> int:
    """The batch size of a run's evaluation passes: ``train.eval_batch_size``, with ``auto``
    resolved by the run's device (:data:`EVAL_BATCH_AUTO`)."""
    value = cfg["train"]["eval_batch_size"]
    return EVAL_BATCH_AUTO[device_type(cfg.get("device", "cpu"))] if value == "auto" else int(value)


#: the largest seed every generator accepts (torch's manual_seed takes a 64-bit integer)
MAX_SEED = 2**63 - 1
#: model arguments a run takes from its data (``create_model(num_classes=..., in_channels=..., image_size=...)``)
#: and from its seed: never a config key
DERIVED_MODEL_KEYS = ("num_classes", "in_channels", "image_size", "seed")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number(key: str, v: Any, *, low: float, low_open: bool = False, high: float | None = None,
            high_open: bool = True, none_ok: bool = False, what: str = "") -> None:
    """A real number in the given range (booleans and huge integers refused in one line)."""
    if v is None and none_ok:
        return
    try:
        x = float(v) if _is_number(v) else float("nan")
    except OverflowError:
        x = float("inf")
    ok = x == x and (x > low if low_open else x >= low)
    if high is not None:
        ok = ok and (x < high if high_open else x <= high)
    if not ok:
        rng = f"{'(' if low_open else '['}{low:g}, {'inf' if high is None else f'{high:g}'}{')' if high_open or high is None else ']'}"
        raise UserError(f"{key} must be a number in {rng}{' (or null' + what + ')' if none_ok else ''}, got {v!r}")


def _integer(key: str, v: Any, *, low: int, high: int | None = None, none_ok: bool = False, what: str = "") -> None:
    if v is None and none_ok:
        return
    if not isinstance(v, int) or isinstance(v, bool) or v < low or (high is not None and v > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise UserError(f"{key} must be an integer {rng}{' (or null' + what + ')' if none_ok else ''}, got {v!r}")


def _choice(key: str, v: Any, choices: tuple[Any, ...]) -> None:
    """One of ``choices`` (words compared case-insensitively, as the code that reads them does)."""
    if isinstance(v, str):
        v = v.lower()
    if not isinstance(v, (str, bool, type(None))) or v not in choices:
        shown = ", ".join("true" if c is True else "false" if c is False else str(c) for c in choices)
        raise UserError(f"{key} must be one of {shown}, got {v!r}")


def _text(key: str, v: Any, *, none_ok: bool = False) -> None:
    if not (isinstance(v, str) and v.strip()) and not (v is None and none_ok):
        raise UserError(f"{key} must be a {'name' if key.endswith('name') else 'path'}"
                        f"{' (or null)' if none_ok else ''}, got {v!r}")


_SCHEDULE_OPTIONS = {"restart_epochs": ("cosine-restarts",), "restart_mult": ("cosine-restarts",),
                     "min_lr": ("cosine", "cosine-restarts"), "decay_start": ("linear-decay",),
                     "decay_beta1": ("linear-decay",)}


def _check_schedule_options(o: Mapping[str, Any], epochs: int) -> None:
    """The options of ``cosine-restarts`` and ``linear-decay``: in range, and set only with their
    schedule (one-line errors)."""
    schedule = str(o["schedule"]).lower()
    for key, owners in _SCHEDULE_OPTIONS.items():
        if key in o and o[key] != DEFAULTS["optim"][key] and schedule not in owners:
            raise UserError(f"optim.{key} applies to optim.schedule={' or '.join(owners)} only "
                            f"(this run's is {schedule})")
    _integer("optim.restart_epochs", o.get("restart_epochs", 10), low=1)
    _integer("optim.restart_mult", o.get("restart_mult", 1), low=1)
    _number("optim.min_lr", o.get("min_lr", 0.0), low=0.0)
    if schedule in ("cosine", "cosine-restarts") and float(o.get("min_lr", 0.0)) > float(o["lr"]):
        raise UserError(f"optim.min_lr must be at most optim.lr ({o['lr']}), got {o['min_lr']}")
    start = o.get("decay_start", 0)
    _integer("optim.decay_start", start, low=0)
    if schedule == "linear-decay" and start >= epochs:
        raise UserError(f"optim.decay_start must be below train.epochs ({epochs}), got {start}")
    b1 = o.get("decay_beta1")
    if b1 is not None:
        _number("optim.decay_beta1", b1, low=0.0, high=1.0)
        if str(o["name"]).lower() != "adam":
            raise UserError(f"optim.decay_beta1 needs optim.name=adam (it switches Adam's beta1); "
                            f"got optim.name={o['name']}")


def validate(cfg: Mapping[str, Any]) -> None:
    """Cheap checks of every value's type and range (names are checked by the registries), each
    failure a one-line :class:`~noisylabels.errors.UserError` naming the key."""
    for section, default in DEFAULTS.items():
        if isinstance(default, Mapping) and not isinstance(cfg.get(section), Mapping):
            raise UserError(f"config section {section!r} must be a mapping, got {cfg.get(section)!r}")
    d, t, o = cfg["data"], cfg["train"], cfg["optim"]
    for sec in ("data", "noise"):
        if not isinstance(cfg[sec].get("options", {}), Mapping):
            raise UserError(f"{sec}.options must be a mapping of option: value, got {cfg[sec]['options']!r}")
    _integer("seed", cfg["seed"], low=0, high=MAX_SEED)
    _text("out", cfg["out"])
    for sec in ("model", "loss", "method"):
        _text(f"{sec}.name", cfg[sec].get("name"))
    derived = sorted(k for k in cfg["model"] if k in DERIVED_MODEL_KEYS)
    if derived:
        raise UserError(f"model.{derived[0]} cannot be set: a run takes num_classes, in_channels and image_size "
                        f"from the data and the model's seed from the run's seed (remove model.{derived[0]})")
    _text("data.name", d["name"])
    _text("data.dir", d["dir"], none_ok=True)
    _text("data.cache_dir", d["cache_dir"], none_ok=True)
    _text("noise.type", cfg["noise"]["type"])
    if d["meta_set"] not in ("auto", "clean", "noisy") or not isinstance(d["meta_set"], str):
        raise UserError(f"data.meta_set must be 'auto', 'clean' or 'noisy', got {d['meta_set']!r}")
    checks = [("train.epochs", t["epochs"], 1), ("train.batch_size", t["batch_size"], 1),
              ("data.stream_workers", d["stream_workers"], 0), ("optim.warmup_epochs", o["warmup_epochs"], 0)]
    if t["eval_batch_size"] != "auto":
        checks.append(("train.eval_batch_size", t["eval_batch_size"], 1))
    if d["meta_size"] != "auto":
        checks.append(("data.meta_size", d["meta_size"], 0))
    for key, val, lo in checks:
        if not isinstance(val, int) or isinstance(val, bool) or val < lo:
            raise UserError(f"{key} must be an integer >= {lo}, got {val!r}")
    for key in ("train_subset", "test_subset"):
        _integer(f"data.{key}", d[key], low=1, none_ok=True, what=": every sample")
    _integer("train.num_threads", t["num_threads"], low=1, none_ok=True, what=": torch's default")
    _number("noise.rate", cfg["noise"]["rate"], low=0.0, high=1.0)
    _number("optim.lr", o["lr"], low=0.0, low_open=True)
    _number("optim.momentum", o["momentum"], low=0.0, high=1.0)
    _number("optim.weight_decay", o["weight_decay"], low=0.0)
    _number("optim.gamma", o["gamma"], low=0.0, low_open=True)
    _choice("optim.name", o["name"], ("sgd", "adam"))
    _choice("optim.schedule", o["schedule"], ("none", "constant", "multistep", "cosine", "cosine-restarts",
                                              "linear-decay"))
    _check_schedule_options(o, int(t["epochs"]))
    betas = o["betas"]
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise UserError(f"optim.betas must be a list of two numbers in [0, 1), got {betas!r}")
    for b in betas:
        _number("optim.betas", b, low=0.0, high=1.0)
    milestones = o["milestones"]
    if not isinstance(milestones, (list, tuple)):
        raise UserError(f"optim.milestones must be a list of epochs, got {milestones!r}")
    for m in milestones:
        _integer("optim.milestones", m, low=0)
    _choice("train.amp", t.get("amp", "none"), ("none", "bf16", "fp16"))
    for key in ("channels_last", "compile", "cudnn_benchmark", "checkpoint", "sync_batchnorm"):
        if not isinstance(t.get(key, False), bool):
            raise UserError(f"train.{key} must be true or false, got {t[key]!r}")
    if not isinstance(o["nesterov"], bool):
        raise UserError(f"optim.nesterov must be true or false, got {o['nesterov']!r}")
    _choice("train.progress", t["progress"], (True, False, "lines"))
    if (d["stream"].lower() if isinstance(d["stream"], str) else d["stream"]) not in ("auto", True, False, "true",
                                                                                      "false", None):
        raise UserError(f"data.stream must be auto, true or false, got {d['stream']!r}")
    clip = t.get("clip_grad_norm")
    if clip is not None and (not _is_number(clip) or not _finite_positive(clip)):
        raise UserError(f"train.clip_grad_norm must be a number > 0 (or null: no clipping), got {clip!r}")
    budget = d["memory_budget_gb"]
    if budget is not None and (not _is_number(budget) or not _finite_positive(budget)):
        raise UserError(f"data.memory_budget_gb must be a number > 0 (or null: half the physical memory), "
                        f"got {budget!r}")
    vf = d["val_fraction"]
    if not _is_number(vf) or not 0.0 < _float(vf) < 1.0:
        raise UserError(f"data.val_fraction must be a number in (0, 1) (models are selected on the validation "
                        f"split), got {vf!r}")
    device_type(cfg["device"])
    check_augment(d["augment"])
    check_views(d.get("views", "auto"))
    check_strong_augment(d.get("strong_augment", DEFAULTS["data"]["strong_augment"]))


def _float(v: Any) -> float:
    try:
        return float(v)
    except OverflowError:
        return float("inf")


def _finite_positive(v: Any) -> bool:
    x = _float(v)
    return x > 0 and x != float("inf")


def check_augment(setting: Any) -> None:
    """``data.augment``: ``auto``, ``none`` or a mapping of ``crop_padding`` / ``hflip``."""
    if setting in (None, "none", False, "auto"):
        return
    if not isinstance(setting, Mapping):
        raise UserError(f"data.augment must be auto, none or a mapping, got {setting!r}")
    unknown = sorted(str(k) for k in setting if k not in ("crop_padding", "hflip"))
    if unknown:
        raise UserError(f"unknown data.augment key(s) {', '.join(unknown)}; valid keys: crop_padding, hflip")
    pad = setting.get("crop_padding", 0)
    if not _is_number(pad) or not 0 <= _float(pad) <= 1024 or int(pad) != pad:
        raise UserError(f"data.augment.crop_padding must be an integer in [0, 1024], got {pad!r}")
    if not isinstance(setting.get("hflip", False), bool):
        raise UserError(f"data.augment.hflip must be true or false, got {setting['hflip']!r}")


def check_views(setting: Any) -> None:
    """``data.views``: ``auto`` or a non-empty list of ``weak`` / ``strong`` / ``none``."""
    if setting == "auto":
        return
    kinds = ("weak", "strong", "none")
    if isinstance(setting, str) or not isinstance(setting, (list, tuple)) or not setting \
            or any(not isinstance(k, str) or k not in kinds for k in setting):
        raise UserError(f"data.views must be auto or a non-empty list of {', '.join(kinds)} (one per view the "
                        f"method takes), got {setting!r}")


def check_strong_augment(setting: Any) -> None:
    """``data.strong_augment``: ``none``, a policy name (``+`` joins several) or a mapping
    ``{name: ..., option: value}``. Only its shape is checked here: the names and options are checked
    by building the policy, with the run's other names (:func:`noisylabels.train.build.check_names`)."""
    if setting is None or setting is False or setting == "none":
        return
    if isinstance(setting, str):
        if not setting.strip():
            raise UserError("data.strong_augment must be none, a policy name or a mapping, got ''")
    elif isinstance(setting, Mapping):
        for k, v in setting.items():
            if not isinstance(k, str):
                raise UserError(f"data.strong_augment keys must be option names, got {k!r}")
            if k == "name" and not (isinstance(v, str) and v.strip()):
                raise UserError(f"data.strong_augment.name must be a policy name, got {v!r}")
    else:
        raise UserError(f"data.strong_augment must be none, a policy name (e.g. randaugment+cutout) or a mapping "
                        f"{{name: ..., option: value}}, got {setting!r}")


def device_type(name: Any) -> str:
    """The type (``cpu``, ``cuda``, ``mps``) of a ``device`` setting; a one-line error for anything else."""
    import torch

    try:
        dev = torch.device(str(name))
    except (RuntimeError, ValueError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device must be cpu, cuda, cuda:N or mps, got {name!r}")
    return dev.type


#: config keys that never change a run's numbers (left out of :func:`config_hash`)
BOOKKEEPING_KEYS: tuple[tuple[str, ...], ...] = (("out",), ("train", "progress"), ("train", "num_threads"),
                                                 ("data", "cache_dir"))
#: left out of the hash a checkpoint carries: where the data are, and the number of epochs (a resumed
#: run may be given more, see ``noisylabels.train.loop.Run.begin``)
RESUME_FREE_KEYS: tuple[tuple[str, ...], ...] = BOOKKEEPING_KEYS + (("data", "dir"), ("train", "epochs"))


#: keys added to :data:`DEFAULTS` after runs were written without them, with the value at which a run
#: is the run it was before the key existed: at that value the key is left out of :func:`config_hash`,
#: so checkpoints and finished bench cells of older versions stay resumable / reusable. Add every new
#: key whose default keeps the old behaviour here.
NEUTRAL_KEYS: dict[tuple[str, ...], Any] = {("train", "sync_batchnorm"): False,
                                             ("optim", "restart_epochs"): 10, ("optim", "restart_mult"): 1,
                                             ("optim", "min_lr"): 0.0, ("optim", "decay_start"): 0,
                                             ("optim", "decay_beta1"): None}


def config_hash(cfg: Mapping[str, Any], *, ignore: Iterable[tuple[str, ...]] = BOOKKEEPING_KEYS) -> str:
    """A 10-hex-digit hash of a resolved run config (its seed included), without the keys in
    ``ignore`` (default: those that do not change results, :data:`BOOKKEEPING_KEYS`) and without
    the keys of :data:`NEUTRAL_KEYS` at their neutral value."""
    clean = json.loads(json.dumps(cfg, default=str))
    for path, neutral in NEUTRAL_KEYS.items():
        d = clean
        for key in path[:-1]:
            d = d.get(key, {}) if isinstance(d, dict) else {}
        if isinstance(d, dict) and path[-1] in d and d[path[-1]] == neutral and type(d[path[-1]]) is type(neutral):
            d.pop(path[-1])
    for path in ignore:
        d = clean
        for key in path[:-1]:
            d = d.get(key, {}) if isinstance(d, dict) else {}
        if isinstance(d, dict):
            d.pop(path[-1], None)
    blob = json.dumps(clean, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


__all__ += ["MAX_SEED", "DERIVED_MODEL_KEYS", "validate", "device_type", "check_augment", "check_views", "check_strong_augment",
            "config_hash", "eval_batch_size", "EVAL_BATCH_AUTO", "WEIGHT_FILE_KEYS", "weight_files", "BOOKKEEPING_KEYS", "RESUME_FREE_KEYS", "NEUTRAL_KEYS",
            "labels_from_user", "REAL_LABEL_DATASETS"]
