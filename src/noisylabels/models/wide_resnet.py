"""Wide residual networks WRN-d-k.

Zagoruyko & Komodakis (2016), "Wide residual networks", BMVC: a 3x3 conv
with 16 filters, three stages of ``(d - 4) / 6`` pre-activation blocks with
``16k``, ``32k``, ``64k`` filters (stride 2 at stages 2 and 3), dropout
between the two convolutions of a block, final BN-ReLU, global average
pooling and a linear layer. Follows the code used by Meta-Weight-Net
(Shu et al., 2019) for WRN-28-10.
"""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import UserError
from .base import MODELS, Classifier, check_int, check_probability

__all__ = ["WideBlock", "WideResNet", "wrn", "wrn28_10"]


class WideBlock(nn.Module):
    """Pre-activation wide block: BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3, plus shortcut.

    Where the shape changes, the shortcut is a bias-free 1x1 conv applied to
    the pre-activated input.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.equal_in_out = in_planes == planes and stride == 1
        self.conv_shortcut = (
            None if self.equal_in_out else nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(pre)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(pre)
        return out + shortcut


class WideResNet(Classifier):
    """WRN-depth-widen_factor (Zagoruyko & Komodakis 2016).

    Init as in the Meta-Weight-Net / xternalz code: conv weights
    ``N(0, 2 / (k*k*out_channels))`` (Kaiming, fan-out), BN weight 1 and bias 0,
    linear bias 0.

    Parameters
    ----------
    depth:
        ``6n + 4`` with ``n >= 1`` (10, 16, 22, 28, 40, ...).
    widen_factor:
        Width multiplier ``k``.
    dropout:
        Dropout rate inside each block.
    num_classes, in_channels:
        Output logits and input channels.
    """

    def __init__(
        self, *, depth: int, widen_factor: int, num_classes: int, in_channels: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        stages, in_planes = [], widths[0]
        for stage, planes in enumerate(widths[1:]):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(WideBlock(in_planes, planes, stride, dropout))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(widths[3])
        self._set_classifier(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def features(self, x: Tensor) -> Tensor:
        """Final BN-ReLU output, globally average-pooled, shape ``(B, 64 * widen_factor)``."""
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn(out))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


@MODELS.register("wrn", help="Wide ResNet WRN-depth-k (options: depth=28, widen_factor=10, dropout=0.0)")
def wrn(
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    depth: int = 28,
    widen_factor: int = 10,
    dropout: float = 0.0,
) -> WideResNet:
    """Wide ResNet with ``depth = 6n + 4`` and width multiplier ``widen_factor``."""
    depth = check_int("wrn", "depth", depth, minimum=10)
    if (depth - 4) % 6:
        raise UserError(f"model 'wrn': depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}")
    return WideResNet(
        depth=depth,
        widen_factor=check_int("wrn", "widen_factor", widen_factor),
        dropout=check_probability("wrn", "dropout", dropout),
        num_classes=num_classes,
        in_channels=in_channels,
    )


@MODELS.register("wrn28_10", help="Wide ResNet-28-10 (Meta-Weight-Net), ~36.5M parameters")
def wrn28_10(*, num_classes: int, in_channels: int = 3, image_size: int = 32, dropout: float = 0.0) -> WideResNet:
    """WRN-28-10; ``dropout`` is the in-block dropout rate."""
    return wrn(num_classes=num_classes, in_channels=in_channels, image_size=image_size, dropout=dropout)
