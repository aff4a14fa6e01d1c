"""The ways a network can be run for timing, and what each one means.

A backend turns a model into a :class:`Prepared` forward (the callable, the input memory
format, the autocast dtype, and how to clean up); :func:`check_backend` rejects one that
cannot run here before anything is timed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seglab.errors import ConfigError

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


@dataclass
class Prepared:
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
    """``seglab.export``'s exporter and the ONNX Runtime wrapper, or a clear error."""
    try:
        import onnxruntime  # noqa: F401

        from seglab.artifacts.runtimes import OnnxSegmenter
        from seglab.export import export_model
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


def prepare(model: nn.Module, backend: str, device: torch.device,
            input_size: tuple[int, int], batch: int) -> Prepared:
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
    if backend == "onnxruntime":
        session, cleanup = _onnx_forward(model, input_size)
        return Prepared(session, False, None, cleanup)
    raise ConfigError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")

