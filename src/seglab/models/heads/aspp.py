"""Atrous spatial pyramid pooling and the DeepLabV3 head (Chen et al., 2017).

Parallel 1x1 and dilated 3x3 convolutions (rates e.g. 6/12/18 at output stride 16,
12/24/36 at output stride 8) plus an image-level pooling branch, concatenated and projected.
"""

from __future__ import annotations

import torch
from torch import nn

from seglab.models.heads.common import ConvBNReLU


class ImagePooling(nn.Module):
    """Global average pool -> 1x1 conv-BN-ReLU -> broadcast back to the input size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = ConvBNReLU(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x)).expand(-1, -1, *x.shape[-2:])


class ASPP(nn.Module):
    """1x1 branch, one dilated 3x3 branch per rate, optional image pooling, 1x1 projection."""

    def __init__(self, in_channels: int, out_channels: int = 256,
                 rates: tuple[int, ...] = (12, 24, 36), *, image_pooling: bool = True,
                 dropout: float = 0.5) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvBNReLU(in_channels, out_channels, 1)]
        branches += [ConvBNReLU(in_channels, out_channels, 3, dilation=r) for r in rates]
        if image_pooling:
            branches.append(ImagePooling(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            ConvBNReLU(out_channels * len(branches), out_channels, 1), nn.Dropout(dropout)
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


class DeepLabV3Head(nn.Module):
    """ASPP -> 3x3 conv-BN-ReLU -> 1x1 classifier on the deepest feature map."""

    def __init__(self, in_channels: int, num_classes: int, *, channels: int = 256,
                 rates: tuple[int, ...] = (12, 24, 36), dropout: float = 0.5,
                 in_index: int = -1) -> None:
        super().__init__()
        self.in_index = in_index
        self.aspp = ASPP(in_channels, channels, tuple(rates), dropout=dropout)
        self.block = ConvBNReLU(channels, channels, 3)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.block(self.aspp(features[self.in_index])))

