"""Lite R-ASPP head (Howard et al., Searching for MobileNetV3, 2019).

The deep features go through a 1x1 conv-BN-ReLU gated by a squeeze-and-excitation style
global-pooling branch (sigmoid); the result is classified, upsampled to the stride-8
features and added to a 1x1 classifier on those. The paper pools with a large strided
kernel tuned to 1024x2048 inputs; global pooling (as in torchvision) works at any size.
"""

from __future__ import annotations

import torch
from torch import nn

from seglab.models.heads.common import ConvBNReLU, resize_to


class LRASPPHead(nn.Module):
    """LR-ASPP on (low = ``low_index``, high = ``in_index``) features."""

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, *,
                 channels: int = 128, in_index: int = -1, low_index: int = 2) -> None:
        super().__init__()
        self.in_index, self.low_index = in_index, low_index
        self.branch = ConvBNReLU(high_channels, channels, 1)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_channels, channels, 1, bias=False),
            nn.Sigmoid(),
        )
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        low, high = features[self.low_index], features[self.in_index]
        x = self.branch(high) * self.gate(high)
        x = resize_to(x, low.shape[-2:])
        return self.low_classifier(low) + self.high_classifier(x)
