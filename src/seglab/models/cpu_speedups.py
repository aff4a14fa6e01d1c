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

Both act only on the CPU (the sliced convolution only in bf16) and step aside while the model
is traced, scripted, compiled or exported, so exported graphs keep the one convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WIDE_INPUT = 2048  # input channels from which a 3x3 convolution is sliced (1024 gains nothing)
SLICE = 256  # channels per slice: the fastest of 256/512/1024 at every shape measured


def apply_cpu_speedups(model: nn.Module) -> int:
    """Swap the layers of ``model`` that hit a slow CPU path for their exact equivalents.

    Returns how many layers were swapped. Idempotent; the swapped layers are subclasses of
    the originals (``isinstance`` checks and ``state_dict`` keys are unchanged) and behave
    exactly as before off the CPU.
    """
    swapped = 0
    for layer in model.modules():
        if type(layer) is nn.Conv2d and _is_wide(layer):
            layer.__class__ = SlicedConv2d
            swapped += 1
        elif type(layer) is nn.AdaptiveAvgPool2d and _pools_globally(layer):
            layer.__class__ = LayoutKeepingAvgPool2d
            swapped += 1
    return swapped


def _is_wide(conv: nn.Conv2d) -> bool:
    return (conv.in_channels >= WIDE_INPUT and conv.groups == 1
            and conv.kernel_size != (1, 1) and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str))


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


class SlicedConv2d(nn.Conv2d):
    """A wide ``nn.Conv2d`` that, in bf16 on the CPU, sums 256-input-channel slices."""

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
