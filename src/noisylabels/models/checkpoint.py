"""Start a model from a user's state-dict file (``model.init_checkpoint``).

The file is read with ``torch.load(weights_only=True)`` (tensors and plain containers only; a
file carrying pickled code is refused without running it). Accepted layouts: a state dict
(``{name: tensor}``), or one under a ``state_dict`` / ``model`` / ``model_state_dict`` key (the
usual training-script checkpoints, this library's ``checkpoint.pt`` and ``best_model.pt``);
a ``module.`` prefix (``DataParallel`` / DDP) is removed when every key has it.

Every key must match: a missing key, an unexpected key or a shape mismatch is a one-line
:class:`~noisylabels.errors.UserError` naming the first offenders, so a checkpoint of another
architecture is never half-loaded silently. ``exclude`` lists key prefixes left at their fresh
initialisation and ignored in the file: a pretrained backbone with another number of classes
loads with ``model.init_exclude: [classifier]`` (``[fc]`` for a timm ResNet, whose head is
``fc``).

A *backbone* file, one that holds every key of the model but none of its classifier's (this
library's ``backbone.pt`` from ``noisylabels pretrain``, :func:`backbone_state_dict`), loads as it is:
the classifier keeps its fresh initialisation (as if ``init_exclude`` named it). A file with some
but not all of the classifier's keys is still refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError

__all__ = ["read_state_dict", "load_init_checkpoint", "backbone_state_dict", "classifier_prefix"]

_WRAPPERS = ("state_dict", "model", "model_state_dict")


def _names(keys: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def read_state_dict(path: str | os.PathLike[str], *, what: str = "model.init_checkpoint") -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` state dict in ``path`` (see the module docstring for layouts); ``what``
    names the option in error messages (e.g. ``method.teacher_init``)."""
    from ..io import load_torch_file

    p = Path(path).expanduser()
    obj: Any = load_torch_file(p, what=what, expected="state dict")
    for key in _WRAPPERS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{what} {p} does not hold a state dict of tensors "
                        f"(nor one under {', '.join(_WRAPPERS)})")
    sd = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


def load_init_checkpoint(model: nn.Module, path: str | os.PathLike[str], *,
                         exclude: Sequence[str] = (), what: str = "model.init_checkpoint") -> nn.Module:
    """Load ``path`` into ``model`` (in place; returns it), every key and shape checked.

    ``model.checkpoint_module`` (the timm adapter's inner network) is the target when present,
    so files saved from the original architecture load as they are.

    Raises
    ------
    UserError
        Missing or unreadable file, missing / unexpected keys, shape mismatch (one line).
    """
    if isinstance(exclude, str):
        exclude = [exclude]
    prefixes = [str(e).rstrip(".") for e in exclude]

    def kept(k: str) -> bool:
        return not any(k == e or k.startswith(e + ".") for e in prefixes)

    target = getattr(model, "checkpoint_module", model)
    sd = {k: v for k, v in read_state_dict(path, what=what).items() if kept(k)}
    head = classifier_prefix(model)
    if head is not None and kept(head) and not any(k == head or k.startswith(head + ".") for k in sd):
        prefixes.append(head)  # a backbone file: the classifier stays at its fresh initialisation
    own = {k: v for k, v in target.state_dict().items() if kept(k)}
    where = f"{what} {Path(path)}"
    unexpected = [k for k in sd if k not in own]
    missing = [k for k in own if k not in sd]
    if unexpected or missing:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({_names(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({_names(unexpected)})")
        hint = " (model.init_exclude: [prefix] keeps layers such as the classifier at their fresh init)"
        raise UserError(f"{where} does not match the model: {'; '.join(parts)}{hint}")
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if sd[k].shape != own[k].shape]
    if bad:
        raise UserError(f"{where}: shape mismatch (file vs model) for {len(bad)} tensor(s): {_names(bad, 3)}"
                        " (model.init_exclude: [classifier] for another number of classes)")
    with torch.no_grad():
        target.load_state_dict(sd, strict=not prefixes)
    return model


def classifier_prefix(model: nn.Module) -> str | None:
    """The key prefix of ``model.classifier`` in the state dict that :func:`load_init_checkpoint`
    reads (``'classifier'`` for this library's models; timm's head name, e.g. ``'fc'``, inside a
    :class:`~noisylabels.models.TimmClassifier`); ``None`` when the model has no classifier module."""
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Module):
        return None
    target = getattr(model, "checkpoint_module", model)
    for name, module in target.named_modules():
        if module is head and name:
            return name
    return None


def backbone_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of ``model`` without its classifier (``backbone.pt``): CPU tensors with the keys
    :func:`load_init_checkpoint` (``model.init_checkpoint``, EMLC's ``method.teacher_init``) reads,
    which loads it into the same architecture with any number of classes (the classifier at its
    fresh initialisation)."""
    target = getattr(model, "checkpoint_module", model)
    head = classifier_prefix(model)
    return {k: v.detach().cpu().clone() for k, v in target.state_dict().items()
            if head is None or not (k == head or k.startswith(head + "."))}
