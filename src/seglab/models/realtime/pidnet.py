"""PIDNet (Xu et al., CVPR 2023): three branches like a PID controller, PIDNet-S.

- Shared trunk as DDRNet's: two stride-2 3x3 convs, basic blocks at 1/4 and 1/8.
- I (integral) branch: basic blocks to 1/16 and 1/32, two bottlenecks to 1/64, then the
  parallel aggregation pyramid pooling module (PAPPM: DAPPM's pooled scales, each added to the
  unpooled one and processed together by one grouped 3x3 conv).
- P (proportional) branch at 1/8: basic blocks; after each I stage a pixel-attention-guided
  fusion (Pag) mixes in the I features by a per-pixel sigmoid similarity; a bottleneck ends it.
- D (derivative) branch at 1/8: a light basic block and bottlenecks, to which each I stage is
  added through a 3x3 conv ("difference" connections); it learns where the boundaries are.
- Boundary-attention-guided fusion (light Bag): sigma = sigmoid(D); the P and I features are
  weighted by sigma and 1 - sigma and fused by 1x1 convs; a 3x3 + 1x1 head predicts at 1/8.

``aux=True`` adds the paper's auxiliary semantic head on the P branch after the first Pag
(loss weight 0.4). The paper's boundary head on the D branch needs boundary labels and a
boundary loss that seglab's losses do not have, so it is not built: the D branch is trained
through the Bag's attention alone. PIDNet-S: 32 base channels, 3 I-branch blocks per stage.

The defaults follow the authors' code (XuJiacong/PIDNet), whose checkpoints load with
``weights=PATH``: stem convs with a bias, heads BN-ReLU-conv3x3-BN-ReLU-conv1x1, no input
padding (their code needs H and W multiples of 8; seglab's fusions resize, so any size runs).
A checkpoint's boundary head (``seghead_d``) is accounted for and left unused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import ModelError
from seglab.models.heads.common import resize_to
from seglab.models.realtime.authors_weights import KeyMap, maybe_load
from seglab.models.realtime.blocks import PaddedSegmentation, conv_bn
from seglab.models.realtime.ddrnet import (
    BasicBlock,
    Bottleneck,
    basic_stage,
    bn_relu_conv,
    segment_head,
)
from seglab.models.registry import register_model

AUX_WEIGHT = 0.4  # the paper's weight of the P-branch semantic loss


class PAPPM(nn.Module):
    """Parallel aggregation PPM: pooled scales (5/9/17/global) + the unpooled one, processed
    at once by a grouped 3x3 conv, concatenated, compressed, plus a 1x1 shortcut."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        pools = [nn.AvgPool2d(5, 2, 2), nn.AvgPool2d(9, 4, 4), nn.AvgPool2d(17, 8, 8),
                 nn.AdaptiveAvgPool2d(1)]
        self.scale0 = bn_relu_conv(in_channels, mid_channels, 1)
        self.scales = nn.ModuleList(
            nn.Sequential(p, bn_relu_conv(in_channels, mid_channels, 1)) for p in pools
        )
        self.process = bn_relu_conv(4 * mid_channels, 4 * mid_channels, 3, groups=4)
        self.compress = bn_relu_conv(5 * mid_channels, out_channels, 1)
        self.shortcut = bn_relu_conv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        base = self.scale0(x)
        pooled = [resize_to(scale(x), size) + base for scale in self.scales]
        mixed = self.process(torch.cat(pooled, dim=1))
        return self.compress(torch.cat([base, mixed], dim=1)) + self.shortcut(x)


class Pag(nn.Module):
    """Pixel-attention-guided fusion of P (high-res) with I (low-res, already compressed)."""

    def __init__(self, channels: int, mid_channels: int) -> None:
        super().__init__()
        self.f_p = conv_bn(channels, mid_channels, 1, act=False)
        self.f_i = conv_bn(channels, mid_channels, 1, act=False)

    def forward(self, p: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        size = p.shape[-2:]
        # f_i at I's own (lower) resolution, then resized: the authors' order, and cheaper
        sigma = torch.sigmoid((self.f_p(p) * resize_to(self.f_i(i), size)).sum(dim=1,
                                                                               keepdim=True))
        return (1 - sigma) * p + sigma * resize_to(i, size)


class LightBag(nn.Module):
    """Boundary-attention-guided fusion: D's sigmoid chooses between detail (P) and context (I)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_p = conv_bn(in_channels, out_channels, 1, act=False)
        self.conv_i = conv_bn(in_channels, out_channels, 1, act=False)

    def forward(self, p: torch.Tensor, i: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        sigma = torch.sigmoid(d)
        return self.conv_p((1 - sigma) * i + p) + self.conv_i(i + sigma * p)


class PIDBackbone(nn.Module):
    """Trunk and the three branches; returns (P after the first Pag, P, I, D), the last three
    at 1/8 (I through PAPPM and upsampled)."""

    def __init__(self, planes: int = 32, i_blocks: int = 3, p_blocks: int = 2,
                 ppm_channels: int = 96, stem_bias: bool = True) -> None:
        super().__init__()
        p = planes
        self.stem = nn.Sequential(
            nn.Conv2d(3, p, 3, 2, 1, bias=stem_bias), nn.BatchNorm2d(p), nn.ReLU(inplace=True),
            nn.Conv2d(p, p, 3, 2, 1, bias=stem_bias), nn.BatchNorm2d(p), nn.ReLU(inplace=True))
        self.layer1 = basic_stage(p, p, p_blocks)
        self.layer2 = basic_stage(p, 2 * p, p_blocks, stride=2)
        # I branch
        self.layer3 = basic_stage(2 * p, 4 * p, i_blocks, stride=2)
        self.layer4 = basic_stage(4 * p, 8 * p, i_blocks, stride=2)
        self.layer5 = nn.Sequential(Bottleneck(8 * p, 8 * p, stride=2),
                                    Bottleneck(16 * p, 8 * p))
        self.spp = PAPPM(16 * p, ppm_channels, 4 * p)
        # P branch
        self.layer3_p = basic_stage(2 * p, 2 * p, p_blocks)
        self.layer4_p = basic_stage(2 * p, 2 * p, p_blocks)
        self.layer5_p = Bottleneck(2 * p, 2 * p)
        self.compress3 = conv_bn(4 * p, 2 * p, 1, act=False)
        self.compress4 = conv_bn(8 * p, 2 * p, 1, act=False)
        self.pag3 = Pag(2 * p, p)
        self.pag4 = Pag(2 * p, p)
        # D branch
        self.layer3_d = BasicBlock(2 * p, p, last=True)
        self.layer4_d = Bottleneck(p, p)
        self.layer5_d = Bottleneck(2 * p, 2 * p)
        self.diff3 = conv_bn(4 * p, p, act=False)
        self.diff4 = conv_bn(8 * p, 2 * p, act=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = F.relu(self.layer2(F.relu(self.layer1(self.stem(x)))))
        size = x.shape[-2:]
        xp, xd = self.layer3_p(x), self.layer3_d(x)
        xi = F.relu(self.layer3(x))
        xp = self.pag3(xp, self.compress3(xi))
        xd = xd + resize_to(self.diff3(xi), size)
        aux = xp
        xi = F.relu(self.layer4(xi))
        xp, xd = self.layer4_p(F.relu(xp)), self.layer4_d(F.relu(xd))
        xp = self.pag4(xp, self.compress4(xi))
        xd = xd + resize_to(self.diff4(xi), size)
        xp, xd = self.layer5_p(F.relu(xp)), self.layer5_d(F.relu(xd))
        xi = resize_to(self.spp(self.layer5(xi)), size)
        return aux, xp, xi, xd

    def stages(self) -> list[list[nn.Module]]:
        """Stem, 1/4, 1/8, then the three branches' stages 3, 4 and 5 (+ PAPPM)."""
        return [[self.stem], [self.layer1], [self.layer2],
                [self.layer3, self.layer3_p, self.layer3_d, self.compress3, self.pag3,
                 self.diff3],
                [self.layer4, self.layer4_p, self.layer4_d, self.compress4, self.pag4,
                 self.diff4],
                [self.layer5, self.layer5_p, self.layer5_d, self.spp]]


class PIDNet(PaddedSegmentation):
    """PIDNet: ``backbone`` (trunk + P/I/D branches), ``bag`` fusion, ``head``, ``aux_head``."""

    stride = 64

    def __init__(self, num_classes: int, *, planes: int = 32, i_blocks: int = 3,
                 ppm_channels: int = 96, head_channels: int = 128, aux: bool = False,
                 dropout: float = 0.0, stem_bias: bool = True) -> None:
        super().__init__()
        if planes < 1 or i_blocks < 1:
            raise ModelError(f"PIDNet needs planes and i_blocks >= 1, got {planes}, {i_blocks}")
        self.backbone = PIDBackbone(planes, i_blocks, ppm_channels=ppm_channels,
                                    stem_bias=stem_bias)
        self.bag = LightBag(4 * planes, 4 * planes)
        self.head = segment_head(4 * planes, head_channels, num_classes, dropout)
        self.set_aux_head(segment_head(2 * planes, head_channels, num_classes, dropout)
                          if aux else None, AUX_WEIGHT)

    def logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        aux, p, i, d = self.backbone(x)
        result = {"out": self.head(self.bag(p, i, d))}
        if self.aux_head is not None:
            # the authors' in-place ReLU reaches the tensor their P-branch head reads
            result["aux"] = self.aux_head(F.relu(aux))
        return result

    def stages(self) -> list[list[nn.Module]]:
        return self.backbone.stages()


# The authors' names: conv1 (stem), layer1..5 (I), layer3_..5_ (P), layer3_d..5_d (D),
# compression3/4, pag3/4, diff3/4, spp.scale0..4/scale_process/compression/shortcut, dfm (Bag),
# final_layer; with augment=True also seghead_p (P-branch aux) and seghead_d (boundary).
AUTHORS_KEYS = KeyMap(
    groups=(("conv1.", "backbone.stem."),
            *((f"layer{i}.", f"backbone.layer{i}.") for i in range(1, 6)),
            *((f"layer{i}_.", f"backbone.layer{i}_p.") for i in range(3, 6)),
            *((f"layer{i}_d.", f"backbone.layer{i}_d.") for i in range(3, 6)),
            *((f"{m}{i}.", f"backbone.{n}{i}.") for i in (3, 4)
              for m, n in (("compression", "compress"), ("pag", "pag"), ("diff", "diff"))),
            ("spp.scale0.", "backbone.spp.scale0."),
            *((f"spp.scale{i}.", f"backbone.spp.scales.{i - 1}.") for i in range(1, 5)),
            ("spp.scale_process.", "backbone.spp.process."),
            ("spp.compression.", "backbone.spp.compress."),
            ("spp.shortcut.", "backbone.spp.shortcut."),
            ("dfm.", "bag."), ("final_layer.", "head."), ("seghead_p.", "aux_head.")),
    optional=("seghead_p.",),
    ignore=("seghead_d.",),  # the boundary head: seglab has no boundary loss to train it
)


def build_pidnet_s(num_classes: int, *, aux: bool = False, head_channels: int = 128,
                   dropout: float = 0.0, stem_bias: bool = True, pad: bool = False,
                   weights: str | None = None) -> nn.Module:
    """PIDNet-S (32 base channels, 7.6M parameters at 19 classes).

    ``stem_bias``, ``pad`` (zero-pad the input to a multiple of 64): the authors' conventions
    by default. ``weights``: a local file, the authors' checkpoint (``PIDNet_S_*.pt``, saved
    from their training wrapper with ``model.`` prefixes; its P-branch head is used with
    ``aux=True``) or a seglab state dict.
    """
    model = PIDNet(num_classes, planes=32, i_blocks=3, ppm_channels=96,
                   head_channels=head_channels, aux=aux, dropout=dropout, stem_bias=stem_bias)
    model.pad = pad
    return maybe_load(model, weights, AUTHORS_KEYS)


register_model(
    "pidnet_s", build_pidnet_s, family="pidnet", backbone="none (from scratch)",
    description="PIDNet-S: detail, context and boundary branches (real-time)",
    paper="Xu et al., PIDNet, CVPR 2023",
)
