"""Composable models: a timm backbone + one head (+ an FCN aux head on the penultimate stage).

Each family has one generic builder (any timm encoder via ``backbone=``) and named presets
that pin the backbone, so a user never assembles a model by hand. ``in_chans`` sets the number
of input bands (4 for RGB+NIR, 12 for Sentinel-2), for every family.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from seglab.errors import ModelError
from seglab.models.backbones import TimmBackbone
from seglab.models.heads import (
    DeepLabV3Head,
    DeepLabV3PlusHead,
    FCNHead,
    LRASPPHead,
    OCRHead,
    PSPHead,
    UNetDecoder,
)
from seglab.models.registry import register_model
from seglab.models.segmentor import Segmentor

AUX_WEIGHT = 0.4  # PSPNet paper: auxiliary loss on stage 3 weighted by 0.4 (OCR uses the same)


def _default_rates(output_stride: int) -> tuple[int, ...]:
    # DeepLabV3: rates (6, 12, 18) at output stride 16, doubled at 8; halved again at 32.
    return {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}[output_stride]


def _index_of_reduction(backbone: TimmBackbone, reduction: int) -> int:
    """The first (shallowest) feature map at stride ``reduction``, else the deepest finer one.

    With a dilated backbone several stages share stride 8; the low-level skip must be the
    first of them, not the deepest features again.
    """
    reductions = backbone.reductions
    if reduction in reductions:
        return reductions.index(reduction)
    finer = [i for i, r in enumerate(reductions) if r < reduction]
    if not finer:
        raise ModelError(f"backbone {backbone.name} has no features at stride <= {reduction}")
    return finer[-1]


def _encoder(backbone: str, output_stride: int, weights: str | None,
             in_chans: int) -> TimmBackbone:
    return TimmBackbone(backbone, output_stride=output_stride, weights=weights, in_chans=in_chans)


def _with_aux(enc: TimmBackbone, head: nn.Module, num_classes: int, aux: bool) -> Segmentor:
    """``Segmentor`` of ``enc`` and ``head``, with an FCN aux head on the penultimate stage."""
    aux_head = FCNHead(enc.channels[-2], num_classes, channels=256, dropout=0.1,
                       in_index=-2) if aux else None
    return Segmentor(enc, head, aux_head, aux=aux, aux_weight=AUX_WEIGHT)


def _check_positive(name: str, values: Sequence[int]) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    if not values or any(v < 1 for v in values):
        raise ModelError(f"{name} must be a non-empty list of positive integers, got {values!r}")
    return values


def build_pspnet(num_classes: int, *, backbone: str = "resnet50", output_stride: int = 8,
                 backbone_weights: str | None = None, in_chans: int = 3, aux: bool = True,
                 head_channels: int = 512, bins: Sequence[int] = (1, 2, 3, 6),
                 dropout: float = 0.1) -> nn.Module:
    """PSPNet: dilated backbone + pyramid pooling head (+ FCN aux head on stage 3)."""
    enc = _encoder(backbone, output_stride, backbone_weights, in_chans)
    head = PSPHead(enc.channels[-1], num_classes, bins=_check_positive("bins", bins),
                   channels=head_channels, dropout=dropout)
    return _with_aux(enc, head, num_classes, aux)


def build_deeplabv3_aspp(num_classes: int, *, backbone: str = "resnet50", output_stride: int = 8,
                         backbone_weights: str | None = None, in_chans: int = 3, aux: bool = False,
                         head_channels: int = 256, atrous_rates: Sequence[int] | None = None,
                         dropout: float = 0.5) -> nn.Module:
    """DeepLabV3: dilated backbone + ASPP head (rates default to the paper's for the stride)."""
    enc = _encoder(backbone, output_stride, backbone_weights, in_chans)
    rates = _check_positive("atrous_rates", atrous_rates or _default_rates(output_stride))
    head = DeepLabV3Head(enc.channels[-1], num_classes, channels=head_channels, rates=rates,
                         dropout=dropout)
    return _with_aux(enc, head, num_classes, aux)


def build_deeplabv3plus(num_classes: int, *, backbone: str = "resnet50", output_stride: int = 16,
                        backbone_weights: str | None = None, in_chans: int = 3, aux: bool = False,
                        head_channels: int = 256, atrous_rates: Sequence[int] | None = None,
                        dropout: float = 0.5) -> nn.Module:
    """DeepLabV3+: ASPP encoder head + decoder with a stride-4 low-level skip."""
    enc = _encoder(backbone, output_stride, backbone_weights, in_chans)
    rates = _check_positive("atrous_rates", atrous_rates or _default_rates(output_stride))
    low = _index_of_reduction(enc, 4)
    head = DeepLabV3PlusHead(enc.channels[-1], enc.channels[low], num_classes,
                             channels=head_channels, rates=rates, dropout=dropout, low_index=low)
    return _with_aux(enc, head, num_classes, aux)


def build_fcn(num_classes: int, *, backbone: str = "resnet50", output_stride: int = 8,
              backbone_weights: str | None = None, in_chans: int = 3, aux: bool = False,
              head_channels: int | None = None, dropout: float = 0.1) -> nn.Module:
    """FCN head (3x3 conv + classifier) on a dilated backbone, as in torchvision's FCN."""
    enc = _encoder(backbone, output_stride, backbone_weights, in_chans)
    head = FCNHead(enc.channels[-1], num_classes, channels=head_channels, dropout=dropout)
    return _with_aux(enc, head, num_classes, aux)


def build_lraspp(num_classes: int, *, backbone: str = "mobilenetv3_large_100",
                 output_stride: int = 16, backbone_weights: str | None = None, in_chans: int = 3,
                 head_channels: int = 128) -> nn.Module:
    """LR-ASPP on a MobileNetV3 (or any) backbone: stride-8 and deepest features."""
    enc = _encoder(backbone, output_stride, backbone_weights, in_chans)
    low = _index_of_reduction(enc, 8)
    head = LRASPPHead(enc.channels[low], enc.channels[-1], num_classes, channels=head_channels,
                      low_index=low)
    return Segmentor(enc, head)


def build_ocrnet(num_classes: int, *, backbone: str = "resnet50", output_stride: int = 8,
                 backbone_weights: str | None = None, in_chans: int = 3, aux: bool = True,
                 head_channels: int = 512, key_channels: int = 256,
                 dropout: float = 0.05) -> nn.Module:
    """OCRNet: soft object regions from stage 3, object-contextual representations on stage 4."""
    enc = _encoder(backbone, output_stride, backbone_weights, in_chans)
    head = OCRHead(enc.channels[-1], enc.channels[-2], num_classes, channels=head_channels,
                   key_channels=key_channels, dropout=dropout)
    return Segmentor(enc, head, aux=aux, aux_weight=AUX_WEIGHT)


def build_unet_encoder(num_classes: int, *, backbone: str = "resnet34",
                       backbone_weights: str | None = None, in_chans: int = 3,
                       decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
                       dropout: float = 0.0) -> nn.Module:
    """U-Net decoder (transposed-conv up, skip concat, double conv) on a timm encoder."""
    enc = _encoder(backbone, 32, backbone_weights, in_chans)
    decoder = UNetDecoder(enc.channels, enc.reductions, num_classes,
                          decoder_channels=_check_positive("decoder_channels", decoder_channels),
                          dropout=dropout)
    return Segmentor(enc, decoder)


_PAPERS = {
    "pspnet": "Zhao et al., Pyramid Scene Parsing Network, CVPR 2017",
    "deeplabv3": "Chen et al., Rethinking Atrous Convolution (DeepLabV3), 2017",
    "deeplabv3plus": "Chen et al., Encoder-Decoder with Atrous Separable Convolution, ECCV 2018",
    "fcn": "Long et al., Fully Convolutional Networks, CVPR 2015",
    "lraspp": "Howard et al., Searching for MobileNetV3 (LR-ASPP), ICCV 2019",
    "ocrnet": "Yuan et al., Object-Contextual Representations, ECCV 2020",
    "unet": "Ronneberger et al., U-Net, MICCAI 2015",
}

_FAMILIES: dict[str, tuple[str, Callable[..., nn.Module], str, str]] = {
    # generic name: (family, builder, default backbone, description)
    "pspnet": ("pspnet", build_pspnet, "resnet50", "PSPNet, pyramid pooling (bins 1,2,3,6), OS8"),
    "deeplabv3_aspp": ("deeplabv3", build_deeplabv3_aspp, "resnet50", "DeepLabV3 ASPP head, OS8"),
    "deeplabv3plus": ("deeplabv3plus", build_deeplabv3plus, "resnet50",
                      "DeepLabV3+ (ASPP + low-level decoder), OS16"),
    "fcn": ("fcn", build_fcn, "resnet50", "FCN head on a dilated backbone, OS8"),
    "lraspp": ("lraspp", build_lraspp, "mobilenetv3_large_100", "LR-ASPP, OS16"),
    "ocrnet": ("ocrnet", build_ocrnet, "resnet50", "OCRNet, object-contextual head, OS8"),
    "unet_encoder": ("unet", build_unet_encoder, "resnet34", "U-Net decoder on a timm encoder"),
}

_PRESETS: dict[str, tuple[str, str]] = {
    # preset name: (generic name, backbone)
    "pspnet_resnet18": ("pspnet", "resnet18"),
    "pspnet_resnet50": ("pspnet", "resnet50"),
    "pspnet_resnet101": ("pspnet", "resnet101"),
    "pspnet_mobilenetv2": ("pspnet", "mobilenetv2_100"),
    "pspnet_mobilenetv3": ("pspnet", "mobilenetv3_large_100"),
    "deeplabv3_aspp_resnet18": ("deeplabv3_aspp", "resnet18"),
    "deeplabv3_aspp_resnet50": ("deeplabv3_aspp", "resnet50"),
    "deeplabv3_aspp_mobilenetv3": ("deeplabv3_aspp", "mobilenetv3_large_100"),
    "deeplabv3plus_resnet18": ("deeplabv3plus", "resnet18"),
    "deeplabv3plus_resnet50": ("deeplabv3plus", "resnet50"),
    "deeplabv3plus_mobilenetv2": ("deeplabv3plus", "mobilenetv2_100"),
    "fcn_resnet18": ("fcn", "resnet18"),
    "lraspp_mobilenetv3": ("lraspp", "mobilenetv3_large_100"),
    "lraspp_mobilenetv3_small": ("lraspp", "mobilenetv3_small_100"),
    "ocrnet_resnet18": ("ocrnet", "resnet18"),
    "ocrnet_resnet50": ("ocrnet", "resnet50"),
    "ocrnet_mobilenetv3": ("ocrnet", "mobilenetv3_large_100"),
    "unet_resnet18": ("unet_encoder", "resnet18"),
    "unet_resnet34": ("unet_encoder", "resnet34"),
    "unet_mobilenetv2": ("unet_encoder", "mobilenetv2_100"),
}

for _generic, (_family, _builder, _backbone, _desc) in _FAMILIES.items():
    register_model(_generic, _builder, family=_family, backbone=f"any ({_backbone})",
                   description=f"{_desc}; backbone= any timm encoder",
                   backbone_weights=("imagenet",), paper=_PAPERS[_family])

for _preset, (_generic, _backbone) in _PRESETS.items():
    _family, _builder, _, _desc = _FAMILIES[_generic]
    register_model(_preset, _builder, family=_family, backbone=_backbone,
                   description=f"{_desc}, {_backbone} backbone", backbone_weights=("imagenet",),
                   paper=_PAPERS[_family], fixed={"backbone": _backbone})
