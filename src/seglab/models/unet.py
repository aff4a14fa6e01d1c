"""The classic U-Net trained from scratch (Ronneberger et al., 2015), and U-Net with ASPP.

Encoder: a double 3x3 conv-BN-ReLU at full resolution, then four (max-pool, double conv)
levels; widths 64, 128, 256, 512, 1024 for ``base_channels=64``. Decoder: 2x2 transposed-conv
up, concatenation with the encoder level of the same size, double conv; 1x1 classifier.
Padded convolutions keep sizes, so any H, W works (odd sizes are reconciled after each up).
``unet_aspp`` replaces the bottleneck double conv with ASPP (multi-scale context at stride 16).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seglab.errors import ModelError
from seglab.models.heads.aspp import ASPP
from seglab.models.heads.unet import DoubleConv, UpBlock
from seglab.models.registry import register_model


class UNetEncoder(nn.Module):
    """Full-resolution double conv, then ``depth`` (max-pool, double conv) levels."""

    def __init__(self, base_channels: int = 64, depth: int = 4, *,
                 aspp_rates: Sequence[int] | None = None, in_chans: int = 3) -> None:
        super().__init__()
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.inc = DoubleConv(in_chans, widths[0])
        downs: list[nn.Module] = []
        for i in range(1, depth + 1):
            if i == depth and aspp_rates is not None:
                body: nn.Module = ASPP(widths[i - 1], widths[i], tuple(aspp_rates), dropout=0.1)
            else:
                body = DoubleConv(widths[i - 1], widths[i])
            downs.append(nn.Sequential(nn.MaxPool2d(2), body))
        self.downs = nn.ModuleList(downs)
        self.channels = widths

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.inc(x)]
        for down in self.downs:
            features.append(down(features[-1]))
        return features

    def stages(self) -> list[list[nn.Module]]:
        """Encoder levels from full resolution to the bottleneck."""
        return [[self.inc], *[[d] for d in self.downs]]


class UNet(nn.Module):
    """U-Net: ``UNetEncoder`` (as ``backbone``) + transposed-conv decoder + 1x1 classifier."""

    def __init__(self, num_classes: int, *, base_channels: int = 64, depth: int = 4,
                 aspp_rates: Sequence[int] | None = None, dropout: float = 0.0,
                 in_chans: int = 3) -> None:
        super().__init__()
        if base_channels < 1 or depth < 1 or in_chans < 1:
            raise ModelError(f"U-Net needs base_channels, depth and in_chans >= 1, got "
                             f"{base_channels}, {depth}, {in_chans}")
        self.backbone = UNetEncoder(base_channels, depth, aspp_rates=aspp_rates,
                                    in_chans=in_chans)
        widths = self.backbone.channels
        self.ups = nn.ModuleList(
            UpBlock(widths[i], widths[i - 1], widths[i - 1]) for i in range(depth, 0, -1)
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        y = features[-1]
        for up, skip in zip(self.ups, reversed(features[:-1]), strict=True):
            y = up(y, skip)
        return {"out": self.classifier(self.dropout(y))}

    def stages(self) -> list[list[nn.Module]]:
        return self.backbone.stages()


def build_unet(num_classes: int, *, base_channels: int = 64, depth: int = 4,
               dropout: float = 0.0, in_chans: int = 3) -> nn.Module:
    """Classic U-Net (64..1024 channels by default), trained from scratch."""
    return UNet(num_classes, base_channels=base_channels, depth=depth, dropout=dropout,
                in_chans=in_chans)


def build_unet_aspp(num_classes: int, *, base_channels: int = 64, depth: int = 4,
                    atrous_rates: Sequence[int] = (6, 12, 18), dropout: float = 0.0,
                    in_chans: int = 3) -> nn.Module:
    """U-Net whose bottleneck double conv is an ASPP block (rates at stride 2**depth)."""
    rates = tuple(int(r) for r in atrous_rates)
    if not rates or min(rates) < 1:
        raise ModelError(f"atrous_rates must be positive integers, got {atrous_rates!r}")
    return UNet(num_classes, base_channels=base_channels, depth=depth, aspp_rates=rates,
                dropout=dropout, in_chans=in_chans)


_PAPER = "Ronneberger et al., U-Net, MICCAI 2015"
register_model("unet", build_unet, family="unet", backbone="none (from scratch)",
               description="classic U-Net, 64..1024 channels, transposed-conv up", paper=_PAPER)
register_model("unet_aspp", build_unet_aspp, family="unet", backbone="none (from scratch)",
               description="U-Net with an ASPP bottleneck (rates 6,12,18)", paper=_PAPER)
