"""STDC-Seg (Fan et al., CVPR 2021, "Rethinking BiSeNet"): STDC1-Seg and STDC2-Seg.

- STDC module (short-term dense concatenate): four conv-BN-ReLU blocks of halving width,
  N/2 (1x1), N/4, N/8, N/8 (3x3), each fed by the one before; their outputs are concatenated
  back to N channels, so the receptive fields of all four are kept at the cost of one.
  In the stride-2 module Block2 is strided and Block1's output reaches the concatenation
  through a 3x3 average pool (stride 2).
- STDC network: two stride-2 3x3 conv-BN-ReLU layers (32, 64 channels; 1/2, 1/4), then
  stages 3, 4, 5 of STDC modules (256, 512, 1024 channels; 1/8, 1/16, 1/32), the first module
  of each with stride 2. STDC1 has 2, 2, 2 modules per stage, STDC2 4, 5, 3. The paper's
  ImageNet network (a 1x1 conv to 1024, global pooling and two FC layers on top) is not built
  here: segmentation uses only the stages.
- Segmentation network (BiSeNet's context path on stages 4 and 5): an attention refinement
  module (ARM: 3x3 conv to 128 channels, reweighted by a pooled 1x1 conv-BN-sigmoid) on each
  of the 1/16 and 1/32 features; the 1/32 one plus the global context (pooled stage 5, 1x1
  conv) is upsampled to 1/16 and refined by a 3x3 conv, added to the 1/16 ARM, upsampled to
  1/8 and refined again. The feature fusion module (FFM: concatenation with the stage-3
  features, 1x1 conv to 256, plus itself reweighted by a pooled squeeze-excite attention)
  feeds the seg head (3x3 conv-BN-ReLU, 1x1 classifier) at 1/8, upsampled x8.
- Detail guidance (``detail=True``, training only): a detail head (3x3 conv-BN-ReLU to 64,
  1x1 to one channel) on the stage-3 features, trained with binary cross-entropy + Dice
  against detail targets made from the labels by a 3x3 Laplacian at three scales. The paper
  convolves the label map with strides 1, 2 and 4, upsamples, fuses the three by a 1x1 conv
  and thresholds at 0.1. Here the kernel's taps are 1, 2 and 4 pixels apart (dilation), so
  nothing is upsampled (which would shift the coarse maps by up to 1.5 pixels), and a pixel
  is a detail where any of the three responds: the paper calls its fusion trainable, but the
  threshold passes it no gradient. The targets are bands 4 pixels either side of a boundary
  between wide regions (the short taps also mark the pixels next to a thin structure, which
  the long ones step over). Ignored
  pixels are left out of the loss (their borders with labelled pixels count as details).
  The head outputs ``"detail"`` in training mode only; the training engine adds
  ``model.extra_loss(outputs, masks, ignore_index)`` (weight 1, as in the paper) to the
  segmentation loss. Off by default, because the registry's output contract is
  ``{"out", "aux"?}`` with ``num_classes`` channels; at inference the head never runs.

``aux=True`` adds one BiSeNet auxiliary seg head (64 mid channels, loss weight 1) on the
context path: the refined stage-4 context at 1/8 (``aux_stage=4``) or the refined stage-5
context at 1/16 (``aux_stage=5``). BiSeNet trains both at once; seglab's output dict carries
one ``"aux"`` map, so one is built. STDC-Seg starts from an ImageNet-pretrained STDC network;
seglab builds it from scratch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import ModelError
from seglab.models.heads.common import resize_to
from seglab.models.realtime.blocks import PaddedSegmentation, SegHead, conv_bn
from seglab.models.registry import register_model

AUX_WEIGHT = 1.0  # BiSeNet's weight (alpha) of each context-path loss
DETAIL_WEIGHT = 1.0  # the paper adds the detail loss to the segmentation loss unweighted
DETAIL_SPACINGS = (1, 2, 4)  # the paper's three Laplacian scales
LAPLACIAN = ((-1.0, -1.0, -1.0), (-1.0, 8.0, -1.0), (-1.0, -1.0, -1.0))
WIDTHS = (32, 64, 256, 512, 1024)  # conv1, conv2, stages 3-5


class STDCModule(nn.Module):
    """Four blocks of halving width (1x1, then three 3x3), their outputs concatenated."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        c1, c2, c3 = out_channels // 2, out_channels // 4, out_channels // 8
        self.block1 = conv_bn(in_channels, c1, 1)
        self.block2 = conv_bn(c1, c2, stride=stride)
        self.block3 = conv_bn(c2, c3)
        self.block4 = conv_bn(c3, c3)
        self.skip = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.block1(x)
        x2 = self.block2(x1)
        x3 = self.block3(x2)
        return torch.cat([self.skip(x1), x2, x3, self.block4(x3)], dim=1)


def stdc_stage(in_channels: int, out_channels: int, modules: int) -> nn.Sequential:
    """``modules`` STDC modules, the first with stride 2."""
    layers = [STDCModule(in_channels, out_channels, stride=2)]
    layers += [STDCModule(out_channels, out_channels) for _ in range(modules - 1)]
    return nn.Sequential(*layers)


class STDCNet(nn.Module):
    """Two strided convs and three STDC stages; returns the 1/8, 1/16 and 1/32 features."""

    def __init__(self, modules_per_stage: tuple[int, int, int] = (2, 2, 2)) -> None:
        super().__init__()
        w1, w2, w3, w4, w5 = WIDTHS
        n3, n4, n5 = modules_per_stage
        self.conv1 = conv_bn(3, w1, stride=2)
        self.conv2 = conv_bn(w1, w2, stride=2)
        self.stage3 = stdc_stage(w2, w3, n3)
        self.stage4 = stdc_stage(w3, w4, n4)
        self.stage5 = stdc_stage(w4, w5, n5)
        self.channels = (w3, w4, w5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f8 = self.stage3(self.conv2(self.conv1(x)))
        f16 = self.stage4(f8)
        return f8, f16, self.stage5(f16)

    def stages(self) -> list[list[nn.Module]]:
        """conv1 (1/2), conv2 (1/4), stages 3, 4, 5."""
        return [[self.conv1], [self.conv2], [self.stage3], [self.stage4], [self.stage5]]


class AttentionRefinement(nn.Module):
    """3x3 conv, then a per-channel weight from the pooled features (1x1 conv, BN, sigmoid)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = conv_bn(in_channels, out_channels)
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                       conv_bn(out_channels, out_channels, 1, act=False),
                                       nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x * self.attention(x)


class ContextPath(nn.Module):
    """ARMs on stages 4 and 5 plus the global context, merged top-down.

    Returns the refined stage-5 context at 1/16 and the refined stage-4 context at 1/8.
    """

    def __init__(self, in16: int, in32: int, channels: int = 128) -> None:
        super().__init__()
        self.arm16 = AttentionRefinement(in16, channels)
        self.arm32 = AttentionRefinement(in32, channels)
        self.global_context = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn(in32, channels, 1))
        self.refine32 = conv_bn(channels, channels)
        self.refine16 = conv_bn(channels, channels)

    def forward(self, f16: torch.Tensor, f32: torch.Tensor,
                size8: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        c32 = self.arm32(f32) + self.global_context(f32)
        c32 = self.refine32(resize_to(c32, f16.shape[-2:]))
        c16 = self.refine16(resize_to(self.arm16(f16) + c32, size8))
        return c32, c16


class FeatureFusion(nn.Module):
    """Concatenate spatial and context features, 1x1 conv, add the channel-reweighted self."""

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fuse = conv_bn(in_channels, out_channels, 1)
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(out_channels, out_channels // reduction, 1),
            nn.ReLU(inplace=True), nn.Conv2d(out_channels // reduction, out_channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.fuse(torch.cat([spatial, context], dim=1))
        return x + x * self.attention(x)


def detail_targets(target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary detail map ``[N, 1, H, W]`` of a label batch ``[N, H, W]`` and where it counts
    (the labelled pixels): where the label map's Laplacian, taps 1, 2 or 4 pixels apart,
    is not zero."""
    # autocast off: the label ids must stay exact integers for "not zero" to mean a boundary
    with torch.autocast(target.device.type, enabled=False):
        labels = target.unsqueeze(1).float()
        kernel = labels.new_tensor(LAPLACIAN).view(1, 1, 3, 3)
        edges = torch.zeros_like(labels, dtype=torch.bool)
        for spacing in DETAIL_SPACINGS:
            # replicated borders: the image edge is not a boundary
            padded = F.pad(labels, (spacing,) * 4, mode="replicate")
            edges |= F.conv2d(padded, kernel, dilation=spacing) != 0
    return edges.float(), (target != ignore_index).unsqueeze(1).float()


def detail_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Binary cross-entropy + Dice (smooth 1, per image) of detail logits ``[N, 1, H, W]``."""
    edges, valid = detail_targets(target, ignore_index)
    logits = logits.float()  # in fp32 under autocast: the Dice sums run over every pixel
    bce = F.binary_cross_entropy_with_logits(logits, edges, weight=valid, reduction="sum")
    bce = bce / valid.sum().clamp(min=1)
    prob, edges = torch.sigmoid(logits) * valid, edges * valid
    dims = (1, 2, 3)
    dice = 1 - (2 * (prob * edges).sum(dims) + 1) / (
        prob.square().sum(dims) + edges.square().sum(dims) + 1
    )
    return bce + dice.mean()


class STDCSeg(PaddedSegmentation):
    """STDC-Seg: ``backbone`` (STDC network), ``context`` path, ``fusion`` (FFM), ``head``,
    optional ``aux_head`` and ``detail_head``."""

    stride = 32

    def __init__(self, num_classes: int, *, modules_per_stage: tuple[int, int, int],
                 aux: bool = False, aux_stage: int = 4, detail: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if aux_stage not in (4, 5):
            raise ModelError(f"STDC aux_stage must be 4 or 5, got {aux_stage!r}")
        self.backbone = STDCNet(modules_per_stage)
        c8, c16, c32 = self.backbone.channels
        context_channels = 128
        self.context = ContextPath(c16, c32, context_channels)
        self.fusion = FeatureFusion(c8 + context_channels, c8)
        self.head = SegHead(c8, 256, num_classes, dropout)
        self.aux = aux
        self.aux_stage = aux_stage
        self.aux_head = SegHead(context_channels, 64, num_classes, dropout) if aux else None
        self.aux_weight = AUX_WEIGHT if aux else None
        self.detail_head = SegHead(c8, 64, 1, dropout=0.0) if detail else None

    def logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f8, f16, f32 = self.backbone(x)
        c32, c16 = self.context(f16, f32, f8.shape[-2:])
        result = {"out": self.head(self.fusion(f8, c16))}
        if self.aux_head is not None:
            result["aux"] = self.aux_head(c16 if self.aux_stage == 4 else c32)
        if self.detail_head is not None and self.training:
            result["detail"] = self.detail_head(f8)
        return result

    def extra_loss(self, outputs: Mapping[str, torch.Tensor], target: torch.Tensor,
                   ignore_index: int) -> torch.Tensor:
        """The weighted detail loss when the detail head ran, else zero (what the training
        engine adds to the segmentation loss)."""
        detail = outputs.get("detail")
        if detail is None:
            return outputs["out"].new_zeros(())
        return DETAIL_WEIGHT * detail_loss(detail, target, ignore_index)

    def stages(self) -> list[list[nn.Module]]:
        return self.backbone.stages()


def build_stdc1(num_classes: int, *, aux: bool = False, aux_stage: int = 4,
                detail: bool = False, dropout: float = 0.0) -> nn.Module:
    """STDC1-Seg (2, 2, 2 STDC modules in stages 3-5) from scratch; ``detail`` adds the
    training-only detail guidance head, ``aux`` one context-path head on ``aux_stage``."""
    return STDCSeg(num_classes, modules_per_stage=(2, 2, 2), aux=aux, aux_stage=aux_stage,
                   detail=detail, dropout=dropout)


def build_stdc2(num_classes: int, *, aux: bool = False, aux_stage: int = 4,
                detail: bool = False, dropout: float = 0.0) -> nn.Module:
    """STDC2-Seg (4, 5, 3 STDC modules in stages 3-5) from scratch; options as ``stdc1``."""
    return STDCSeg(num_classes, modules_per_stage=(4, 5, 3), aux=aux, aux_stage=aux_stage,
                   detail=detail, dropout=dropout)


_PAPER = "Fan et al., Rethinking BiSeNet For Real-time Semantic Segmentation (STDC), CVPR 2021"
register_model("stdc1", build_stdc1, family="stdc", backbone="none (from scratch)",
               description="STDC1-Seg: short-term dense concatenate network, BiSeNet context "
                           "path, detail guidance (real-time)",
               paper=_PAPER)
register_model("stdc2", build_stdc2, family="stdc", backbone="none (from scratch)",
               description="STDC2-Seg: the deeper STDC network (4/5/3 modules per stage)",
               paper=_PAPER)
