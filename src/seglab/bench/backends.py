"""The ways a network can be run for timing, and what each one means.

A backend turns a model into a :class:`Prepared` forward (the callable, the input memory
format, the autocast dtype, and how to clean up); :func:`check_backend` rejects one that
cannot run here before anything is timed.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch._inductor.config as inductor
from torch import nn

from seglab.artifacts.runtimes import resolve_provider
from seglab.errors import ConfigError
from seglab.io_utils import apply_umask
from seglab.paths import data_root

BACKENDS = ("eager", "channels_last", "bf16", "fp16", "compile", "compile_freezing",
            "bf16_compile_freezing", "onnxruntime", "onnxruntime_int8")
CUDA_ONLY = frozenset({"fp16"})
ONNX_BACKENDS = frozenset({"onnxruntime", "onnxruntime_int8"})

BACKEND_NOTES = {
    "eager": "fp32, NCHW (contiguous), no autocast",
    "channels_last": "fp32, channels_last memory format",
    "bf16": "torch.autocast bfloat16 + channels_last (on a CPU, 3x3 convolutions of 2048+ "
            "channels in 256-channel slices: seglab.models.cpu_speedups)",
    "fp16": "torch.autocast float16 + channels_last (CUDA only)",
    "compile": "torch.compile(model) fp32 channels_last (compile time spent in warm-up, "
               "not timed)",
    "compile_freezing": "torch.compile(model) fp32 channels_last with inductor freezing "
                        "(weights folded as constants; compile time not timed)",
    "bf16_compile_freezing": "torch.compile with inductor freezing under bfloat16 autocast, "
                             "channels_last (compile time not timed)",
    "onnxruntime": "ONNX Runtime session (--provider, default CPU) of a seglab.export graph "
                   "fixed to the timed batch and size (fp32, 'out' logits only; export not "
                   "timed)",
    "onnxruntime_int8": "the same, quantised to int8 (static QDQ, per channel, calibrated "
                        "on 8 CamVid-11 train images; export not timed)",
}


@dataclass
class Prepared:
    """A callable network, the input memory format and the autocast dtype for one backend."""

    forward: Any
    channels_last: bool
    autocast: torch.dtype | None
    cleanup: Any = None


def check_backend(backend: str, device: torch.device, provider: str | None = None) -> None:
    """Raise ConfigError when ``backend`` is unknown or cannot run on ``device``.

    ``provider`` (an ONNX Runtime execution provider) applies to the ONNX backends only; an
    unavailable one is refused, naming those available.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend in CUDA_ONLY and device.type != "cuda":
        raise ConfigError(f"backend {backend!r} needs a CUDA device (got {device}); "
                          "use bf16 on CPU")
    if backend in ONNX_BACKENDS:
        if device.type != "cpu":
            raise ConfigError(f"backend {backend!r} takes its inputs on the CPU: use --device "
                              "cpu and choose the accelerator with --provider (e.g. cuda)")
        _onnx_factory()
        resolve_provider(provider)
    if backend == "onnxruntime_int8":
        root = data_root()
        if root is None or not (root / "camvid11" / "train").is_dir():
            raise ConfigError("backend 'onnxruntime_int8' calibrates on CamVid-11 train images: "
                              "set SEGLAB_DATA to a folder holding camvid11/train")


def _onnx_factory() -> Any:
    """``seglab.export``'s exporter and the ONNX Runtime wrapper, or a clear error."""
    try:  # the export extra (onnx, onnxruntime) is optional: a missing one is a clear error
        import onnxruntime  # noqa: F401

        from seglab.artifacts.runtimes import OnnxSegmenter
        from seglab.export import export_model
    except ImportError as exc:
        raise ConfigError(
            f"backend 'onnxruntime' is not available: {exc} (install seglab's export extra: "
            "onnx, onnxruntime)"
        ) from None
    return export_model, OnnxSegmenter


def _onnx_forward(model: nn.Module, input_size: tuple[int, int], batch: int,
                  int8: bool = False, provider: str | None = None) -> tuple[Any, Any]:
    """Export ``model`` to a temporary ``.onnx`` fixed to the timed shape, open it in ORT.

    A fixed shape is what an ONNX Runtime deployment at one size uses, takes the legacy
    exporter (seconds, where the dynamo one takes minutes here) and lets models whose
    dynamic-axes graph cannot be made still be timed.
    """
    export_model, segmenter = _onnx_factory()
    folder = Path(tempfile.mkdtemp(prefix="seglab-bench-"))
    apply_umask(folder, directory=True)  # mkdtemp's 0700, not the user's umask
    try:
        path = folder / "model.onnx"
        export_model(model, "onnx", path, input_size=input_size, parity_count=1,
                     int8="static" if int8 else None, calibration_count=8, batch=batch)
        session = segmenter(path, threads=torch.get_num_threads(), provider=provider)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return session, lambda: shutil.rmtree(folder, ignore_errors=True)


def _frozen_compile(model: nn.Module) -> tuple[Any, Any]:
    """``torch.compile`` with inductor freezing on until ``cleanup`` (it compiles lazily)."""
    before = inductor.freezing
    inductor.freezing = True

    def cleanup() -> None:
        inductor.freezing = before

    return torch.compile(model, dynamic=False), cleanup


def prepare(model: nn.Module, backend: str, device: torch.device,
            input_size: tuple[int, int], batch: int,
            provider: str | None = None) -> Prepared:
    """The network ``model`` made ready to time under ``backend`` (ONNX: exported first)."""
    if backend == "eager":
        return Prepared(model, False, None)
    if backend == "channels_last":
        return Prepared(model, True, None)
    if backend == "bf16":
        return Prepared(model, True, torch.bfloat16)
    if backend == "fp16":
        return Prepared(model, True, torch.float16)
    if backend == "compile":
        return Prepared(torch.compile(model, dynamic=False), True, None)
    if backend in ("compile_freezing", "bf16_compile_freezing"):
        compiled, cleanup = _frozen_compile(model)
        dtype = torch.bfloat16 if backend.startswith("bf16") else None
        return Prepared(compiled, True, dtype, cleanup)
    if backend in ONNX_BACKENDS:
        session, cleanup = _onnx_forward(model, input_size, batch,
                                         backend == "onnxruntime_int8", provider)
        return Prepared(session, False, None, cleanup)
    raise ConfigError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")

