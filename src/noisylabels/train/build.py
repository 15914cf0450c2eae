"""What a run is built from, with public names: the model, the method and the schedule of a config,
the method's resolved defaults, and the checks made before any data are loaded."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import UserError
from ..methods import METHODS, Method, check_loss_section, create_method
from ..models import create_model
from .optim import RunScheduler, build_scheduler
from .prepare import RunData

__all__ = ["build_model", "build_method", "build_run_schedule", "resolve_method_defaults", "check_names",
           "check_meta_settings", "check_device"]


def build_model(cfg: Mapping[str, Any], data: RunData, seed: int | None = None) -> torch.nn.Module:
    mcfg = dict(cfg["model"])
    name = mcfg.pop("name")
    if seed is not None:
        mcfg["seed"] = seed
    return create_model(name, num_classes=data.num_classes, in_channels=data.in_channels,
                        image_size=data.image_size, **mcfg)


def build_run_schedule(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], steps_per_epoch: int,
               start_epoch: int = 0) -> RunScheduler:
    """The configured schedule, optionally restarted at ``start_epoch`` over the remaining epochs."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"]
    epochs = int(cfg["train"]["epochs"]) - start_epoch
    offset = start_epoch * steps_per_epoch
    sched = build_scheduler(optimizer, cfg["optim"], steps_per_epoch=steps_per_epoch, epochs=max(1, epochs))
    if offset:
        factor = sched.lr_lambdas[0]
        sched.lr_lambdas = [lambda s: factor(max(0, s - offset))] * len(optimizer.param_groups)
        if sched.beta1_fn is not None:
            beta1 = sched.beta1_fn
            sched.beta1_fn = lambda s: beta1(max(0, s - offset))
        sched.last_epoch = offset
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor(0)
        sched._last_lr = [g["lr"] for g in optimizer.param_groups]  # what get_last_lr() reports
        sched.apply_beta1()
    return sched


def resolve_method_defaults(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``cfg`` with the settings a method decides resolved (no RNG drawn, nothing built).

    * ``data.meta_set: auto`` becomes the preset's kind (``rmnw-net``, ``mnw-net``: noisy) or
      ``clean``; an explicit contradicting kind is refused.
    * ``loss.name: auto`` becomes the method's own loss, or CE for methods that train on the
      configured loss; a ``loss`` section contradicting a method's own loss is refused.
    * ``data.views: auto`` becomes the method's views (:attr:`Method.views`); a list of another
      length than the method takes is refused.
    """
    out = copy.deepcopy(dict(cfg))
    name = str(out["method"]["name"])
    cls = METHODS.get(name)
    kind, given = cls.meta_set_kind, str(out["data"]["meta_set"])
    if kind is not None and given not in ("auto", kind):
        raise UserError(f"method {name!r} is defined by a {kind} meta set; --meta-set {given} contradicts it "
                        f"(leave data.meta_set at auto)")
    out["data"]["meta_set"] = kind or ("clean" if given == "auto" else given)
    out["loss"]["name"] = check_loss_section(cls, name, out["loss"], out["method"])
    views = out["data"].get("views", "auto")
    if views == "auto":
        out["data"]["views"] = list(cls.views)
    elif isinstance(views, (list, tuple)) and len(views) != len(cls.views):
        raise UserError(f"method {name!r} takes {len(cls.views)} view(s) of each batch ({', '.join(cls.views)}); "
                        f"data.views gives {len(views)}: {', '.join(map(str, views))}")
    return out


def check_names(cfg: Mapping[str, Any], *, device: bool = True) -> dict[str, Any]:
    """Every registered name, option name, weight file and the device of a config, checked before
    any data are loaded (one-line errors; :mod:`noisylabels.train.precheck`); returns
    :func:`resolve_method_defaults` of ``cfg``. ``device=False`` leaves the device out (runs that
    go to other machines, e.g. Ray tasks on GPU nodes of a cluster whose driver has none)."""
    from ..data import DATASETS, strong_augment_policy
    from ..losses import LOSSES
    from ..models import MODELS
    from ..models.timm_adapter import TIMM_PREFIX
    from ..noise import NOISE

    run = resolve_method_defaults(cfg)
    DATASETS.get(str(run["data"]["name"]))
    model = str(run["model"]["name"])
    if not model.lower().startswith(TIMM_PREFIX):
        MODELS.get(model)
    cls = METHODS.get(str(run["method"]["name"]))
    if cls.loss_name({k: v for k, v in run["method"].items() if k != "name"}) is None:
        LOSSES.get(str(run["loss"]["name"]))
    NOISE.get(str(run["noise"]["type"]))
    strong_augment_policy(run["data"].get("strong_augment"))
    check_meta_settings(run, cls)
    if device:
        check_device(run["device"])
    from .precheck import check_inputs

    check_inputs(run)  # method / model / noise options and weight files: no data loaded yet
    return run


def check_meta_settings(cfg: Mapping[str, Any], method: Method | type[Method]) -> None:
    """``train.compile`` and ``train.amp=fp16`` are refused for meta methods, each with its own reason;
    ``fp16`` also for methods that train several networks (one gradient scaler per run)."""
    tcfg, name = cfg["train"], cfg["method"]["name"]
    if method.network_specs() and str(tcfg.get("amp", "none")).lower() == "fp16":
        raise UserError(f"train.amp=fp16 is not supported for method {name!r}, which trains several networks "
                        f"(the run has one gradient scaler); use train.amp=bf16")
    if not method.needs_meta_set:
        return
    if tcfg.get("compile"):
        raise UserError(f"train.compile is not supported for meta method {name!r}: the meta engine walks the "
                        f"training forward's autograd graph, which torch.compile replaces; set train.compile=false")
    if str(tcfg.get("amp", "none")).lower() == "fp16":
        raise UserError(f"train.amp=fp16 is not supported for meta method {name!r}: the meta engine differentiates "
                        f"unscaled gradients and fp16 needs a gradient scaler; use train.amp=bf16")


def check_device(name: Any) -> torch.device:
    """``torch.device(name)``, refused in one line when this machine cannot run on it."""
    from ..config import device_type

    kind = device_type(name)
    dev = torch.device(str(name))
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name}: CUDA is not available on this machine (torch {torch.__version__}, "
                            f"torch.cuda.is_available() is False); use --set device=cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError(f"device {name}: MPS is not available on this machine; use --set device=cpu")
    return dev


def build_method(cfg: Mapping[str, Any]) -> Method:
    meth_cfg = dict(cfg["method"])
    return create_method(meth_cfg.pop("name"), **meth_cfg)
