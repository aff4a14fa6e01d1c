"""One 3x3 convolution's fp32 training pass (forward + both gradients) on the CPU: oneDNN's
``conv2d`` against seglab's Winograd (``seglab.models.winograd``) with 4x4 blocks, 5x5 blocks
and the blocks seglab chooses (4x4 or 5x5, or blocks that fit phases of 2-5 outputs),
interleaved; the speed-up is that of seglab's choice.

The shapes are DeepLabV3-ResNet50's stride-1 3x3 convolutions at batch 8 and crop 320 (the
issue-25 training step), the 64-channel layer1 convolution seglab leaves to oneDNN, U-Net-sized
maps, FCN's 2048-channel head and ASPP's rate-12 branch. Inputs are channels_last, as seglab
trains. Each way runs ``--repeats`` times, alternating which goes first; the fastest pass of
each is printed with the speed-up, then one JSON line. Run it under
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`` to stand in for
an AVX2-only CPU. The process keeps freed memory for reuse as seglab's training does
(``seglab.allocator``): without it every pass page-faults its large temporaries afresh
(ASPP's rate 12 by F(4x4): ~1.3 s against ~0.9 s).

    python benchmarks/bench_winograd.py [--batch 8] [--repeats 4] [--only 10,11]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# isort: off
import seglab  # noqa: F401  (its OpenMP settings: before torch loads OpenMP)
import torch
import torch.nn.functional as F
# isort: on

from seglab.allocator import keep_freed_memory
from seglab.models.winograd import _chosen_plan, winograd_conv2d

# (in, out, height, width, dilation, where it occurs)
SHAPES = [
    (64, 64, 80, 80, 1, "R50 layer1 (left to oneDNN)"),
    (128, 128, 40, 40, 1, "R50 layer2"),
    (256, 256, 40, 40, 2, "R50 layer3, dilated"),
    (512, 512, 40, 40, 4, "R50 layer4, dilated"),
    (1024, 256, 40, 40, 1, "FCN/DeepLabV3 aux head"),
    (256, 256, 40, 40, 1, "DeepLabV3 head"),
    (128, 128, 88, 120, 1, "U-Net level 2 at 352x480"),
    (512, 512, 22, 30, 1, "U-Net level 4 at 352x480"),
    (256, 256, 16, 16, 1, "a 16x16 map"),
    (2048, 512, 40, 40, 1, "FCN-ResNet head"),
    (2048, 256, 40, 40, 12, "DeepLabV3 ASPP rate 12"),
]


def seconds(way: str, x: torch.Tensor, weight: torch.Tensor, dilation: int) -> float:
    x = x.detach().requires_grad_()
    start = time.perf_counter()
    if way == "onednn":
        out = F.conv2d(x, weight, None, 1, dilation, dilation)
    else:
        tile = None if way == "seglab" else int(way)
        out = winograd_conv2d(x, weight, dilation, dilation, tile=tile)
    out.backward(torch.ones_like(out))
    weight.grad = None
    return time.perf_counter() - start


def _blocks_chosen(h: int, w: int, dilation: int, cin: int, cout: int) -> str:
    """The outputs a block of seglab's choice holds, rows x columns ("4/3": blocks of 4 in
    some phases, of 3 in the others); padding = dilation, so the output is h x w."""
    plan = _chosen_plan(h, w, dilation, dilation, cin, cout)
    return " x ".join("/".join(str(run.tile) for run in side) for side in plan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--only", default="", help="comma-separated row numbers (from 1)")
    args = parser.parse_args()
    keep_freed_memory()
    chosen = {int(i) for i in args.only.split(",") if i}
    rows = []
    ways = ("onednn", "4", "5", "seglab")
    print(f"{'shape':34s} {'oneDNN ms':>10s} {'F(4x4) ms':>10s} {'F(5x5) ms':>10s} "
          f"{'seglab ms':>10s} {'blocks':>11s} {'speed-up':>9s}  where")
    for row, (cin, cout, h, w, dilation, where) in enumerate(SHAPES, 1):
        if chosen and row not in chosen:
            continue
        torch.manual_seed(0)
        x = torch.randn(args.batch, cin, h, w).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(cout, cin, 3, 3, requires_grad=True)
        times: dict[str, list[float]] = {way: [] for way in ways}
        for repeat in range(args.repeats + 1):  # the first round warms up
            for way in ways if repeat % 2 else ways[::-1]:
                took = seconds(way, x, weight, dilation)
                if repeat:
                    times[way].append(took)
        best = {way: min(t) for way, t in times.items()}
        blocks = _blocks_chosen(h, w, dilation, cin, cout)
        ratio = best["onednn"] / best["seglab"]
        shape = f"{cin}->{cout} at {h}x{w}, dilation {dilation}"
        print(f"{shape:34s} {best['onednn'] * 1e3:10.0f} {best['4'] * 1e3:10.0f} "
              f"{best['5'] * 1e3:10.0f} {best['seglab'] * 1e3:10.0f} {blocks:>11s} "
              f"{ratio:8.2f}x  {where}", flush=True)
        rows.append({"in": cin, "out": cout, "height": h, "width": w, "dilation": dilation,
                     "onednn_ms": round(best["onednn"] * 1e3, 1),
                     "f4_ms": round(best["4"] * 1e3, 1), "f5_ms": round(best["5"] * 1e3, 1),
                     "seglab_ms": round(best["seglab"] * 1e3, 1), "blocks": blocks,
                     "speedup": round(ratio, 3)})
    print(f"load average at the end {os.getloadavg()[0]:.2f}; torch kernels "
          f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads",
          file=sys.stderr)
    print(json.dumps({"benchmark": "winograd", "batch": args.batch, "repeats": args.repeats,
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                      "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "native"),
                      "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
