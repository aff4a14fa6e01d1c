"""BiSeNet V2 (Yu et al., IJCV 2021): a detail branch and a semantic branch, guided aggregation.

- Detail branch (wide, shallow, stride 8): three stages of 3x3 conv-BN-ReLU, widths 64, 64,
  128 (2, 3 and 3 convolutions, the first of each with stride 2).
- Semantic branch (narrow, deep, stride 32; channel ratio 1/4 of the detail branch): a stem
  block (3x3 stride-2 conv, then a 1x1 + 3x3-stride-2 path beside a 3x3 max pool, concatenated
  and fused by a 3x3 conv; 16 channels at 1/4), gather-and-expand (GE) layers (expansion 6)
  at 1/8 (32), 1/16 (64), 1/32 (128: one stride-2 and three stride-1 layers), then the
  context embedding block (global average pool, BN, 1x1 conv, broadcast add, 3x3 conv).
- Bilateral guided aggregation (BGA): each branch gates the other at both resolutions
  (sigmoid of the semantic features multiplies the detail features at 1/8; the detail
  features pooled to 1/32 are multiplied by the semantic gate), summed and fused by a 3x3 conv.
- Head: 3x3 conv to 1024 channels, BN, ReLU, dropout, 1x1 classifier, upsampled x8.

``aux=True`` adds the paper's booster training head (a segmentation head on a semantic-branch
stage, 128 mid channels, loss weight 1). The paper attaches four boosters (stages 2 to 5);
seglab's output dict carries one ``"aux"`` map, so one booster on ``aux_stage`` is built.

The authors released no code. The defaults follow the implementation whose weights are
published (CoinCheung/BiSeNet, ``model_final_v2_city.pth``), so they load with
``weights=PATH``: a ReLU after each gather-and-expand layer's last depthwise conv
(``ge_relu``), nearest-neighbour x4 upsampling inside the aggregation (``bga_mode``), and
its booster layout (conv 3x3 to 128, x2 nearest upsampling, conv 3x3 to ``factor**2``
channels, 1x1 classifier). It needs H and W multiples of 32: seglab pads to that multiple.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import ModelError
from seglab.models.heads.common import resize_to
from seglab.models.realtime.authors_weights import KeyMap, maybe_load
from seglab.models.realtime.blocks import PaddedSegmentation, SegHead, conv_bn
from seglab.models.registry import register_model

BOOSTER_WEIGHT = 1.0  # the paper weighs every booster loss by alpha = 1


class DetailBranch(nn.Module):
    """Three stages of 3x3 conv-BN-ReLU to stride 8."""

    def __init__(self, widths: tuple[int, int, int] = (64, 64, 128)) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.s1 = nn.Sequential(conv_bn(3, c1, stride=2), conv_bn(c1, c1))
        self.s2 = nn.Sequential(conv_bn(c1, c2, stride=2), conv_bn(c2, c2), conv_bn(c2, c2))
        self.s3 = nn.Sequential(conv_bn(c2, c3, stride=2), conv_bn(c3, c3), conv_bn(c3, c3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.s3(self.s2(self.s1(x)))


class StemBlock(nn.Module):
    """Fast downsampling to 1/4: conv path and max-pool path, concatenated and fused."""

    def __init__(self, out_channels: int = 16) -> None:
        super().__init__()
        self.conv = conv_bn(3, out_channels, stride=2)
        self.left = nn.Sequential(conv_bn(out_channels, out_channels // 2, 1),
                                  conv_bn(out_channels // 2, out_channels, stride=2))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.fuse = conv_bn(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.pool(x)], dim=1))


class GatherExpand(nn.Module):
    """Gather-and-expand layer: 3x3 conv, depthwise expansion (x6), 1x1 projection, residual.

    With stride 2 a second depthwise conv follows the strided one and the shortcut is a
    strided depthwise conv + 1x1 conv (both BN, no activation).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 expansion: int = 6, relu: bool = False) -> None:
        super().__init__()
        mid = in_channels * expansion
        self.conv = conv_bn(in_channels, in_channels)
        layers = [conv_bn(in_channels, mid, stride=stride, groups=in_channels,
                          act=relu and stride == 1)]
        if stride == 2:
            layers.append(conv_bn(mid, mid, groups=mid, act=relu))
        self.expand = nn.Sequential(*layers)
        self.project = conv_bn(mid, out_channels, 1, act=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv_bn(in_channels, in_channels, stride=stride, groups=in_channels, act=False),
                conv_bn(in_channels, out_channels, 1, act=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.expand(self.conv(x)))
        return F.relu(y + self.shortcut(x))


class ContextEmbedding(nn.Module):
    """Global average pool -> BN -> 1x1 conv-BN-ReLU, broadcast-added, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.squeeze = conv_bn(channels, channels, 1)
        self.fuse = conv_bn(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.squeeze(self.bn(x.mean(dim=(2, 3), keepdim=True)))
        return self.fuse(x + context)


class SemanticBranch(nn.Module):
    """Stem (1/4), GE stages at 1/8, 1/16, 1/32, context embedding; returns every stage."""

    def __init__(self, widths: tuple[int, int, int, int] = (16, 32, 64, 128),
                 ge_relu: bool = False) -> None:
        super().__init__()
        c2, c3, c4, c5 = widths
        r = ge_relu
        self.stem = StemBlock(c2)
        self.s3 = nn.Sequential(GatherExpand(c2, c3, 2, relu=r), GatherExpand(c3, c3, relu=r))
        self.s4 = nn.Sequential(GatherExpand(c3, c4, 2, relu=r), GatherExpand(c4, c4, relu=r))
        self.s5 = nn.Sequential(GatherExpand(c4, c5, 2, relu=r),
                                *[GatherExpand(c5, c5, relu=r) for _ in range(3)])
        self.ce = ContextEmbedding(c5)
        self.channels = widths

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f2 = self.stem(x)
        f3 = self.s3(f2)
        f4 = self.s4(f3)
        f5 = self.s5(f4)
        return [f2, f3, f4, f5, self.ce(f5)]


class BiSeNetV2Backbone(nn.Module):
    """Both branches; ``forward`` returns (detail features, semantic stage features)."""

    def __init__(self, ge_relu: bool = False) -> None:
        super().__init__()
        self.detail = DetailBranch()
        self.semantic = SemanticBranch(ge_relu=ge_relu)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.detail(x), self.semantic(x)

    def stages(self) -> list[list[nn.Module]]:
        """Units by resolution: 1/4, 1/8, 1/16, 1/32 (with the context embedding)."""
        d, s = self.detail, self.semantic
        return [[d.s1, d.s2, s.stem], [d.s3, s.s3], [s.s4], [s.s5, s.ce]]


class GuidedAggregation(nn.Module):
    """Bilateral guided aggregation of detail (1/8) and semantic (1/32) features."""

    def __init__(self, channels: int = 128, mode: str = "bilinear") -> None:
        super().__init__()
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"bga_mode must be 'bilinear' or 'nearest', got {mode!r}")
        self.mode = mode
        c = channels
        self.detail_keep = nn.Sequential(conv_bn(c, c, groups=c, act=False),
                                         nn.Conv2d(c, c, 1, bias=False))
        self.detail_down = nn.Sequential(conv_bn(c, c, stride=2, act=False),
                                         nn.AvgPool2d(3, stride=2, padding=1))
        self.semantic_up = conv_bn(c, c, act=False)
        self.semantic_keep = nn.Sequential(conv_bn(c, c, groups=c, act=False),
                                           nn.Conv2d(c, c, 1, bias=False))
        self.fuse = conv_bn(c, c)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        size = detail.shape[-2:]
        high = self.detail_keep(detail) * torch.sigmoid(self._up(self.semantic_up(semantic),
                                                                size))
        low = self.detail_down(detail) * torch.sigmoid(self.semantic_keep(semantic))
        return self.fuse(high + self._up(low, size))

    def _up(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if self.mode == "bilinear":
            return resize_to(x, size)
        return F.interpolate(x, size=size, mode="nearest")


def booster_head(in_channels: int, num_classes: int, factor: int, mid_channels: int = 128,
                 dropout: float = 0.1) -> nn.Sequential:
    """The published booster: conv 3x3 (``mid``), dropout, x2 nearest, conv 3x3 to
    ``factor**2`` channels, 1x1 classifier (the rest of the x``factor`` upsampling is the
    model's final resize)."""
    return nn.Sequential(conv_bn(in_channels, mid_channels), nn.Dropout2d(dropout),
                         nn.Upsample(scale_factor=2), conv_bn(mid_channels, factor * factor),
                         nn.Conv2d(factor * factor, num_classes, 1))


class BiSeNetV2(PaddedSegmentation):
    """BiSeNet V2: ``backbone`` (both branches), ``aggregation`` (BGA), ``head``, ``aux_head``."""

    stride = 32

    def __init__(self, num_classes: int, *, aux: bool = False, aux_stage: int = 4,
                 head_channels: int = 1024, dropout: float = 0.1, ge_relu: bool = True,
                 bga_mode: str = "nearest") -> None:
        super().__init__()
        if aux_stage not in (2, 3, 4, 5):
            raise ModelError(f"BiSeNetV2 aux_stage must be 2, 3, 4 or 5, got {aux_stage!r}")
        self.backbone = BiSeNetV2Backbone(ge_relu)
        self.aggregation = GuidedAggregation(self.backbone.semantic.channels[-1], bga_mode)
        self.head = SegHead(128, head_channels, num_classes, dropout)
        self.aux = aux
        self.aux_stage = aux_stage
        # the booster's upsampling factor is its stage's stride: 4, 8, 16, 32
        self.aux_head = (booster_head(self.backbone.semantic.channels[aux_stage - 2],
                                      num_classes, 2 ** aux_stage, dropout=dropout)
                         if aux else None)
        self.aux_weight = BOOSTER_WEIGHT if aux else None

    def logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        detail, semantic = self.backbone(x)
        result = {"out": self.head(self.aggregation(detail, semantic[-1]))}
        if self.aux_head is not None:
            result["aux"] = self.aux_head(semantic[self.aux_stage - 2])
        return result

    def stages(self) -> list[list[nn.Module]]:
        return self.backbone.stages()


_BOOSTERS = {2: "aux2.", 3: "aux3.", 4: "aux4.", 5: "aux5_4."}  # the published names


def authors_keys(aux_stage: int) -> KeyMap:
    """The published weights' names: detail.S1..S3, segment.S1S2/S3/S4/S5_4/S5_5, bga
    (left1, left2, right1, right2, conv), head and the four boosters aux2..aux5_4 (the one on
    ``aux_stage`` is used with ``aux=True``, the others are ignored)."""
    booster = _BOOSTERS[aux_stage]
    return KeyMap(
        groups=(*((f"detail.S{i}.", f"backbone.detail.s{i}.") for i in (1, 2, 3)),
                ("segment.S1S2.", "backbone.semantic.stem."),
                ("segment.S3.", "backbone.semantic.s3."), ("segment.S4.", "backbone.semantic.s4."),
                ("segment.S5_4.", "backbone.semantic.s5."),
                ("segment.S5_5.", "backbone.semantic.ce."),
                ("bga.left1.", "aggregation.detail_keep."),
                ("bga.left2.", "aggregation.detail_down."),
                ("bga.right1.", "aggregation.semantic_up."),
                ("bga.right2.", "aggregation.semantic_keep."), ("bga.conv.", "aggregation.fuse."),
                ("head.", "head."), (booster, "aux_head.")),
        optional=(booster,),
        ignore=tuple(b for b in _BOOSTERS.values() if b != booster),
    )


def build_bisenetv2(num_classes: int, *, aux: bool = False, aux_stage: int = 4,
                    head_channels: int = 1024, dropout: float = 0.1, ge_relu: bool = True,
                    bga_mode: str = "nearest", pad: bool = True,
                    weights: str | None = None) -> nn.Module:
    """BiSeNet V2; ``aux`` adds one booster head on semantic stage ``aux_stage``.

    ``ge_relu``, ``bga_mode``: the published implementation's conventions by default (the
    paper shows neither the ReLU nor the upsampling mode). ``pad``: zero-pad the input to a
    multiple of 32 (the network needs it). ``weights``: a local file,
    ``model_final_v2_*.pth`` or a seglab state dict.
    """
    model = BiSeNetV2(num_classes, aux=aux, aux_stage=aux_stage, head_channels=head_channels,
                      dropout=dropout, ge_relu=ge_relu, bga_mode=bga_mode)
    model.pad = pad
    return maybe_load(model, weights, authors_keys(aux_stage))


register_model(
    "bisenetv2", build_bisenetv2, family="bisenet", backbone="none (from scratch)",
    description="BiSeNet V2: detail + semantic branches, guided aggregation (real-time)",
    paper="Yu et al., BiSeNet V2, IJCV 2021",
)
