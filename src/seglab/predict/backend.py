"""Which runtime a :class:`~seglab.predict.Predictor` answers with, and why.

``auto`` (the default) picks the fastest runtime that gives the same masks:

- an exported ``.onnx`` runs in ONNX Runtime (its only runtime);
- a model folder that holds a current ONNX export of the same model (``seglab export RUN
  --dynamic --out RUN/model/model.onnx``; dynamic axes, or static at the Predictor's input
  size, written after the weights) runs in ONNX Runtime when its mask agrees with the torch
  fp32 model's on >= 99.9% of the pixels of a check image (measured once at load; the slower
  or disagreeing runtime is dropped with a note);
- otherwise torch, with ``precision="auto"`` (bf16 autocast on a CPU with bf16 hardware:
  1.6-1.7x faster than fp32 idle for the torchvision models on AMX, 1.05-2.55x on the loaded
  machine; fp32 on other CPUs, where emulated bf16 is several times slower; RESULTS.md).

At 360x480, batch 1 on the project's 2-core CPU, ONNX Runtime fp32 beats bf16 for
LR-ASPP-MobileNetV3 but not always for the ResNet-50 models, so ``auto`` times the two on the
check image and keeps the faster. An int8 export in the folder is used only if it passes the
same agreement check (int8 changed 6% of the pixels of a trained LR-ASPP: it is a choice to
make with ``seglab export --int8`` and the test set, not a silent default).

Where torch answers on a CPU, ``auto`` wraps the model in a
:class:`~seglab.predict.compiled.CompiledModel`: ``torch.compile`` with inductor freezing, the
fastest CPU runtime (1.84-2.33x eager fp32 with bf16 on the AVX-512 BF16 EPYC, RESULTS.md),
but about 10 s to compile, so it is used only when the workload announced with
:meth:`Predictor.expect` (``predict_paths`` announces its image count) saves more than that,
and only where its mask agrees with the eager model's.
``torch``, ``compile`` and ``onnxruntime`` force one runtime.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seglab.artifacts.device import autocast_dtype
from seglab.artifacts.model import InferenceModel
from seglab.artifacts.runtimes import (
    CONFIG_KEY,
    ONNX_SUFFIX,
    OnnxSegmenter,
    available_providers,
    read_config,
    resolve_provider,
)
from seglab.errors import ConfigError, ModelError
from seglab.export import MIN_AGREEMENT, normalised, parity, parity_images
from seglab.predict.compiled import CompiledModel

BACKENDS = ("auto", "torch", "compile", "onnxruntime")
CHECK_SIZE = (145, 163)  # odd on purpose: frozen shapes in a dynamic graph show up here


@dataclass
class Choice:
    """The runtime a Predictor uses: ``model`` to call, ``backend`` name and ``reason``."""

    model: Any
    backend: str
    reason: str
    provider: str | None = None


def find_export(loaded: InferenceModel, size: Any) -> Path | None:
    """A current ONNX export of ``loaded`` inside its model folder, else None.

    Current = same model spec, written after the weights, and either dynamic axes or static
    at ``size`` (the Predictor's input size).
    """
    import onnx  # lazy: the optional export extra; 1.5 s to import on the loaded 2-core CPU

    folder = loaded.source if loaded.source.is_dir() else None
    if folder is None or not isinstance(loaded.model, nn.Module):
        return None
    weights = [p.stat().st_mtime for p in folder.iterdir() if p.suffix in (".safetensors",
                                                                           ".bin", ".pt")]
    newest = max(weights, default=0.0)
    for path in sorted(folder.glob(f"*{ONNX_SUFFIX}")):
        try:
            proto = onnx.load(str(path), load_external_data=False)
            raw = {p.key: p.value for p in proto.metadata_props}.get(CONFIG_KEY)
            config = read_config(raw, path, CONFIG_KEY)
        except (ModelError, OSError, ValueError):
            continue  # not a seglab export (or unreadable): not ours to use
        export = config["export"]
        fits = export.get("dynamic") or (size is not None and list(_pair(size)) ==
                                         list(export["input_size"]))
        if config.get("model") == loaded.spec and fits and path.stat().st_mtime >= newest:
            return path
    return None


def _pair(size: Any) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[-1]))


def choose(loaded: InferenceModel, backend: str, provider: str | None, device: torch.device,
           size: Any) -> Choice:
    """Decide the runtime for ``loaded`` (see the module docstring)."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if provider is not None:
        resolve_provider(provider)  # an unavailable provider fails here, naming what is
    elif device.type == "cuda" and "CUDAExecutionProvider" in available_providers():
        provider = "cuda"
    if not isinstance(loaded.model, nn.Module):  # an exported file: its own runtime only
        if backend == "torch":
            raise ConfigError(f"{loaded.source} is an exported file: it cannot run as a torch "
                              "model (use backend auto or onnxruntime)")
        runtime = "onnxruntime" if isinstance(loaded.model, OnnxSegmenter) else "torchscript"
        return Choice(loaded.model, runtime, "the source is an exported file",
                      getattr(loaded.model, "providers", [None])[0])
    if backend == "torch":
        if provider is not None and device.type != "cuda":
            raise ConfigError("provider applies to ONNX Runtime: use backend onnxruntime/auto "
                              "or drop the provider")
        return Choice(loaded.model, "torch", "asked for")
    if backend == "compile":
        return Choice(CompiledModel(loaded.model, force=True), "torch.compile", "asked for")
    export = find_export(loaded, size)
    if export is None:
        if backend == "onnxruntime":
            raise ConfigError(
                f"backend onnxruntime needs an ONNX export: {loaded.source} holds no current "
                f"one (seglab export {loaded.source} --dynamic --out "
                f"{loaded.source / 'model.onnx'}), or give the .onnx file itself"
            )
        return _torch(loaded.model, "no ONNX export beside the model", device)
    session = OnnxSegmenter(export, provider=provider)
    if backend == "onnxruntime":
        return Choice(session, "onnxruntime", f"asked for ({export.name})", session.providers[0])
    return _measured(loaded, session, export, device)


def _torch(model: nn.Module, reason: str, device: torch.device) -> Choice:
    """torch for ``auto``: on a CPU behind a CompiledModel that compiles if the workload pays."""
    if device.type != "cpu":
        return Choice(model, "torch", reason)
    return Choice(CompiledModel(model), "torch", reason)


def _measured(loaded: InferenceModel, session: Any, export: Path,
              device: torch.device) -> Choice:
    """ONNX Runtime when it agrees with torch fp32 and is faster than torch's default."""
    images, _ = parity_images(CHECK_SIZE if session.dynamic else session.input_size, 1)
    x = normalised(images, loaded.mean, loaded.std)
    model = loaded.model
    dtype = autocast_dtype("auto", device)
    with torch.inference_mode():
        reference = model(x.to(device))["out"].float().cpu()
        answer = session(x)["out"]
        agreement = parity(reference, answer)["argmax_agreement"]
        if agreement < MIN_AGREEMENT:
            return _torch(model, f"{export.name} disagrees with the torch model "
                          f"({agreement:.2%} of pixels agree): not used", device)
        onnx_ms = _time(lambda: session(x))
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            torch_ms = _time(lambda: model(x.to(device)))
    if onnx_ms < torch_ms:
        return Choice(session, "onnxruntime", f"{export.name}: {onnx_ms:.0f} ms vs torch "
                      f"{torch_ms:.0f} ms, {agreement:.2%} agreement", session.providers[0])
    return _torch(model, f"torch {torch_ms:.0f} ms vs {export.name} {onnx_ms:.0f} ms", device)


def _time(call: Any) -> float:
    call()  # warm-up: first passes allocate and pick kernels
    start = time.perf_counter()
    call()
    return 1000 * (time.perf_counter() - start)
