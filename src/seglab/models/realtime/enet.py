"""ENet (Paszke et al., 2016): a tiny encoder-decoder of residual bottlenecks, from scratch.

- Initial block: a 3x3 stride-2 conv (13 filters) concatenated with a 2x2 max pool of the
  input (16 channels at 1/2).
- Bottleneck: projection (1x1, or 2x2 stride 2 when downsampling) to a quarter of the
  channels, a main conv (3x3 regular, dilated, or asymmetric 5x1 + 1x5), a 1x1 expansion,
  spatial dropout, added to the main branch; BN + PReLU throughout. Downsampling bottlenecks
  max-pool the main branch (keeping the indices) and zero-pad its channels.
- Encoder (``backbone``): stage 1 (downsample to 64 at 1/4, four bottlenecks, dropout 0.01),
  stages 2 and 3 (128 at 1/8; regular, dilated 2/4/8/16 and asymmetric bottlenecks interleaved;
  dropout 0.1; stage 2 starts by downsampling).
- Decoder: upsampling bottlenecks (main branch: 1x1 conv + max-unpool with the encoder's
  indices; extension: 1x1, 3x3 transposed stride 2, 1x1) to 64 at 1/4 and 16 at 1/2, and a
  transposed conv to the classes at full resolution.

ENet has no auxiliary head (and no ``aux`` option).

The layers follow the PyTorch port whose weights are published (davidtvs/PyTorch-ENet,
``save/ENet_CamVid/ENet``: 12 outputs, its "unlabeled" class last), so they load with
``weights=PATH``: a 3x3 stride-2 max pool in the initial block, an activation after every
expansion, BN + activation between the two asymmetric convs, 2x2 transposed convs in the
upsampling bottlenecks, a bias-free final transposed conv, PReLU with one slope per layer in
the encoder (``encoder_relu=False``) and ReLU in the decoder (``decoder_relu=True``). Every
upsampling restores the size its encoder stage had, so any H, W runs without padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models.realtime.authors_weights import KeyMap, maybe_load
from seglab.models.realtime.blocks import PaddedSegmentation
from seglab.models.registry import register_model


def _act(relu: bool) -> nn.Module:
    return nn.ReLU(inplace=True) if relu else nn.PReLU()


def _conv_bn_act(in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0, dilation: int = 1, *,
                 relu: bool, act: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                        dilation=dilation, bias=False), nn.BatchNorm2d(out_channels)]
    return layers + [_act(relu)] if act else layers


class InitialBlock(nn.Module):
    """3x3 stride-2 conv (13) || 3x3 stride-2 max pool of the RGB input -> 16, BN, act."""

    def __init__(self, out_channels: int = 16, relu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, out_channels - 3, 3, stride=2, padding=1, bias=False)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.post = nn.Sequential(nn.BatchNorm2d(out_channels), _act(relu))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(torch.cat([self.conv(x), self.pool(x)], dim=1))


class Bottleneck(nn.Module):
    """Regular / dilated / asymmetric bottleneck (same channels, same size)."""

    def __init__(self, channels: int, *, dilation: int = 1, asymmetric: bool = False,
                 dropout: float = 0.1, relu: bool = False) -> None:
        super().__init__()
        mid = channels // 4
        self.project = nn.Sequential(*_conv_bn_act(channels, mid, 1, relu=relu))
        if asymmetric:
            main = (_conv_bn_act(mid, mid, (5, 1), padding=(2, 0), relu=relu)
                    + _conv_bn_act(mid, mid, (1, 5), padding=(0, 2), relu=relu))
        else:
            main = _conv_bn_act(mid, mid, 3, padding=dilation, dilation=dilation, relu=relu)
        self.main = nn.Sequential(*main)
        self.expand = nn.Sequential(*_conv_bn_act(mid, channels, 1, relu=relu))
        self.dropout = nn.Dropout2d(dropout)
        self.act = _act(relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.dropout(self.expand(self.main(self.project(x)))))


class DownBottleneck(nn.Module):
    """Downsampling bottleneck; returns the output and the max-pool indices for the decoder."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.1,
                 relu: bool = False) -> None:
        super().__init__()
        mid = in_channels // 4
        self.project = nn.Sequential(*_conv_bn_act(in_channels, mid, 2, 2, relu=relu))
        self.main = nn.Sequential(*_conv_bn_act(mid, mid, 3, padding=1, relu=relu))
        self.expand = nn.Sequential(*_conv_bn_act(mid, out_channels, 1, relu=relu))
        self.dropout = nn.Dropout2d(dropout)
        self.pad = out_channels - in_channels
        self.act = _act(relu)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        main, indices = F.max_pool2d(x, 2, return_indices=True)
        main = F.pad(main, (0, 0, 0, 0, 0, self.pad))
        ext = self.dropout(self.expand(self.main(self.project(x))))
        return self.act(main + ext), indices


class UpBottleneck(nn.Module):
    """Upsampling bottleneck: max-unpool of a 1x1-projected main branch + 2x2 transposed conv."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.1,
                 relu: bool = True) -> None:
        super().__init__()
        mid = in_channels // 4
        self.main = nn.Sequential(*_conv_bn_act(in_channels, out_channels, 1, act=False,
                                                relu=relu))
        self.project = nn.Sequential(*_conv_bn_act(in_channels, mid, 1, relu=relu))
        self.up = nn.ConvTranspose2d(mid, mid, 2, stride=2, bias=False)
        self.up_post = nn.Sequential(nn.BatchNorm2d(mid), _act(relu))
        self.expand = nn.Sequential(*_conv_bn_act(mid, out_channels, 1, act=False, relu=relu))
        self.dropout = nn.Dropout2d(dropout)
        self.act = _act(relu)

    def forward(self, x: torch.Tensor, indices: torch.Tensor,
                size: torch.Size) -> torch.Tensor:
        # ``size``: the encoder stage's input, so odd sizes come back exactly
        main = F.max_unpool2d(self.main(x), indices, 2, output_size=size)
        ext = self.up_post(self.up(self.project(x), output_size=size))
        return self.act(main + self.dropout(self.expand(ext)))


def _stage23(dropout: float, relu: bool) -> list[nn.Module]:
    """Bottlenecks x.1 .. x.8 of stages 2 and 3 (128 channels)."""
    kinds = [{}, {"dilation": 2}, {"asymmetric": True}, {"dilation": 4}, {}, {"dilation": 8},
             {"asymmetric": True}, {"dilation": 16}]
    return [Bottleneck(128, dropout=dropout, relu=relu, **kind) for kind in kinds]


class ENetEncoder(nn.Module):
    """Initial block and stages 1-3; returns the 1/8 features and both pooling indices."""

    def __init__(self, dropout: float = 0.1, stage1_dropout: float = 0.01,
                 relu: bool = False) -> None:
        super().__init__()
        self.initial = InitialBlock(16, relu)
        self.down1 = DownBottleneck(16, 64, stage1_dropout, relu)
        self.stage1 = nn.Sequential(*[Bottleneck(64, dropout=stage1_dropout, relu=relu)
                                      for _ in range(4)])
        self.down2 = DownBottleneck(64, 128, dropout, relu)
        self.stage2 = nn.Sequential(*_stage23(dropout, relu))
        self.stage3 = nn.Sequential(*_stage23(dropout, relu))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor,
                                                                          torch.Size]]]:
        """The 1/8 features and, per downsampling, (max-pool indices, the size before it)."""
        x = self.initial(x)
        size1 = x.shape
        x, indices1 = self.down1(x)
        x = self.stage1(x)
        size2 = x.shape
        x, indices2 = self.down2(x)
        return self.stage3(self.stage2(x)), [(indices1, size1), (indices2, size2)]

    def stages(self) -> list[list[nn.Module]]:
        """Initial block, stage 1 (with its downsampling), stage 2 (likewise), stage 3."""
        return [[self.initial], [self.down1, self.stage1], [self.down2, self.stage2],
                [self.stage3]]


class ENet(PaddedSegmentation):
    """ENet: ``backbone`` (encoder) + upsampling decoder + transposed-conv classifier."""

    stride = 8

    def __init__(self, num_classes: int, *, dropout: float = 0.1, encoder_relu: bool = False,
                 decoder_relu: bool = True) -> None:
        super().__init__()
        self.backbone = ENetEncoder(dropout, relu=encoder_relu)
        self.up4 = UpBottleneck(128, 64, dropout, decoder_relu)
        self.stage4 = nn.Sequential(Bottleneck(64, dropout=dropout, relu=decoder_relu),
                                    Bottleneck(64, dropout=dropout, relu=decoder_relu))
        self.up5 = UpBottleneck(64, 16, dropout, decoder_relu)
        self.stage5 = Bottleneck(16, dropout=dropout, relu=decoder_relu)
        self.fullconv = nn.ConvTranspose2d(16, num_classes, 3, stride=2, padding=1, bias=False)
        self.aux = False

    def logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y, ((indices1, size1), (indices2, size2)) = self.backbone(x)
        y = self.stage4(self.up4(y, indices2, size2[-2:]))
        y = self.stage5(self.up5(y, indices1, size1[-2:]))
        return {"out": self.fullconv(y, output_size=x.shape[-2:])}

    def stages(self) -> list[list[nn.Module]]:
        return self.backbone.stages()


# The published weights' names: initial_block, downsample1_0, regular1_1..4, downsample2_0,
# stage 2 and 3 bottlenecks by kind (regular2_1, dilated2_2, asymmetric2_3, ...),
# upsample4_0, regular4_1..2, upsample5_0, regular5_1, transposed_conv.
_STAGE23 = ("regular{}_{}", "dilated{}_{}", "asymmetric{}_{}", "dilated{}_{}", "regular{}_{}",
            "dilated{}_{}", "asymmetric{}_{}", "dilated{}_{}")
AUTHORS_KEYS = KeyMap(groups=(
    ("initial_block.", "backbone.initial."), ("downsample1_0.", "backbone.down1."),
    *((f"regular1_{i + 1}.", f"backbone.stage1.{i}.") for i in range(4)),
    ("downsample2_0.", "backbone.down2."),
    *((name.format(2, i + 1) + ".", f"backbone.stage2.{i}.") for i, name in enumerate(_STAGE23)),
    *((name.format(3, i) + ".", f"backbone.stage3.{i}.") for i, name in enumerate(_STAGE23)),
    ("upsample4_0.", "up4."), ("regular4_1.", "stage4.0."), ("regular4_2.", "stage4.1."),
    ("upsample5_0.", "up5."), ("regular5_1.", "stage5."), ("transposed_conv.", "fullconv."),
))


def build_enet(num_classes: int, *, dropout: float = 0.1, encoder_relu: bool = False,
               decoder_relu: bool = True, pad: bool = False,
               weights: str | None = None) -> nn.Module:
    """ENet (0.35M parameters at 12 classes).

    ``encoder_relu``/``decoder_relu``: ReLU instead of PReLU in that part (the published
    port's defaults). ``pad``: zero-pad the input to a multiple of 8 (not needed). ``weights``:
    a local file, the port's checkpoint (``{"state_dict": ...}``) or a seglab state dict.
    """
    model = ENet(num_classes, dropout=dropout, encoder_relu=encoder_relu,
                 decoder_relu=decoder_relu)
    model.pad = pad
    return maybe_load(model, weights, AUTHORS_KEYS)


register_model(
    "enet", build_enet, family="enet", backbone="none (from scratch)",
    description="ENet: tiny residual-bottleneck encoder-decoder, max-unpool decoder",
    paper="Paszke et al., ENet, arXiv 2016",
)
