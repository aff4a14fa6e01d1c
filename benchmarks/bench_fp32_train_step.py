"""fp32 training step of a torchvision segmentation model on the CPU, in one process, interleaved:
the reference's step against seglab's layers with and without the tap, Winograd and pointwise
convolutions.

Five ways of training the same model (same weights, same batch, same loss), each built once:

- ``reference``: torchvision's model as its ``references/segmentation/train.py`` trains it in
  fp32: NCHW, plain SGD (momentum 0.9, wd 1e-4), CE with 255 ignored + 0.5 x aux.
- ``notap``: seglab's layer changes except the tap convolution: channels_last model and input,
  ``apply_cpu_speedups`` with ``tap_limit`` below 0 (no convolution takes the taps) and no
  Winograd convolutions, fused SGD.
- ``tap``: the same with seglab's own ``tap_limit`` (dilated convolutions that mostly read
  padding train as one product per inside tap: ``seglab.models.cpu_speedups``).
- ``winograd``: the taps and the stride-1 3x3 convolutions of 128 or more channels by
  Winograd F(4x4 or 5x5, 3x3) (``seglab.models.winograd``), and the dilated ones where
  Winograd needs fewer multiply-adds than the taps (ASPP's rate 12 at crop 320).
- ``pointwise``: seglab's step: all of the above, and the weight gradients of the wide 1x1
  convolutions as MKL products where ``pointwise_weight_grad_by_mkl`` says so (AVX2 kernels).

Each is warmed up once, then they are timed in turn ``--repeats`` times (the order
reversed every other repeat); medians and ratios to the first printed, then one JSON line.
No data loading: the step alone. The process keeps freed memory for reuse
(``seglab.allocator``), as seglab's training does, for every way: the ratios are those of the
layers; ``bench_train_throughput.py`` runs the reference with glibc's default instead. Run it
under ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`` to stand
in for an AVX2-only CPU (MKL, which the tap products use, ignores the first two).

    python benchmarks/bench_fp32_train_step.py [--model deeplabv3_resnet50] [--batch 8]
        [--crop 320] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

# isort: off
import seglab  # noqa: F401  (its OpenMP settings: before torch loads OpenMP)
import torch
import torch.nn.functional as F
import torchvision.models.segmentation as tvseg
# isort: on

from seglab.allocator import keep_freed_memory
from seglab.models import cpu_speedups

WAYS = ("reference", "notap", "tap", "winograd", "pointwise")


def build(model_name: str, way: str, classes: int):
    """The model (train mode) and its optimiser, the same initial weights for every way."""
    torch.manual_seed(0)
    kwargs = {"aux_loss": True} if model_name.startswith(("deeplabv3", "fcn")) else {}
    model = getattr(tvseg, model_name)(weights=None, weights_backbone=None,
                                       num_classes=classes, **kwargs).train()
    seglab_way = way != "reference"
    if seglab_way:
        cpu_speedups.apply_cpu_speedups(model)
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4,
                                fused=seglab_way)
    return model, optimizer


def step_seconds(way: str, model, optimizer, images, masks, tap_limit, min_channels,
                 by_mkl) -> float:
    """Seconds of one training step (forward, loss, backward, optimiser, the loss read)."""
    cpu_speedups.tap_limit = (lambda: -1.0) if way == "notap" else tap_limit
    cpu_speedups.winograd_min_channels = (min_channels if way in ("winograd", "pointwise")
                                          else (lambda: sys.maxsize))  # no layer qualifies
    cpu_speedups.pointwise_weight_grad_by_mkl = by_mkl if way == "pointwise" else (lambda: False)
    if way != "reference":
        images = images.contiguous(memory_format=torch.channels_last)
    start = time.perf_counter()
    out = model(images)
    loss = F.cross_entropy(out["out"], masks, ignore_index=255)
    if "aux" in out:
        loss = loss + 0.5 * F.cross_entropy(out["aux"], masks, ignore_index=255)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    loss.item()
    return time.perf_counter() - start


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, batch, square crop and class count of the step (shared with
    ``bench_fp32_step_breakdown.py``)."""
    parser.add_argument("--model", default="deeplabv3_resnet50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=320)
    parser.add_argument("--classes", type=int, default=11)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ways", default=",".join(WAYS))
    args = parser.parse_args()
    keep_freed_memory()
    ways = args.ways.split(",")
    if set(ways) - set(WAYS) or args.repeats < 1:
        raise SystemExit(f"--ways: choose from {WAYS}; --repeats >= 1")
    tap_limit, min_channels = cpu_speedups.tap_limit, cpu_speedups.winograd_min_channels
    by_mkl = cpu_speedups.pointwise_weight_grad_by_mkl
    torch.manual_seed(1)
    images = torch.randn(args.batch, 3, args.crop, args.crop)
    masks = torch.randint(0, args.classes, (args.batch, args.crop, args.crop))
    start = time.perf_counter()
    built = {way: build(args.model, way, args.classes) for way in ways}
    for way in ways:
        step_seconds(way, *built[way], images, masks, tap_limit, min_channels, by_mkl)
    times: dict[str, list[float]] = {way: [] for way in ways}
    for repeat in range(args.repeats):
        for way in ways if repeat % 2 == 0 else ways[::-1]:
            times[way].append(step_seconds(way, *built[way], images, masks, tap_limit,
                                           min_channels, by_mkl))
            print(f"repeat {repeat + 1} {way:9s} {args.batch / times[way][-1]:.3f} img/s",
                  file=sys.stderr, flush=True)
    base = statistics.median(times[ways[0]])
    summary = {}
    print(f"{'way':10s} {'img/s':>8s} {'vs ' + ways[0]:>14s}")
    for way in ways:
        median = statistics.median(times[way])
        summary[way] = {"img_s": round(args.batch / median, 4), "ratio": round(base / median, 3),
                        "step_s": [round(t, 2) for t in times[way]]}
        print(f"{way:10s} {args.batch / median:8.3f} {base / median:13.2f}x")
    wall = round(time.perf_counter() - start, 1)
    print(f"wall {wall} s; load average at the end {os.getloadavg()[0]:.2f}; torch kernels "
          f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, "
          f"tap limit {tap_limit():.2f}, 1x1 weight gradients by MKL: {by_mkl()}")
    print(json.dumps({"benchmark": "fp32_train_step", "model": args.model, "batch": args.batch,
                      "crop": args.crop, "repeats": args.repeats, "ways": summary,
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                      "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "native"),
                      "threads": torch.get_num_threads(), "tap_limit": tap_limit(),
                      "pointwise_by_mkl": by_mkl(),
                      "wall_seconds": wall}))


if __name__ == "__main__":
    main()
