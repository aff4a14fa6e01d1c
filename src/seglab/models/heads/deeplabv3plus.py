"""DeepLabV3+ decoder (Chen et al., Encoder-Decoder with Atrous Separable Convolution, 2018).

ASPP on the deep features, upsampled x4 and concatenated with stride-4 low-level features
reduced to 48 channels, then two 3x3 convs refine object boundaries before the classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from seglab.models.heads.aspp import ASPP
from seglab.models.heads.common import ConvBNReLU, resize_to


class DeepLabV3PlusHead(nn.Module):
    """ASPP(high) + 1x1-reduced low-level skip -> two 3x3 convs -> classifier."""

    def __init__(self, in_channels: int, low_channels: int, num_classes: int, *,
                 channels: int = 256, rates: tuple[int, ...] = (6, 12, 18),
                 low_reduced: int = 48, dropout: float = 0.5, in_index: int = -1,
                 low_index: int = 1) -> None:
        super().__init__()
        self.in_index, self.low_index = in_index, low_index
        self.aspp = ASPP(in_channels, channels, tuple(rates), dropout=dropout)
        self.reduce_low = ConvBNReLU(low_channels, low_reduced, 1)
        self.fuse = nn.Sequential(
            ConvBNReLU(channels + low_reduced, channels, 3),
            ConvBNReLU(channels, channels, 3),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        low = self.reduce_low(features[self.low_index])
        high = resize_to(self.aspp(features[self.in_index]), low.shape[-2:])
        return self.classifier(self.fuse(torch.cat([high, low], dim=1)))
