"""Where seglab's fp32 training step of a torchvision model goes, layer kind by layer kind.

Times every convolution and batch norm of the model inside whole training steps (seglab's
layers: channels_last, ``apply_cpu_speedups``, fused SGD, freed memory kept), without
``torch.profiler``, which inflates the largest operations inside a full step
(``benchmarks/RESULTS.md``, issue 25): the forward by module hooks, the backward by hooks on
each layer's autograd node, so in-place ReLUs and residual adds stay as they are. Prints the
step that is the median of the timed steps, its seconds per layer kind and what is left
(ReLU, adds, upsampling, loss, optimiser, hooks). Run under ``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`` to stand in for an AVX2-only CPU.

    python benchmarks/bench_fp32_step_breakdown.py [--model deeplabv3_resnet50] [--steps 5]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

# isort: off
import seglab  # noqa: F401  (its OpenMP settings: before torch loads OpenMP)
import torch
# isort: on

from seglab.allocator import keep_freed_memory
from seglab.models import cpu_speedups

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fp32_train_step import add_model_arguments, build, step_seconds  # noqa: E402


def kind(layer: torch.nn.Module, x: torch.Tensor) -> str:
    """A layer's kind: batch norm, or a convolution by kernel size and by what computed it on
    the input ``x`` (seglab's own rules, asked again)."""
    if isinstance(layer, torch.nn.BatchNorm2d):
        return "batch norm"
    size = "x".join(map(str, layer.kernel_size))
    if (isinstance(layer, cpu_speedups.PointwiseConv2d)
            and cpu_speedups._uses_mkl_weight_grad(x, layer.weight)):
        return f"conv {size} (oneDNN, MKL weight gradient)"
    if (isinstance(layer, cpu_speedups.WinogradConv2d)
            and cpu_speedups._uses_winograd(layer, x, layer.weight)):
        return f"conv {size} (Winograd)"
    if (isinstance(layer, cpu_speedups.TapConv2d)
            and cpu_speedups._uses_taps(layer, x, layer.weight)):
        return f"conv {size} (taps)"
    return f"conv {size} (oneDNN)"


def watch(model: torch.nn.Module, seconds: collections.Counter) -> None:
    """Adds each layer's forward and backward seconds to ``seconds`` under its kind."""
    started: dict[int, float] = {}

    def forward_pre(layer, inputs):
        started[id(layer)] = time.perf_counter()

    def forward_post(layer, inputs, output):
        name = kind(layer, inputs[0])
        seconds[f"{name} forward"] += time.perf_counter() - started[id(layer)]
        node = output.grad_fn
        if node is None:
            return
        key = id(node)
        node.register_prehook(lambda grads: started.__setitem__(key, time.perf_counter()))
        node.register_hook(lambda grads_in, grads_out: seconds.update(
            {f"{name} backward": time.perf_counter() - started[key]}))

    for layer in model.modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.BatchNorm2d)):
            layer.register_forward_pre_hook(forward_pre)
            layer.register_forward_hook(forward_post)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
    args = parser.parse_args()
    keep_freed_memory()
    model, optimizer = build(args.model, "pointwise", args.classes)
    torch.manual_seed(1)
    images = torch.randn(args.batch, 3, args.crop, args.crop)
    masks = torch.randint(0, args.classes, (args.batch, args.crop, args.crop))
    seconds: collections.Counter = collections.Counter()
    watch(model, seconds)
    settings = (cpu_speedups.tap_limit, cpu_speedups.winograd_min_channels,
                cpu_speedups.pointwise_weight_grad_by_mkl)
    steps = []
    for step in range(args.steps + 1):
        seconds.clear()
        total = step_seconds("pointwise", model, optimizer, images, masks, *settings)
        print(f"step {step}: {total:.2f} s{' (warm-up)' if step == 0 else ''}", flush=True)
        if step:
            steps.append((total, dict(seconds)))
    total, parts = sorted(steps)[len(steps) // 2]
    print(f"median step {total:.2f} s; torch kernels {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads")
    for name, value in sorted(parts.items(), key=lambda item: -item[1]):
        print(f"{name:52s} {value:6.2f} s {100 * value / total:5.1f}%")
    rest = total - sum(parts.values())
    print(f"{'rest (ReLU, adds, upsampling, loss, optimiser, hooks)':52s} {rest:6.2f} s "
          f"{100 * rest / total:5.1f}%")


if __name__ == "__main__":
    main()
