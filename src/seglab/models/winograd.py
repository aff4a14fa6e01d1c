"""Winograd F(m x m, 3x3): a stride-1 3x3 convolution with up to 4x fewer multiplications.

In fp32 on a CPU without bf16 hardware a ResNet's training step is ~92% convolutions, already
near the machine's fp32 rate (``benchmarks/RESULTS.md``, issue 25). The one way left to train
faster is to compute fewer products. Winograd's minimal filtering algorithm (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", 2016) computes each m x m block of outputs
from an (m + 2) x (m + 2) block of input as (m + 2)^2 element-wise products per (input, output)
channel pair instead of 9 m^2: the 3x3 convolution becomes (m + 2)^2 matrix products
``(blocks x in) @ (in x out)`` between linear transforms of the input blocks and of the kernel.
Gradients are the transposed products, so the backward saves the same factor.

A dilated convolution is split into ``dilation**2`` interleaved grids ("phases"), each an
ordinary 3x3 convolution. The block side m is 4 (36 products for 16 outputs) or 5 (49 for 25),
whichever costs less (:func:`block_side`). The tensors stay channels-last (NHWC) throughout.
The results equal ``conv2d``'s up to fp32 rounding: at unit-scale inputs the largest error is
~1e-5 of the largest output for m = 4 and ~1.5e-5 for m = 5 (root mean square about twice
m = 4's), against oneDNN's ~3e-7.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

# Interpolation points of the finite part (the last point is infinity): Lavin & Gray's for
# F(4, 3); F(5, 3) adds 1/2, the next smallest in magnitude (small points keep fp32 error low).
POINTS = {4: (0, 1, -1, 2, -2), 5: (0, 1, -1, 2, -2, Fraction(1, 2))}


@cache
def winograd_matrices(tile: int) -> tuple[Tensor, Tensor, Tensor]:
    """Lavin & Gray's ``B^T`` ((tile+2) x (tile+2)), ``G`` ((tile+2) x 3) and ``A^T``
    (tile x (tile+2)) for F(tile, 3), exact rationals in float64: ``A^T [(G g) * (B^T d)]``
    is the 3-tap correlation of ``d`` with ``g``."""
    points = [Fraction(p) for p in POINTS[tile]]
    n = tile + 2
    a_t = [[p ** i for p in points] + [Fraction(int(i == tile - 1))] for i in range(tile)]
    g = []
    for j, p in enumerate(points):
        scale = Fraction(1)
        for k, q in enumerate(points):
            if k != j:
                scale *= p - q
        g.append([p ** k / scale for k in range(3)])
    g.append([Fraction(0), Fraction(0), Fraction(1)])
    # B^T from the bilinear identity: sum_j A^T[i, j] G[j, k] B^T[j, l] = [l == i + k].
    system = [[a_t[i][j] * g[j][k] for j in range(n)] for i in range(tile) for k in range(3)]
    b_t = [[Fraction(0)] * n for _ in range(n)]
    for col in range(n):
        target = [Fraction(int(col == i + k)) for i in range(tile) for k in range(3)]
        for j, value in enumerate(_solve(system, target)):
            b_t[j][col] = value
    return tuple(torch.tensor([[float(v) for v in row] for row in m], dtype=torch.float64)
                 for m in (b_t, g, a_t))


def _solve(rows: list[list[Fraction]], target: list[Fraction]) -> list[Fraction]:
    """The exact solution of a consistent linear system with more equations than unknowns
    and full column rank (Gauss-Jordan elimination on rationals)."""
    width = len(rows[0])
    aug = [row + [t] for row, t in zip(rows, target, strict=True)]
    for col in range(width):
        pivot = next(r for r in range(col, len(aug)) if aug[r][col] != 0)
        aug[col], aug[pivot] = aug[pivot], aug[col]
        aug[col] = [v / aug[col][col] for v in aug[col]]
        for r, row in enumerate(aug):
            if r != col and row[col] != 0:
                aug[r] = [v - row[col] * w for v, w in zip(row, aug[col], strict=True)]
    if any(row[-1] != 0 for row in aug[width:]):
        raise ArithmeticError("Winograd transform: the bilinear identity has no solution")
    return [row[-1] for row in aug[:width]]


@cache
def _transforms(tile: int) -> tuple[Tensor, Tensor]:
    """``M x M^T`` on a flattened block as one (rows^2 x cols^2) matrix (Kronecker product) for
    the kernel and output transforms, so each is one small matrix applied to every block's
    (positions x channels) matrix (the input's is :func:`_input_transform`)."""
    _, g, a_t = winograd_matrices(tile)
    return torch.kron(g, g).float(), torch.kron(a_t, a_t).float()


@cache
def _input_transform(tile: int, rows: tuple[int, int], cols: tuple[int, int]) -> Tensor:
    """``B^T d B`` as one Kronecker matrix, like :func:`_transforms`, for blocks that keep
    only the positions ``rows`` x ``cols`` (``[first, end)``; the rest read padding only)."""
    b_t = winograd_matrices(tile)[0]
    return torch.kron(b_t[:, slice(*rows)], b_t[:, slice(*cols)]).float()


# The block transforms are matrix products with few rows, slower per multiply-add than the block
# products (``torch.bmm``). Weighing a transform multiply-add as 1.5 products (fitted) made the
# cost below pick the faster block side at all eleven shapes of benchmarks/bench_winograd.py
# with AVX2 kernels (RESULTS.md, issue 25).
TRANSFORM_WEIGHT = 1.5


def block_side(out_h: int, out_w: int, dilation: int, in_channels: int,
               out_channels: int, padding: int | None = None) -> int:
    """4 or 5, whichever needs fewer multiply-adds for an ``out_h`` x ``out_w`` output with
    ``padding`` (default ``dilation``, which keeps the size): the block products, plus the
    input and output transforms weighed by ``TRANSFORM_WEIGHT``, with the blocks that stick out
    of each phase counted whole and the block positions that read only padding left out of the
    input transform. 5x5 blocks need 13% fewer products per output but larger transforms, so
    they win on many channels and where 4x4 blocks waste (ResNet's layer4 at dilation 4 on a
    40x40 map: 10x10 phases, covered as 12x12 by 4x4 blocks, exactly by 5x5)."""
    shape = (out_h, out_w, dilation, in_channels, out_channels, padding)
    return min((4, 5), key=lambda tile: _cost(tile, *shape))


def winograd_cost(out_h: int, out_w: int, dilation: int, in_channels: int,
                  out_channels: int, padding: int | None = None) -> float:
    """The multiply-adds per image of the cheaper block side (:func:`block_side`), transforms
    weighed by ``TRANSFORM_WEIGHT``: to weigh Winograd against other ways to convolve."""
    shape = (out_h, out_w, dilation, in_channels, out_channels, padding)
    return min(_cost(tile, *shape) for tile in (4, 5))


def _cost(tile: int, out_h: int, out_w: int, dilation: int, in_channels: int,
          out_channels: int, padding: int | None) -> float:
    padding = dilation if padding is None else padding
    block = tile + 2
    blocks = [_block_count(size, tile, dilation) for size in (out_h, out_w)]
    read = [end - first for first, end in (
        _live_span(size + 2 * dilation - 2 * padding, padding, dilation, tile, count)
        for size, count in zip((out_h, out_w), blocks, strict=True))]
    per_block = (block ** 2 * in_channels * out_channels
                 + TRANSFORM_WEIGHT * (block ** 2 * read[0] * read[1] * in_channels
                                       + tile ** 2 * block ** 2 * out_channels))
    return dilation ** 2 * blocks[0] * blocks[1] * per_block


def winograd_conv2d(x: Tensor, weight: Tensor, dilation: int, padding: int,
                    tile: int | None = None) -> Tensor:
    """``F.conv2d(x, weight, None, 1, padding, dilation)`` for a 3x3 ``weight`` (groups 1) by
    Winograd F(tile x tile, 3x3), differentiable in ``x`` and ``weight``. ``tile`` (4 or 5) is
    :func:`block_side`'s choice unless given. fp32 CPU tensors; the output is channels_last."""
    height, width = x.shape[-2:]
    out_h, out_w = _output_size(height, width, dilation, padding)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"Winograd convolution: a {height}x{width} input with padding "
                         f"{padding} and dilation {dilation} leaves no output ({out_h}x{out_w})")
    if tile is None:
        tile = block_side(out_h, out_w, dilation, weight.shape[1], weight.shape[0], padding)
    if tile not in POINTS:
        raise ValueError(f"Winograd block side {tile}: seglab has F(m, 3) for m in "
                         f"{sorted(POINTS)}")
    return _WinogradConvolution.apply(x, weight, dilation, padding, tile)


def _output_size(height: int, width: int, dilation: int, padding: int) -> tuple[int, int]:
    return height + 2 * padding - 2 * dilation, width + 2 * padding - 2 * dilation


def _block_count(size: int, tile: int, dilation: int) -> int:
    """Blocks of ``tile`` outputs covering each of the ``dilation`` phases of ``size`` outputs
    (the last may stick out)."""
    return -(-size // (tile * dilation))


def _live_span(size: int, padding: int, dilation: int, tile: int, blocks: int
               ) -> tuple[int, int]:
    """The block positions ``[first, end)`` along a side of ``size`` input pixels that read
    the image in some block and phase; the others read padding in every block. A dilated
    convolution on a small map has one block per phase and reads little of it (ASPP's rate
    12 on a 40x40 map: 4 of each 6x6 block's 6 rows and columns)."""
    live = [k for k in range(tile + 2)
            if any((tile * t + k + 1) * dilation > padding
                   and (tile * t + k) * dilation < padding + size for t in range(blocks))]
    return live[0], live[-1] + 1


def _geometry(height: int, width: int, dilation: int, padding: int, tile: int):
    """Output size, blocks per phase, the live block positions (:func:`_live_span`) and the
    size of the padded input window they read (the window starts at the first position)."""
    out_h, out_w = _output_size(height, width, dilation, padding)
    blocks_h = _block_count(out_h, tile, dilation)
    blocks_w = _block_count(out_w, tile, dilation)
    rows = _live_span(height, padding, dilation, tile, blocks_h)
    cols = _live_span(width, padding, dilation, tile, blocks_w)
    return (out_h, out_w, blocks_h, blocks_w, rows, cols,
            (tile * (blocks_h - 1) + rows[1] - rows[0]) * dilation,
            (tile * (blocks_w - 1) + cols[1] - cols[0]) * dilation)


def _blocks(nhwc: Tensor, sides: tuple[int, int], tile: int, dilation: int, blocks_h: int,
            blocks_w: int, first: tuple[int, int] = (0, 0)) -> Tensor:
    """View ``(n, dil, dil, blocks_h, blocks_w, *sides, channels)`` of an NHWC tensor: element
    (n, r, s, t, u, k, l, c) is pixel ((tile t + k + first[0]) dil + r, (tile u + l +
    first[1]) dil + s) of image n; neighbouring blocks overlap when a side exceeds tile. Each
    block's positions and channels come last, so reshaping it to (blocks, positions, channels)
    copies runs of whole channel vectors."""
    n, _, _, channels = nhwc.shape
    sn, sh, sw, sc = nhwc.stride()
    return nhwc.as_strided(
        (n, dilation, dilation, blocks_h, blocks_w, *sides, channels),
        (sn, sh, sw, tile * dilation * sh, tile * dilation * sw, dilation * sh, dilation * sw,
         sc),
        nhwc.storage_offset() + first[0] * dilation * sh + first[1] * dilation * sw)


class _WinogradConvolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, dilation: int, padding: int,
                tile: int) -> Tensor:
        n, channels, height, width = x.shape
        outs = weight.shape[0]
        kernel_t, output_t = _transforms(tile)
        out_h, out_w, blocks_h, blocks_w, rows, cols, pad_h, pad_w = _geometry(
            height, width, dilation, padding, tile)
        top, left = padding - rows[0] * dilation, padding - cols[0] * dilation
        padded = x.new_zeros(n, pad_h, pad_w, channels)
        padded[:, top:top + height, left:left + width] = x.permute(0, 2, 3, 1)
        live = (rows[1] - rows[0], cols[1] - cols[0])
        blocks = _blocks(padded, live, tile, dilation, blocks_h, blocks_w).reshape(
            -1, live[0] * live[1], channels)  # one copy: (blocks, live, in)
        # Each transform is one small matrix applied block by block (a batch of products
        # broadcasting it), which runs ~2x faster than one wide product over all blocks.
        v = torch.matmul(_input_transform(tile, rows, cols), blocks)  # (blocks, block^2, in)
        u = torch.matmul(kernel_t, weight.permute(0, 2, 3, 1).reshape(outs, 9, channels)
                         ).permute(1, 2, 0)  # (block^2, in, out)
        m = torch.bmm(v.transpose(0, 1), u)  # (block^2, blocks, out)
        y = torch.matmul(output_t, m.transpose(0, 1))  # (blocks, tile^2, out)
        out = y.view(n, dilation, dilation, blocks_h, blocks_w, tile, tile, outs).permute(
            0, 3, 5, 1, 4, 6, 2, 7).reshape(
            n, blocks_h * tile * dilation, blocks_w * tile * dilation, outs)
        ctx.save_for_backward(v, u)
        ctx.geometry = (x.shape, dilation, tile, out_h, out_w, blocks_h, blocks_w, rows, cols,
                        pad_h, pad_w, top, left)
        return out[:, :out_h, :out_w].contiguous().permute(0, 3, 1, 2)

    @staticmethod
    @once_differentiable  # backward saves detached tensors: a second order would be wrong
    def backward(ctx, grad: Tensor):
        v, u = ctx.saved_tensors
        (shape, dilation, tile, out_h, out_w, blocks_h, blocks_w, rows, cols, pad_h, pad_w,
         top, left) = ctx.geometry
        n, channels, height, width = shape
        outs = u.shape[2]
        kernel_t, output_t = _transforms(tile)
        grad_full = grad.new_zeros(n, blocks_h * tile * dilation, blocks_w * tile * dilation,
                                   outs)
        grad_full[:, :out_h, :out_w] = grad.permute(0, 2, 3, 1)
        grad_y = _blocks(grad_full, (tile, tile), tile, dilation, blocks_h, blocks_w).reshape(
            -1, tile ** 2, outs)
        grad_m = torch.matmul(output_t.t(), grad_y)  # (blocks, block^2, out)
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_u = torch.bmm(grad_m.permute(1, 2, 0), v.transpose(0, 1))  # (block^2, out, in)
            grad_w = torch.matmul(kernel_t.t(), grad_u.transpose(0, 1)).view(
                outs, 3, 3, channels).permute(0, 3, 1, 2)  # channels_last, as seglab's weights
        if ctx.needs_input_grad[0]:
            grad_v = torch.bmm(grad_m.transpose(0, 1), u.transpose(1, 2))  # (block^2, blocks, in)
            grad_blocks = torch.matmul(_input_transform(tile, rows, cols).t(),
                                       grad_v.transpose(0, 1)).view(
                n, dilation, dilation, blocks_h, blocks_w, rows[1] - rows[0],
                cols[1] - cols[0], channels)
            grad_padded = grad.new_zeros(n, pad_h, pad_w, channels)
            # Neighbouring blocks overlap by two rows and columns: add each block's first
            # tile rows/columns and its last two in separate passes, so that no pass writes
            # one pixel twice.
            for k0, k1 in _split(rows, tile):
                for l0, l1 in _split(cols, tile):
                    _blocks(grad_padded, (k1 - k0, l1 - l0), tile, dilation, blocks_h,
                            blocks_w, (k0, l0)).add_(grad_blocks[..., k0:k1, l0:l1, :])
            grad_x = grad_padded[:, top:top + height, left:left + width].permute(0, 3, 1, 2)
        return grad_x, grad_w, None, None, None


def _split(span: tuple[int, int], tile: int) -> list[tuple[int, int]]:
    """The live positions ``span`` as offsets from its first, split where the next block's
    positions start (``tile``), leaving out empty parts."""
    first, end = span
    parts = ((first, min(end, tile)), (max(first, tile), end))
    return [(lo - first, hi - first) for lo, hi in parts if hi > lo]
