"""DDRNet (Hong et al., 2021): deep dual-resolution network, DDRNet-23-slim and DDRNet-23.

A ResNet-style stem (two stride-2 3x3 convs, then basic blocks) reaches stride 8; from there a
high-resolution branch stays at 1/8 while a low-resolution branch goes to 1/16, 1/32 and 1/64.
After each stage the branches exchange information (bilateral fusion): the low branch is
compressed by a 1x1 conv and upsampled into the high one, the high branch is downsampled by
strided 3x3 convs into the low one. The last stage is one bottleneck block per branch; the
low branch ends in the deep aggregation pyramid pooling module (DAPPM: average pools of
kernel 5/9/17 and global, each processed hierarchically by a 3x3 conv, concatenated and
compressed), upsampled and added to the high branch, and a 3x3 conv-BN-ReLU + 1x1 head
predicts at 1/8. ``aux=True`` adds the paper's auxiliary head on the high-resolution branch
after the conv4 stage (loss weight 0.4).

Widths: ``planes`` 32 (slim) or 64 (DDRNet-23); the high branch has ``2 * planes`` channels.
The published networks are pre-trained on ImageNet; seglab builds them from scratch, or loads
the authors' segmentation checkpoints (ydhongHIT/DDRNet) with ``weights=PATH``. The defaults
follow the authors' code: stem convs with a bias, both heads BN-ReLU-conv3x3-BN-ReLU-conv1x1 (the
auxiliary one on the fused high branch before its ReLU), no input padding (their code needs H
and W multiples of 8; seglab's fusion resizes, so any size runs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import ModelError
from seglab.models.heads.common import resize_to
from seglab.models.realtime.authors_weights import KeyMap, maybe_load
from seglab.models.realtime.blocks import PaddedSegmentation, conv_bn
from seglab.models.registry import register_model

AUX_WEIGHT = 0.4  # the paper's weight of the auxiliary loss


class BasicBlock(nn.Module):
    """ResNet basic block; ``last`` blocks of a stage skip the final ReLU (fusion adds first)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 last: bool = False) -> None:
        super().__init__()
        self.conv1 = conv_bn(in_channels, planes, stride=stride)
        self.conv2 = conv_bn(planes, planes, act=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != planes:
            self.shortcut = conv_bn(in_channels, planes, 1, stride=stride, act=False)
        self.last = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x)) + self.shortcut(x)
        return y if self.last else F.relu(y)


class Bottleneck(nn.Module):
    """ResNet bottleneck with expansion 2 (the conv5 stage of both branches), no final ReLU."""

    expansion = 2

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.body = nn.Sequential(conv_bn(in_channels, planes, 1),
                                  conv_bn(planes, planes, stride=stride),
                                  conv_bn(planes, out, 1, act=False))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out:
            self.shortcut = conv_bn(in_channels, out, 1, stride=stride, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


def basic_stage(in_channels: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """``blocks`` basic blocks (the first strided), the last without its final ReLU."""
    layers = [BasicBlock(in_channels, planes, stride, last=blocks == 1)]
    layers += [BasicBlock(planes, planes, last=i == blocks - 1) for i in range(1, blocks)]
    return nn.Sequential(*layers)


def bn_relu_conv(in_channels: int, out_channels: int, kernel_size: int,
                 groups: int = 1) -> nn.Sequential:
    """Pre-activation conv (BN -> ReLU -> conv), as DDRNet's pooling module and head use."""
    return nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                         nn.Conv2d(in_channels, out_channels, kernel_size,
                                   padding=kernel_size // 2, groups=groups, bias=False))


class DAPPM(nn.Module):
    """Deep aggregation pyramid pooling: pooled scales fused hierarchically, plus a shortcut."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        pools = [nn.AvgPool2d(5, 2, 2), nn.AvgPool2d(9, 4, 4), nn.AvgPool2d(17, 8, 8),
                 nn.AdaptiveAvgPool2d(1)]
        self.scale0 = bn_relu_conv(in_channels, mid_channels, 1)
        self.scales = nn.ModuleList(
            nn.Sequential(p, bn_relu_conv(in_channels, mid_channels, 1)) for p in pools
        )
        self.process = nn.ModuleList(bn_relu_conv(mid_channels, mid_channels, 3)
                                     for _ in pools)
        self.compress = bn_relu_conv(5 * mid_channels, out_channels, 1)
        self.shortcut = bn_relu_conv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        outs = [self.scale0(x)]
        for scale, process in zip(self.scales, self.process, strict=True):
            outs.append(process(resize_to(scale(x), size) + outs[-1]))
        return self.compress(torch.cat(outs, dim=1)) + self.shortcut(x)


class DualResolutionBackbone(nn.Module):
    """Stem to 1/8, then the two branches with bilateral fusion after conv4 and conv5_1.

    ``forward`` returns (high branch at conv4 for the aux head, high branch at conv5_2,
    low branch at conv5_2 at 1/64).
    """

    def __init__(self, planes: int = 32, blocks: int = 2, stem_bias: bool = True) -> None:
        super().__init__()
        p, hp = planes, 2 * planes
        self.stem = nn.Sequential(
            nn.Conv2d(3, p, 3, 2, 1, bias=stem_bias), nn.BatchNorm2d(p), nn.ReLU(inplace=True),
            nn.Conv2d(p, p, 3, 2, 1, bias=stem_bias), nn.BatchNorm2d(p), nn.ReLU(inplace=True))
        self.layer1 = basic_stage(p, p, blocks)
        self.layer2 = basic_stage(p, 2 * p, blocks, stride=2)
        # conv4: low 1/16 (4p), high 1/8 (2p), then fusion
        self.layer3 = basic_stage(2 * p, 4 * p, blocks, stride=2)
        self.layer3_high = basic_stage(2 * p, hp, blocks)
        self.compress3 = conv_bn(4 * p, hp, 1, act=False)
        self.down3 = conv_bn(hp, 4 * p, stride=2, act=False)
        # conv5_1: low 1/32 (8p), high 1/8, fusion (two strided convs down)
        self.layer4 = basic_stage(4 * p, 8 * p, blocks, stride=2)
        self.layer4_high = basic_stage(hp, hp, blocks)
        self.compress4 = conv_bn(8 * p, hp, 1, act=False)
        self.down4 = nn.Sequential(conv_bn(hp, 4 * p, stride=2),
                                   conv_bn(4 * p, 8 * p, stride=2, act=False))
        # conv5_2: one bottleneck per branch; the low one strided to 1/64
        self.layer5 = Bottleneck(8 * p, 8 * p, stride=2)
        self.layer5_high = Bottleneck(hp, hp)
        self.channels = (hp * Bottleneck.expansion, 8 * p * Bottleneck.expansion)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer2(F.relu(self.layer1(self.stem(x))))
        x = F.relu(x)
        low, high = self.layer3(x), self.layer3_high(x)
        size = high.shape[-2:]
        low, high = (low + self.down3(F.relu(high)),
                     high + resize_to(self.compress3(F.relu(low)), size))
        conv4 = high
        low, high = self.layer4(F.relu(low)), self.layer4_high(F.relu(high))
        low, high = (low + self.down4(F.relu(high)),
                     high + resize_to(self.compress4(F.relu(low)), size))
        return conv4, self.layer5_high(F.relu(high)), self.layer5(F.relu(low))

    def stages(self) -> list[list[nn.Module]]:
        """conv1 (stem), conv2, conv3, conv4 (+ fusion), conv5_1 (+ fusion), conv5_2."""
        return [[self.stem], [self.layer1], [self.layer2],
                [self.layer3, self.layer3_high, self.compress3, self.down3],
                [self.layer4, self.layer4_high, self.compress4, self.down4],
                [self.layer5, self.layer5_high]]


def segment_head(in_channels: int, mid_channels: int, num_classes: int,
                 dropout: float = 0.0) -> nn.Sequential:
    """BN-ReLU-conv3x3, BN-ReLU, (dropout,) 1x1 classifier with bias: both DDRNet heads."""
    return nn.Sequential(bn_relu_conv(in_channels, mid_channels, 3),
                         nn.BatchNorm2d(mid_channels), nn.ReLU(inplace=True),
                         nn.Dropout2d(dropout), nn.Conv2d(mid_channels, num_classes, 1))


class DDRNet(PaddedSegmentation):
    """DDRNet: ``backbone`` (both branches), ``spp`` (DAPPM), ``head``, optional ``aux_head``."""

    stride = 64

    def __init__(self, num_classes: int, *, planes: int = 32, blocks: int = 2,
                 spp_channels: int = 128, head_channels: int = 64, aux: bool = False,
                 dropout: float = 0.0, stem_bias: bool = True) -> None:
        super().__init__()
        if planes < 1 or blocks < 1:
            raise ModelError(f"DDRNet needs planes and blocks >= 1, got {planes}, {blocks}")
        self.backbone = DualResolutionBackbone(planes, blocks, stem_bias)
        high_channels, low_channels = self.backbone.channels
        self.spp = DAPPM(low_channels, spp_channels, high_channels)
        self.head = segment_head(high_channels, head_channels, num_classes, dropout)
        self.set_aux_head(segment_head(2 * planes, head_channels, num_classes, dropout)
                          if aux else None, AUX_WEIGHT)

    def logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        conv4, high, low = self.backbone(x)
        out = self.head(high + resize_to(self.spp(low), high.shape[-2:]))
        result = {"out": out}
        if self.aux_head is not None:
            result["aux"] = self.aux_head(conv4)
        return result

    def stages(self) -> list[list[nn.Module]]:
        return self.backbone.stages()


# The authors' names (DualResNet): conv1 (stem), layer1..5, layer3_..5_ (the high branch),
# compression3/4, down3/4, spp.scale0..4/process1..4/compression/shortcut,
# final_layer and, when trained with augment=True, seghead_extra.
AUTHORS_KEYS = KeyMap(
    groups=(("conv1.", "backbone.stem."),
            *((f"layer{i}.", f"backbone.layer{i}.") for i in range(1, 6)),
            ("layer3_.", "backbone.layer3_high."), ("layer4_.", "backbone.layer4_high."),
            ("layer5_.", "backbone.layer5_high."),
            ("compression3.", "backbone.compress3."), ("compression4.", "backbone.compress4."),
            ("down3.", "backbone.down3."), ("down4.", "backbone.down4."),
            ("spp.scale0.", "spp.scale0."),
            *((f"spp.scale{i}.", f"spp.scales.{i - 1}.") for i in range(1, 5)),
            *((f"spp.process{i}.", f"spp.process.{i - 1}.") for i in range(1, 5)),
            ("spp.compression.", "spp.compress."), ("spp.shortcut.", "spp.shortcut."),
            ("final_layer.", "head."), ("seghead_extra.", "aux_head.")),
    optional=("seghead_extra.",),
)


def _build(num_classes: int, planes: int, head_channels: int, aux: bool, dropout: float,
           stem_bias: bool, pad: bool, weights: str | None) -> nn.Module:
    model = DDRNet(num_classes, planes=planes, head_channels=head_channels, aux=aux,
                   dropout=dropout, stem_bias=stem_bias)
    model.pad = pad
    return maybe_load(model, weights, AUTHORS_KEYS)


def build_ddrnet23_slim(num_classes: int, *, aux: bool = False, dropout: float = 0.0,
                        head_channels: int = 64, stem_bias: bool = True, pad: bool = False,
                        weights: str | None = None) -> nn.Module:
    """DDRNet-23-slim (planes 32, 5.7M parameters at 19 classes).

    ``stem_bias``, ``pad`` (zero-pad the input to a multiple of 64): the authors' conventions
    by default. ``weights``: a local file, the authors' segmentation checkpoint (``model.``
    prefixes and the loss buffers of their training wrapper are handled; its auxiliary head
    is used with ``aux=True``, ignored otherwise) or a seglab state dict.
    """
    return _build(num_classes, 32, head_channels, aux, dropout, stem_bias, pad, weights)


def build_ddrnet23(num_classes: int, *, aux: bool = False, dropout: float = 0.0,
                   head_channels: int = 128, stem_bias: bool = True, pad: bool = False,
                   weights: str | None = None) -> nn.Module:
    """DDRNet-23 (planes 64, 20.1M parameters at 19 classes); options as ``ddrnet23_slim``."""
    return _build(num_classes, 64, head_channels, aux, dropout, stem_bias, pad, weights)


_PAPER = "Hong et al., Deep Dual-resolution Networks (DDRNet), 2021"
register_model("ddrnet23_slim", build_ddrnet23_slim, family="ddrnet",
               backbone="none (from scratch)",
               description="DDRNet-23-slim: dual-resolution branches + DAPPM (real-time)",
               paper=_PAPER)
register_model("ddrnet23", build_ddrnet23, family="ddrnet", backbone="none (from scratch)",
               description="DDRNet-23: dual-resolution branches + DAPPM, twice as wide",
               paper=_PAPER)
