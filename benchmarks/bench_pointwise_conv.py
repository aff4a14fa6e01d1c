"""Is a 1x1 convolution faster in fp32 training as one MKL matrix product than in oneDNN?

DeepLabV3-R50's training step is ~92% convolutions on AVX2 (benchmarks/RESULTS.md, issue 25
goal 3), and about half of ResNet-50's bottleneck arithmetic is 1x1 convolutions, which on a
channels_last tensor are plain matrix products. This times forward + input and weight
gradients of ``F.conv2d`` (oneDNN) against the same sums as ``torch.mm`` (MKL), channels_last,
fp32, at DeepLabV3-R50's shapes for a 320x320 crop at batch 8 (output stride 8), interleaved,
fastest of ``--repeats``.

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python benchmarks/bench_pointwise_conv.py
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

# (input channels, output channels, map side) of the bottlenecks' 1x1 convolutions
SHAPES = ((256, 64, 80), (64, 256, 80), (1024, 256, 40), (256, 1024, 40), (2048, 512, 40),
          (512, 2048, 40))


class PointwiseProduct(torch.autograd.Function):
    """A 1x1 convolution as matrix products over the channels_last pixels."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n, c, h, width = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(-1, c)
        ctx.save_for_backward(pixels, w)
        ctx.size = (n, h, width)
        out = pixels @ w.view(w.shape[0], c).t()
        return out.view(n, h, width, -1).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pixels, w = ctx.saved_tensors
        n, h, width = ctx.size
        rows = grad.permute(0, 2, 3, 1).reshape(-1, grad.shape[1])
        grad_x = (rows @ w.view(w.shape[0], -1)).view(n, h, width, -1).permute(0, 3, 1, 2)
        return grad_x, (rows.t() @ pixels).view_as(w)


def _step(fn, x: torch.Tensor, w: torch.Tensor, grad: torch.Tensor) -> float:
    x.grad = w.grad = None
    start = time.perf_counter()
    fn(x, w).backward(grad)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    last = torch.channels_last
    ways = {"oneDNN conv2d": lambda x, w: F.conv2d(x, w), "MKL mm": PointwiseProduct.apply}
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads, batch {args.batch}")
    for cin, cout, side in SHAPES:
        x = torch.randn(args.batch, cin, side, side).contiguous(memory_format=last)
        x.requires_grad_()
        w = torch.randn(cout, cin, 1, 1).contiguous(memory_format=last).requires_grad_()
        grad = torch.randn(args.batch, cout, side, side).contiguous(memory_format=last)
        torch.testing.assert_close(ways["MKL mm"](x, w), ways["oneDNN conv2d"](x, w),
                                   rtol=1e-3, atol=1e-3)
        best = dict.fromkeys(ways, float("inf"))
        for _ in range(args.repeats):
            for name, fn in ways.items():
                best[name] = min(best[name], _step(fn, x, w, grad))
        conv, mm = best["oneDNN conv2d"], best["MKL mm"]
        print(f"{cin}->{cout} at {side}x{side}: oneDNN {conv * 1e3:.1f} ms, MKL {mm * 1e3:.1f} ms, "
              f"MKL {conv / mm:.2f}x as fast")


if __name__ == "__main__":
    main()
