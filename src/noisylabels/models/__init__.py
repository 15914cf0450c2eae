"""Classifier networks for learning with noisy labels.

Every model is a :class:`Classifier`: ``forward(x) = classifier(features(x))``
with ``features(x)`` the flattened penultimate activations of shape
``(B, num_features)``. Models are built by name::

    from noisylabels.models import create_model
    net = create_model("resnet32", num_classes=10)                 # CIFAR, option-A shortcuts
    net = create_model("lenet", num_classes=10, in_channels=1, image_size=8)

Penultimate features for feature-space methods: :mod:`noisylabels.models.penultimate`
(:func:`features`, :func:`feature_dim`, :func:`check_features`, and :class:`FeatureTap`, which
catches the features of the model's own forwards by hooks).

Registered families: ``mlp``; ``lenet``; CIFAR ResNets ``resnet8/20/32/44/56``
(He et al. 2016, sec. 4.2); ``resnet18/34/50`` (CIFAR-style, GCE paper; ResNet-50 with bottlenecks, EMLC);
``preact_resnet18`` (DivideMix); ``wrn`` / ``wrn28_10`` (Zagoruyko & Komodakis
2016, Meta-Weight-Net). All use global (adaptive) average pooling, so any
reasonable square image size works, from 8x8 digits to 32x32 CIFAR.

No module uses in-place activations, so models work with
``torch.func.functional_call``, ``torch.func.grad`` and forward-mode
``torch.func.jvp`` (BatchNorm included). In train mode BatchNorm updates its
running statistics in place, which torch.func refuses for tensors captured
from outside the transformed function; clone the buffers *inside* it::

    buffers = dict(net.named_buffers())
    def f(params):
        return torch.func.functional_call(
            net, (params, {k: b.clone() for k, b in buffers.items()}), (x,))
    logits, dlogits = torch.func.jvp(f, (params,), (tangents,))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..registry import call_with_options
from .base import MODELS, Classifier, check_int, count_parameters, eval_mode
from .checkpoint import backbone_state_dict, load_init_checkpoint, read_state_dict
from .ensemble import Ensemble
from .penultimate import FeatureTap, check_features, feature_dim, features, logits_and_features
# importing the family modules registers their models
from .lenet import LeNet
from .mlp import MLP
from .preact_resnet import PreActResNet
from .resnet import ResNet
from .resnet_cifar import CifarResNet
from .timm_adapter import TIMM_PREFIX, TimmClassifier, create_timm_model
from .wide_resnet import WideResNet

__all__ = [
    "MODELS",
    "Classifier",
    "create_model",
    "list_models",
    "describe_model",
    "count_parameters",
    "MLP",
    "LeNet",
    "CifarResNet",
    "ResNet",
    "PreActResNet",
    "WideResNet",
    "TimmClassifier",
    "Ensemble",
    "eval_mode",
    "load_init_checkpoint",
    "read_state_dict",
    "backbone_state_dict",
    "FeatureTap",
    "check_features",
    "feature_dim",
    "features",
    "logits_and_features",
]


def create_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    seed: int | None = None,
    **options: Any,
) -> nn.Module:
    """Build the registered model ``name``.

    Parameters
    ----------
    name:
        A name from :func:`list_models` (case-insensitive).
    num_classes:
        Number of output logits ``K``.
    in_channels:
        Image channels (1 for MNIST / digits, 3 for CIFAR).
    image_size:
        Side of the square input images (8 for sklearn digits, 28 for MNIST,
        32 for CIFAR). Only ``mlp`` (input width) and ``lenet`` (padding) depend on it.
    seed:
        If given, parameters are initialised from ``torch.manual_seed(seed)``
        inside :func:`torch.random.fork_rng`, so the result is reproducible and
        the global RNG state is left untouched. If ``None`` the global torch
        RNG is used.
    **options:
        Model-specific options (e.g. ``hidden`` for ``mlp``, ``shortcut`` for
        the CIFAR ResNets, ``depth`` / ``widen_factor`` / ``dropout`` for ``wrn``;
        timm's options for ``timm:<name>``, see :mod:`noisylabels.models.timm_adapter`),
        and for every model ``init_checkpoint`` (a state-dict file the weights start
        from, checked key by key and shape by shape) with ``init_exclude`` (key prefixes
        left at their fresh init, e.g. ``[classifier]``); see
        :mod:`noisylabels.models.checkpoint`.

    Returns
    -------
    Classifier
        A model in training mode on the CPU, with float32 parameters.

    Raises
    ------
    UserError
        Unknown ``name``, unknown option or an invalid value.
    """
    init_checkpoint = options.pop("init_checkpoint", None)
    init_exclude = options.pop("init_exclude", None) or ()
    key = str(name).lower()
    is_timm = key.startswith(TIMM_PREFIX)
    factory = create_timm_model if is_timm else MODELS.get(name)
    kwargs = dict(
        num_classes=check_int(key, "num_classes", num_classes),
        in_channels=check_int(key, "in_channels", in_channels),
        image_size=check_int(key, "image_size", image_size),
    )
    args = (str(name),) if is_timm else ()
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise UserError(f"model {key!r}: seed must be an integer, got {seed!r}")
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        model = call_with_options("model", key, factory, *args, _fixed=tuple(kwargs), **kwargs, **options)
    if init_checkpoint is not None:
        load_init_checkpoint(model, init_checkpoint, exclude=init_exclude)
    return model


def list_models() -> list[str]:
    """Sorted names of the registered models."""
    return MODELS.names()


def describe_model(name: str) -> str:
    """One-line description of the registered model ``name`` (raises :class:`UserError` if unknown)."""
    MODELS.get(name)
    return MODELS.describe(name)
