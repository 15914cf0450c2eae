"""Penultimate features of any registered model, for methods that work in feature space.

Every registered model is ``classifier(features(x))`` (:class:`~noisylabels.models.Classifier`,
and :class:`~noisylabels.models.TimmClassifier` for ``timm:<name>``): ``features(x)`` are the
flattened penultimate activations, ``(B, num_features)``. Methods that need them -- MLC's label
correction network (Zheng et al. 2021), EMLC's teacher (Taraday & Baskin 2023), and the feature-space
methods to come (SimCLR pre-training, ProMix's prototypes) -- use the helpers here instead of
reaching into a model's layers:

* :func:`check_features` -- refuse (one line) a model that is not of that form;
* :func:`feature_dim` -- ``num_features`` (or the classifier's input width);
* :func:`features` -- ``model.features(x)``, a second forward;
* :func:`logits_and_features` -- both from one forward (a network trained on its own features);
* :class:`FeatureTap` -- the features of the model's *own* latest forwards, caught by forward
  hooks: no second forward, BatchNorm statistics updated once::

      tap = FeatureTap(model)
      logits = model(x)            # the training forward
      h = tap.features(x)          # its penultimate features, detached (None if x was not seen)
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError

__all__ = ["check_features", "feature_dim", "features", "logits_and_features", "FeatureTap"]

Tensor = torch.Tensor


def check_features(model: nn.Module, *, what: str = "the model") -> nn.Module:
    """``model`` itself if it is ``classifier(features(x))`` (a ``features`` method and a
    ``classifier`` layer); else a one-line :class:`~noisylabels.errors.UserError` naming ``what``."""
    if not callable(getattr(model, "features", None)) or not isinstance(getattr(model, "classifier", None), nn.Module):
        raise UserError(f"{what}: {type(model).__name__} is not of the form classifier(features(x)) (no 'features' "
                        f"method or no 'classifier' layer)")
    return model


def feature_dim(model: nn.Module) -> int:
    """The width of ``features(x)``: ``model.num_features``, else the classifier's ``in_features``."""
    return int(getattr(model, "num_features", 0) or model.classifier.in_features)


def features(model: nn.Module, x: Tensor) -> Tensor:
    """``model.features(x)``: the flattened penultimate activations ``(B, num_features)`` (a forward
    of its own: in train mode it updates BatchNorm statistics; wrap in ``torch.no_grad()`` as needed)."""
    return check_features(model).features(x)


def logits_and_features(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(classifier(h), h)`` with ``h = features(x)``: the logits and the penultimate features of one
    forward (``h`` not detached: a loss on either reaches the feature extractor)."""
    h = check_features(model).features(x)
    return model.classifier(h), h


def _plain(t: Tensor) -> bool:
    """Not a tensor of a torch.func transform (a dual or batched tensor)."""
    return not torch._C._functorch.is_functorch_wrapped_tensor(t)


class FeatureTap:
    """The penultimate features of a model's latest plain forwards, detached, by input tensor.

    A forward pre-hook on ``model.classifier`` (what enters it is ``features(x)``) paired with a
    pre-hook on the model that notes the input, so the training forward's features come for free.
    Forwards under a torch.func transform (dual tensors, e.g. the meta engine's JVP fallback) are
    not kept. Lookup is by tensor identity: :meth:`features` of the very tensor given to the model.

    Parameters
    ----------
    model:
        A model of the form ``classifier(features(x))`` (:func:`check_features`).
    keep:
        How many forwards to remember (the latest first; a training step's forward and a meta
        batch's need two).
    what:
        How the caller is named in the error for a model without the form (e.g. ``'mlc'``).
    """

    def __init__(self, model: nn.Module, keep: int = 4, *, what: str = "the model") -> None:
        head = getattr(model, "classifier", None)
        if not isinstance(head, nn.Module):
            raise UserError(f"{what} needs a model of the form classifier(features(x)); {type(model).__name__} has no "
                            f"'classifier' layer")
        self.keep = keep
        self._x: Tensor | None = None
        self._store: list[tuple[Tensor, Tensor]] = []
        self.handles = (model.register_forward_pre_hook(self._on_model), head.register_forward_pre_hook(self._on_head))

    def _on_model(self, module: nn.Module, args: tuple) -> None:
        x = args[0] if args else None
        self._x = x if isinstance(x, torch.Tensor) and _plain(x) else None

    def _on_head(self, module: nn.Module, args: tuple) -> None:
        h = args[0]
        if self._x is not None and _plain(h):
            self._store = [(x, f) for x, f in self._store if x is not self._x][-(self.keep - 1):]
            self._store.append((self._x, h.detach()))
        self._x = None

    def features(self, x: Tensor) -> Tensor | None:
        """The features of the latest forward of exactly this tensor, or ``None``."""
        for xi, f in reversed(self._store):
            if xi is x:
                return f
        return None

    def remove(self) -> None:
        """Remove the hooks (the tap sees no further forwards)."""
        for h in self.handles:
            h.remove()
        self._store = []
