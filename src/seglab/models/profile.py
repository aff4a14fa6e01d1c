"""Size, compute and layer tables of registered models, computed on the meta device.

Building a model and running it on ``torch.device("meta")`` allocates no memory and does no
arithmetic, so parameter counts, FLOPs (``torch.utils.flop_counter``) and per-layer shapes at
520x520 take a fraction of a second even for ResNet-101 models on a 2-core CPU.

GFLOPs convention: torchvision's published "GFLOPS" are multiply-accumulates / 1e9
(FlopCounterMode counts 2 FLOPs per multiply-add, so we divide its total by 2); with that,
deeplabv3_resnet50 at 520x520 (21 classes, aux head included) gives 178.72 as published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from seglab.models.freeze import apply_freeze, count_parameters
from seglab.models.registry import build_model, model_info


def build_on_meta(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build a model without allocating its weights (for counting and shapes only)."""
    for key in ("weights", "backbone_weights"):
        options.pop(key, None)
    with torch.device("meta"):
        return build_model(name, num_classes, **options).eval()


def count_gmacs(model: nn.Module, input_size: tuple[int, int]) -> float:
    """Multiply-adds (in billions) of one forward pass of a batch of one image, all outputs."""
    device = next(model.parameters()).device
    x = torch.empty(1, 3, *input_size, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2e9


def profile_model(name: str, *, num_classes: int = 21, input_size: tuple[int, int] = (520, 520),
                  flops: bool = False, **options: Any) -> dict[str, Any]:
    """Name, family, backbone, parameters (M) and optionally GFLOPs (MACs) of one model."""
    info = model_info(name)
    model = build_on_meta(name, num_classes, **options)
    _, total = count_parameters(model)
    row: dict[str, Any] = {
        "name": name,
        "family": info.family,
        "backbone": info.backbone,
        "params_m": round(total / 1e6, 2),
        "gflops": round(count_gmacs(model, input_size), 2) if flops else None,
        "weights": list(info.weights),
        "backbone_weights": list(info.backbone_weights),
        "pretrained": info.pretrained,
        "description": info.description,
    }
    return row


@dataclass(frozen=True)
class LayerRow:
    """One row of a model's layer table."""

    name: str
    kind: str
    input_shape: str
    output_shape: str
    params: int
    trainable: int
    depth: int


def _shape(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return "x".join(str(d) for d in value.shape)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_shape(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        shapes = [_shape(v) for v in value]
        return shapes[0] if len(shapes) == 1 else "[" + ", ".join(shapes) + "]"
    return type(value).__name__


def layer_table(model: nn.Module, input_size: tuple[int, int], *,
                depth: int = 3) -> list[LayerRow]:
    """Forward one image through ``model`` and record every module down to ``depth``.

    Modules are visited in forward (call) order; unvisited modules (e.g. an aux head that is
    switched off) are not listed.
    """
    selected = {
        name: module for name, module in model.named_modules()
        if name and name.count(".") < depth
    }
    records: dict[str, tuple[str, str]] = {}
    order: list[str] = []

    def pre_hook(name: str):
        def enter(module: nn.Module, args: tuple) -> None:
            if name not in order:  # parents before children, in call order
                order.append(name)
        return enter

    def hook(name: str):
        def record(module: nn.Module, args: tuple, output: Any) -> None:
            records[name] = (_shape(args), _shape(output))
        return record

    handles = [m.register_forward_pre_hook(pre_hook(n)) for n, m in selected.items()]
    handles += [m.register_forward_hook(hook(n)) for n, m in selected.items()]
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.empty(1, 3, *input_size, device=device))
    finally:
        for h in handles:
            h.remove()
    rows = []
    for name in order:
        module = selected[name]
        trainable, total = count_parameters(module)
        rows.append(LayerRow(name, type(module).__name__, *records[name], total, trainable,
                             name.count(".")))
    return rows


def describe_model(name: str, *, num_classes: int = 21, freeze: str = "none",
                   input_size: tuple[int, int] = (520, 520), depth: int = 3,
                   **options: Any) -> dict[str, Any]:
    """Layer table + trainable/total parameters of ``name`` under a freeze policy."""
    model = build_on_meta(name, num_classes, **options)
    summary = apply_freeze(model, freeze)
    rows = layer_table(model, input_size, depth=depth)
    with torch.no_grad():
        output = model(torch.empty(1, 3, *input_size, device="meta"))
    return {
        "name": name,
        "num_classes": num_classes,
        "input_size": list(input_size),
        "freeze": freeze,
        "trainable_params": summary.trainable_params,
        "total_params": summary.total_params,
        "frozen_batchnorms": summary.frozen_batchnorms,
        "outputs": {k: list(v.shape) for k, v in output.items()},
        "layers": [row.__dict__ for row in rows],
    }
