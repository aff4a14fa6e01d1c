"""Pieces the real-time architectures share: conv-BN-act, input padding, segmentation heads.

These networks downsample by fixed strides (8 to 64) and fuse branches of different
resolutions by exact factors, so an input whose sides are not a multiple of the total stride
would leave the branches one pixel apart. ``PaddedSegmentation`` zero-pads the (normalised)
input at the bottom and right to that multiple and crops the logits back, so any H, W works.
Where the authors' code does not pad (it resizes or fuses by interpolation), ``pad=False``
runs the network on the input as it is, as their published weights expect.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models.heads.common import pad_to_multiple


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, *,
            groups: int = 1, dilation: int = 1, act: bool = True) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm (-> ReLU), padded so stride 1 keeps the size."""
    padding = dilation * (kernel_size - 1) // 2
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation,
                  groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SegHead(nn.Module):
    """conv3x3-BN-ReLU (``mid`` channels) -> dropout -> 1x1 classifier (the BiSeNet/DDRNet head)."""

    def __init__(self, in_channels: int, mid_channels: int, num_classes: int,
                 dropout: float = 0.1, bias: bool = True) -> None:
        super().__init__()
        self.conv = conv_bn(in_channels, mid_channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(mid_channels, num_classes, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))


def set_bn_eps(model: nn.Module, eps: float) -> None:
    """Give every BatchNorm of ``model`` the epsilon ``eps`` (authors differ: 1e-5, 1e-3).

    Near-zero running variances of trained weights make the choice matter at inference.
    """
    if not eps > 0:
        raise ValueError(f"bn_eps must be positive, got {eps!r}")
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = float(eps)


class PaddedSegmentation(nn.Module):
    """Base class: pads the input to a multiple of ``stride``, crops every output back.

    Subclasses implement ``logits(x) -> {"out": ..., "aux"?: ...}`` on the padded input (any
    resolution; they are resized to the padded size here) and set ``self.aux``. Setting
    ``pad = False`` skips the padding (the input is used as it is, as the authors' code does).
    """

    stride: int = 32
    pad: bool = True
    align_corners: bool = False  # how the logits are resized to the input

    def logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def set_aux_head(self, aux_head: nn.Module | None, weight: float) -> None:
        """The auxiliary head (None: no aux output) and its loss weight, which the engine reads."""
        self.aux = aux_head is not None
        self.aux_head = aux_head
        self.aux_weight = weight if aux_head is not None else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        if self.pad:
            x = pad_to_multiple(x, self.stride)
        padded = x.shape[-2:]
        return {k: self._resize(v, padded)[..., :h, :w] for k, v in self.logits(x).items()}

    def _resize(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)
