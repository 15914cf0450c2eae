"""CIFAR-style ResNet-18 / ResNet-34 / ResNet-50 (64-128-256-512 channels, no stem max-pool).

He, Zhang, Ren & Sun (2016), "Deep residual learning for image recognition",
Table 1 ("18-layer" and "34-layer" basic-block networks, "50-layer" bottleneck network), adapted to small
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

__all__ = ["ResNet", "Bottleneck", "resnet18", "resnet34", "resnet50"]


class Bottleneck(nn.Module):
    """Bottleneck block (He et al. 2016, Fig. 5 right): 1x1 reduce, 3x3 (stride), 1x1 expand x4,
    BN after each, projection (1x1 conv + BN) shortcut when the shape changes, ReLU after the sum."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut: nn.Module = (nn.Identity() if stride == 1 and in_planes == out else
                                    nn.Sequential(nn.Conv2d(in_planes, out, 1, stride=stride, bias=False),
                                                  nn.BatchNorm2d(out)))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + self.shortcut(x))


class ResNet(Classifier):
    """ResNet with basic blocks and four stages of 64, 128, 256, 512 channels.

    Parameters
    ----------
    num_blocks:
        Blocks per stage, ``(2, 2, 2, 2)`` for ResNet-18, ``(3, 4, 6, 3)`` for ResNet-34 and ResNet-50.
    num_classes, in_channels:
        Output logits and input channels.
    bottleneck:
        Bottleneck blocks (ResNet-50: 2048 features) instead of basic blocks.
    """

    def __init__(self, *, num_blocks: Sequence[int], num_classes: int, in_channels: int = 3,
                 bottleneck: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, in_planes = [], 64
        for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                if bottleneck:
                    blocks.append(Bottleneck(in_planes, planes, stride))
                    in_planes = planes * Bottleneck.expansion
                else:
                    blocks.append(BasicBlock(in_planes, planes, stride, shortcut="B"))
                    in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self._set_classifier(in_planes, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Globally average-pooled output of stage 4, shape ``(B, 512)`` (``(B, 2048)`` for ResNet-50)."""
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


@MODELS.register("resnet50", help="CIFAR-style ResNet-50 (bottleneck blocks, 3x3 stem, no max-pool), ~23.5M parameters")
def resnet50(*, num_classes: int, in_channels: int = 3, image_size: int = 32) -> ResNet:
    """CIFAR-style ResNet-50, bottleneck blocks ``[3, 4, 6, 3]`` (EMLC's CIFAR-100 / Clothing1M model size)."""
    return ResNet(num_blocks=(3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels, bottleneck=True)
