"""Pyramid pooling module and PSPNet head (Zhao et al., Pyramid Scene Parsing Network, 2017).

The feature map is average-pooled to several grids (bins 1, 2, 3, 6), each reduced to
``in/len(bins)`` channels by a 1x1 conv, upsampled back and concatenated with the input, so
the classifier sees global, sub-region and local context together.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models.heads.common import ConvBNReLU, resize_to


def _bin_means(x: torch.Tensor, bins: int, dim: int) -> torch.Tensor:
    size = x.shape[dim]
    cells = []
    for i in range(bins):  # the cell bounds adaptive pooling uses: floor(i*n/b) .. ceil((i+1)*n/b)
        start, end = (i * size) // bins, math.ceil((i + 1) * size / bins)
        cells.append(x.narrow(dim, start, end - start).mean(dim, keepdim=True))
    return torch.cat(cells, dim=dim)


def adaptive_avg_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, bins)``, written out when exporting to ONNX.

    ONNX has no adaptive pooling; the exporter only handles sizes divisible by ``bins``.
    Averaging rows then columns of each (rectangular) cell gives the same cell mean.
    """
    if torch.onnx.is_in_onnx_export():
        return _bin_means(_bin_means(x, bins, 2), bins, 3)
    return F.adaptive_avg_pool2d(x, bins)


class _AdaptivePool(nn.Module):
    def __init__(self, bins: int) -> None:
        super().__init__()
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return adaptive_avg_pool(x, self.bins)

    def extra_repr(self) -> str:
        return f"bins={self.bins}"


class PyramidPooling(nn.Module):
    """Concatenate the input with its pooled-and-upsampled versions at each bin size."""

    def __init__(self, in_channels: int, bins: tuple[int, ...] = (1, 2, 3, 6),
                 branch_channels: int | None = None) -> None:
        super().__init__()
        branch_channels = branch_channels or max(in_channels // len(bins), 8)
        self.branches = nn.ModuleList(
            nn.Sequential(_AdaptivePool(b), ConvBNReLU(in_channels, branch_channels, 1))
            for b in bins
        )
        self.out_channels = in_channels + branch_channels * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x] + [resize_to(branch(x), size) for branch in self.branches], dim=1)


class PSPHead(nn.Module):
    """Pyramid pooling, 3x3 conv-BN-ReLU (``channels``), dropout, 1x1 classifier."""

    def __init__(self, in_channels: int, num_classes: int, *, bins: tuple[int, ...] = (1, 2, 3, 6),
                 channels: int = 512, dropout: float = 0.1, in_index: int = -1) -> None:
        super().__init__()
        self.in_index = in_index
        self.ppm = PyramidPooling(in_channels, tuple(bins))
        self.bottleneck = ConvBNReLU(self.ppm.out_channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.bottleneck(self.ppm(features[self.in_index]))
        return self.classifier(self.dropout(x))
