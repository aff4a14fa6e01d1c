"""U-Net decoder on any encoder (Ronneberger et al., 2015).

From the deepest features up: 2x2 transposed-conv upsampling, concatenation with the encoder
features of the same stride (the skip), then two 3x3 conv-BN-ReLU. Stages with the same
stride as the previous one (dilated encoders) are fused without upsampling.
"""

from __future__ import annotations

import torch
from torch import nn

from seglab.models.heads.common import ConvBNReLU, match_size


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-BN-ReLU, the unit of every U-Net level."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(ConvBNReLU(in_channels, out_channels, 3),
                         ConvBNReLU(out_channels, out_channels, 3))


class UpBlock(nn.Module):
    """Upsample by ``factor`` (transposed conv, or 1x1 conv when 1), concat skip, DoubleConv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int,
                 factor: int = 2) -> None:
        super().__init__()
        if factor == 1:
            self.up = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.up = nn.ConvTranspose2d(in_channels, out_channels, factor, stride=factor)
        self.conv = DoubleConv(out_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([match_size(x, skip.shape[-2:]), skip], dim=1)
        return self.conv(x)


class UNetDecoder(nn.Module):
    """Decode encoder features (shallow to deep, with their strides) to stride-1 logits."""

    def __init__(self, encoder_channels: list[int], reductions: list[int], num_classes: int,
                 *, decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
                 dropout: float = 0.0) -> None:
        super().__init__()
        levels = len(encoder_channels)
        if len(decoder_channels) < levels:
            raise ValueError(f"decoder_channels needs {levels} entries, got {decoder_channels}")
        blocks = []
        in_ch = encoder_channels[-1]
        for i, level in enumerate(range(levels - 2, -1, -1)):
            factor = reductions[level + 1] // reductions[level]
            blocks.append(UpBlock(in_ch, encoder_channels[level], decoder_channels[i], factor))
            in_ch = decoder_channels[i]
        # Encoders start at stride 2 (or more): one last upsampling step without a skip.
        self.final_factor = reductions[0]
        if self.final_factor > 1:
            blocks.append(UpBlock(in_ch, 0, decoder_channels[levels - 1], self.final_factor))
            in_ch = decoder_channels[levels - 1]
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(in_ch, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        skips = features[-2::-1]
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < len(skips) else None)
        return self.classifier(self.dropout(x))
