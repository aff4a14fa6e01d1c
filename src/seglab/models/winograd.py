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
whichever costs less (:func:`block_side`), except where a side's phases hold only 2-5 outputs
(a large dilation on a small map): there each phase is one block of its own length, and the
blocks of a side may be of two lengths (:func:`_runs`). The tensors stay channels-last (NHWC)
throughout. The results equal ``conv2d``'s up to fp32 rounding: at unit-scale inputs the
largest error is ~1e-5 of the largest output for m = 4 and ~1.5e-5 for m = 5 (root mean
square about twice m = 4's; m = 2 and 3 are more exact still), against oneDNN's ~3e-7.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from functools import cache
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

# Interpolation points of the finite part (the last point is infinity): Lavin & Gray's for
# F(2, 3) and F(4, 3); F(3, 3) takes 2 and F(5, 3) adds 1/2, the next smallest in magnitude
# (small points keep fp32 error low).
POINTS = {2: (0, 1, -1), 3: (0, 1, -1, 2), 4: (0, 1, -1, 2, -2),
          5: (0, 1, -1, 2, -2, Fraction(1, 2))}


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
def _transforms(tiles: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``M_h x M_w^T`` on a flattened block as one matrix (Kronecker product) for the kernel
    and output transforms of ``tiles[0]`` x ``tiles[1]`` blocks, so each is one small matrix
    applied to every block's (positions x channels) matrix (the input's is
    :func:`_input_transform`)."""
    (_, g_h, a_h), (_, g_w, a_w) = (winograd_matrices(tile) for tile in tiles)
    return torch.kron(g_h, g_w).float(), torch.kron(a_h, a_w).float()


@cache
def _input_transform(tiles: tuple[int, int], rows: tuple[int, int],
                     cols: tuple[int, int]) -> Tensor:
    """``B^T d B`` as one Kronecker matrix, like :func:`_transforms`, for blocks that keep
    only the positions ``rows`` x ``cols`` (``[first, end)``; the rest read padding only)."""
    b_h, b_w = (winograd_matrices(tile)[0] for tile in tiles)
    return torch.kron(b_h[:, slice(*rows)], b_w[:, slice(*cols)]).float()


# The block transforms are matrix products with few rows, slower per multiply-add than the block
# products (``torch.bmm``). Weighing a transform multiply-add as 1.5 products (fitted) made the
# cost below pick the faster block side at all eleven shapes of benchmarks/bench_winograd.py
# with AVX2 kernels (RESULTS.md, issue 25).
TRANSFORM_WEIGHT = 1.5


class _Run(NamedTuple):
    """Phases ``[phases[0], phases[1])`` along one side, cut into ``blocks`` blocks of ``tile``
    outputs each, whose block positions ``live`` (``[first, end)``) read the image."""

    phases: tuple[int, int]
    tile: int
    blocks: int
    live: tuple[int, int]


Plan = tuple[tuple[_Run, ...], tuple[_Run, ...]]  # the runs of the rows, of the columns


def block_side(out_h: int, out_w: int, dilation: int, in_channels: int,
               out_channels: int, padding: int | None = None) -> int:
    """4 or 5, whichever needs fewer multiply-adds for an ``out_h`` x ``out_w`` output with
    ``padding`` (default ``dilation``, which keeps the size) cut into blocks of one side: the
    block products, plus the input and output transforms weighed by ``TRANSFORM_WEIGHT``, with
    the blocks that stick out of each phase counted whole and the block positions that read
    only padding left out of the input transform. 5x5 blocks need 13% fewer products per output
    but larger transforms, so they win on many channels and where 4x4 blocks waste (ResNet's
    layer4 at dilation 4 on a 40x40 map: 10x10 phases, covered as 12x12 by 4x4 blocks, exactly
    by 5x5)."""
    return min((4, 5), key=lambda tile: _cost(_plan(out_h, out_w, dilation, padding, tile),
                                              in_channels, out_channels))


def winograd_cost(out_h: int, out_w: int, dilation: int, in_channels: int,
                  out_channels: int, padding: int | None = None) -> float:
    """The multiply-adds per image of the blocks :func:`winograd_conv2d` chooses, transforms
    weighed by ``TRANSFORM_WEIGHT``: to weigh Winograd against other ways to convolve."""
    plan = _chosen_plan(out_h, out_w, dilation, padding, in_channels, out_channels)
    return _cost(plan, in_channels, out_channels)


@cache
def _chosen_plan(out_h: int, out_w: int, dilation: int, padding: int | None, in_channels: int,
                 out_channels: int) -> Plan:
    """Exact blocks where the phases are short (:func:`_runs`), elsewhere 4x4 or 5x5 blocks,
    whichever costs less."""
    plans = (_plan(out_h, out_w, dilation, padding, tile, exact=True) for tile in (4, 5))
    return min(plans, key=lambda plan: _cost(plan, in_channels, out_channels))


def _cost(plan: Plan, in_channels: int, out_channels: int) -> float:
    cost = 0.0
    for row, col in itertools.product(*plan):
        block = (row.tile + 2) * (col.tile + 2)
        read = _length(row.live) * _length(col.live)
        per_block = (block * in_channels * out_channels + TRANSFORM_WEIGHT * block
                     * (read * in_channels + row.tile * col.tile * out_channels))
        cost += (_length(row.phases) * _length(col.phases) * row.blocks * col.blocks
                 * per_block)
    return cost


def winograd_conv2d(x: Tensor, weight: Tensor, dilation: int, padding: int,
                    tile: int | None = None) -> Tensor:
    """``F.conv2d(x, weight, None, 1, padding, dilation)`` for a 3x3 ``weight`` (groups 1) by
    Winograd F(m x m, 3x3), differentiable in ``x`` and ``weight``. By default each side whose
    phases hold 2-5 outputs takes one block a phase, exactly as long as it (:func:`_runs`),
    the other sides 4 or 5 outputs a block, whichever costs less; ``tile`` (2-5) gives every
    block that side. fp32 CPU tensors; the output is channels_last."""
    height, width = x.shape[-2:]
    out_h, out_w = _output_size(height, width, dilation, padding)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"Winograd convolution: a {height}x{width} input with padding "
                         f"{padding} and dilation {dilation} leaves no output ({out_h}x{out_w})")
    if tile is not None and tile not in POINTS:
        raise ValueError(f"Winograd block side {tile}: seglab has F(m, 3) for m in "
                         f"{sorted(POINTS)}")
    if tile is None:
        plan = _chosen_plan(out_h, out_w, dilation, padding, weight.shape[1], weight.shape[0])
    else:
        plan = _plan(out_h, out_w, dilation, padding, tile)
    return _WinogradConvolution.apply(x, weight, dilation, padding, plan)


def _output_size(height: int, width: int, dilation: int, padding: int) -> tuple[int, int]:
    return height + 2 * padding - 2 * dilation, width + 2 * padding - 2 * dilation


def _length(span: tuple[int, int]) -> int:
    return span[1] - span[0]


def _block_count(size: int, tile: int, dilation: int) -> int:
    """Blocks of ``tile`` outputs covering each of the ``dilation`` phases of ``size`` outputs
    (the last may stick out)."""
    return -(-size // (tile * dilation))


def _live_span(size: int, padding: int, dilation: int, tile: int, blocks: int,
               phases: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """The block positions ``[first, end)`` along a side of ``size`` input pixels that read
    the image in some block and phase of ``phases`` (default all); the others read padding in
    every block; None where none reads it. A dilated convolution on a small map has one block
    per phase and reads little of it (ASPP's rate 12 on a 40x40 map: 4 of each 6x6 block's 6
    rows and columns)."""
    first, end = phases or (0, dilation)
    live = [k for k in range(tile + 2)
            if any((tile * t + k) * dilation + end > padding
                   and (tile * t + k) * dilation + first < padding + size
                   for t in range(blocks))]
    return (live[0], live[-1] + 1) if live else None


def _runs(out: int, dilation: int, padding: int, tile: int, exact: bool) -> tuple[_Run, ...]:
    """How one side of ``out`` outputs is cut into blocks. Where ``exact`` and every phase
    holds 2 to 5 outputs, each phase is one block exactly as long as it: the first ``out %
    dilation`` phases hold one output more, so up to two runs of phases with their own block
    side (ASPP's rate 12 on a 40x40 map: 4 phases of 4 outputs, 8 of 3, where 4x4 blocks
    everywhere compute 36 products for 9 outputs in two thirds of the blocks). Otherwise every
    phase takes blocks of ``tile``."""
    size = out + 2 * dilation - 2 * padding
    longest = -(-out // dilation)
    if exact and out // dilation >= min(POINTS) and longest <= max(POINTS):
        cut = out % dilation or dilation
        runs = [((0, cut), longest), ((cut, dilation), out // dilation)]
        spans = [(phases, length, _live_span(size, padding, dilation, length, 1, phases))
                 for phases, length in runs if _length(phases)]
        if all(live for *_, live in spans):
            return tuple(_Run(phases, length, 1, live) for phases, length, live in spans)
    blocks = _block_count(out, tile, dilation)
    live = _live_span(size, padding, dilation, tile, blocks)
    return (_Run((0, dilation), tile, blocks, live),)


@cache
def _plan(out_h: int, out_w: int, dilation: int, padding: int | None, tile: int,
          exact: bool = False) -> Plan:
    """The runs (:func:`_runs`) of the rows and of the columns."""
    padding = dilation if padding is None else padding
    return (_runs(out_h, dilation, padding, tile, exact),
            _runs(out_w, dilation, padding, tile, exact))


def _window(runs: tuple[_Run, ...], dilation: int) -> tuple[int, int]:
    """The padded input rows ``[first, end)`` (padded coordinates) that the runs read."""
    return (min(run.live[0] * dilation + run.phases[0] for run in runs),
            max((run.tile * (run.blocks - 1) + run.live[1] - 1) * dilation + run.phases[1]
                for run in runs))


def _extent(runs: tuple[_Run, ...], dilation: int) -> int:
    """Output rows that the runs' blocks cover (at least the output's, more where the last
    block of a phase sticks out)."""
    return max((run.tile * run.blocks - 1) * dilation + run.phases[1] for run in runs)


def _blocks(nhwc: Tensor, row: _Run, col: _Run, sides: tuple[int, int], dilation: int,
            first: tuple[int, int] = (0, 0)) -> Tensor:
    """View ``(n, row phases, col phases, row blocks, col blocks, *sides, channels)`` of an
    NHWC tensor: element (n, r, s, t, u, k, l, c) is pixel ((row.tile t + k) dil + r +
    first[0], (col.tile u + l) dil + s + first[1]) of image n, r and s counted from the runs'
    first phases; neighbouring blocks overlap when a side exceeds the block's. Each block's
    positions and channels come last, so reshaping it to (blocks, positions, channels) copies
    runs of whole channel vectors."""
    n, _, _, channels = nhwc.shape
    sn, sh, sw, sc = nhwc.stride()
    return nhwc.as_strided(
        (n, _length(row.phases), _length(col.phases), row.blocks, col.blocks, *sides,
         channels),
        (sn, sh, sw, row.tile * dilation * sh, col.tile * dilation * sw, dilation * sh,
         dilation * sw, sc),
        nhwc.storage_offset() + (first[0] + row.phases[0]) * sh
        + (first[1] + col.phases[0]) * sw)


def _window_blocks(window: Tensor, row: _Run, col: _Run, sides: tuple[int, int],
                   dilation: int, windows: list[tuple[int, int]],
                   start: tuple[int, int] = (0, 0)) -> Tensor:
    """:func:`_blocks` of a padded input ``window`` (rows and columns ``windows``, padded
    coordinates), from the runs' live block positions on, ``start`` positions further."""
    return _blocks(window, row, col, sides, dilation,
                   ((row.live[0] + start[0]) * dilation - windows[0][0],
                    (col.live[0] + start[1]) * dilation - windows[1][0]))


class _WinogradConvolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, dilation: int, padding: int,
                plan: Plan) -> Tensor:
        n, channels, height, width = x.shape
        outs = weight.shape[0]
        out_h, out_w = _output_size(height, width, dilation, padding)
        windows = [_window(runs, dilation) for runs in plan]
        padded = x.new_zeros(n, _length(windows[0]), _length(windows[1]), channels)
        top, left = padding - windows[0][0], padding - windows[1][0]
        padded[:, top:top + height, left:left + width] = x.permute(0, 2, 3, 1)
        out = x.new_empty(n, *(_extent(runs, dilation) for runs in plan), outs)
        weight = weight.permute(0, 2, 3, 1).reshape(outs, 9, channels)
        saved = []
        for row, col in itertools.product(*plan):
            tiles, live = (row.tile, col.tile), (_length(row.live), _length(col.live))
            kernel_t, output_t = _transforms(tiles)
            blocks = _window_blocks(padded, row, col, live, dilation, windows).reshape(
                -1, live[0] * live[1], channels)  # one copy: (blocks, live, in)
            # Each transform is one small matrix applied block by block (a batch of products
            # broadcasting it), which runs ~2x faster than one wide product over all blocks.
            v = torch.matmul(_input_transform(tiles, row.live, col.live), blocks)
            u = torch.matmul(kernel_t, weight).permute(1, 2, 0)  # (block, in, out)
            m = torch.bmm(v.transpose(0, 1), u)  # (block, blocks, out)
            y = torch.matmul(output_t, m.transpose(0, 1))  # (blocks, tiles, out)
            _blocks(out, row, col, tiles, dilation).copy_(
                y.view(n, _length(row.phases), _length(col.phases), row.blocks, col.blocks,
                       *tiles, outs))
            saved += [v, u]
        ctx.save_for_backward(*saved)
        ctx.geometry = (x.shape, dilation, padding, plan, windows)
        return out[:, :out_h, :out_w].contiguous().permute(0, 3, 1, 2)

    @staticmethod
    @once_differentiable  # backward saves detached tensors: a second order would be wrong
    def backward(ctx, grad: Tensor):
        saved = ctx.saved_tensors
        shape, dilation, padding, plan, windows = ctx.geometry
        n, channels, height, width = shape
        outs = grad.shape[1]
        out_h, out_w = grad.shape[-2:]
        extent = [_extent(runs, dilation) for runs in plan]
        grad = grad.permute(0, 2, 3, 1)
        if extent != [out_h, out_w]:  # blocks stick out: their outputs there have no gradient
            grad_full = grad.new_zeros(n, *extent, outs)
            grad_full[:, :out_h, :out_w] = grad
            grad = grad_full
        grad_w = grad_padded = None
        if ctx.needs_input_grad[1]:
            grad_w = grad.new_zeros(outs, 9, channels)
        if ctx.needs_input_grad[0]:
            grad_padded = grad.new_zeros(n, _length(windows[0]), _length(windows[1]),
                                         channels)
        for (row, col), v, u in zip(itertools.product(*plan), saved[::2], saved[1::2],
                                    strict=True):
            tiles, live = (row.tile, col.tile), (_length(row.live), _length(col.live))
            kernel_t, output_t = _transforms(tiles)
            grad_y = _blocks(grad, row, col, tiles, dilation).reshape(
                -1, tiles[0] * tiles[1], outs)
            grad_m = torch.matmul(output_t.t(), grad_y)  # (blocks, block, out)
            if grad_w is not None:
                grad_u = torch.bmm(grad_m.permute(1, 2, 0), v.transpose(0, 1))  # (block, out, in)
                grad_w += torch.matmul(kernel_t.t(), grad_u.transpose(0, 1))
            if grad_padded is not None:
                grad_v = torch.bmm(grad_m.transpose(0, 1), u.transpose(1, 2))  # (block, blocks, in)
                grad_blocks = torch.matmul(_input_transform(tiles, row.live, col.live).t(),
                                           grad_v.transpose(0, 1)).view(
                    n, _length(row.phases), _length(col.phases), row.blocks, col.blocks,
                    *live, channels)
                # Neighbouring blocks overlap by two rows and columns: add each block's first
                # tile rows/columns and its last two in separate passes, so that no pass
                # writes one pixel twice.
                for k0, k1 in _split(row.live, row.tile):
                    for l0, l1 in _split(col.live, col.tile):
                        _window_blocks(grad_padded, row, col, (k1 - k0, l1 - l0), dilation,
                                       windows, (k0, l0)).add_(
                            grad_blocks[..., k0:k1, l0:l1, :])
        grad_x = None
        if grad_padded is not None:
            top, left = padding - windows[0][0], padding - windows[1][0]
            grad_x = grad_padded[:, top:top + height, left:left + width].permute(0, 3, 1, 2)
        if grad_w is not None:  # channels_last, as seglab's weights
            grad_w = grad_w.view(outs, 3, 3, channels).permute(0, 3, 1, 2)
        return grad_x, grad_w, None, None, None


def _split(span: tuple[int, int], tile: int) -> list[tuple[int, int]]:
    """The live positions ``span`` as offsets from its first, split where the next block's
    positions start (``tile``), leaving out empty parts."""
    first, end = span
    parts = ((first, min(end, tile)), (max(first, tile), end))
    return [(lo - first, hi - first) for lo, hi in parts if hi > lo]
