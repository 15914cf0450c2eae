"""CIFAR ResNets of depth 6n+2 (ResNet-8/20/32/44/56).

He, Zhang, Ren & Sun (2016), "Deep residual learning for image recognition",
CVPR, section 4.2: a 3x3 conv with 16 filters, then three stages of ``n``
basic blocks with 16, 32 and 64 filters (stride 2 at the first block of
stages 2 and 3), BatchNorm after every conv, global average pooling and a
linear layer. ResNet-32 with option-A shortcuts is the classifier of
Meta-Weight-Net (Shu et al., 2019) and its follow-ups.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from .base import MODELS, Classifier, check_choice

__all__ = ["BasicBlock", "ShortcutA", "CifarResNet", "resnet8", "resnet20", "resnet32", "resnet44", "resnet56"]


class ShortcutA(nn.Module):
    """Parameter-free shortcut (He et al. 2016, option A).

    Subsamples with ``stride`` and zero-pads the new channels, split evenly
    before and after the existing ones (as ``LambdaLayer`` in the
    Meta-Weight-Net / akamaster CIFAR ResNet code).
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = planes - in_planes

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            front = self.extra // 2
            x = F.pad(x, (0, 0, 0, 0, front, self.extra - front))
        return x


class BasicBlock(nn.Module):
    """Post-activation basic block: conv3x3-BN-ReLU-conv3x3-BN, add shortcut, ReLU.

    Parameters
    ----------
    in_planes, planes:
        Input and output channels.
    stride:
        Stride of the first convolution.
    shortcut:
        ``"A"``: parameter-free :class:`ShortcutA`; ``"B"``: 1x1 conv + BN
        projection. Either is used only when the shape changes; otherwise the
        shortcut is the identity.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module
        if stride == 1 and in_planes == planes:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ShortcutA(in_planes, planes, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Classifier):
    """ResNet-(6n+2) for CIFAR (He et al. 2016, section 4.2).

    Convolution and linear weights use Kaiming-normal initialisation
    (``fan_in``), as ``_weights_init`` in the Meta-Weight-Net code.

    Parameters
    ----------
    depth:
        ``6n + 2`` with ``n >= 1`` (8, 20, 32, 44, 56, 110, ...).
    num_classes, in_channels:
        Output logits and input channels.
    shortcut:
        ``"A"`` (zero-padding identity, the paper's CIFAR choice) or ``"B"``
        (1x1 conv + BN projection) at the two stage transitions.
    """

    def __init__(self, *, depth: int, num_classes: int, in_channels: int = 3, shortcut: str = "A") -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, in_planes = [], 16
        for stage, planes in enumerate((16, 32, 64)):
            layer = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                layer.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            blocks.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3 = blocks
        self._set_classifier(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def features(self, x: Tensor) -> Tensor:
        """Globally average-pooled output of stage 3, shape ``(B, 64)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


def _build(depth: int, num_classes: int, in_channels: int, shortcut: str) -> CifarResNet:
    name = f"resnet{depth}"
    return CifarResNet(
        depth=depth,
        num_classes=num_classes,
        in_channels=in_channels,
        shortcut=check_choice(name, "shortcut", shortcut, ("A", "B")),
    )


@MODELS.register("resnet8", help="CIFAR ResNet-8 (He et al. 2016, 3 stages x 1 block, 16/32/64)")
def resnet8(*, num_classes: int, in_channels: int = 3, image_size: int = 32, shortcut: str = "A") -> CifarResNet:
    """CIFAR ResNet-8 (n=1); ``shortcut`` is ``"A"`` or ``"B"``."""
    return _build(8, num_classes, in_channels, shortcut)


@MODELS.register("resnet20", help="CIFAR ResNet-20 (He et al. 2016), ~0.27M parameters")
def resnet20(*, num_classes: int, in_channels: int = 3, image_size: int = 32, shortcut: str = "A") -> CifarResNet:
    """CIFAR ResNet-20 (n=3); ``shortcut`` is ``"A"`` or ``"B"``."""
    return _build(20, num_classes, in_channels, shortcut)


@MODELS.register("resnet32", help="CIFAR ResNet-32 (He et al. 2016; Meta-Weight-Net), ~0.46M parameters")
def resnet32(*, num_classes: int, in_channels: int = 3, image_size: int = 32, shortcut: str = "A") -> CifarResNet:
    """CIFAR ResNet-32 (n=5), the Meta-Weight-Net classifier; ``shortcut`` is ``"A"`` or ``"B"``."""
    return _build(32, num_classes, in_channels, shortcut)


@MODELS.register("resnet44", help="CIFAR ResNet-44 (He et al. 2016), ~0.66M parameters")
def resnet44(*, num_classes: int, in_channels: int = 3, image_size: int = 32, shortcut: str = "A") -> CifarResNet:
    """CIFAR ResNet-44 (n=7); ``shortcut`` is ``"A"`` or ``"B"``."""
    return _build(44, num_classes, in_channels, shortcut)


@MODELS.register("resnet56", help="CIFAR ResNet-56 (He et al. 2016), ~0.85M parameters")
def resnet56(*, num_classes: int, in_channels: int = 3, image_size: int = 32, shortcut: str = "A") -> CifarResNet:
    """CIFAR ResNet-56 (n=9); ``shortcut`` is ``"A"`` or ``"B"``."""
    return _build(56, num_classes, in_channels, shortcut)
