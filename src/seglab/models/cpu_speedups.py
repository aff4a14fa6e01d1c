"""Exact CPU speed-ups applied to a model in place: same parameters, same ``state_dict``.

Two slow paths of oneDNN/autograd on a channels_last model, measured on the 2-core Xeon with
AMX (torch 2.14, batch 8 at 320x320; ``benchmarks/RESULTS.md``):

- A bf16 3x3 convolution with 2048 or more input channels (DeepLabV3's ASPP branches, the FCN
  and PSPNet heads on ResNet-50/101) runs 1.45-2.95x slower, forward + backward, than the same
  sum split into 256-channel slices: ASPP's rate-12 branch took 806 ms, sliced 273 ms.
  :class:`SlicedConv2d` computes the slices, adds them in fp32 and rounds once.
- The gradient of a global average pool comes back in NCHW order even when its input is
  channels_last, so autograd adds the model's channels_last gradients into an NCHW buffer
  (123 ms per add at 8x2048x40x40 instead of 13) and the layers below run on mixed layouts.
  :class:`LayoutKeepingAvgPool2d` writes its input's gradient channels_last.

And three of oneDNN in fp32 (issue 25, AVX2 and AVX-512, ``benchmarks/RESULTS.md``):

- A dilated 3x3 convolution whose taps mostly land in the zero padding (ASPP's rates 12, 24
  and 36 on DeepLabV3's 40x40 map at crop 320: 64%, 36% and 16% of the taps inside) is
  computed in full by oneDNN's backward (and by its NCHW forward). :class:`TapConv2d` trains
  it as one matrix product per tap over the outputs whose input is inside, forward and
  backward: the same sums without the zeros (rate-36 backward 6.1 s -> 1.6 s at batch 8).
- Every other stride-1 3x3 convolution with at least ``WINOGRAD_MIN_CHANNELS`` channels in and
  out (ResNet bottlenecks from layer2 on, the FCN, DeepLabV3 and aux heads) trains by Winograd
  F(4x4, 3x3), :mod:`seglab.models.winograd`: 4x fewer multiplications, 1.2-3.2x faster
  forward + backward with AVX2 kernels, 1.1-2.1x with AVX-512 kernels from 256 channels
  (:class:`WinogradConv2d`); by F(5x5, 3x3) where that costs less: 256+ channels, or 4x4
  blocks wasting the map's edges (ResNet's layer4 at dilation 4 on a 40x40 map: 1.5x faster).
  So does a dilated one where Winograd needs fewer multiply-adds than the taps: ASPP's rate 12
  at crop 320, whose blocks' edge rows read only padding and are left out (1.4x faster).
- With AVX2 kernels oneDNN computes a wide 1x1 convolution's weight gradient at 125-155 GFLOP/s
  where MKL's matrix product reaches 160-198 (ResNet-50's 1024 -> 2048 at 40x40, batch 8: 421
  ms against 272). :class:`PointwiseConv2d` keeps oneDNN's forward and input gradient and
  computes the weight gradient as that one product.

All act only on the CPU (the sliced convolution only in bf16, the tap, Winograd and pointwise
convolutions only in fp32 training) and step aside while the model is traced, scripted,
compiled or exported, so exported graphs keep the one convolution. They trade memory for
speed (DeepLabV3-R50's fp32 training with AVX2 kernels at batch 8 and crop 320: 10.2 s a step
at a 7.8 GB peak, against 17 s and 6.7 GB without them; Winograd keeps its transformed
blocks and kernels): ``SEGLAB_CPU_SPEEDUPS=0`` leaves every layer as it is.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from seglab.errors import ConfigError
from seglab.models.winograd import winograd_conv2d, winograd_cost

WIDE_INPUT = 2048  # input channels from which a 3x3 convolution is sliced (1024 gains nothing)
SLICE = 256  # channels per slice: the fastest of 256/512/1024 at every shape measured
# Tap convolution when at most this share of the kernel's taps reads inside the input, on
# maps of at least TAP_MIN_PIXELS (on smaller ones the per-tap products are too small to beat
# one oneDNN call). With AVX2 kernels rate 12 on a 40x40 map (0.64) gained and rate 4 (0.87)
# lost; with AVX-512 kernels oneDNN is faster and rate 12 lost too, rate 36 (0.16) gained
# (rate 24, 0.36, once each way): see tap_limit.
TAP_MAX_INSIDE = 0.7
TAP_MAX_INSIDE_WIDE_SIMD = 0.4
TAP_MIN_PIXELS = 256
# Winograd from this many input and output channels: at 64 its transforms cost as much as
# the products they save (64 -> 64 at 80x80: 1.00x with AVX2 kernels, 0.75x with AVX-512).
# With AVX-512 kernels 128 channels won on a 40x40 map (1.32x) and lost on 88x120 (0.79x),
# 256 and more won everywhere measured: see winograd_min_channels.
WINOGRAD_MIN_CHANNELS = 128
WINOGRAD_MIN_CHANNELS_WIDE_SIMD = 256
# The weight gradient of a 1x1 convolution with in x out >= this is MKL's with AVX2 kernels:
# 1.05-1.55x faster from 256 x 1024 up (1280 -> 256: 0.96x), level at 256 x 512, and at 128 x
# 512 and below oneDNN's was 5-50% faster (with AVX-512 kernels oneDNN's was as fast or faster
# everywhere measured). benchmarks/bench_pointwise_conv.py, RESULTS.md (issue 25).
POINTWISE_MIN_PRODUCT = 256 * 1024
ENV_SWITCH = "SEGLAB_CPU_SPEEDUPS"
_SWITCH_VALUES = {"": True, "1": True, "on": True, "true": True, "yes": True,
                  "0": False, "off": False, "false": False, "no": False}


def apply_cpu_speedups(model: nn.Module) -> int:
    """Swap the layers of ``model`` that hit a slow CPU path for their exact equivalents.

    Returns how many layers were swapped. Idempotent; the swapped layers are subclasses of
    the originals (``isinstance`` checks and ``state_dict`` keys are unchanged) and behave
    exactly as before off the CPU. Swaps nothing where :func:`cpu_speedups_enabled` is False.
    """
    if not cpu_speedups_enabled():
        return 0
    swapped = 0
    for layer in model.modules():
        if type(layer) is nn.Conv2d and _is_wide(layer):
            layer.__class__ = SlicedConv2d
            swapped += 1
        elif type(layer) is nn.Conv2d and _suits_winograd(layer):
            layer.__class__ = WinogradConv2d
            swapped += 1
        elif type(layer) is nn.Conv2d and _is_dilated(layer):
            layer.__class__ = TapConv2d
            swapped += 1
        elif type(layer) is nn.Conv2d and _suits_pointwise(layer):
            layer.__class__ = PointwiseConv2d
            swapped += 1
        elif type(layer) is nn.AdaptiveAvgPool2d and _pools_globally(layer):
            layer.__class__ = LayoutKeepingAvgPool2d
            swapped += 1
    return swapped


def cpu_speedups_enabled() -> bool:
    """False where the ``SEGLAB_CPU_SPEEDUPS`` environment variable is ``0`` (or ``off``,
    ``false``, ``no``): then :func:`apply_cpu_speedups` swaps nothing, to keep the plain
    kernels' memory or results. Raises ``ConfigError`` on any value but those and ``1``,
    ``on``, ``true``, ``yes`` or empty."""
    value = os.environ.get(ENV_SWITCH, "")
    try:
        return _SWITCH_VALUES[value.strip().lower()]
    except KeyError:
        raise ConfigError(f"{ENV_SWITCH}={value!r}: use 0 to turn seglab's CPU layer "
                          "speed-ups off, 1 (the default) to keep them") from None


def _is_wide(conv: nn.Conv2d) -> bool:
    return (conv.in_channels >= WIDE_INPUT and conv.groups == 1
            and conv.kernel_size != (1, 1) and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str))


def _stride1_zero_padded(conv: nn.Conv2d) -> bool:
    """Stride 1, one group, zero padding given in pixels: what the tap and Winograd
    convolutions compute."""
    return (conv.stride == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str))


def _is_dilated(conv: nn.Conv2d) -> bool:
    return max(conv.dilation) > 1 and _stride1_zero_padded(conv)


def _suits_winograd(conv: nn.Conv2d) -> bool:
    return (conv.kernel_size == (3, 3) and _stride1_zero_padded(conv)
            and conv.dilation[0] == conv.dilation[1] and conv.padding[0] == conv.padding[1]
            and min(conv.in_channels, conv.out_channels) >= WINOGRAD_MIN_CHANNELS)


def _suits_pointwise(conv: nn.Conv2d) -> bool:
    return (conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0)
            and conv.groups == 1
            and conv.in_channels * conv.out_channels >= POINTWISE_MIN_PRODUCT)


def _pools_globally(pool: nn.AdaptiveAvgPool2d) -> bool:
    size = pool.output_size
    return all(s == 1 for s in (size if isinstance(size, tuple) else (size,)))


def _graph_capture() -> bool:
    """True while the model is traced, scripted, compiled or exported (keep plain ops)."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting()
            or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export())


def _runs_bf16(x: Tensor) -> bool:
    if x.dtype == torch.bfloat16:
        return True
    return (torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def inside_share(conv: nn.Conv2d, height: int, width: int) -> float:
    """Share of ``conv``'s multiply-adds on a ``height`` x ``width`` input whose input pixel is
    inside the image (the rest multiply the zero padding). Stride 1 only."""
    share = 1.0
    for size, k, d, p in zip((height, width), conv.kernel_size, conv.dilation, conv.padding,
                             strict=True):
        out = size + 2 * p - d * (k - 1)
        if out <= 0:
            return 0.0
        share *= sum(hi - lo for lo, hi in (_inside(out, size, t * d - p) for t in range(k))
                     if hi > lo) / (out * k)
    return share


def _inside(out: int, size: int, shift: int) -> tuple[int, int]:
    """Output positions ``[lo, hi)`` whose input position ``o + shift`` is in ``[0, size)``."""
    return max(0, -shift), min(out, size - shift)


def tap_limit() -> float:
    """The largest :func:`inside_share` trained by taps with the kernels torch runs here:
    ``TAP_MAX_INSIDE`` on AVX2 (``ATEN_CPU_CAPABILITY`` honoured), else the stricter
    ``TAP_MAX_INSIDE_WIDE_SIMD`` (AVX-512, and CPUs not measured: ARM)."""
    if torch.backends.cpu.get_cpu_capability() == "AVX2":
        return TAP_MAX_INSIDE
    return TAP_MAX_INSIDE_WIDE_SIMD


def _fp32_training_pass(x: Tensor, weight: Tensor) -> bool:
    """An fp32 training pass of a 2-d convolution on the CPU, outside graph capture."""
    return (not _graph_capture() and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and x.dim() == 4
            and not torch.is_autocast_enabled("cpu")
            and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))


def _trains_fp32_on_cpu(x: Tensor, weight: Tensor) -> bool:
    """An fp32 training pass on the CPU on a map large enough for the per-tap or per-block
    products to beat one oneDNN call."""
    return _fp32_training_pass(x, weight) and x.shape[-2] * x.shape[-1] >= TAP_MIN_PIXELS


def winograd_min_channels() -> int:
    """The fewest input and output channels trained by Winograd with the kernels torch runs
    here: ``WINOGRAD_MIN_CHANNELS`` on AVX2 (``ATEN_CPU_CAPABILITY`` honoured), else the
    stricter ``WINOGRAD_MIN_CHANNELS_WIDE_SIMD`` (AVX-512, and CPUs not measured: ARM)."""
    if torch.backends.cpu.get_cpu_capability() == "AVX2":
        return WINOGRAD_MIN_CHANNELS
    return WINOGRAD_MIN_CHANNELS_WIDE_SIMD


def _uses_taps(conv: nn.Conv2d, x: Tensor, weight: Tensor) -> bool:
    """fp32 training on the CPU of a convolution that mostly multiplies padding."""
    return (_stride1_zero_padded(conv) and _trains_fp32_on_cpu(x, weight)
            and inside_share(conv, *x.shape[-2:]) <= tap_limit())


class TapConv2d(nn.Conv2d):
    """A dilated ``nn.Conv2d`` that, in fp32 training on the CPU, skips the taps that read
    zero padding (:func:`inside_share` <= :func:`tap_limit`); elsewhere the plain kernel."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if not _uses_taps(self, input, weight):
            return super()._conv_forward(input, weight, bias)
        out = _TapConvolution.apply(input, weight, self.dilation, self.padding)
        return out if bias is None else out + bias.view(1, -1, 1, 1)


class _TapConvolution(torch.autograd.Function):
    """Stride-1 conv2d as one (pixels x in) @ (in x out) product per kernel tap, each over the
    output rectangle whose input is inside the image; gradients the same way. Works on the
    channels-last (NHWC) view, so a channels_last input is not copied."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, dilation, padding) -> Tensor:
        h, wd = x.shape[-2:]
        kh, kw = w.shape[-2:]
        size = (h + 2 * padding[0] - dilation[0] * (kh - 1),
                wd + 2 * padding[1] - dilation[1] * (kw - 1))
        pixels = x.permute(0, 2, 3, 1).contiguous()  # NHWC; a view when x is channels_last
        taps = _taps((h, wd), (kh, kw), dilation, padding, size)
        out = None
        for a, b, inp, outp in _whole_first(taps, size, 3):
            rows, cols = outp
            out = _sum_in(out, _pointwise(pixels[:, inp[0], inp[1]], w[:, :, a, b]), size,
                          rows, cols)
        ctx.save_for_backward(pixels, w)
        ctx.taps = taps
        return out.permute(0, 3, 1, 2)  # NCHW shape, channels_last memory

    @staticmethod
    @once_differentiable  # backward saves detached tensors: a second order would be wrong
    def backward(ctx, grad: Tensor):
        pixels, w = ctx.saved_tensors
        _, h, wd, c = pixels.shape
        o = w.shape[0]
        grad = grad.permute(0, 2, 3, 1).contiguous()
        grad_x = None
        grad_w = torch.zeros_like(w) if ctx.needs_input_grad[1] else None
        for a, b, inp, outp in _whole_first(ctx.taps, (h, wd), 2):
            g = grad[:, outp[0], outp[1]].contiguous()
            if ctx.needs_input_grad[0]:
                rows, cols = inp
                grad_x = _sum_in(grad_x, _pointwise(g, w[:, :, a, b].t()), (h, wd), rows,
                                 cols)
            if grad_w is not None:
                grad_w[:, :, a, b] = g.view(-1, o).t() @ pixels[:, inp[0], inp[1]].reshape(-1, c)
        grad_x = None if grad_x is None else grad_x.permute(0, 3, 1, 2)
        return grad_x, grad_w, None, None


def _pointwise(pixels: Tensor, weight: Tensor) -> Tensor:
    """``pixels @ weight.t()`` for NHWC ``pixels`` (n, h, w, in) and an (out x in) ``weight``,
    NHWC out, as oneDNN's 1x1 convolution: 1.15-1.2x MKL's product at ASPP's shapes with AVX2
    kernels (not for weight gradients, where MKL's is faster: :class:`PointwiseConv2d`)."""
    return F.conv2d(pixels.permute(0, 3, 1, 2), weight[:, :, None, None]).permute(0, 2, 3, 1)


def _covers(slices: tuple[slice, slice], size: tuple[int, int]) -> bool:
    return slices == (slice(0, size[0]), slice(0, size[1]))


def _whole_first(taps: list, size: tuple[int, int], which: int) -> list:
    """``taps`` with one whose slices (``which``: 2 input, 3 output) cover all of ``size``
    first, if any (the centre tap of a convolution that keeps its size): the sum can start
    as that tap's product instead of zeros it is added to."""
    return sorted(taps, key=lambda tap: not _covers(tap[which], size))


def _sum_in(total: Tensor | None, product: Tensor, size: tuple[int, int], rows: slice,
            cols: slice) -> Tensor:
    """``total`` (NHWC, ``size``) with a tap's ``product`` added at ``rows``, ``cols``. The
    first product starts the sum: as it is when it covers all of ``size``, else in a zero
    tensor."""
    if total is None:
        if _covers((rows, cols), size):
            return product
        total = product.new_zeros(product.shape[0], *size, product.shape[-1])
    total[:, rows, cols] += product
    return total


def _taps(size_in, kernel, dilation, padding, size_out):
    """(a, b, input slices, output slices) of every tap with at least one inside pixel."""
    taps = []
    for a in range(kernel[0]):
        dy = a * dilation[0] - padding[0]
        r0, r1 = _inside(size_out[0], size_in[0], dy)
        for b in range(kernel[1]):
            dx = b * dilation[1] - padding[1]
            c0, c1 = _inside(size_out[1], size_in[1], dx)
            if r1 > r0 and c1 > c0:
                taps.append((a, b, (slice(r0 + dy, r1 + dy), slice(c0 + dx, c1 + dx)),
                             (slice(r0, r1), slice(c0, c1))))
    return taps


def _uses_winograd(conv: nn.Conv2d, x: Tensor, weight: Tensor) -> bool:
    """fp32 training on the CPU of a 3x3 convolution with enough channels for the kernels
    torch runs, whose taps mostly read the image (more than ``TAP_MAX_INSIDE``) or which
    Winograd computes with fewer multiply-adds than the taps (:func:`winograd_is_cheaper`)."""
    return (_suits_winograd(conv)
            and min(conv.in_channels, conv.out_channels) >= winograd_min_channels()
            and _trains_fp32_on_cpu(x, weight)
            and (inside_share(conv, *x.shape[-2:]) > TAP_MAX_INSIDE
                 or winograd_is_cheaper(conv, *x.shape[-2:])))


def winograd_is_cheaper(conv: nn.Conv2d, height: int, width: int) -> bool:
    """Whether Winograd's weighted multiply-adds (:func:`seglab.models.winograd.winograd_cost`)
    are fewer than the taps' (those that read inside the image) on a ``height`` x ``width``
    input: on ASPP's rate 12 at crop 320 (0.64 inside, one block per phase whose edge rows
    read only padding; 1.4x the taps' speed with AVX2 kernels, 1.4x oneDNN's with AVX-512),
    not at its rates 24 and 36. Not a comparison with oneDNN, which runs all nine taps but
    faster per multiply-add: at rate 24 on a 64x64 map (0.56 inside) Winograd, with 0.6x the
    multiply-adds of all nine taps, trained 0.94x as fast as oneDNN with AVX-512 kernels."""
    out_h, out_w = (size + 2 * conv.padding[0] - 2 * conv.dilation[0]
                    for size in (height, width))
    if out_h <= 0 or out_w <= 0:
        return False  # no output: the plain kernel says what is wrong
    taps = (inside_share(conv, height, width) * 9 * out_h * out_w
            * conv.in_channels * conv.out_channels)
    return winograd_cost(out_h, out_w, conv.dilation[0], conv.in_channels,
                         conv.out_channels, conv.padding[0]) < taps


class WinogradConv2d(TapConv2d):
    """A stride-1 3x3 ``nn.Conv2d`` that trains by Winograd F(m x m, 3x3) in fp32 on the CPU
    (or by taps, being a :class:`TapConv2d`, where it mostly reads padding); elsewhere the
    plain kernel."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if not _uses_winograd(self, input, weight):
            return super()._conv_forward(input, weight, bias)
        out = winograd_conv2d(input, weight, self.dilation[0], self.padding[0])
        return out if bias is None else out + bias.view(1, -1, 1, 1)


class SlicedConv2d(WinogradConv2d):
    """A wide ``nn.Conv2d`` that, in bf16 on the CPU, sums 256-input-channel slices (and, being
    a :class:`WinogradConv2d`, trains in fp32 by Winograd or taps where those apply: FCN's
    2048 -> 512 head by Winograd 3.2x faster with AVX2 kernels, ASPP's branches by taps)."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if input.device.type != "cpu" or not _runs_bf16(input) or _graph_capture():
            return super()._conv_forward(input, weight, bias)
        x, w = input.to(torch.bfloat16), weight.to(torch.bfloat16)
        out = _SlicedConvolution.apply(x, w, self.stride, self.padding, self.dilation)
        return out if bias is None else out + bias.to(out.dtype).view(1, -1, 1, 1)


class _SlicedConvolution(torch.autograd.Function):
    """conv2d(x, w) as a sum over input-channel slices, forward and backward."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, stride, padding, dilation) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.geometry = (stride, padding, dilation)
        total = None
        for start in range(0, x.shape[1], SLICE):
            part = F.conv2d(x[:, start:start + SLICE], w[:, start:start + SLICE], None,
                            stride, padding, dilation)
            total = part.float() if total is None else total.add_(part)
        return total.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, w = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad = grad.to(x.dtype).contiguous(memory_format=_layout(x))
        grads_x, grads_w = [], []
        for start in range(0, x.shape[1], SLICE):
            gx, gw, _ = torch.ops.aten.convolution_backward(
                grad, x[:, start:start + SLICE], w[:, start:start + SLICE], None,
                stride, padding, dilation, False, [0, 0], 1, [want_x, want_w, False])
            grads_x.append(gx)
            grads_w.append(gw)
        gx = torch.cat(grads_x, 1) if want_x else None
        gw = torch.cat(grads_w, 1) if want_w else None
        return gx, gw, None, None, None


def pointwise_weight_grad_by_mkl() -> bool:
    """Whether wide 1x1 convolutions take their weight gradient from MKL here: with AVX2
    kernels (``ATEN_CPU_CAPABILITY`` honoured) only; oneDNN's AVX-512 kernels are as fast, and
    other CPUs were not measured."""
    return torch.backends.cpu.get_cpu_capability() == "AVX2"


class PointwiseConv2d(nn.Conv2d):
    """A wide stride-1 1x1 ``nn.Conv2d`` whose weight gradient, in fp32 training of a
    channels_last input on the CPU, is one MKL product where that is faster
    (:func:`pointwise_weight_grad_by_mkl`); elsewhere the plain kernel."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if not _uses_mkl_weight_grad(input, weight):
            return super()._conv_forward(input, weight, bias)
        return _PointwiseConvolution.apply(input, weight, bias)


def _uses_mkl_weight_grad(x: Tensor, weight: Tensor) -> bool:
    """fp32 training of trainable weights on a channels_last input (whose NHWC view is the
    product's operand without a copy), with kernels where MKL's weight gradient is faster."""
    return (pointwise_weight_grad_by_mkl() and weight.requires_grad
            and _fp32_training_pass(x, weight)
            and x.is_contiguous(memory_format=torch.channels_last))


class _PointwiseConvolution(torch.autograd.Function):
    """A 1x1 stride-1 conv2d of a channels_last input: the forward and the input gradient by
    oneDNN, the weight gradient as one (out x pixels) @ (pixels x in) product of the NHWC
    views (no copies)."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, w)
        return F.conv2d(x, w, bias)

    @staticmethod
    @once_differentiable  # backward saves detached tensors: a second order would be wrong
    def backward(ctx, grad: Tensor):
        x, w = ctx.saved_tensors
        outs, ins = w.shape[:2]
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_x = grad_w = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = (grad.permute(0, 2, 3, 1).reshape(-1, outs).t()
                      @ x.permute(0, 2, 3, 1).reshape(-1, ins)).view_as(w)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_bias


def _layout(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class LayoutKeepingAvgPool2d(nn.AdaptiveAvgPool2d):
    """Global average pooling whose input gradient keeps the input's channels_last layout."""

    def forward(self, input: Tensor) -> Tensor:
        if (input.requires_grad and input.device.type == "cpu" and not _graph_capture()
                and _layout(input) is torch.channels_last):
            return _GlobalMeanChannelsLast.apply(input)
        return super().forward(input)


class _GlobalMeanChannelsLast(torch.autograd.Function):
    """``adaptive_avg_pool2d(x, 1)`` whose backward writes the spread gradient channels_last
    at once (torch's own writes it NCHW; converting that costs ten times the write)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.shape, ctx.count = x.shape, x.shape[-2] * x.shape[-1]
        return F.adaptive_avg_pool2d(x, 1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        spread = (grad / ctx.count).expand(ctx.shape)  # the values of torch's mean backward
        return spread.contiguous(memory_format=torch.channels_last)
