"""CGNet (Wu et al., IEEE TIP 2021; arXiv 2018): context guided blocks, 0.5M parameters.

A context guided (CG) block learns a pixel's features jointly from itself and its surroundings
and then reweights them with the whole image's context:

- 1x1 conv to half the channels (BN + PReLU);
- f_loc, a depthwise 3x3 conv, and f_sur, a depthwise dilated 3x3 conv, concatenated back to
  the full width (BN + PReLU);
- f_glo, global average pooling + two fully connected layers + sigmoid, a per-channel
  weight (squeeze-and-excitation);
- the block's input added back (global residual learning).

The downsampling CG block starts with a stride-2 3x3 conv at the full width instead and
reduces the concatenation with a 1x1 conv, with no residual.

The network (CGNet_M3N21, the paper's main model): stage 1 is three 3x3 convs (32 channels,
the first with stride 2); stage 2 one downsampling CG block and M - 1 = 2 CG blocks (64
channels, dilation 2, f_glo reduction 8); stage 3 one downsampling CG block and N - 1 = 20 CG
blocks (128 channels, dilation 4, reduction 16). The input image, average-pooled to 1/2 and
1/4, is concatenated to the outputs of stages 1 and 2 (input injection), stage 2's and stage
3's first and last block outputs are concatenated, and a 1x1 classifier on the 1/8 map is
upsampled x8.

The defaults are the authors' (wutianyiRosun/CGNet): BatchNorm eps 1e-3, a classifier without
bias, no input padding (every branch meets at the same size for any H, W), so their published
checkpoints load with ``weights=PATH`` and give their outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import ModelError
from seglab.models.realtime.authors_weights import KeyMap, maybe_load
from seglab.models.realtime.blocks import PaddedSegmentation, set_bn_eps
from seglab.models.registry import register_model


def _bn_prelu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.PReLU(channels))


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, *,
          groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    padding = dilation * (kernel_size - 1) // 2
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                     dilation=dilation, groups=groups, bias=False)


def _conv_bn_prelu(in_channels: int, out_channels: int, kernel_size: int,
                   stride: int = 1) -> nn.Sequential:
    return nn.Sequential(_conv(in_channels, out_channels, kernel_size, stride),
                         _bn_prelu(out_channels))


class GlobalContext(nn.Module):
    """f_glo: a per-channel weight from the pooled whole-image features."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction), nn.ReLU(inplace=True),
                                nn.Linear(channels // reduction, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
        return x * weight[:, :, None, None]


class ContextGuidedBlock(nn.Module):
    """f_loc and f_sur side by side, f_glo on their joint features; residual unless down."""

    def __init__(self, in_channels: int, out_channels: int, *, dilation: int, reduction: int,
                 down: bool = False) -> None:
        super().__init__()
        width = out_channels if down else out_channels // 2
        self.reduce_in = _conv_bn_prelu(in_channels, width, 3 if down else 1, 2 if down else 1)
        self.loc = _conv(width, width, 3, groups=width)
        self.sur = _conv(width, width, 3, groups=width, dilation=dilation)
        self.joint = _bn_prelu(2 * width)
        self.reduce_out = _conv(2 * width, out_channels, 1) if down else nn.Identity()
        self.glo = GlobalContext(out_channels, reduction)
        self.residual = not down and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.reduce_in(x)
        y = self.glo(self.reduce_out(self.joint(torch.cat([self.loc(y), self.sur(y)], dim=1))))
        return x + y if self.residual else y


class CGNetEncoder(nn.Module):
    """Stages 1-3 with input injection; returns the concatenated 1/8 features."""

    def __init__(self, m: int = 3, n: int = 21, channels: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        c1, c2, c3 = channels
        self.stage1 = nn.Sequential(_conv_bn_prelu(3, c1, 3, 2), _conv_bn_prelu(c1, c1, 3),
                                    _conv_bn_prelu(c1, c1, 3))
        self.join1 = _bn_prelu(c1 + 3)
        self.down2 = ContextGuidedBlock(c1 + 3, c2, dilation=2, reduction=8, down=True)
        self.stage2 = nn.Sequential(*[ContextGuidedBlock(c2, c2, dilation=2, reduction=8)
                                      for _ in range(m - 1)])
        self.join2 = _bn_prelu(2 * c2 + 3)
        self.down3 = ContextGuidedBlock(2 * c2 + 3, c3, dilation=4, reduction=16, down=True)
        self.stage3 = nn.Sequential(*[ContextGuidedBlock(c3, c3, dilation=4, reduction=16)
                                      for _ in range(n - 1)])
        self.join3 = _bn_prelu(2 * c3)
        self.out_channels = 2 * c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = F.avg_pool2d(x, 3, stride=2, padding=1)
        quarter = F.avg_pool2d(half, 3, stride=2, padding=1)
        y = self.join1(torch.cat([self.stage1(x), half], dim=1))
        first = self.down2(y)
        y = self.join2(torch.cat([self.stage2(first), first, quarter], dim=1))
        first = self.down3(y)
        return self.join3(torch.cat([first, self.stage3(first)], dim=1))

    def stages(self) -> list[list[nn.Module]]:
        """Stage 1, stage 2 (with its input join), stage 3 (with both joins around it)."""
        return [[self.stage1, self.join1], [self.down2, self.stage2, self.join2],
                [self.down3, self.stage3, self.join3]]


class CGNet(PaddedSegmentation):
    """CGNet: ``backbone`` (the three stages) and a dropout + 1x1 ``classifier`` at 1/8."""

    stride = 8

    def __init__(self, num_classes: int, *, m: int = 3, n: int = 21, dropout: float = 0.1,
                 classifier_bias: bool = False) -> None:
        super().__init__()
        self.backbone = CGNetEncoder(m, n)
        self.classifier = nn.Sequential(nn.Dropout2d(dropout),
                                        nn.Conv2d(self.backbone.out_channels, num_classes, 1,
                                                  bias=classifier_bias))
        self.aux = False

    def logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.classifier(self.backbone(x))}

    def stages(self) -> list[list[nn.Module]]:
        return self.backbone.stages()


# The authors' names: level1_0..2, b1, level2_0, level2.i, bn_prelu_2, level3_0, level3.i,
# bn_prelu_3, classifier (a Dropout2d first when trained with dropout_flag).
AUTHORS_KEYS = KeyMap(groups=(
    ("level1_", "backbone.stage1."), ("b1.", "backbone.join1."),
    ("level2_0.", "backbone.down2."), ("level2.", "backbone.stage2."),
    ("bn_prelu_2.", "backbone.join2."), ("level3_0.", "backbone.down3."),
    ("level3.", "backbone.stage3."), ("bn_prelu_3.", "backbone.join3."),
    ("classifier.", "classifier."),
))


def build_cgnet(num_classes: int, *, m: int = 3, n: int = 21, dropout: float = 0.1,
                bn_eps: float = 1e-3, classifier_bias: bool = False, pad: bool = False,
                weights: str | None = None) -> nn.Module:
    """CGNet_M3N21 (0.5M parameters at 19 classes); ``m``/``n``: CG blocks in stages 2 and 3.

    ``bn_eps``, ``classifier_bias``, ``pad`` (zero-pad the input to a multiple of 8): the
    authors' conventions by default. ``weights``: a local file, the authors' checkpoint
    (``model_*.pth``) or a seglab state dict.
    """
    if m < 1 or n < 1:
        raise ModelError(f"cgnet needs m >= 1 and n >= 1 CG blocks per stage, got m={m}, n={n}")
    model = CGNet(num_classes, m=m, n=n, dropout=dropout, classifier_bias=classifier_bias)
    set_bn_eps(model, bn_eps)
    model.pad = pad
    return maybe_load(model, weights, AUTHORS_KEYS)


register_model(
    "cgnet", build_cgnet, family="cgnet", backbone="none (from scratch)",
    description="CGNet: context guided blocks (local + surrounding + global context), 0.5M",
    paper="Wu et al., CGNet: A Light-weight Context Guided Network, IEEE TIP 2021",
)
