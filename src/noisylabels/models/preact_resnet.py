"""Pre-activation ResNet-18 for CIFAR.

He, Zhang, Ren & Sun (2016), "Identity mappings in deep residual networks",
ECCV (full pre-activation unit, Fig. 4e). The CIFAR variant used by DivideMix
(Li, Socher & Hoi, 2020) and many noisy-label papers: 3x3 stride-1 stem
convolution with 64 filters, no max-pool, four stages of two blocks with
64-128-256-512 channels, 1x1 convolution shortcuts where the shape changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from .base import MODELS, Classifier

__all__ = ["PreActBlock", "PreActResNet", "preact_resnet18"]


class PreActBlock(nn.Module):
    """Full pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3, plus shortcut.

    The projection shortcut (a bias-free 1x1 conv, no BN) reads the
    pre-activated input, as in the DivideMix code.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(Classifier):
    """Pre-activation ResNet with four stages of 64, 128, 256, 512 channels.

    Parameters
    ----------
    num_blocks:
        Blocks per stage, ``(2, 2, 2, 2)`` for PreActResNet-18.
    num_classes, in_channels:
        Output logits and input channels.
    final_norm:
        Add the final BN-ReLU of He et al. (2016) before pooling. ``False``
        (default) matches the DivideMix / kuangliu CIFAR code, which pools the
        raw output of the last block.
    """

    def __init__(
        self, *, num_blocks: Sequence[int], num_classes: int, in_channels: int = 3, final_norm: bool = False
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        layers, in_planes = [], 64
        for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(PreActBlock(in_planes, planes, stride))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.final_bn = nn.BatchNorm2d(512) if final_norm else None
        self._set_classifier(512, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Globally average-pooled output of stage 4, shape ``(B, 512)``."""
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if self.final_bn is not None:
            out = F.relu(self.final_bn(out))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


@MODELS.register("preact_resnet18", help="PreActResNet-18 for CIFAR (DivideMix), ~11.17M parameters")
def preact_resnet18(
    *, num_classes: int, in_channels: int = 3, image_size: int = 32, final_norm: bool = False
) -> PreActResNet:
    """PreActResNet-18 as in DivideMix; ``final_norm=True`` adds the final BN-ReLU."""
    return PreActResNet(
        num_blocks=(2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels, final_norm=bool(final_norm)
    )
