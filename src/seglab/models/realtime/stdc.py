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

The defaults follow the authors' code (MichaelFan01/STDC-Seg), whose checkpoints
(``model_maxmIOU*.pth``) load with ``weights=PATH``: in a stride-2 module Block1's output is
downsampled by a depthwise 3x3 stride-2 conv + BN before Block2 (``avd``), the context path
upsamples nearest-neighbour (``context_mode``), the FFM attention and the classifiers have no
bias, the logits are resized with ``align_corners=True`` and the input is not padded. Their
head BatchNorms are InPlaceABN layers computing with ``|weight| + eps``; the loader stores
that value as the weight, so plain BatchNorm gives the same outputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import ModelError
from seglab.models.heads.common import resize_to
from seglab.models.realtime.authors_weights import KeyMap, maybe_load
from seglab.models.realtime.blocks import PaddedSegmentation, SegHead, conv_bn
from seglab.models.registry import register_model

AUX_WEIGHT = 1.0  # BiSeNet's weight (alpha) of each context-path loss
DETAIL_WEIGHT = 1.0  # the paper adds the detail loss to the segmentation loss unweighted
DETAIL_SPACINGS = (1, 2, 4)  # the paper's three Laplacian scales
LAPLACIAN = ((-1.0, -1.0, -1.0), (-1.0, 8.0, -1.0), (-1.0, -1.0, -1.0))
WIDTHS = (32, 64, 256, 512, 1024)  # conv1, conv2, stages 3-5


class STDCModule(nn.Module):
    """Four blocks of halving width (1x1, then three 3x3), their outputs concatenated."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 avd: bool = True) -> None:
        super().__init__()
        c1, c2, c3 = out_channels // 2, out_channels // 4, out_channels // 8
        avd = avd and stride == 2
        self.block1 = conv_bn(in_channels, c1, 1)
        self.block2 = conv_bn(c1, c2, stride=1 if avd else stride)
        self.block3 = conv_bn(c2, c3)
        self.block4 = conv_bn(c3, c3)
        # the authors' code strides a depthwise conv before Block2 instead of Block2 itself
        self.avd = (nn.Sequential(nn.Conv2d(c1, c1, 3, 2, 1, groups=c1, bias=False),
                                  nn.BatchNorm2d(c1)) if avd else None)
        self.skip = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.block1(x)
        x2 = self.block2(x1 if self.avd is None else self.avd(x1))
        x3 = self.block3(x2)
        return torch.cat([self.skip(x1), x2, x3, self.block4(x3)], dim=1)


def stdc_stage(in_channels: int, out_channels: int, modules: int,
               avd: bool = True) -> nn.Sequential:
    """``modules`` STDC modules, the first with stride 2."""
    layers = [STDCModule(in_channels, out_channels, stride=2, avd=avd)]
    layers += [STDCModule(out_channels, out_channels) for _ in range(modules - 1)]
    return nn.Sequential(*layers)


class STDCNet(nn.Module):
    """Two strided convs and three STDC stages; returns the 1/8, 1/16 and 1/32 features."""

    def __init__(self, modules_per_stage: tuple[int, int, int] = (2, 2, 2),
                 avd: bool = True) -> None:
        super().__init__()
        w1, w2, w3, w4, w5 = WIDTHS
        n3, n4, n5 = modules_per_stage
        self.conv1 = conv_bn(3, w1, stride=2)
        self.conv2 = conv_bn(w1, w2, stride=2)
        self.stage3 = stdc_stage(w2, w3, n3, avd)
        self.stage4 = stdc_stage(w3, w4, n4, avd)
        self.stage5 = stdc_stage(w4, w5, n5, avd)
        self.channels = (w3, w4, w5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f8 = self.stage3(self.conv2(self.conv1(x)))
        f16 = self.stage4(f8)
        return f8, f16, self.stage5(f16)

    def stages(self) -> list[list[nn.Module]]:
        """conv1 (1/2), conv2 (1/4), stages 3, 4, 5."""
        return [[self.conv1], [self.conv2], [self.stage3], [self.stage4], [self.stage5]]


class GlobalAvgPool(nn.Module):
    """The mean over H and W taken as the authors' code takes it (``avg_pool2d`` with the
    whole map as its kernel, whose summation order differs from a mean's in the last bit: with
    it the outputs equal theirs exactly). While a graph is captured (tracing, export,
    compilation) adaptive pooling is used instead, since a kernel read from the input's shape
    would freeze the graph to one size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.jit.is_tracing() or torch.compiler.is_compiling()
                or torch.onnx.is_in_onnx_export()):
            return F.adaptive_avg_pool2d(x, 1)
        return F.avg_pool2d(x, tuple(x.shape[-2:]))


class AttentionRefinement(nn.Module):
    """3x3 conv, then a per-channel weight from the pooled features (1x1 conv, BN, sigmoid)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = conv_bn(in_channels, out_channels)
        self.attention = nn.Sequential(GlobalAvgPool(),
                                       conv_bn(out_channels, out_channels, 1, act=False),
                                       nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x * self.attention(x)


class ContextPath(nn.Module):
    """ARMs on stages 4 and 5 plus the global context, merged top-down.

    Returns the refined stage-5 context at 1/16 and the refined stage-4 context at 1/8.
    """

    def __init__(self, in16: int, in32: int, channels: int = 128,
                 mode: str = "bilinear") -> None:
        super().__init__()
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"context_mode must be 'bilinear' or 'nearest', got {mode!r}")
        self.mode = mode
        self.arm16 = AttentionRefinement(in16, channels)
        self.arm32 = AttentionRefinement(in32, channels)
        self.global_context = nn.Sequential(GlobalAvgPool(), conv_bn(in32, channels, 1))
        self.refine32 = conv_bn(channels, channels)
        self.refine16 = conv_bn(channels, channels)

    def forward(self, f16: torch.Tensor, f32: torch.Tensor,
                size8: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        c32 = self.arm32(f32) + self.global_context(f32)
        c32 = self.refine32(self._up(c32, f16.shape[-2:]))
        c16 = self.refine16(self._up(self.arm16(f16) + c32, size8))
        return c32, c16

    def _up(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if self.mode == "bilinear":
            return resize_to(x, size)
        return F.interpolate(x, size=size, mode="nearest")


class FeatureFusion(nn.Module):
    """Concatenate spatial and context features, 1x1 conv, add the channel-reweighted self."""

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 4,
                 bias: bool = True) -> None:
        super().__init__()
        self.fuse = conv_bn(in_channels, out_channels, 1)
        self.attention = nn.Sequential(
            GlobalAvgPool(),
            nn.Conv2d(out_channels, out_channels // reduction, 1, bias=bias),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels // reduction, out_channels, 1, bias=bias),
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
                 dropout: float = 0.0, avd: bool = True, context_mode: str = "nearest",
                 bias: bool = False) -> None:
        super().__init__()
        if aux_stage not in (4, 5):
            raise ModelError(f"STDC aux_stage must be 4 or 5, got {aux_stage!r}")
        self.backbone = STDCNet(modules_per_stage, avd)
        c8, c16, c32 = self.backbone.channels
        context_channels = 128
        self.context = ContextPath(c16, c32, context_channels, context_mode)
        self.fusion = FeatureFusion(c8 + context_channels, c8, bias=bias)
        self.head = SegHead(c8, 256, num_classes, dropout, bias=bias)
        self.aux = aux
        self.aux_stage = aux_stage
        self.aux_head = (SegHead(context_channels, 64, num_classes, dropout, bias=bias)
                         if aux else None)
        self.aux_weight = AUX_WEIGHT if aux else None
        self.detail_head = SegHead(c8, 64, 1, dropout=0.0, bias=bias) if detail else None

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


def _abn_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' head BatchNorms are InPlaceABN layers: they scale by ``|weight| + eps``
    (eps 1e-5), so that is the weight a plain BatchNorm needs. Their backbone's are plain."""
    out = dict(state)
    for key, value in state.items():
        stem = key.removesuffix("weight")
        if (key.endswith(".weight") and not key.startswith("cp.backbone.")
                and stem + "running_var" in state):
            out[key] = value.abs() + 1e-5
    return out


def authors_keys(modules_per_stage: tuple[int, int, int], aux_stage: int) -> KeyMap:
    """The authors' names: cp.backbone.features.N (conv1, conv2, then the STDC modules in
    order; aliased again as cp.backbone.x2..x32, and an unused ImageNet classifier),
    cp.arm16/arm32/conv_avg/conv_head32/conv_head16, ffm, conv_out (main head), conv_out16
    and conv_out32 (context heads on 1/8 and 1/16), conv_out_sp2..sp16 (detail heads)."""
    modules = [("conv1", None), ("conv2", None)]
    for stage, count in zip((3, 4, 5), modules_per_stage, strict=True):
        modules += [(f"stage{stage}", j) for j in range(count)]
    backbone = tuple(
        (f"cp.backbone.features.{i}.",
         f"backbone.{name}." if j is None else f"backbone.{name}.{j}.")
        for i, (name, j) in enumerate(modules)
    )
    aux = "conv_out16." if aux_stage == 4 else "conv_out32."
    other_aux = "conv_out32." if aux_stage == 4 else "conv_out16."
    return KeyMap(
        groups=(*backbone,
                ("cp.arm16.", "context.arm16."), ("cp.arm32.", "context.arm32."),
                ("cp.conv_avg.", "context.global_context."),
                ("cp.conv_head32.", "context.refine32."), ("cp.conv_head16.", "context.refine16."),
                ("ffm.", "fusion."), ("conv_out.", "head."), (aux, "aux_head."),
                ("conv_out_sp8.", "detail_head.")),
        optional=(aux, "conv_out_sp8."),
        ignore=(other_aux, "conv_out_sp2.", "conv_out_sp4.", "conv_out_sp16.",
                *(f"cp.backbone.{alias}." for alias in ("x2", "x4", "x8", "x16", "x32")),
                *(f"cp.backbone.{head}." for head in ("conv_last", "fc", "bn", "linear"))),
        transform=_abn_weights,
    )


def _build(num_classes: int, modules_per_stage: tuple[int, int, int], aux: bool,
           aux_stage: int, detail: bool, dropout: float, avd: bool, context_mode: str,
           bias: bool, align_corners: bool, pad: bool, weights: str | None) -> nn.Module:
    model = STDCSeg(num_classes, modules_per_stage=modules_per_stage, aux=aux,
                    aux_stage=aux_stage, detail=detail, dropout=dropout, avd=avd,
                    context_mode=context_mode, bias=bias)
    model.align_corners, model.pad = align_corners, pad
    return maybe_load(model, weights, authors_keys(modules_per_stage, aux_stage))


def build_stdc1(num_classes: int, *, aux: bool = False, aux_stage: int = 4,
                detail: bool = False, dropout: float = 0.0, avd: bool = True,
                context_mode: str = "nearest", bias: bool = False, align_corners: bool = True,
                pad: bool = False, weights: str | None = None) -> nn.Module:
    """STDC1-Seg (2, 2, 2 STDC modules in stages 3-5); ``detail`` adds the training-only
    detail guidance head, ``aux`` one context-path head on ``aux_stage``.

    ``avd``, ``context_mode``, ``bias`` (FFM attention and classifiers), ``align_corners``,
    ``pad`` (zero-pad to a multiple of 32): the authors' conventions by default.
    ``weights``: a local file, the authors' checkpoint or a seglab state dict.
    """
    return _build(num_classes, (2, 2, 2), aux, aux_stage, detail, dropout, avd, context_mode,
                  bias, align_corners, pad, weights)


def build_stdc2(num_classes: int, *, aux: bool = False, aux_stage: int = 4,
                detail: bool = False, dropout: float = 0.0, avd: bool = True,
                context_mode: str = "nearest", bias: bool = False, align_corners: bool = True,
                pad: bool = False, weights: str | None = None) -> nn.Module:
    """STDC2-Seg (4, 5, 3 STDC modules in stages 3-5); options as ``stdc1``."""
    return _build(num_classes, (4, 5, 3), aux, aux_stage, detail, dropout, avd, context_mode,
                  bias, align_corners, pad, weights)


_PAPER = "Fan et al., Rethinking BiSeNet For Real-time Semantic Segmentation (STDC), CVPR 2021"
register_model("stdc1", build_stdc1, family="stdc", backbone="none (from scratch)",
               description="STDC1-Seg: short-term dense concatenate network, BiSeNet context "
                           "path, detail guidance (real-time)",
               paper=_PAPER)
register_model("stdc2", build_stdc2, family="stdc", backbone="none (from scratch)",
               description="STDC2-Seg: the deeper STDC network (4/5/3 modules per stage)",
               paper=_PAPER)
