"""Time one network under one backend: latency percentiles, throughput and peak memory."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from seglab.artifacts.device import resolve_device
from seglab.bench.backends import BACKEND_NOTES, check_backend, prepare
from seglab.bench.memory import peak_memory
from seglab.bench.static import model_stats
from seglab.errors import ConfigError, ModelError


def describe_method(warmup: int, repeats: int, device: str) -> str:
    """One paragraph saying what was measured and how (printed with every result)."""
    memory = (
        "peak memory = torch.cuda.max_memory_allocated (weights included)"
        if device.startswith("cuda")
        else "peak memory = increase of resident memory (RSS) over its value before the "
             "first pass of each batch size, during warm-up and timed passes"
    )
    sync = ", CUDA synchronised before and after each pass" if device.startswith("cuda") else ""
    return (
        f"Network forward only (random normalised input, no resize/softmax/data loading), "
        f"eval mode, torch.inference_mode; {warmup} warm-up passes then {repeats} timed passes "
        f"per batch size{sync}; latency = p50/p90 of the timed passes per batch; throughput "
        f"= batch / p50 latency; GFLOPs = multiply-adds / 1e9 for one image (meta device, "
        f"torchvision's convention); weight MB = serialised state dict / 2**20; {memory}."
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    # Nearest-rank percentile: an observed value, never an interpolation between two.
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def time_batch(model: nn.Module, backend: str, device: torch.device,
               input_size: tuple[int, int], batch: int, warmup: int,
               repeats: int, provider: str | None = None) -> dict[str, Any]:
    """Latency p50/p90/mean (ms), throughput (images/s) and peak memory at one batch size."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, *input_size, generator=generator).to(device)
    prepared = prepare(model, backend, device, input_size, batch, provider)
    if prepared.channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = (torch.autocast(device_type=device.type, dtype=prepared.autocast)
                if prepared.autocast is not None else contextlib.nullcontext())
    times: list[float] = []
    try:
        with peak_memory(device) as memory, torch.inference_mode(), autocast:
            for i in range(warmup + repeats):
                _sync(device)
                start = time.perf_counter()
                prepared.forward(x)
                _sync(device)
                if i >= warmup:
                    times.append(1000 * (time.perf_counter() - start))
    finally:
        if prepared.channels_last:
            model.to(memory_format=torch.contiguous_format)
        if prepared.cleanup is not None:
            prepared.cleanup()
    times.sort()
    p50 = statistics.median(times)
    return {
        "batch": batch,
        "latency_ms": p50,
        "latency_p90_ms": _percentile(times, 0.9),
        "latency_mean_ms": statistics.fmean(times),
        "latency_min_ms": times[0],
        "throughput_ips": batch * 1000 / p50,
        "peak_mem_mb": memory.get("peak_mb"),
        "peak_mem_method": memory.get("method"),
    }


def benchmark(
    model: nn.Module,
    input_size: tuple[int, int],
    batch_sizes: Sequence[int] = (1,),
    device: str | torch.device = "cpu",
    backend: str = "eager",
    warmup: int = 3,
    repeats: int = 10,
    stats: dict[str, Any] | None = None,
    provider: str | None = None,
) -> dict[str, Any]:
    """Benchmark one network under one backend; :mod:`seglab.bench` says how it is measured.

    Args:
        model: an ``nn.Module`` taking a normalised float batch (e.g. ``InferenceModel.model``);
            it is moved to ``device`` and put in eval mode.
        input_size: ``(H, W)`` of the input.
        batch_sizes: batch sizes to time; ``latency_ms``/``latency_p90_ms`` are of the first.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``, ...
        backend: one of :data:`BACKENDS`.
        warmup, repeats: untimed and timed forward passes per batch size.
        stats: :func:`model_stats` already computed for this model and size (skips recounting
            when one model is timed under several backends).
        provider: ONNX Runtime execution provider for the ONNX backends (default CPU).

    Returns:
        ``params``, ``trainable_params``, ``weight_mb``, ``gflops``, ``latency_ms`` (p50),
        ``latency_p90_ms``, ``throughput`` (``{batch: images/s}``), ``peak_mem_mb`` (max over
        batch sizes), ``per_batch`` (one dict per batch size), ``backend``, ``device``,
        ``input_size``, ``warmup``, ``repeats``, ``peak_mem_method`` and ``method``.
    """
    device = resolve_device(device)
    check_backend(backend, device, provider)
    batch_sizes = tuple(int(b) for b in batch_sizes)
    if not batch_sizes or min(batch_sizes) < 1:
        raise ConfigError(f"batch sizes must be positive integers, got {batch_sizes}")
    if warmup < 0 or repeats < 1:
        raise ConfigError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    if "compile" in backend and warmup < 1:
        # The first call compiles (seconds to minutes): timing it would measure the compiler.
        raise ConfigError("backend 'compile' needs warmup >= 1 (the first pass compiles)")
    if not isinstance(model, nn.Module):
        raise ModelError(f"benchmark needs a torch nn.Module, got {type(model).__name__}")
    input_size = (int(input_size[0]), int(input_size[1]))
    model = model.to(device).eval()
    stats = stats if stats is not None else model_stats(model, input_size)
    per_batch = [time_batch(model, backend, device, input_size, b, warmup, repeats, provider)
                 for b in batch_sizes]
    peaks = [row["peak_mem_mb"] for row in per_batch if row["peak_mem_mb"] is not None]
    return {
        **stats,
        "backend": backend,
        "backend_note": BACKEND_NOTES[backend],
        "device": str(device),
        **({"provider": provider or "cpu"} if backend.startswith("onnxruntime") else {}),
        "input_size": list(input_size),
        "warmup": warmup,
        "repeats": repeats,
        "latency_ms": per_batch[0]["latency_ms"],
        "latency_p90_ms": per_batch[0]["latency_p90_ms"],
        "throughput": {str(row["batch"]): row["throughput_ips"] for row in per_batch},
        "peak_mem_mb": max(peaks) if peaks else None,
        "peak_mem_method": per_batch[0]["peak_mem_method"],
        "per_batch": per_batch,
        "method": describe_method(warmup, repeats, str(device)),
    }
