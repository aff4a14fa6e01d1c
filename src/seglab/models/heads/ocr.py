"""Object-contextual representations head (Yuan et al., OCR, ECCV 2020).

1. Soft object regions: a small FCN head on the penultimate stage predicts one map per class
   (these logits are also the auxiliary output, supervised by the aux loss).
2. Object region representations: for each class k, the pixel representations averaged with
   the region's spatial softmax as weights.
3. Pixel-region relation: scaled dot-product attention between each pixel (query) and the K
   region representations (keys), through 1x1 conv-BN-ReLU transforms.
4. The object-contextual representation (attention-weighted regions) is concatenated with the
   pixel representation, fused by a 1x1 conv and classified.
"""

from __future__ import annotations

import torch
from torch import nn

from seglab.models.heads.common import ConvBNReLU, resize_to
from seglab.models.heads.fcn import FCNHead


def _transform(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(ConvBNReLU(in_channels, out_channels, 1),
                         ConvBNReLU(out_channels, out_channels, 1))


class OCRHead(nn.Module):
    """OCR on the deepest features; returns ``{"out": logits, "aux": soft region logits}``."""

    def __init__(self, in_channels: int, region_in_channels: int, num_classes: int, *,
                 channels: int = 512, key_channels: int = 256, dropout: float = 0.05,
                 in_index: int = -1, region_index: int = -2) -> None:
        super().__init__()
        self.in_index = in_index
        self.key_channels = key_channels
        self.regions = FCNHead(region_in_channels, num_classes, channels=channels // 2,
                               dropout=0.0, in_index=region_index)
        self.pixels = ConvBNReLU(in_channels, channels, 3)
        self.query = _transform(channels, key_channels)  # phi: pixels -> keys space
        self.key = _transform(channels, key_channels)  # psi: regions -> keys space
        self.value = ConvBNReLU(channels, key_channels, 1)  # delta
        self.context_out = ConvBNReLU(key_channels, channels, 1)  # rho
        self.fuse = nn.Sequential(ConvBNReLU(2 * channels, channels, 1), nn.Dropout2d(dropout))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        region_logits = self.regions(features)
        pixels = self.pixels(features[self.in_index])
        n, c, h, w = pixels.shape
        regions = resize_to(region_logits, (h, w)).flatten(2).softmax(dim=2)  # [N, K, HW]
        # Object region representations f_k: [N, C, K, 1] so 1x1 convs can transform them.
        objects = torch.bmm(regions, pixels.flatten(2).transpose(1, 2))  # [N, K, C]
        objects = objects.transpose(1, 2).unsqueeze(-1)
        query = self.query(pixels).flatten(2).transpose(1, 2)  # [N, HW, D]
        key = self.key(objects).flatten(2)  # [N, D, K]
        value = self.value(objects).flatten(2).transpose(1, 2)  # [N, K, D]
        relation = torch.bmm(query, key).mul(self.key_channels ** -0.5).softmax(dim=-1)
        context = torch.bmm(relation, value).transpose(1, 2).reshape(n, -1, h, w)
        context = self.context_out(context)
        out = self.classifier(self.fuse(torch.cat([pixels, context], dim=1)))
        return {"out": out, "aux": region_logits}
