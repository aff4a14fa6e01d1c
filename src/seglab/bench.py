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
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seglab.errors import ConfigError, ModelError

BACKENDS = ("eager", "channels_last", "bf16", "fp16", "compile", "onnxruntime")
CUDA_ONLY = frozenset({"fp16"})

BACKEND_NOTES = {
    "eager": "fp32, NCHW (contiguous), no autocast",
    "channels_last": "fp32, channels_last memory format",
    "bf16": "torch.autocast bfloat16 + channels_last",
    "fp16": "torch.autocast float16 + channels_last (CUDA only)",
    "compile": "torch.compile(model) fp32 channels_last (compile time spent in warm-up, "
               "not timed)",
    "onnxruntime": "ONNX Runtime CPU session of a dynamic-shape export by seglab.export "
                   "(fp32, 'out' logits only; export not timed)",
}


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


# --- static measures: parameters, weight bytes, GFLOPs -------------------------------------


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's state dict as seglab saves it (safetensors; torch.save fallback)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    try:
        from safetensors.torch import save

        return len(save(state))
    except (ImportError, RuntimeError, ValueError):
        # safetensors refuses tensors that share storage; torch.save handles them.
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getbuffer().nbytes


def _meta_copy(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` with every tensor on the meta device (no data copied)."""
    memo: dict[int, Any] = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        if isinstance(tensor, nn.Parameter):
            meta = nn.Parameter(meta, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = meta
    return copy.deepcopy(model, memo).eval()


def count_gflops(model: nn.Module, input_size: tuple[int, int]) -> float | None:
    """Multiply-adds / 1e9 of one image, counted on a meta-device copy (no arithmetic).

    Returns None for models that cannot run on the meta device (then say so, don't guess).
    """
    from seglab.models.profile import count_gmacs

    try:
        return count_gmacs(_meta_copy(model), input_size)
    except (NotImplementedError, RuntimeError, TypeError):
        return None


# --- peak memory ---------------------------------------------------------------------------


def _read_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Hand freed heap memory back to the OS so it cannot hide the next allocations' growth."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc only; elsewhere the baseline is higher


class _RssPeak:
    """Peak resident-memory increase (MiB) over the value at ``start()``."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.method = "unavailable (no /proc/self/status)"
        self._baseline_kb: int | None = None
        self._peak_kb = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._use_hwm = False

    def start(self) -> None:
        _release_free_memory()
        self._baseline_kb = _read_status_kb("VmRSS")
        if self._baseline_kb is None:
            return
        self._peak_kb = self._baseline_kb
        try:
            # "5" resets the kernel's peak-RSS counter (VmHWM) to the current RSS.
            Path("/proc/self/clear_refs").write_text("5")
            self._use_hwm = _read_status_kb("VmHWM") is not None
        except OSError:
            self._use_hwm = False
        if self._use_hwm:
            self.method = "RSS increase, kernel peak counter (VmHWM reset via clear_refs)"
            return
        self.method = f"RSS increase, VmRSS sampled every {self.interval_s * 1000:g} ms"
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = _read_status_kb("VmRSS") or 0
            self._peak_kb = max(self._peak_kb, rss)
            self._stop.wait(self.interval_s)

    def stop(self) -> float | None:
        if self._baseline_kb is None:
            return None
        if self._use_hwm:
            self._peak_kb = max(self._peak_kb, _read_status_kb("VmHWM") or 0)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
        self._peak_kb = max(self._peak_kb, _read_status_kb("VmRSS") or 0)
        return max(0, self._peak_kb - self._baseline_kb) / 1024


@contextlib.contextmanager
def _peak_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    record: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        record["method"] = "torch.cuda.max_memory_allocated (weights included)"
        yield record
        torch.cuda.synchronize(device)
        record["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        return
    tracker = _RssPeak()
    tracker.start()
    try:
        yield record
    finally:
        record["peak_mb"] = tracker.stop()
        record["method"] = tracker.method


# --- backends ------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """A callable network, the input memory format and the autocast dtype for one backend."""

    forward: Any
    channels_last: bool
    autocast: torch.dtype | None
    cleanup: Any = None


def check_backend(backend: str, device: torch.device) -> None:
    """Raise ConfigError when ``backend`` is unknown or cannot run on ``device``."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend in CUDA_ONLY and device.type != "cuda":
        raise ConfigError(f"backend {backend!r} needs a CUDA device (got {device}); "
                          "use bf16 on CPU")
    if backend == "onnxruntime":
        if device.type != "cpu":
            raise ConfigError("backend 'onnxruntime' runs on the CPU execution provider only")
        _onnx_factory()


def _onnx_factory() -> Any:
    """``seglab.export``'s exporter and ONNX Runtime wrapper, or a clear 'not available' error."""
    try:
        import onnxruntime  # noqa: F401

        from seglab.export import OnnxSegmenter, export_model
    except ImportError as exc:
        raise ConfigError(
            f"backend 'onnxruntime' is not available: {exc} (install seglab's export extra: "
            "onnx, onnxruntime)"
        ) from None
    return export_model, OnnxSegmenter


def _onnx_forward(model: nn.Module, input_size: tuple[int, int]) -> tuple[Any, Any]:
    """Export ``model`` to a temporary dynamic-batch ``.onnx`` and open it in ONNX Runtime."""
    import shutil
    import tempfile

    export_model, segmenter = _onnx_factory()
    folder = Path(tempfile.mkdtemp(prefix="seglab-bench-"))
    try:
        path = folder / "model.onnx"
        export_model(model, "onnx", path, dynamic=True, input_size=input_size, parity_count=1)
        session = segmenter(path, threads=torch.get_num_threads())
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return session, lambda: shutil.rmtree(folder, ignore_errors=True)


def _prepare(model: nn.Module, backend: str, device: torch.device,
             input_size: tuple[int, int], batch: int) -> _Prepared:
    if backend == "eager":
        return _Prepared(model, False, None)
    if backend == "channels_last":
        return _Prepared(model, True, None)
    if backend == "bf16":
        return _Prepared(model, True, torch.bfloat16)
    if backend == "fp16":
        return _Prepared(model, True, torch.float16)
    if backend == "compile":
        return _Prepared(torch.compile(model, dynamic=False), True, None)
    if backend == "onnxruntime":
        session, cleanup = _onnx_forward(model, input_size)
        return _Prepared(session, False, None, cleanup)
    raise ConfigError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    # Nearest-rank percentile: an observed value, never an interpolation between two.
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def time_batch(model: nn.Module, backend: str, device: torch.device,
               input_size: tuple[int, int], batch: int, warmup: int,
               repeats: int) -> dict[str, Any]:
    """Latency p50/p90/mean (ms), throughput (images/s) and peak memory at one batch size."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, *input_size, generator=generator).to(device)
    prepared = _prepare(model, backend, device, input_size, batch)
    if prepared.channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = (torch.autocast(device_type=device.type, dtype=prepared.autocast)
                if prepared.autocast is not None else contextlib.nullcontext())
    times: list[float] = []
    try:
        with _peak_memory(device) as memory, torch.inference_mode(), autocast:
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


def model_stats(model: nn.Module, input_size: tuple[int, int]) -> dict[str, Any]:
    """Parameters, trainable parameters, weight MB and GFLOPs (no timing)."""
    total, trainable = count_params(model)
    return {
        "params": total,
        "trainable_params": trainable,
        "weight_mb": weight_bytes(model) / 2**20,
        "gflops": count_gflops(model, input_size),
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
) -> dict[str, Any]:
    """Benchmark one network under one backend; see the module docstring for the method.

    Args:
        model: an ``nn.Module`` taking a normalised float batch (e.g. ``InferenceModel.model``);
            it is moved to ``device`` and put in eval mode.
        input_size: ``(H, W)`` of the input.
        batch_sizes: batch sizes to time; ``latency_ms``/``latency_p90_ms`` are of the first.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        backend: one of :data:`BACKENDS`.
        warmup, repeats: untimed and timed forward passes per batch size.
        stats: :func:`model_stats` already computed for this model and size (skips recounting
            when one model is timed under several backends).

    Returns:
        ``params``, ``trainable_params``, ``weight_mb``, ``gflops``, ``latency_ms`` (p50),
        ``latency_p90_ms``, ``throughput`` (``{batch: images/s}``), ``peak_mem_mb`` (max over
        batch sizes), ``per_batch`` (one dict per batch size), ``backend``, ``device``,
        ``input_size``, ``warmup``, ``repeats``, ``peak_mem_method`` and ``method``.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device} requested but CUDA is not available")
    check_backend(backend, device)
    batch_sizes = tuple(int(b) for b in batch_sizes)
    if not batch_sizes or min(batch_sizes) < 1:
        raise ConfigError(f"batch sizes must be positive integers, got {batch_sizes}")
    if warmup < 0 or repeats < 1:
        raise ConfigError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    if backend == "compile" and warmup < 1:
        # The first call compiles (seconds to minutes): timing it would measure the compiler.
        raise ConfigError("backend 'compile' needs warmup >= 1 (the first pass compiles)")
    if not isinstance(model, nn.Module):
        raise ModelError(f"benchmark needs a torch nn.Module, got {type(model).__name__}")
    input_size = (int(input_size[0]), int(input_size[1]))
    model = model.to(device).eval()
    stats = stats if stats is not None else model_stats(model, input_size)
    per_batch = [time_batch(model, backend, device, input_size, b, warmup, repeats)
                 for b in batch_sizes]
    peaks = [row["peak_mem_mb"] for row in per_batch if row["peak_mem_mb"] is not None]
    return {
        **stats,
        "backend": backend,
        "backend_note": BACKEND_NOTES[backend],
        "device": str(device),
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


# --- loading what the CLI names --------------------------------------------------------------


def _check_spec(spec: str, known: Sequence[str] | set[str]) -> None:
    if spec not in known and not Path(spec).expanduser().exists():
        raise ModelError(
            f"{spec!r} is neither a registered model (see `seglab models list`) nor an "
            "existing run folder, model folder or .ckpt"
        )


def load_for_bench(spec: str, num_classes: int = 21,
                   device: str | torch.device = "cpu") -> tuple[str, nn.Module]:
    """``(label, model)`` for a registry name (built untrained) or a run/model folder/.ckpt."""
    from seglab.models.registry import build_model, model_info, model_names

    path = Path(spec).expanduser()
    if path.exists():
        from seglab.predict import load_inference_model

        loaded = load_inference_model(path, device)
        if not isinstance(loaded.model, nn.Module):
            raise ModelError(f"{spec}: not a torch model (ONNX files are not benchmarked here)")
        label = path.parent.name if path.name == "model" or path.suffix == ".ckpt" else path.name
        return label or spec, loaded.model
    _check_spec(spec, model_names())
    defaults = model_info(spec).defaults
    untrained = {k: None for k in ("weights", "backbone_weights") if k in defaults}
    return spec, build_model(spec, num_classes, **untrained)


def bench_models(
    specs: Sequence[str],
    input_size: tuple[int, int],
    batch_sizes: Sequence[int] = (1,),
    device: str = "cpu",
    backends: Sequence[str] = ("eager",),
    warmup: int = 3,
    repeats: int = 10,
    num_classes: int = 21,
    progress: Any = None,
) -> dict[str, Any]:
    """Benchmark every model under every backend: one JSON-ready document.

    Bad names, backends or devices fail before anything is timed. A backend that fails while
    running (e.g. a compiler error) is recorded in its row's ``error`` and the rest go on.
    ``latency_ratio`` is each row's p50 latency over the first backend's for the same model.
    """
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    if not backends:
        raise ConfigError("give at least one backend")
    for backend in backends:
        check_backend(backend, torch_device)
    from seglab.models.registry import model_names

    known = set(model_names())
    for spec in specs:
        _check_spec(spec, known)
    say = progress or (lambda message: None)
    rows: list[dict[str, Any]] = []
    for spec in specs:
        label, model = load_for_bench(spec, num_classes, torch_device)
        model = model.to(torch_device).eval()
        stats = model_stats(model, input_size)
        baseline: float | None = None
        for backend in backends:
            say(f"{label}: {backend} on {device}, batch {','.join(map(str, batch_sizes))}")
            row: dict[str, Any] = {"model": label, "source": spec}
            try:
                result = benchmark(model, input_size, batch_sizes, torch_device, backend,
                                   warmup, repeats, stats=stats)
            except (RuntimeError, ValueError, NotImplementedError) as exc:
                # Keep the table: one backend failing says something about it, not the rest.
                row.update(stats, backend=backend, error=f"{type(exc).__name__}: {exc}")
                rows.append(row)
                continue
            result.pop("method")
            row.update(result)
            if baseline is None:
                baseline = result["latency_ms"]
            row["latency_ratio"] = result["latency_ms"] / baseline
            rows.append(row)
        del model
    return {
        "tool": "seglab bench",
        "method": describe_method(warmup, repeats, str(torch_device)),
        "device": str(torch_device),
        "device_name": _device_name(torch_device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "input_size": list(input_size),
        "batch_sizes": list(batch_sizes),
        "backends": list(backends),
        "ratio_baseline": backends[0],
        "warmup": warmup,
        "repeats": repeats,
        "num_classes": num_classes,
        "results": rows,
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible"
