"""Benchmark a model file that runs in its own runtime (ONNX Runtime, TorchScript).

Such a file is timed as it is: :class:`FileModule` makes it callable where the timing code
takes an ``nn.Module``, under the ``eager`` backend only (autocast, channels_last and
compilation are torch's and do not apply to it). Its parameter count is read from the file
(ONNX initializers, TorchScript parameters), its size is the file's, and GFLOPs are not
counted (the flop counter traces torch operators only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from seglab.artifacts.runtimes import OnnxSegmenter

FILE_BACKEND = "eager"


class FileModule(nn.Module):
    """An exported-file runtime (``segmenter(x) -> {"out": logits}``) as an ``nn.Module``."""

    def __init__(self, segmenter: Any) -> None:
        super().__init__()
        self.segmenter = segmenter  # not a Module: its weights live in the runtime

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.segmenter(x)

    @property
    def runtime(self) -> str:
        """``onnxruntime`` or ``torchscript``: what answers."""
        return "onnxruntime" if isinstance(self.segmenter, OnnxSegmenter) else "torchscript"


def file_stats(module: FileModule) -> dict[str, Any]:
    """Parameters and size of the file behind ``module`` (GFLOPs: None, not counted)."""
    segmenter = module.segmenter
    path = Path(segmenter.path)
    if isinstance(segmenter, OnnxSegmenter):
        import onnx  # lazy: optional (export extra), and 2.2 s to import on this loaded machine

        graph = onnx.load(str(path), load_external_data=False).graph
        params = int(sum(int(np.prod(t.dims)) for t in graph.initializer))
    else:
        params = int(sum(p.numel() for p in segmenter.module.parameters()))
    nbytes = path.stat().st_size
    return {"params": params, "trainable_params": 0, "weight_bytes": nbytes,
            "weight_mb": nbytes / 10**6, "weight_mib": nbytes / 2**20, "heads": "out",
            "gflops": None}


def benchmarkable(model: Any) -> tuple[nn.Module, dict[str, Any] | None]:
    """``(module to time, its stats or None to count them)`` for an InferenceModel's model."""
    if isinstance(model, nn.Module):
        return model, None
    module = FileModule(model)
    return module, file_stats(module)
