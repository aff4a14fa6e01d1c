"""FCN-32s / 16s / 8s on VGG16 (Long et al., Fully Convolutional Networks, CVPR 2015).

VGG16's conv layers give pool3 (stride 8), pool4 (stride 16) and pool5 (stride 32); fc6/fc7
become 7x7 and 1x1 convolutions. Class scores at stride 32 are upsampled by learnable
transposed convs (initialised to bilinear, as in the paper) and summed with 1x1 score layers
on pool4 (16s) and pool3 (8s), then upsampled to the input. The paper pads the input by 100
pixels and crops; here fc6 is padded ("same") and each upsampling is sized to its skip, so any
input size works without the 100-pixel margin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VGG16_Weights, vgg16

from seglab.errors import ModelError
from seglab.models.heads.common import match_size
from seglab.models.registry import register_model
from seglab.models.weights import load_matching, named_or_file

_POOL3, _POOL4 = 17, 24  # indices after which torchvision's vgg16.features reaches pool3/pool4


def bilinear_kernel(channels: int, size: int) -> torch.Tensor:
    """Per-channel bilinear upsampling weights for a transposed conv (FCN initialisation)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    grid = torch.arange(size, dtype=torch.float32)
    filt = 1 - (grid - center).abs() / factor
    kernel = filt[:, None] * filt[None, :]
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = kernel
    return weight


def _upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2,
                            bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 2 * factor))
    return up


class FixedBilinearUp(nn.Module):
    """Per-channel bilinear upsampling by ``factor`` as a fixed (not learned) transposed conv."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        kernel = bilinear_kernel(1, 2 * factor).expand(channels, 1, -1, -1).clone()
        self.register_buffer("kernel", kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.kernel, stride=self.factor, padding=self.factor // 2,
                                  groups=x.shape[1])


class FCNVGG(nn.Module):
    """FCN with ``skips`` in {32, 16, 8} (the finest stride whose score is fused)."""

    def __init__(self, num_classes: int, *, skips: int = 8, fc_channels: int = 4096,
                 dropout: float = 0.5) -> None:
        super().__init__()
        if skips not in (8, 16, 32):
            raise ModelError(f"FCN skips must be 8, 16 or 32, got {skips!r}")
        self.skips = skips
        self.backbone = vgg16(weights=None).features
        self.fc = nn.Sequential(
            nn.Conv2d(512, fc_channels, 7, padding=3), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
            nn.Conv2d(fc_channels, fc_channels, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
        )
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        if skips <= 16:
            self.score_pool4 = nn.Conv2d(512, num_classes, 1)
            self.up2_fr = _upsampler(num_classes, 2)
        if skips == 8:
            self.score_pool3 = nn.Conv2d(256, num_classes, 1)
            self.up2_pool4 = _upsampler(num_classes, 2)
        # The paper learns the x2 upsamplings but fixes the final one to bilinear.
        self.up_final = FixedBilinearUp(num_classes, skips)
        # The paper zero-initialises the skip score layers so training starts from FCN-32s.
        for name in ("score_pool4", "score_pool3"):
            if hasattr(self, name):
                nn.init.zeros_(getattr(self, name).weight)
                nn.init.zeros_(getattr(self, name).bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.backbone
        pool3 = f[:_POOL3](x)
        pool4 = f[_POOL3:_POOL4](pool3)
        pool5 = f[_POOL4:](pool4)
        score = self.score_fr(self.fc(pool5))
        if self.skips <= 16:
            score = match_size(self.up2_fr(score), pool4.shape[-2:]) + self.score_pool4(pool4)
        if self.skips == 8:
            score = match_size(self.up2_pool4(score), pool3.shape[-2:]) + self.score_pool3(pool3)
        return {"out": match_size(self.up_final(score), x.shape[-2:])}

    def stages(self) -> list[list[nn.Module]]:
        """VGG16's five conv blocks (each ends with a max-pool)."""
        units, current = [], []
        for layer in self.backbone:
            current.append(layer)
            if isinstance(layer, nn.MaxPool2d):
                units.append(current)
                current = []
        return units


def build_fcn_vgg16(num_classes: int, *, skips: int = 8, backbone_weights: str | None = None,
                    fc_channels: int = 4096, dropout: float = 0.5) -> nn.Module:
    """FCN-{skips}s on VGG16; backbone_weights='imagenet' | path loads VGG16's conv layers."""
    model = FCNVGG(num_classes, skips=skips, fc_channels=fc_channels, dropout=dropout)
    if backbone_weights is not None:
        state, source = named_or_file(
            backbone_weights, "imagenet", VGG16_Weights.IMAGENET1K_V1.url,
            what="ImageNet weights of VGG16", option="backbone_weights",
        )
        features = {k[len("features."):]: v for k, v in state.items()
                    if k.startswith("features.")}
        load_matching(model.backbone, features, source=source)
    return model


for _skips in (8, 16, 32):
    register_model(
        f"fcn{_skips}s_vgg16", build_fcn_vgg16, family="fcn", backbone="vgg16",
        description=f"FCN-{_skips}s skip architecture on VGG16, transposed-conv upsampling",
        backbone_weights=("imagenet",), paper="Long et al., Fully Convolutional Networks, 2015",
        fixed={"skips": _skips},
    )
