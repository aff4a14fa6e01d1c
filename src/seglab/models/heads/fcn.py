"""FCN head (Long et al., 2015, as used by torchvision and as PSPNet's auxiliary head)."""

from __future__ import annotations

import torch
from torch import nn

from seglab.models.heads.common import ConvBNReLU


class FCNHead(nn.Module):
    """3x3 conv-BN-ReLU, dropout, 1x1 classifier on one feature map (``in_index``)."""

    def __init__(self, in_channels: int, num_classes: int, *, channels: int | None = None,
                 dropout: float = 0.1, in_index: int = -1) -> None:
        super().__init__()
        channels = channels or max(in_channels // 4, 16)
        self.in_index = in_index
        self.block = ConvBNReLU(in_channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.dropout(self.block(features[self.in_index])))
