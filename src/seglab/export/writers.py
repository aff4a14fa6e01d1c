"""Write one export: the dynamo or legacy ONNX exporter, or a TorchScript trace, config embedded.

Two ONNX exporters exist in torch. The dynamo exporter (``torch.onnx.export(...,
dynamo=True)``, through ``torch.export`` and onnxscript) records shapes symbolically, so a
dynamic-axes graph recomputes shape-dependent steps (PSPNet's pyramid bins, U-Net's skip
crops) at every input size. The legacy TorchScript-based exporter is deprecated and freezes
such steps at the traced size (PSPNet's dynamic export drifted by 1.7e-2 at 145x163).

``auto`` therefore uses the dynamo exporter for dynamic axes. For a fixed-size graph both
are exact at the one size it takes (the parity gate checks it) and the legacy exporter is
15-60 times faster here (LR-ASPP: 4.5 s vs 67 s idle, 300 s on the loaded 2-core machine),
so ``auto`` uses it first there. Either falls back to the other, with a note, when it cannot
export the model or its graph fails the gate.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.export import Dim

from seglab.artifacts.runtimes import (
    CONFIG_KEY,
    INPUT_NAME,
    OUTPUT_NAME,
    TORCHSCRIPT_CONFIG_FILE,
    first_tensor,
)
from seglab.errors import ModelError

EXPORTERS = ("auto", "dynamo", "legacy")
# The dynamo exporter's lowest opset; the legacy one's long-standing default.
DEFAULT_OPSET = {"dynamo": 18, "legacy": 17}
T = TypeVar("T")


class LogitsOnly(nn.Module):
    """The model's logits as a plain tensor (exporters want tensors, not dicts): a tensor
    answer as it is, a dict's ``"out"``, a tuple's first item; anything else is an error
    saying ``return {"out": logits}``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return first_tensor(self.model(x), type(self.model).__name__)


def model_name(config: dict[str, Any]) -> str:
    """The exported model's registry name, as messages name it."""
    return str((config.get("model") or {}).get("name", "model"))


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colour codes some exporter messages carry


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (exporter messages run to pages)."""
    text = _ANSI.sub("", str(exc)).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else type(exc).__name__}"


def quietly(name: str, action: Callable[[], T]) -> T:
    """Run an exporter with its chatter silenced; any failure is a ModelError naming the model."""
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export", "torch.onnx",
                                              "torch._dynamo", "onnxscript")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # Tracer warnings flag every shape test (all models have them); a branch that really
        # depends on values is caught by the parity gate instead. Stdout is kept clean for
        # --json: the dynamo exporter prints its progress.
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            with torch.no_grad():
                return action()
        except Exception as exc:  # exporters raise many types; all mean "cannot export"
            raise ModelError(f"cannot export {name}: {first_line(exc)}") from exc
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def embed_onnx_config(path: Path, config: dict[str, Any]) -> None:
    """Store ``config`` as the file's ``seglab_config`` metadata (replacing an old one)."""
    import onnx  # lazy: the optional export extra; 1.5 s to import on the loaded 2-core CPU

    proto = onnx.load(str(path))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != CONFIG_KEY]
    del proto.metadata_props[:]
    for key, value in [*kept, (CONFIG_KEY, json.dumps(config))]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def exporter_order(exporter: str, dynamic: bool) -> list[str]:
    """The exporters to try, in order, for ``exporter`` (see the module docstring)."""
    if exporter != "auto":
        return [exporter]
    return ["dynamo", "legacy"] if dynamic else ["legacy", "dynamo"]


def write_onnx(wrapper: nn.Module, size: tuple[int, int], path: Path, config: dict[str, Any],
               name: str, dynamic: bool, opset: int | None, exporter: str,
               batch: int = 1) -> int:
    """Export ``wrapper`` with one exporter (``dynamo`` or ``legacy``); returns the opset used.

    A fixed-size graph takes ``[batch, bands, *size]`` (bands: one per normalisation mean);
    a dynamic one any batch and size.
    """
    opset = opset or DEFAULT_OPSET[exporter]
    bands = len(config["normalization"]["mean"])
    if exporter == "dynamo":
        # A batch of 2 keeps the batch axis free (torch.export specialises a size-1 axis).
        example = torch.zeros(2 if dynamic else batch, bands, *size)
        shapes = ({0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO},) if dynamic else None
        program = quietly(name, lambda: torch.onnx.export(
            wrapper, (example,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=shapes, opset_version=opset, dynamo=True, verbose=False,
            external_data=False,
        ))
        quietly(name, lambda: program.save(str(path), external_data=False))
    else:
        axes = {0: "batch", 2: "height", 3: "width"}
        dynamic_axes = {INPUT_NAME: axes, OUTPUT_NAME: axes} if dynamic else None
        example = torch.zeros(batch, bands, *size)
        quietly(name, lambda: torch.onnx.export(
            wrapper, (example,), str(path), input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes, opset_version=opset,
            dynamo=False,
        ))
    config["export"].update(exporter=exporter, opset=opset)
    embed_onnx_config(path, config)
    return opset


def write_torchscript(wrapper: nn.Module, size: tuple[int, int], path: Path,
                      config: dict[str, Any], name: str) -> None:
    """A traced TorchScript file with the config as its ``seglab_config.json`` extra file."""
    example = torch.zeros(1, len(config["normalization"]["mean"]), *size)
    traced = quietly(name, lambda: torch.jit.trace(wrapper, example, check_trace=False))
    extra = {TORCHSCRIPT_CONFIG_FILE: json.dumps(config)}
    quietly(name, lambda: torch.jit.save(traced, str(path), _extra_files=extra))


