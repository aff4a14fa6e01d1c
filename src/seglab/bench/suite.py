"""Many models under many backends: the one document ``seglab bench`` prints."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seglab.artifacts import device as device_caps
from seglab.artifacts import rundir
from seglab.artifacts.device import resolve_device
from seglab.artifacts.loader import STATE_DICT_SUFFIXES, load_inference_model
from seglab.artifacts.settings import ModelSettings
from seglab.bench.backends import check_backend
from seglab.bench.runtime_file import FILE_BACKEND, FileModule, benchmarkable, file_stats
from seglab.bench.static import model_stats
from seglab.bench.timing import benchmark, describe_method
from seglab.errors import ConfigError, ModelError
from seglab.models.cpu_speedups import apply_cpu_speedups
from seglab.models.registry import (
    WEIGHT_OPTIONS,
    build_model,
    did_you_mean,
    model_info,
    split_model_entry,
)

# Backends that compute in bfloat16: emulated (several times slower than fp32, 18.6 s against
# 2.7 s a DeepLabV3-R50 pass at 520x520 on an AVX2 EPYC) on a CPU without bf16 hardware.
BF16_BACKENDS = frozenset({"bf16", "bf16_compile_freezing"})


def emulated_backends(backends: Sequence[str], device: torch.device) -> list[str]:
    """The ``backends`` that would run bf16 emulated on ``device`` (decided by
    :func:`seglab.artifacts.device.bf16_supported`, the one test of bf16 hardware)."""
    if device.type != "cpu" or device_caps.bf16_supported(device):
        return []
    return [b for b in backends if b in BF16_BACKENDS]


def emulation_note(backends: Sequence[str]) -> str:
    """The note a skipped emulated backend leaves in the document and on the console."""
    return (f"skipped {', '.join(backends)}: this CPU has no bf16 hardware (no AVX-512 BF16, "
            "AMX or Arm BF16), bf16 would be emulated and several times slower than fp32; "
            "--allow-emulated times it anyway")


def _check_spec(spec: str) -> None:
    """A saved model's path, or ``NAME[:key=value,...]`` of a registered model."""
    if Path(spec).expanduser().exists():
        return
    name, options = split_model_entry(spec)
    try:
        allowed = model_info(name).defaults
    except ModelError:
        raise ModelError(
            f"{spec!r} is neither a registered model (see `seglab models list`) nor an "
            f"existing run folder, model folder or .ckpt.{did_you_mean(name)}"
        ) from None
    unknown = sorted(set(options) - set(allowed))
    if unknown and allowed:
        raise ModelError(
            f"{spec!r}: unknown option(s) {', '.join(unknown)}; {name} takes {', '.join(allowed)}"
        )


def _label(path: Path) -> str:
    # A model folder is most often a run's model/: name it after the folder it lies in.
    if path.is_dir() and path.name == rundir.MODEL_DIR:
        return path.resolve().parent.name
    return rundir.source_name(path)


def load_for_bench(spec: str, num_classes: int = 21,
                   device: str | torch.device = "cpu",
                   settings: ModelSettings | None = None) -> tuple[str, nn.Module]:
    """``(label, model)`` for a registry name (built untrained) or a run/model folder, .ckpt,
    ONNX, TorchScript or state-dict file (with ``settings``), with the CPU speed-ups seglab's
    own inference runs (they act in CPU bf16 only). An ONNX or TorchScript file comes back
    as a :class:`~seglab.bench.runtime_file.FileModule`."""
    label, model = _load_model(spec, num_classes, device, settings)
    apply_cpu_speedups(model)
    return label, model


def _load_model(spec: str, num_classes: int, device: str | torch.device,
                settings: ModelSettings | None = None) -> tuple[str, nn.Module]:
    path = Path(spec).expanduser()
    if path.exists():
        # Timing needs no normalisation: a neutral one stands in for a file that gives none.
        settings = settings or ModelSettings()
        if path.suffix.lower() in STATE_DICT_SUFFIXES:  # built from the registry: its count
            settings = settings.with_defaults(num_classes=num_classes)
        if path.is_file() and settings.mean is None and settings.std is None:
            settings = settings.with_defaults(mean=[0.0] * 3, std=[1.0] * 3, scale=1)
        loaded = load_inference_model(path, device, settings=settings)
        return _label(path), benchmarkable(loaded.model)[0]
    _check_spec(spec)
    name, options = split_model_entry(spec)
    defaults = model_info(name).defaults
    # Built untrained unless the entry names weights: the weights never change a timing.
    untrained = {k: None for k in WEIGHT_OPTIONS if k in defaults and k not in options}
    return spec, build_model(name, num_classes, **untrained, **options)


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
    provider: str | None = None,
    allow_emulated: bool = False,
    on_row: Any = None,
    settings: ModelSettings | None = None,
) -> dict[str, Any]:
    """Benchmark every model under every backend: one JSON-ready document.

    ``settings`` apply to the model files among ``specs`` (``model``/``num_classes`` for a
    state dict); an ONNX or TorchScript file is timed once, in its own runtime (its row's
    ``backend`` says which), whatever ``backends`` asks of the torch models.

    Bad names, backends or devices fail before anything is timed. A backend that fails while
    running (e.g. a compiler error) is recorded in its row's ``error`` and the rest go on.
    ``latency_ratio`` is each row's p50 latency over the first timed backend's for the same
    model, ``speedup`` its inverse (above 1: faster than that baseline).
    ``provider`` is the ONNX Runtime execution provider of the ONNX backends (default CPU).
    A bf16 backend on a CPU without bf16 hardware is not timed (a ``skipped`` row and a line in
    ``notes``) unless ``allow_emulated``. ``on_row(row)`` is called as each row is finished.
    """
    torch_device = resolve_device(device)
    if not backends:
        raise ConfigError("give at least one backend")
    for backend in backends:
        check_backend(backend, torch_device, provider)
    for spec in specs:
        _check_spec(spec)
    say = progress or (lambda message: None)
    done = on_row or (lambda row: None)
    skipped = [] if allow_emulated else emulated_backends(backends, torch_device)
    notes = [emulation_note(skipped)] if skipped else []
    for note in notes:
        say(note)
    rows: list[dict[str, Any]] = []
    total, count = len(specs) * (len(backends) - len(skipped)), 0
    for spec in specs:
        label, model = load_for_bench(spec, num_classes, torch_device, settings)
        model = model.to(torch_device).eval()
        is_file = isinstance(model, FileModule)
        stats = file_stats(model) if is_file else model_stats(model, input_size)
        if is_file:  # one row in its own runtime, not one per torch backend
            total -= len(backends) - len(skipped) - 1
        baseline: float | None = None
        for backend in [FILE_BACKEND] if is_file else backends:
            row: dict[str, Any] = {"model": label, "source": spec}
            if backend in skipped:
                row.update(stats, backend=backend, skipped="bf16 emulated on this CPU")
                rows.append(row)
                continue
            count += 1
            say(f"[{count}/{total}] {label}: {backend} on {torch_device}, "
                f"batch {','.join(map(str, batch_sizes))}")
            try:
                result = benchmark(model, input_size, batch_sizes, torch_device, backend,
                                   warmup, repeats, stats=stats, provider=provider)
            except (RuntimeError, ValueError, NotImplementedError, ModelError) as exc:
                # Keep the table: one backend failing says something about it, not the rest.
                row.update(stats, backend=backend, error=f"{type(exc).__name__}: {exc}")
                rows.append(row)
                done(row)
                continue
            result.pop("method")
            row.update(result)
            if is_file:
                row["backend"] = f"{model.runtime} (file)"
            if baseline is None:
                baseline = result["latency_ms"]
            row["latency_ratio"] = result["latency_ms"] / baseline
            row["speedup"] = baseline / result["latency_ms"]
            rows.append(row)
            done(row)
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
        "provider": provider,
        "ratio_baseline": next((b for b in backends if b not in skipped), backends[0]),
        "notes": notes,
        "warmup": warmup,
        "repeats": repeats,
        "num_classes": num_classes,
        "results": rows,
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible"
