"""CIFAR-style ResNet-18 / ResNet-34 (64-128-256-512 channels, no stem max-pool).

He, Zhang, Ren & Sun (2016), "Deep residual learning for image recognition",
Table 1 ("18-layer" and "34-layer" basic-block networks), adapted to small
images the way the GCE paper (Zhang & Sabuncu, 2018, "Generalized cross
entropy loss for training deep neural networks with noisy labels") and
most noisy-label code bases do: a 3x3 stride-1 stem convolution, no max-pool,
projection (1x1 conv + BN) shortcuts, global average pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from .base import MODELS, Classifier
from .resnet_cifar import BasicBlock

__all__ = ["ResNet", "resnet18", "resnet34"]


class ResNet(Classifier):
    """ResNet with basic blocks and four stages of 64, 128, 256, 512 channels.

    Parameters
    ----------
    num_blocks:
        Blocks per stage, ``(2, 2, 2, 2)`` for ResNet-18, ``(3, 4, 6, 3)`` for ResNet-34.
    num_classes, in_channels:
        Output logits and input channels.
    """

    def __init__(self, *, num_blocks: Sequence[int], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, in_planes = [], 64
        for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, shortcut="B"))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self._set_classifier(512, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Globally average-pooled output of stage 4, shape ``(B, 512)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


@MODELS.register("resnet18", help="CIFAR-style ResNet-18 (3x3 stem, no max-pool), ~11.2M parameters")
def resnet18(*, num_classes: int, in_channels: int = 3, image_size: int = 32) -> ResNet:
    """CIFAR-style ResNet-18, basic blocks ``[2, 2, 2, 2]``."""
    return ResNet(num_blocks=(2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels)


@MODELS.register("resnet34", help="CIFAR-style ResNet-34 as in the GCE paper, ~21.3M parameters")
def resnet34(*, num_classes: int, in_channels: int = 3, image_size: int = 32) -> ResNet:
    """CIFAR-style ResNet-34, basic blocks ``[3, 4, 6, 3]`` (GCE paper's CIFAR model)."""
    return ResNet(num_blocks=(3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels)
