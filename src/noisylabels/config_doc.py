"""The default run config as commented YAML (``noisylabels config [--method NAME]``).

:data:`FIELD_DOCS` has one line for every field of :data:`noisylabels.config.DEFAULTS` (a test
checks that none is missing); :func:`render_config` writes a config as YAML with that line as a
comment beside each field, so an installed user, who has no ``config.py`` to read, sees every
setting, its default and what it does. The output is valid YAML that ``--config`` reads back.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import yaml

from .config import DEFAULTS, default_config, set_value, validate

__all__ = ["FIELD_DOCS", "render_config", "method_config", "leaf_keys"]

FIELD_DOCS: dict[str, str] = {
    "seed": "seeds noise, splits, initialisation and batch order (an integer in [0, 2**63))",
    "out": "run directory the records are written to",
    "device": "cpu, cuda, cuda:N or mps",
    "data": "the dataset and its splits",
    "data.name": "dataset (list: noisylabels datasets)",
    "data.dir": "where the data are; null: $NOISYLABELS_DATA_DIR, ./data, ../shared/data",
    "data.cache_dir": "decoded-image cache; null: $NOISYLABELS_CACHE or ~/.cache/noisylabels",
    "data.val_fraction": "validation split from the training data (labels as noisy as training)",
    "data.meta_size": "meta set carved from the training data; auto: 0, or for meta methods "
                      "min(1000, 10% of the pool)",
    "data.meta_set": "clean (gold labels), noisy (corrupted like training) or auto (the method's choice)",
    "data.augment": "auto, none, or {crop_padding: int, hflip: bool}",
    "data.views": "the augmented views of each training batch: auto = the method's (`noisylabels methods`), or a "
                  "list of weak (data.augment), strong (weak, then data.strong_augment) or none, as many as the "
                  "method takes",
    "data.strong_augment": "strong view's policy (methods with a strong view): none, a name (autoaugment-cifar10, "
                           "randaugment, trivialaugment, cutout; + composes) or {name: ..., option: value}; "
                           "default FixMatch's RandAugment N=2 M=10 + Cutout 16, after data.augment's crop and flip",
    "data.train_subset": "keep a class-balanced subset of this many pool samples (null: all)",
    "data.test_subset": "evaluate on a class-balanced subset of this many test samples (null: all)",
    "data.options": "loader options, e.g. labels_csv, trusted_csv, test_fraction, path",
    "data.stream": "auto, true or false: decode images on demand in loader workers",
    "data.stream_workers": "decoding processes of a streamed source",
    "data.memory_budget_gb": "memory for decoded images (null: half the physical memory)",
    "noise": "simulated label noise (list: noisylabels noise --list)",
    "noise.type": "noise type; none keeps the given labels",
    "noise.rate": "fraction of corrupted training labels, in [0, 1)",
    "noise.options": "noise-type options, e.g. include_true_class, matrix_path, source",
    "model": "the classifier (list: noisylabels models)",
    "model.name": "model name, or timm:<name>; options go beside it (init_checkpoint, init_exclude, ...)",
    "loss": "the training loss (list: noisylabels losses)",
    "loss.name": "loss name; auto: cross-entropy or the method's own loss; options beside it (e.g. q)",
    "method": "the training method (list: noisylabels methods)",
    "method.name": "method name; its options go beside it",
    "optim": "optimiser and learning-rate schedule",
    "optim.name": "sgd or adam",
    "optim.lr": "learning rate (> 0)",
    "optim.momentum": "SGD momentum",
    "optim.weight_decay": "L2 weight decay",
    "optim.nesterov": "Nesterov momentum (SGD)",
    "optim.betas": "Adam betas",
    "optim.schedule": "none, multistep, cosine, cosine-restarts (SGDR, per epoch) or linear-decay (Co-teaching's, per epoch)",
    "optim.milestones": "epochs at which multistep multiplies the rate by gamma",
    "optim.gamma": "multistep factor",
    "optim.warmup_epochs": "linear warm-up, per step, over this many epochs",
    "optim.restart_epochs": "cosine-restarts: the first period in epochs (T_0)",
    "optim.restart_mult": "cosine-restarts: each period this many times the last (T_mult, integer >= 1)",
    "optim.min_lr": "cosine, cosine-restarts: the floor of the learning rate (eta_min)",
    "optim.decay_start": "linear-decay: lr constant before this epoch, then linear to 0 at the run's end",
    "optim.decay_beta1": "linear-decay: Adam's beta1 from decay_start on (Co-teaching's code: 0.1; null: unchanged)",
    "train": "the training loop",
    "train.epochs": "epochs to train",
    "train.batch_size": "training batch size",
    "train.eval_batch_size": "batch size of evaluation passes (auto: 64 on the CPU, 1000 on a GPU)",
    "train.clip_grad_norm": "clip the gradient norm to this value (null: no clipping)",
    "train.num_threads": "torch CPU threads (null: torch's default)",
    "train.progress": "progress bar on a terminal, one line per epoch elsewhere; false: quiet",
    "train.checkpoint": "write checkpoint.pt after every epoch (needed for --resume)",
    "train.amp": "none, bf16 or fp16 autocast of the training steps",
    "train.channels_last": "NHWC memory format (faster convolutions on GPUs)",
    "train.compile": "torch.compile the model (methods without a meta step only)",
    "train.cudnn_benchmark": "let cuDNN pick the fastest convolution algorithms (CUDA)",
    "train.sync_batchnorm": "several processes (--nproc): BatchNorm statistics over the global batch, as one process",
}


def leaf_keys(d: Mapping[str, Any] = DEFAULTS, prefix: str = "") -> list[str]:
    """Every dotted key of ``d``, sections included."""
    keys = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        keys.append(key)
        if isinstance(v, Mapping) and v:
            keys += leaf_keys(v, key + ".")
    return keys


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def _scalar(v: Any) -> str:
    text = yaml.safe_dump(_plain(v), default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def render_config(cfg: Mapping[str, Any], *, notes: Mapping[str, str] | None = None) -> str:
    """``cfg`` as YAML, one ``# comment`` per field (:data:`FIELD_DOCS`, then ``notes``)."""
    notes = dict(notes or {})
    lines: list[str] = []

    def walk(d: Mapping[str, Any], prefix: str, indent: int) -> None:
        for k, v in d.items():
            key = f"{prefix}{k}"
            doc = notes.get(key) or FIELD_DOCS.get(key) or ""
            pad = "  " * indent
            comment = f"  # {doc}" if doc else ""
            if isinstance(v, Mapping) and v:
                if doc:
                    lines.append(f"{pad}# {doc}")
                lines.append(f"{pad}{k}:")
                walk(v, key + ".", indent + 1)
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}{comment}")

    walk(cfg, "", 0)
    return "\n".join(lines) + "\n"


def method_config(name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The config a run of method ``name`` resolves to (its presets: loss, meta set, meta size),
    with the method's own options at their defaults in ``method``; and a comment per option."""
    from .methods import METHODS
    from .train import resolve_method_defaults

    cls = METHODS.get(name)
    cfg = set_value(default_config(), "method.name", name)
    run = resolve_method_defaults(cfg)
    from .errors import UserError
    from .methods import create_method

    def builds(**kw: Any) -> bool:
        try:
            create_method(name, **kw)
        except UserError:
            return False
        return True

    plain = builds()
    options: dict[str, Any] = {}
    for depth, target in enumerate(c.__init__ for c in cls.__mro__ if "__init__" in vars(c) and c is not object):
        for k, p in inspect.signature(target).parameters.items():
            if p.kind is p.KEYWORD_ONLY and k not in options and p.default is not inspect.Parameter.empty:
                if depth and plain and not builds(**{k: p.default}):
                    continue  # a base's option the method refuses to be given (mlc's k replaces lookahead)
                options[k] = _plain(p.default)
    run["method"] = {"name": run["method"]["name"], **options}
    validate(run)
    notes = {f"method.{k}": f"{name} option (default {_scalar(v)}; see help({cls.__module__}.{cls.__name__}))"
             for k, v in options.items()}
    return run, notes
