"""ENet (Paszke et al., 2016): a tiny encoder-decoder of residual bottlenecks, from scratch.

- Initial block: a 3x3 stride-2 conv (13 filters) concatenated with a 2x2 max pool of the
  input (16 channels at 1/2).
- Bottleneck: projection (1x1, or 2x2 stride 2 when downsampling) to a quarter of the
  channels, a main conv (3x3 regular, dilated, or asymmetric 5x1 + 1x5), a 1x1 expansion,
  spatial dropout, added to the main branch; BN + PReLU throughout. Downsampling bottlenecks
  max-pool the main branch (keeping the indices) and zero-pad its channels.
- Encoder (``backbone``): stage 1 (downsample to 64 at 1/4, four bottlenecks, dropout 0.01),
  stages 2 and 3 (128 at 1/8; regular, dilated 2/4/8/16 and asymmetric bottlenecks interleaved;
  dropout 0.1; stage 2 starts by downsampling).
- Decoder: upsampling bottlenecks (main branch: 1x1 conv + max-unpool with the encoder's
  indices; extension: 1x1, 3x3 transposed stride 2, 1x1) to 64 at 1/4 and 16 at 1/2, and a
  transposed conv to the classes at full resolution.

ENet has no auxiliary head (and no ``aux`` option).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models.realtime.blocks import PaddedSegmentation
from seglab.models.registry import register_model


def _bn_prelu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.PReLU(channels)]


class InitialBlock(nn.Module):
    """3x3 stride-2 conv (13) || 2x2 max pool of the RGB input -> 16 channels, BN, PReLU."""

    def __init__(self, out_channels: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, out_channels - 3, 3, stride=2, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.post = nn.Sequential(*_bn_prelu(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(torch.cat([self.conv(x), self.pool(x)], dim=1))


class Bottleneck(nn.Module):
    """Regular / dilated / asymmetric bottleneck (same channels, same size)."""

    def __init__(self, channels: int, *, dilation: int = 1, asymmetric: bool = False,
                 dropout: float = 0.1) -> None:
        super().__init__()
        mid = channels // 4
        if asymmetric:
            main: list[nn.Module] = [nn.Conv2d(mid, mid, (5, 1), padding=(2, 0), bias=False),
                                     nn.Conv2d(mid, mid, (1, 5), padding=(0, 2), bias=False)]
        else:
            main = [nn.Conv2d(mid, mid, 3, padding=dilation, dilation=dilation, bias=False)]
        self.body = nn.Sequential(
            nn.Conv2d(channels, mid, 1, bias=False), *_bn_prelu(mid),
            *main, *_bn_prelu(mid),
            nn.Conv2d(mid, channels, 1, bias=False), nn.BatchNorm2d(channels),
            nn.Dropout2d(dropout),
        )
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class DownBottleneck(nn.Module):
    """Downsampling bottleneck; returns the output and the max-pool indices for the decoder."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        mid = in_channels // 4
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, mid, 2, stride=2, bias=False), *_bn_prelu(mid),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), *_bn_prelu(mid),
            nn.Conv2d(mid, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
            nn.Dropout2d(dropout),
        )
        self.pad = out_channels - in_channels
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        main, indices = F.max_pool2d(x, 2, return_indices=True)
        main = F.pad(main, (0, 0, 0, 0, 0, self.pad))
        return self.act(main + self.body(x)), indices


class UpBottleneck(nn.Module):
    """Upsampling bottleneck: max-unpool of a 1x1-projected main branch + transposed conv."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        mid = in_channels // 4
        self.main = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                  nn.BatchNorm2d(out_channels))
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, bias=False), *_bn_prelu(mid),
            nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1, bias=False),
            *_bn_prelu(mid),
            nn.Conv2d(mid, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
            nn.Dropout2d(dropout),
        )
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        # The input is padded to a multiple of 8, so every pooled size doubles back exactly.
        main = F.max_unpool2d(self.main(x), indices, 2,
                              output_size=[2 * s for s in x.shape[-2:]])
        return self.act(main + self.body(x))


def _stage23(dropout: float) -> list[nn.Module]:
    """Bottlenecks x.1 .. x.8 of stages 2 and 3 (128 channels)."""
    return [Bottleneck(128, dropout=dropout), Bottleneck(128, dilation=2, dropout=dropout),
            Bottleneck(128, asymmetric=True, dropout=dropout),
            Bottleneck(128, dilation=4, dropout=dropout), Bottleneck(128, dropout=dropout),
            Bottleneck(128, dilation=8, dropout=dropout),
            Bottleneck(128, asymmetric=True, dropout=dropout),
            Bottleneck(128, dilation=16, dropout=dropout)]


class ENetEncoder(nn.Module):
    """Initial block and stages 1-3; returns the 1/8 features and both pooling indices."""

    def __init__(self, dropout: float = 0.1, stage1_dropout: float = 0.01) -> None:
        super().__init__()
        self.initial = InitialBlock(16)
        self.down1 = DownBottleneck(16, 64, stage1_dropout)
        self.stage1 = nn.Sequential(*[Bottleneck(64, dropout=stage1_dropout) for _ in range(4)])
        self.down2 = DownBottleneck(64, 128, dropout)
        self.stage2 = nn.Sequential(*_stage23(dropout))
        self.stage3 = nn.Sequential(*_stage23(dropout))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, indices1 = self.down1(self.initial(x))
        x, indices2 = self.down2(self.stage1(x))
        return self.stage3(self.stage2(x)), indices1, indices2

    def stages(self) -> list[list[nn.Module]]:
        """Initial block, stage 1 (with its downsampling), stage 2 (likewise), stage 3."""
        return [[self.initial], [self.down1, self.stage1], [self.down2, self.stage2],
                [self.stage3]]


class ENet(PaddedSegmentation):
    """ENet: ``backbone`` (encoder) + upsampling decoder + transposed-conv classifier."""

    stride = 8

    def __init__(self, num_classes: int, *, dropout: float = 0.1) -> None:
        super().__init__()
        self.backbone = ENetEncoder(dropout)
        self.up4 = UpBottleneck(128, 64, dropout)
        self.stage4 = nn.Sequential(Bottleneck(64, dropout=dropout),
                                    Bottleneck(64, dropout=dropout))
        self.up5 = UpBottleneck(64, 16, dropout)
        self.stage5 = Bottleneck(16, dropout=dropout)
        self.fullconv = nn.ConvTranspose2d(16, num_classes, 3, stride=2, padding=1,
                                           output_padding=1)
        self.aux = False

    def logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y, indices1, indices2 = self.backbone(x)
        y = self.stage4(self.up4(y, indices2))
        y = self.stage5(self.up5(y, indices1))
        return {"out": self.fullconv(y)}

    def stages(self) -> list[list[nn.Module]]:
        return self.backbone.stages()


def build_enet(num_classes: int, *, dropout: float = 0.1) -> nn.Module:
    """ENet from scratch (0.36M parameters at 19 classes)."""
    return ENet(num_classes, dropout=dropout)


register_model(
    "enet", build_enet, family="enet", backbone="none (from scratch)",
    description="ENet: tiny residual-bottleneck encoder-decoder, max-unpool decoder",
    paper="Paszke et al., ENet, arXiv 2016",
)
