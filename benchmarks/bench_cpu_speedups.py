"""What seglab's exact CPU speed-ups buy: sliced wide convolutions and freed memory kept.

Part 1 (``--part conv``): one 3x3 convolution, batch 8 at 40x40 (DeepLabV3-R50's output
stride 8 at a 320x320 crop), forward + backward, channels_last, fastest of 3 after 1: plain
``F.conv2d`` against :class:`seglab.models.cpu_speedups.SlicedConv2d` (which slices in bf16
only: its fp32 rows take the plain kernel, a check of that fallback), bf16 and fp32.

Part 2 (``--part step``): a raw training step of torchvision's DeepLabV3-R50 + aux (batch 8,
320x320, bf16 autocast, channels_last, fused SGD, random data), each configuration in a fresh
process, configurations interleaved over ``--repeats``: neither speed-up, the model speed-ups
(``apply_cpu_speedups``), and those plus ``seglab.allocator.keep_freed_memory``. Prints the
median img/s of each process's timed steps and the process's peak RSS.

    python benchmarks/bench_cpu_speedups.py [--part conv|step|all] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import seglab  # noqa: F401  (OpenMP defaults before torch loads)
from seglab.models.cpu_speedups import SlicedConv2d

SHAPES = (  # input channels, output channels, dilation: where they occur
    (2048, 256, 12, "DeepLabV3 ASPP, rate 12"),
    (2048, 256, 36, "DeepLabV3 ASPP, rate 36"),
    (2048, 512, 1, "FCN head on ResNet-50"),
    (4096, 512, 1, "PSPNet bottleneck on ResNet-50"),
    (1024, 256, 1, "aux head on layer3: seglab leaves it whole"),
)
CONFIGS = {"none": (False, False), "model speed-ups": (True, False),
           "model speed-ups + allocator": (True, True)}


def best_ms(run, repeats: int = 3) -> float:
    """Milliseconds of the fastest of ``repeats`` calls of ``run``, after one untimed call."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def conv_part() -> None:
    print("| convolution | dtype | plain fwd+bwd ms | sliced fwd+bwd ms | plain / sliced |")
    print("|---|---|---|---|---|")
    for cin, cout, dilation, where in SHAPES:
        for dtype in (torch.bfloat16, torch.float32):
            torch.manual_seed(0)
            x = torch.randn(8, cin, 40, 40).to(dtype).contiguous(
                memory_format=torch.channels_last).requires_grad_()
            conv = torch.nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False)
            conv = conv.to(dtype).to(memory_format=torch.channels_last)
            sliced = SlicedConv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False)
            sliced = sliced.to(dtype).to(memory_format=torch.channels_last)
            sliced.weight = conv.weight

            def plain_pass(x=x, conv=conv, dilation=dilation):
                y = F.conv2d(x, conv.weight, None, 1, dilation, dilation)
                y.backward(torch.ones_like(y))

            def sliced_pass(x=x, sliced=sliced):
                y = sliced(x)
                y.backward(torch.ones_like(y))

            plain_ms, sliced_ms = best_ms(plain_pass), best_ms(sliced_pass)
            name = "bf16" if dtype == torch.bfloat16 else "fp32"
            print(f"| {cin}->{cout}, dilation {dilation} ({where}) | {name} | {plain_ms:.0f} "
                  f"| {sliced_ms:.0f} | {plain_ms / sliced_ms:.2f}x |", flush=True)


def step_worker(speedups: bool, allocator: bool, steps: int) -> None:
    from torchvision.models.segmentation import deeplabv3_resnet50

    from seglab.allocator import keep_freed_memory
    from seglab.models.cpu_speedups import apply_cpu_speedups

    if allocator:
        keep_freed_memory()
    torch.manual_seed(0)
    model = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=12,
                               aux_loss=True).to(memory_format=torch.channels_last).train()
    if speedups:
        apply_cpu_speedups(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4,
                                fused=True)
    x = torch.randn(8, 3, 320, 320).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 12, (8, 320, 320))
    rates = []
    for step in range(2 + steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
            loss = F.cross_entropy(out["out"], y) + 0.5 * F.cross_entropy(out["aux"], y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 2:
            rates.append(8 / (time.perf_counter() - start))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"img_s": statistics.median(rates), "peak_rss_mb": peak_mb}))


def step_part(repeats: int, steps: int) -> None:
    results: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for repeat in range(repeats):
        order = list(CONFIGS) if repeat % 2 == 0 else list(reversed(CONFIGS))
        for name in order:
            speedups, allocator = CONFIGS[name]
            out = subprocess.run(
                [sys.executable, __file__, "--worker", str(int(speedups)), str(int(allocator)),
                 str(steps)], capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            results[name].append(row)
            print(f"repeat {repeat + 1} {name}: {row['img_s']:.2f} img/s, "
                  f"peak RSS {row['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    base = statistics.median(r["img_s"] for r in results["none"])
    print("| DeepLabV3-R50 + aux step | img/s (runs) | x none | peak RSS MB |")
    print("|---|---|---|---|")
    for name, rows in results.items():
        rate = statistics.median(r["img_s"] for r in rows)
        runs = ", ".join(f"{r['img_s']:.2f}" for r in rows)
        peak = max(r["peak_rss_mb"] for r in rows)
        print(f"| {name} | {rate:.2f} ({runs}) | {rate / base:.2f}x | {peak:.0f} |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        step_worker(bool(int(sys.argv[2])), bool(int(sys.argv[3])), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="all", choices=["conv", "step", "all"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per process")
    args = parser.parse_args()
    if args.part in ("conv", "all"):
        conv_part()
    if args.part in ("step", "all"):
        step_part(args.repeats, args.steps)


if __name__ == "__main__":
    main()
