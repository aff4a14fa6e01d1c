"""ResNet-18/34 encoder-decoder of the Cityscapes study: no skips, transposed-conv decoder.

The ResNet encoder reduces the image 32x; five (3x3 stride-2 transposed conv-BN-ReLU,
3x3 conv-BN-ReLU) stages bring it back to full resolution, cropped to the input size
(padded convolutions keep pixel i of the output aligned with pixel i of the input).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seglab.errors import ModelError
from seglab.models.backbones import TimmBackbone
from seglab.models.heads.common import ConvBNReLU, match_size
from seglab.models.registry import register_model


class UpStage(nn.Sequential):
    """x2 transposed conv-BN-ReLU followed by a 3x3 conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1,
                               output_padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            ConvBNReLU(out_channels, out_channels, 3),
        )


class EncoderDecoder(nn.Module):
    """Encoder (``backbone``, deepest features only) + transposed-conv decoder + classifier."""

    def __init__(self, backbone: TimmBackbone, num_classes: int,
                 decoder_channels: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        steps = backbone.reductions[-1].bit_length() - 1  # log2 of the output stride
        if len(decoder_channels) != steps:
            raise ModelError(f"decoder_channels needs {steps} entries (one per x2 step), "
                             f"got {list(decoder_channels)}")
        self.backbone = backbone
        widths = [backbone.channels[-1], *decoder_channels]
        pairs = zip(widths[:-1], widths[1:], strict=True)
        self.decoder = nn.Sequential(*(UpStage(a, b) for a, b in pairs))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(widths[-1], num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.decoder(self.backbone(x)[-1])
        return {"out": match_size(self.classifier(self.dropout(y)), x.shape[-2:])}

    def stages(self) -> list[list[nn.Module]]:
        return self.backbone.stages()


def build_resnet_encdec(num_classes: int, *, backbone: str = "resnet18",
                        backbone_weights: str | None = None,
                        decoder_channels: Sequence[int] = (256, 128, 64, 64, 32),
                        dropout: float = 0.0, in_chans: int = 3) -> nn.Module:
    """ResNet encoder + 5-stage transposed-conv decoder (from scratch unless backbone_weights).

    ``in_chans``: input bands (3 = RGB; e.g. 4 for RGB + near infrared), timm's own stem
    adaptation when ImageNet weights are loaded.
    """
    enc = TimmBackbone(backbone, output_stride=32, weights=backbone_weights, in_chans=in_chans)
    return EncoderDecoder(enc, num_classes, [int(c) for c in decoder_channels], dropout)


for _depth in (18, 34):
    register_model(
        f"resnet{_depth}_encdec", build_resnet_encdec, family="encdec",
        backbone=f"resnet{_depth}",
        description=f"ResNet-{_depth} encoder + transposed-conv decoder, no skips",
        backbone_weights=("imagenet",), paper="Cityscapes study baseline (encoder-decoder)",
        fixed={"backbone": f"resnet{_depth}"},
    )
