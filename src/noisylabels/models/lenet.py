"""LeNet-5-style convolutional network for small grey or colour images."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from .base import MODELS, Classifier

__all__ = ["LeNet", "lenet"]


def _pooled(size: int) -> int:
    """Spatial size after a 2x2 max pool with ``ceil_mode=True``."""
    return (size + 1) // 2


class LeNet(Classifier):
    """LeNet-5 (LeCun et al., 1998, "Gradient-based learning applied to document recognition").

    conv 5x5 (6) -> ReLU -> maxpool 2 -> conv 5x5 (16) -> ReLU -> maxpool 2
    -> adaptive average pool to ``p x p`` -> FC 120 -> ReLU -> FC 84 -> ReLU -> classifier.

    The first convolution is zero-padded by 2 (as LeNet on 28x28 MNIST, which
    pads to 32x32). The second is unpadded when the map is large enough
    (>= 10x10, so 28x28 input gives the classic 16x5x5 = 400 features) and
    padded by 2 otherwise, so inputs as small as 8x8 (sklearn digits) work.
    ``p = min(5, spatial size after the second pool)``.

    Parameters
    ----------
    num_classes, in_channels, image_size:
        Output logits, input channels and the (square) input size the
        architecture is laid out for. Other input sizes work as long as the
        second convolution still fits.
    """

    def __init__(self, *, num_classes: int, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        s = _pooled(image_size)
        pad2 = 0 if s >= 10 else 2
        self.conv2 = nn.Conv2d(6, 16, 5, padding=pad2)
        s = _pooled(s + 2 * pad2 - 4)
        self.pool_size = max(1, min(5, s))
        self.fc1 = nn.Linear(16 * self.pool_size**2, 120)
        self.fc2 = nn.Linear(120, 84)
        self._set_classifier(84, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Output of the 84-unit FC layer after ReLU, shape ``(B, 84)``."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, ceil_mode=True)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, ceil_mode=True)
        x = F.adaptive_avg_pool2d(x, self.pool_size).flatten(1)
        x = F.relu(self.fc1(x))
        return F.relu(self.fc2(x))


@MODELS.register("lenet", help="LeNet-5-style CNN (2 conv + FC 120 + FC 84), works from 8x8 up")
def lenet(*, num_classes: int, in_channels: int = 3, image_size: int = 32) -> LeNet:
    """Build a :class:`LeNet`."""
    return LeNet(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
