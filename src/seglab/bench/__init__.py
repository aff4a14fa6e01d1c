"""Measure a segmentation network: size, compute, latency, throughput and peak memory.

The one place seglab times models (``seglab bench``, and ``seglab compare`` through
:func:`benchmark`). Method, in the spirit of mmsegmentation's benchmark tool:

* the network's own forward pass on a random normalised float batch (no resizing, softmax or
  data loading), under ``torch.inference_mode`` and in eval mode;
* ``warmup`` untimed passes, then ``repeats`` timed passes per batch size, each timed with
  ``time.perf_counter`` around one forward, CUDA synchronised before and after;
* latency = median (p50) and 90th percentile of those passes; throughput = batch / p50;
* GFLOPs are multiply-adds / 1e9 (torchvision's convention) of one image, counted on the meta
  device by :mod:`seglab.models.profile`;
* weight size = bytes of the state dict serialised as safetensors (torch.save if tensors share
  storage), in MiB;
* peak memory: CUDA ``max_memory_allocated`` (weights included); on CPU the increase of the
  process's resident memory over its value just before the first pass of that batch size,
  covering warm-up and timed passes (kernel peak-RSS counter reset through
  ``/proc/self/clear_refs`` where allowed, else a thread sampling ``VmRSS`` every 2 ms).

Modules, each on the ones before it: :mod:`.static` (parameters, weight bytes, GFLOPs),
:mod:`.memory` (peak memory), :mod:`.backends` (eager, channels_last, bf16, fp16, compile,
onnxruntime), :mod:`.timing` (one network under one backend: :func:`benchmark`) and
:mod:`.suite` (many models under many backends: :func:`bench_models`, one document).
"""

from __future__ import annotations

from seglab.bench.backends import BACKEND_NOTES, BACKENDS, CUDA_ONLY, check_backend
from seglab.bench.static import count_gflops, count_params, model_stats, weight_bytes
from seglab.bench.suite import bench_models, load_for_bench
from seglab.bench.timing import benchmark, describe_method, time_batch

__all__ = [
    "BACKENDS",
    "BACKEND_NOTES",
    "CUDA_ONLY",
    "bench_models",
    "benchmark",
    "check_backend",
    "count_gflops",
    "count_params",
    "describe_method",
    "load_for_bench",
    "model_stats",
    "time_batch",
    "weight_bytes",
]
