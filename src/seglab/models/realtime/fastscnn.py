"""Fast-SCNN (Poudel et al., BMVC 2019): learning to downsample, a global feature extractor,
feature fusion and a light classifier; made for high-resolution input and few parameters.

- Learning to downsample (stride 8, shared by both paths): 3x3 stride-2 conv (32), two
  depthwise-separable stride-2 convs (48, 64).
- Global feature extractor: MobileNetV2 inverted-residual bottlenecks (expansion 6), three
  each at 64 (stride 2), 96 (stride 2) and 128 (stride 1) channels, so 1/32; then pyramid
  pooling (bins 1, 2, 3, 6, each 1x1 conv to a quarter of the channels, concatenated with the
  input and fused by a 1x1 conv).
- Feature fusion: the 1/8 features through a 1x1 conv, the 1/32 features upsampled x4
  through a depthwise 3x3 (dilation 4) and a 1x1 conv, added, ReLU.
- Classifier: two depthwise-separable 3x3 convs (128), dropout, 1x1 conv; upsampled x8.

``aux=True`` adds an auxiliary head on the learning-to-downsample output (the paper puts
auxiliary losses of weight 0.4 after learning-to-downsample and after the global feature
extractor; seglab's output dict carries one ``"aux"`` map, and the one the published weights
have is the first).

The authors released no code. The defaults follow the implementation whose weights are
published (Tramac/Fast-SCNN-pytorch, ``fast_scnn_citys.pth``), so they load with
``weights=PATH``: its first conv is unpadded (``stem_padding=0``), the fusion's depthwise conv
is not dilated (``fusion_dilation=1``; the paper's is 4) and its 1x1 convs have a bias, and
every resize uses ``align_corners=True``. It needs H and W multiples of 32; seglab zero-pads
to that multiple (``pad=True``) and crops the logits back, so any size runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models.realtime.authors_weights import KeyMap, maybe_load
from seglab.models.realtime.blocks import PaddedSegmentation, SegHead, conv_bn
from seglab.models.registry import register_model

AUX_WEIGHT = 0.4


def ds_conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """Depthwise-separable conv: depthwise 3x3-BN-ReLU, pointwise 1x1-BN-ReLU."""
    return nn.Sequential(conv_bn(in_channels, in_channels, stride=stride, groups=in_channels),
                         conv_bn(in_channels, out_channels, 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck: 1x1 expand, depthwise 3x3, linear 1x1 projection (+ residual)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 expansion: int = 6) -> None:
        super().__init__()
        mid = in_channels * expansion
        self.body = nn.Sequential(conv_bn(in_channels, mid, 1),
                                  conv_bn(mid, mid, stride=stride, groups=mid),
                                  conv_bn(mid, out_channels, 1, act=False))
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def _bottlenecks(in_channels: int, out_channels: int, n: int, stride: int) -> nn.Sequential:
    return nn.Sequential(InvertedResidual(in_channels, out_channels, stride),
                         *[InvertedResidual(out_channels, out_channels) for _ in range(n - 1)])


class PyramidPooling(nn.Module):
    """PSPNet-style pooling at bins 1, 2, 3, 6, concatenated with the input, 1x1 fused."""

    def __init__(self, channels: int, out_channels: int, bins: tuple[int, ...] = (1, 2, 3, 6),
                 align_corners: bool = False):
        super().__init__()
        branch = channels // len(bins)
        self.bins = bins
        self.align_corners = align_corners
        self.convs = nn.ModuleList(conv_bn(channels, branch, 1) for _ in bins)
        self.fuse = conv_bn(channels + branch * len(bins), out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(conv(F.adaptive_avg_pool2d(x, b)), size, mode="bilinear",
                                align_corners=self.align_corners)
                  for b, conv in zip(self.bins, self.convs, strict=True)]
        return self.fuse(torch.cat([x, *pooled], dim=1))


class FastSCNNEncoder(nn.Module):
    """Learning to downsample + global feature extractor; returns (1/8, 1/32) features."""

    def __init__(self, stem_padding: int = 1, align_corners: bool = False) -> None:
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, stem_padding, bias=False),
                             nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        self.downsample = nn.Sequential(stem, ds_conv(32, 48, 2), ds_conv(48, 64, 2))
        self.stage1 = _bottlenecks(64, 64, 3, 2)
        self.stage2 = _bottlenecks(64, 96, 3, 2)
        self.stage3 = _bottlenecks(96, 128, 3, 1)
        self.ppm = PyramidPooling(128, 128, align_corners=align_corners)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        high = self.downsample(x)
        return high, self.ppm(self.stage3(self.stage2(self.stage1(high))))

    def stages(self) -> list[list[nn.Module]]:
        """Learning to downsample, the three bottleneck stages, pyramid pooling."""
        return [[self.downsample], [self.stage1], [self.stage2], [self.stage3], [self.ppm]]


class FeatureFusion(nn.Module):
    """High-resolution 1x1 conv + (upsampled low-resolution dilated depthwise + 1x1), ReLU."""

    def __init__(self, high_channels: int, low_channels: int, out_channels: int, *,
                 dilation: int = 4, bias: bool = False, align_corners: bool = False) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.high = nn.Sequential(nn.Conv2d(high_channels, out_channels, 1, bias=bias),
                                  nn.BatchNorm2d(out_channels))
        self.low = nn.Sequential(
            conv_bn(low_channels, low_channels, groups=low_channels, dilation=dilation),
            nn.Sequential(nn.Conv2d(low_channels, out_channels, 1, bias=bias),
                          nn.BatchNorm2d(out_channels)),
        )

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = F.interpolate(low, high.shape[-2:], mode="bilinear",
                            align_corners=self.align_corners)
        return F.relu(self.high(high) + self.low(low))


class FastSCNN(PaddedSegmentation):
    """Fast-SCNN: ``backbone`` (downsample + global features), ``fusion``, ``classifier``."""

    stride = 32

    def __init__(self, num_classes: int, *, aux: bool = False, dropout: float = 0.1,
                 stem_padding: int = 0, fusion_dilation: int = 1, fusion_bias: bool = True,
                 align_corners: bool = True) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.backbone = FastSCNNEncoder(stem_padding, align_corners)
        self.fusion = FeatureFusion(64, 128, 128, dilation=fusion_dilation, bias=fusion_bias,
                                    align_corners=align_corners)
        self.classifier = nn.Sequential(ds_conv(128, 128), ds_conv(128, 128),
                                        nn.Dropout2d(dropout), nn.Conv2d(128, num_classes, 1))
        self.aux = aux
        self.aux_head = SegHead(64, 32, num_classes, dropout) if aux else None
        self.aux_weight = AUX_WEIGHT if aux else None

    def logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        high, low = self.backbone(x)
        result = {"out": self.classifier(self.fusion(high, low))}
        if self.aux_head is not None:
            result["aux"] = self.aux_head(high)
        return result

    def stages(self) -> list[list[nn.Module]]:
        return self.backbone.stages()


# The published weights' names: learning_to_downsample, global_feature_extractor.bottleneck1..3
# and .ppm (conv1..4, out), feature_fusion (dwconv, conv_lower_res, conv_higher_res),
# classifier (dsconv1, dsconv2, conv) and, trained with aux=True, auxlayer.
AUTHORS_KEYS = KeyMap(
    groups=(("learning_to_downsample.", "backbone.downsample."),
            *((f"global_feature_extractor.bottleneck{i}.", f"backbone.stage{i}.")
              for i in (1, 2, 3)),
            ("global_feature_extractor.ppm.", "backbone.ppm."),
            ("feature_fusion.dwconv.", "fusion.low.0."),
            ("feature_fusion.conv_lower_res.", "fusion.low.1."),
            ("feature_fusion.conv_higher_res.", "fusion.high."),
            ("classifier.", "classifier."), ("auxlayer.", "aux_head.")),
    optional=("auxlayer.",),
)


def build_fastscnn(num_classes: int, *, aux: bool = False, dropout: float = 0.1,
                   stem_padding: int = 0, fusion_dilation: int = 1, fusion_bias: bool = True,
                   align_corners: bool = True, pad: bool = True,
                   weights: str | None = None) -> nn.Module:
    """Fast-SCNN (1.1M parameters at 19 classes).

    ``stem_padding``, ``fusion_dilation``, ``fusion_bias``, ``align_corners``: the published
    implementation's conventions by default (the paper's fusion dilation is 4). ``pad``:
    zero-pad the input to a multiple of 32 (the network needs it). ``weights``: a local file,
    ``fast_scnn_citys.pth`` or a seglab state dict.
    """
    model = FastSCNN(num_classes, aux=aux, dropout=dropout, stem_padding=stem_padding,
                     fusion_dilation=fusion_dilation, fusion_bias=fusion_bias,
                     align_corners=align_corners)
    model.pad = pad
    return maybe_load(model, weights, AUTHORS_KEYS)


register_model(
    "fastscnn", build_fastscnn, family="fastscnn", backbone="none (from scratch)",
    description="Fast-SCNN: learning to downsample + global features + fusion (real-time)",
    paper="Poudel et al., Fast-SCNN, BMVC 2019",
)
