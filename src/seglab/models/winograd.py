"""Winograd F(4x4, 3x3): a stride-1 3x3 convolution with 4x fewer multiplications.

In fp32 on a CPU without bf16 hardware a ResNet's training step is ~92% convolutions, already
near the machine's fp32 rate (``benchmarks/RESULTS.md``, issue 25). The one way left to train
faster is to compute fewer products. Winograd's minimal filtering algorithm (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", 2016) computes each 4x4 block of outputs
from a 6x6 block of input as 36 element-wise products per (input, output) channel pair instead
of 144: the 3x3 convolution becomes 36 matrix products ``(tiles x in) @ (in x out)`` between
linear transforms of the input blocks and of the kernel. Gradients are the transposed
products, so the backward saves the same factor.

A dilated convolution is split into ``dilation**2`` interleaved grids ("phases"), each an
ordinary 3x3 convolution. The tensors stay channels-last (NHWC) throughout. The results equal
``conv2d``'s up to fp32 rounding (relative error ~1e-6 at unit-scale inputs).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

TILE = 4  # outputs per block side
BLOCK = TILE + 2  # inputs per block side (a 3x3 kernel reaches one further on each side)

# Lavin & Gray's F(4, 3) matrices (interpolation points 0, +-1, +-2, infinity).
_BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
       [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
_G = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]


def _both_sides(matrix: list[list[float]]) -> Tensor:
    """``M x M^T`` on a flattened block as one (rows^2 x cols^2) matrix (Kronecker product),
    so each transform is a single matrix product over all blocks and channels."""
    m = torch.tensor(matrix, dtype=torch.float64)
    return torch.kron(m, m).float()


INPUT_TRANSFORM = _both_sides(_BT)  # 36 x 36
KERNEL_TRANSFORM = _both_sides(_G)  # 36 x 9
OUTPUT_TRANSFORM = _both_sides(_AT)  # 16 x 36


def winograd_conv2d(x: Tensor, weight: Tensor, dilation: int, padding: int) -> Tensor:
    """``F.conv2d(x, weight, None, 1, padding, dilation)`` for a 3x3 ``weight`` (groups 1) by
    Winograd F(4x4, 3x3), differentiable in ``x`` and ``weight``. fp32 CPU tensors; the output
    is channels_last."""
    return _WinogradConvolution.apply(x, weight, dilation, padding)


def _geometry(height: int, width: int, dilation: int, padding: int):
    """Output size, blocks per phase and the padded input size they read."""
    out_h = height + 2 * padding - 2 * dilation
    out_w = width + 2 * padding - 2 * dilation
    blocks_h = -(-out_h // (TILE * dilation))
    blocks_w = -(-out_w // (TILE * dilation))
    return (out_h, out_w, blocks_h, blocks_w,
            (TILE * blocks_h + 2) * dilation, (TILE * blocks_w + 2) * dilation)


def _blocks(nhwc: Tensor, sides: tuple[int, int], dilation: int, blocks_h: int,
            blocks_w: int, first: tuple[int, int] = (0, 0)) -> Tensor:
    """View ``(*sides, n, dil, dil, blocks_h, blocks_w, channels)`` of an NHWC tensor: element
    (k, l, n, r, s, t, u, c) is pixel ((TILE t + k + first[0]) dil + r, (TILE u + l +
    first[1]) dil + s) of image n; neighbouring blocks overlap when a side exceeds TILE."""
    n, _, _, channels = nhwc.shape
    sn, sh, sw, sc = nhwc.stride()
    return nhwc.as_strided(
        (*sides, n, dilation, dilation, blocks_h, blocks_w, channels),
        (dilation * sh, dilation * sw, sn, sh, sw, TILE * dilation * sh, TILE * dilation * sw,
         sc),
        nhwc.storage_offset() + first[0] * dilation * sh + first[1] * dilation * sw)


class _WinogradConvolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, dilation: int, padding: int) -> Tensor:
        n, channels, height, width = x.shape
        outs = weight.shape[0]
        out_h, out_w, blocks_h, blocks_w, pad_h, pad_w = _geometry(height, width, dilation,
                                                                   padding)
        padded = x.new_zeros(n, pad_h, pad_w, channels)
        padded[:, padding:padding + height, padding:padding + width] = x.permute(0, 2, 3, 1)
        blocks = _blocks(padded, (BLOCK, BLOCK), dilation, blocks_h, blocks_w)
        blocks = blocks.reshape(BLOCK ** 2, -1)  # one copy: (36, blocks x in)
        v = (INPUT_TRANSFORM @ blocks).view(BLOCK ** 2, -1, channels)  # (36, blocks, in)
        u = (KERNEL_TRANSFORM @ weight.permute(2, 3, 1, 0).reshape(9, -1)).view(
            BLOCK ** 2, channels, outs)  # (36, in, out)
        m = torch.bmm(v, u)  # (36, blocks, out)
        y = (OUTPUT_TRANSFORM @ m.view(BLOCK ** 2, -1)).view(
            TILE, TILE, n, dilation, dilation, blocks_h, blocks_w, outs)
        out = y.permute(2, 5, 0, 3, 6, 1, 4, 7).reshape(
            n, blocks_h * TILE * dilation, blocks_w * TILE * dilation, outs)
        ctx.save_for_backward(v, u)
        ctx.geometry = (x.shape, dilation, padding, out_h, out_w, blocks_h, blocks_w,
                        pad_h, pad_w)
        return out[:, :out_h, :out_w].contiguous().permute(0, 3, 1, 2)

    @staticmethod
    @once_differentiable  # backward saves detached tensors: a second order would be wrong
    def backward(ctx, grad: Tensor):
        v, u = ctx.saved_tensors
        shape, dilation, padding, out_h, out_w, blocks_h, blocks_w, pad_h, pad_w = ctx.geometry
        n, channels, height, width = shape
        outs = u.shape[2]
        grad_full = grad.new_zeros(n, blocks_h * TILE * dilation, blocks_w * TILE * dilation,
                                   outs)
        grad_full[:, :out_h, :out_w] = grad.permute(0, 2, 3, 1)
        grad_y = _blocks(grad_full, (TILE, TILE), dilation, blocks_h, blocks_w)
        grad_y = grad_y.reshape(TILE ** 2, -1)
        grad_m = (OUTPUT_TRANSFORM.t() @ grad_y).view(BLOCK ** 2, -1, outs)
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_u = torch.bmm(v.transpose(1, 2), grad_m)  # (36, in, out)
            grad_w = (KERNEL_TRANSFORM.t() @ grad_u.view(BLOCK ** 2, -1)).view(
                3, 3, channels, outs).permute(3, 2, 0, 1)
        if ctx.needs_input_grad[0]:
            grad_v = torch.bmm(grad_m, u.transpose(1, 2))  # (36, blocks, in)
            grad_blocks = (INPUT_TRANSFORM.t() @ grad_v.view(BLOCK ** 2, -1)).view(
                BLOCK, BLOCK, n, dilation, dilation, blocks_h, blocks_w, channels)
            grad_padded = grad.new_zeros(n, pad_h, pad_w, channels)
            # Neighbouring blocks overlap by two rows and columns: add each block's first
            # TILE rows/columns and its last two in separate passes, so that no pass writes
            # one pixel twice.
            for k0, k1 in ((0, TILE), (TILE, BLOCK)):
                for l0, l1 in ((0, TILE), (TILE, BLOCK)):
                    _blocks(grad_padded, (k1 - k0, l1 - l0), dilation, blocks_h, blocks_w,
                            (k0, l0)).add_(grad_blocks[k0:k1, l0:l1])
            grad_x = grad_padded[:, padding:padding + height, padding:padding + width].permute(
                0, 3, 1, 2)
        return grad_x, grad_w, None, None
