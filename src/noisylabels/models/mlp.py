"""Multi-layer perceptron on flattened images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..errors import UserError
from .base import MODELS, Classifier, check_int, check_probability

__all__ = ["MLP", "mlp"]


class MLP(Classifier):
    """Flatten -> [Linear -> ReLU -> Dropout] per hidden layer -> Linear.

    Parameters
    ----------
    in_features:
        Size of the flattened input, ``in_channels * image_size ** 2``.
    num_classes:
        Number of output logits.
    hidden:
        Widths of the hidden layers; ``()`` gives multinomial logistic regression
        (then :meth:`features` is the flattened input).
    dropout:
        Dropout rate after each hidden ReLU.
    """

    def __init__(
        self, *, in_features: int, num_classes: int, hidden: Sequence[int] = (256,), dropout: float = 0.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten(1)]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.in_features = in_features
        self.body = nn.Sequential(*layers)
        self._set_classifier(width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Output of the last hidden layer (after ReLU and dropout), shape ``(B, num_features)``."""
        if x.shape[1:].numel() != self.in_features:
            raise UserError(
                f"model 'mlp' was built for {self.in_features} input values per example "
                f"(in_channels * image_size**2), got input of shape {tuple(x.shape)}"
            )
        return self.body(x)


@MODELS.register("mlp", help="MLP on flattened images (options: hidden=(256,), dropout=0.0)")
def mlp(
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    hidden: Sequence[int] | int = (256,),
    dropout: float = 0.0,
) -> MLP:
    """Build an :class:`MLP` with ``in_features = in_channels * image_size**2``."""
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, (Sequence, int)):
        raise UserError(f"model 'mlp': hidden must be a list of integers, got {hidden!r}")
    widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    widths = tuple(check_int("mlp", "hidden", h) for h in widths)
    return MLP(
        in_features=in_channels * image_size**2,
        num_classes=num_classes,
        hidden=widths,
        dropout=check_probability("mlp", "dropout", dropout),
    )
