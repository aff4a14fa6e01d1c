"""A 1x1 convolution's three fp32 training products, oneDNN against MKL, part by part.

On a channels_last tensor a 1x1 convolution is three matrix products: the forward
``pixels @ W^T``, the input gradient ``grad @ W`` and the weight gradient ``grad^T @ pixels``.
This times each as oneDNN computes it (``F.conv2d`` and ``convolution_backward`` with one
output selected) and as one MKL ``torch.mm`` of the NHWC views, then the whole pass of a plain
``nn.Conv2d`` against seglab's ``PointwiseConv2d`` with its MKL weight gradient forced on;
fp32, batch 8, ResNet-50's 1x1 shapes in DeepLabV3 at a 320x320 crop (output stride 8),
freed memory kept as seglab's training keeps it, interleaved, fastest of ``--repeats``.

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python benchmarks/bench_pointwise_conv.py
"""

from __future__ import annotations

import argparse
import copy

# isort: off
import seglab  # noqa: F401  (its OpenMP settings: before torch loads OpenMP)
import torch
import torch.nn.functional as F
# isort: on

from bench_cpu_speedups import best_ms

from seglab.allocator import keep_freed_memory
from seglab.models import cpu_speedups

# (input channels, output channels, map side, how many DeepLabV3-R50 has)
# (stride-1 only: layer2's strided shortcut and the 11-class classifiers are left out)
SHAPES = ((64, 64, 80, 1), (256, 64, 80, 2), (64, 256, 80, 4), (256, 128, 80, 1),
          (512, 128, 40, 3), (128, 512, 40, 4), (512, 256, 40, 1), (1024, 256, 40, 5),
          (256, 1024, 40, 6), (512, 1024, 40, 1), (1024, 512, 40, 1), (2048, 512, 40, 2),
          (512, 2048, 40, 3), (1024, 2048, 40, 1), (2048, 256, 40, 1), (1280, 256, 40, 1))
PARTS = ("forward", "input grad", "weight grad")


def _parts(x: torch.Tensor, w: torch.Tensor, grad: torch.Tensor) -> dict:
    """The three products, oneDNN's and MKL's, as zero-argument callables."""
    def onednn_grad(mask):
        return lambda: torch.ops.aten.convolution_backward(
            grad, x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask)
    pixels = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    rows = grad.permute(0, 2, 3, 1).reshape(-1, grad.shape[1])
    matrix = w.view(w.shape[0], -1)
    return {("oneDNN", "forward"): lambda: F.conv2d(x, w),
            ("oneDNN", "input grad"): onednn_grad([True, False, False]),
            ("oneDNN", "weight grad"): onednn_grad([False, True, False]),
            ("MKL", "forward"): lambda: pixels @ matrix.t(),
            ("MKL", "input grad"): lambda: rows @ matrix,
            ("MKL", "weight grad"): lambda: rows.t() @ pixels}


def _training_pass(conv: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor):
    def run():
        conv.weight.grad = None
        conv(x.detach().requires_grad_()).backward(grad)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    keep_freed_memory()
    cpu_speedups.pointwise_weight_grad_by_mkl = lambda: True  # the layer's product, forced on
    last = torch.channels_last
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads, batch {args.batch}; ms (GFLOP/s)")
    print(f"{'in->out at side (count)':26s}" + "".join(f"{w + ' ' + p:>22s}"
                                                     for p in PARTS for w in ("oneDNN", "MKL"))
          + f"{'conv2d pass':>14s}{'seglab pass':>14s}")
    totals: dict[str, float] = {}
    for cin, cout, side, count in SHAPES:
        torch.manual_seed(0)
        x = torch.randn(args.batch, cin, side, side).contiguous(memory_format=last)
        grad = torch.randn(args.batch, cout, side, side).contiguous(memory_format=last)
        plain = torch.nn.Conv2d(cin, cout, 1, bias=False).to(memory_format=last)
        ours = copy.deepcopy(plain)
        cpu_speedups.apply_cpu_speedups(ours)
        timed = {**_parts(x, plain.weight.detach(), grad),
                 "conv2d pass": _training_pass(plain, x, grad),
                 "seglab pass": _training_pass(ours, x, grad)}
        best = dict.fromkeys(timed, float("inf"))
        for _ in range(2):  # two interleaved rounds
            for key, fn in timed.items():
                best[key] = min(best[key], best_ms(fn, args.repeats) / 1e3)
        gflop = 2 * args.batch * side * side * cin * cout / 1e9
        cells = "".join(f"{best[(w, p)] * 1e3:11.1f} ({gflop / best[(w, p)]:4.0f})   "
                        for p in PARTS for w in ("oneDNN", "MKL"))
        print(f"{f'{cin}->{cout} at {side} (x{count})':26s}{cells}"
              f"{best['conv2d pass'] * 1e3:11.1f} ms{best['seglab pass'] * 1e3:11.1f} ms")
        for key, seconds in best.items():
            name = key if isinstance(key, str) else " ".join(key)
            totals[name] = totals.get(name, 0.0) + seconds * count
    print("DeepLabV3-R50's 1x1s at batch 8, each shape times its count, ms: "
          + ", ".join(f"{name} {seconds * 1e3:.0f}" for name, seconds in totals.items()))


if __name__ == "__main__":
    main()
