"""``trainer.precision: auto`` on a CPU: bf16 autocast or fp32, whichever trains faster here.

On CPUs with bf16 matrix units (AMX, AVX-512 BF16) dense convolutions run about twice as fast
in bf16, but depthwise convolutions and the casts around them do not: measured on the 2-core
box at the same crop and batch, DDRNet-23-slim trains 1.6x faster in bf16 while LR-ASPP
MobileNetV3 trains 1.27x faster in fp32 (benchmarks/RESULTS.md). So ``auto`` times a few
forward + backward passes of the model in each mode at the training crop and batch size
(capped at 8) and keeps bf16 unless fp32 is at least 10% faster, so that near-ties do not
flip between runs. The batch matters: on an AVX-512 BF16 CPU without AMX, LR-ASPP at 320x320
trained 1.37x faster in fp32 at batch 2 but 1.16x faster in bf16 at batch 8 (whole training
steps at batch 8: bf16 12.4 img/s, fp32 5.8), and bf16's lead grows with the batch for
DDRNet-23-slim, STDC1 and DeepLabV3-R50 too (benchmarks/RESULTS.md). The probe
runs on a copy of the model under a saved RNG state: the run's weights, BatchNorm statistics
and random stream are the same whichever mode wins.

A CPU without bf16 hardware (AVX2 only, for example) is not probed: bf16 is emulated there and
several times slower (LR-ASPP inference 23x on an AMD EPYC Zen 3), so ``auto`` is fp32.

The choice is written into the run's ``recipe.yaml`` (``trainer.precision``), so ``--resume``
continues in the same mode without measuring again.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

# the probe's batch: the training batch, at least 2 (BatchNorm) and at most 8 (probe time)
PROBE_BATCH = (2, 8)
# fp32 must be this much faster to replace bf16 (auto's choice without a probe): a short probe
# of two near-equal modes flips between runs (DDRNet-23-slim at 176x240 timed bf16 136 vs fp32
# 161 ms in one run, 149 vs 144 ms in the next), and a run's numbers should not depend on it.
FP32_MARGIN = 1.10
# why auto skips the probe on a CPU without bf16 units (oneDNN emulates bf16 there)
NO_BF16_HARDWARE = "this CPU has no bf16 hardware (AMX, AVX-512 BF16), where bf16 is emulated"


@dataclass
class PrecisionChoice:
    """The mode ``auto`` picked and the seconds per probe step that decided it."""

    precision: str  # "bf16" or "fp32"
    seconds: dict[str, float]

    def describe(self) -> str:
        timings = ", ".join(f"{mode} {s * 1000:.0f} ms" for mode, s in self.seconds.items())
        if self.precision == "bf16" and self.seconds["bf16"] > self.seconds["fp32"]:
            why = f"fp32 is not {FP32_MARGIN - 1:.0%} faster here"
        else:
            why = "the faster here"
        return f"precision: {self.precision} (auto: {why}; one training pass {timings})"


def _outputs_sum(outputs: object) -> torch.Tensor:
    if isinstance(outputs, torch.Tensor):
        return outputs.float().mean()
    if isinstance(outputs, dict):
        return sum(_outputs_sum(v) for v in outputs.values())
    if isinstance(outputs, (list, tuple)):
        return sum(_outputs_sum(v) for v in outputs)
    raise TypeError(f"unexpected model output {type(outputs).__name__}")


def time_training_pass(model: nn.Module, images: torch.Tensor, bf16: bool,
                       steps: int = 2, warmup: int = 1) -> float:
    """Fastest seconds of one forward + backward pass of ``model`` on ``images`` (CPU)."""
    best = float("inf")
    for index in range(warmup + steps):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = _outputs_sum(model(images))
        loss.backward()
        if index >= warmup:
            best = min(best, time.perf_counter() - start)
    return best


def choose_cpu_precision(model: nn.Module, crop: tuple[int, int], bands: int = 3,
                         channels_last: bool = True, steps: int = 2,
                         batch: int = PROBE_BATCH[0]) -> PrecisionChoice:
    """Time bf16 autocast against fp32 for ``model`` at ``crop`` and return the faster.

    ``batch`` is the training batch size, clamped to :data:`PROBE_BATCH`. Works on a deep
    copy in train mode; the global RNGs are restored afterwards.
    """
    low, high = PROBE_BATCH
    probe = copy.deepcopy(model).train()
    memory = torch.channels_last if channels_last else torch.contiguous_format
    probe = probe.to(memory_format=memory)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(min(max(batch, low), high), bands, *crop, generator=generator)
    images = images.contiguous(memory_format=memory)
    seconds: dict[str, float] = {}
    with torch.random.fork_rng(devices=[]):
        for mode in ("bf16", "fp32"):
            seconds[mode] = time_training_pass(probe, images, bf16=mode == "bf16", steps=steps)
    choice = "fp32" if seconds["fp32"] * FP32_MARGIN < seconds["bf16"] else "bf16"
    return PrecisionChoice(choice, seconds)
