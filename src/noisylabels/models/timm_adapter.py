"""Any timm model as a :class:`~noisylabels.models.Classifier`: ``model.name: timm:<timm name>``.

``timm:resnet50`` builds ``timm.create_model("resnet50", num_classes=K, in_chans=C, **options)``
(options are timm's: ``drop_rate``, ``img_size`` for ViTs, ``pretrained``, ...) and adapts it:
``features(x)`` is timm's ``forward_head(forward_features(x), pre_logits=True)`` (the pooled
penultimate features) and ``classifier`` is timm's ``get_classifier()`` (the last linear layer),
so ``classifier(features(x)) == model(x)``. These machines cannot download weights: put
ImageNet-pretrained weights on disk and start from them with ``model.init_checkpoint`` (the
file's keys are timm's own; ``model.init_exclude: [fc]`` replaces a ResNet's 1000-class head).
timm is an optional extra: ``pip install "noisylabels[timm]"``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..errors import UserError
from .base import Classifier

__all__ = ["TIMM_PREFIX", "TimmClassifier", "create_timm_model"]

TIMM_PREFIX = "timm:"


class TimmClassifier(Classifier):
    """A timm network behind the :class:`Classifier` interface (see the module docstring)."""

    def __init__(self, net: nn.Module, *, num_classes: int) -> None:
        super().__init__()
        self.net = net
        self.num_features = int(getattr(net, "num_features"))
        self.num_classes = int(num_classes)

    @property
    def classifier(self) -> nn.Module:  # type: ignore[override]
        return self.net.get_classifier()

    @property
    def checkpoint_module(self) -> nn.Module:
        """What ``model.init_checkpoint`` loads into: the timm network (its own key names)."""
        return self.net

    def features(self, x: Tensor) -> Tensor:
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def create_timm_model(name: str, *, num_classes: int, in_channels: int, image_size: int, **options: Any) -> Classifier:
    """Build ``timm:<name>`` (``image_size`` is not passed: only some timm models take ``img_size``)."""
    arch = name[len(TIMM_PREFIX):] if name.lower().startswith(TIMM_PREFIX) else name
    try:
        import timm
    except ImportError:
        raise UserError(f'model {name!r} needs timm: pip install "noisylabels[timm]"') from None
    except Exception as err:  # noqa: BLE001  (e.g. a broken torchvision under timm)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"model {name!r}: timm is installed but does not import ({first})") from None
    if not arch:
        raise UserError("model 'timm:' needs a timm model name, e.g. timm:resnet50")
    try:
        net = timm.create_model(arch, num_classes=num_classes, in_chans=in_channels, **options)
    except (RuntimeError, TypeError, ValueError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"model {name!r}: {first}") from None
    for attr in ("forward_features", "forward_head", "get_classifier", "num_features"):
        if not hasattr(net, attr):
            raise UserError(f"model {name!r}: the timm model has no {attr}(), so features()/classifier "
                            "cannot be adapted")
    return TimmClassifier(net, num_classes=num_classes)
