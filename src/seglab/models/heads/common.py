"""Small building blocks shared by the heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    """Conv (no bias, BN follows) -> BatchNorm -> ReLU, padded to keep the spatial size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 dilation: int = 1) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding,
                      dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def resize_to(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a feature map to ``size`` (a no-op when it already matches)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def match_size(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Crop or zero-pad ``x`` (bottom/right) to ``size``.

    Transposed-conv upsampling doubles a size exactly, while a stride-2 layer rounds odd sizes
    (up or down, depending on padding); this reconciles the two by at most a few pixels.
    """
    h, w = x.shape[-2:]
    th, tw = size
    x = x[..., : min(h, th), : min(w, tw)]
    if h < th or w < tw:
        x = F.pad(x, (0, max(0, tw - w), 0, max(0, th - h)))
    return x


def pad_to_multiple(
    x: torch.Tensor, multiple: int, at_least: tuple[int, int] = (1, 1)
) -> torch.Tensor:
    """Zero-pad ``x`` (bottom/right) to the smallest size divisible by ``multiple`` that is at
    least its own and ``at_least``; callers crop their outputs back to the input's size.

    Zero is the mean of a normalised input, so the padding reads as a plain grey border.
    """
    h, w = x.shape[-2:]
    th, tw = max(h, at_least[0]), max(w, at_least[1])
    ph, pw = th - h + (-th) % multiple, tw - w + (-tw) % multiple
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x
