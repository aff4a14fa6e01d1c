"""Export a trained model to ONNX or TorchScript, check it against eager PyTorch, run it back.

The exported graph has one input, ``input``: a *normalised* float32 ``[N, 3, H, W]`` batch
(``(pixels / 255 - mean) / std`` with the model's own mean/std), and one output, ``out``: the
class logits ``[N, C, H, W]`` at the input's size. Auxiliary heads are dropped. Without
``dynamic`` every axis is fixed to the export size (batch 1); with it batch, height and width
are free (ONNX only).

The model's config (spec, classes, normalisation, inference settings) travels inside the file:
as ONNX ``metadata_props`` (key ``seglab_config``, JSON) or as a TorchScript extra file
(``seglab_config.json``), so an exported file alone is enough for :class:`seglab.Predictor`.
The wrappers that run exported files live in :mod:`seglab.artifacts.runtimes` (re-exported
here: ``OnnxSegmenter``, ``TorchScriptSegmenter``, ``load_onnx_model``).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from seglab.artifacts.pretrained import DEFAULT_MEAN, DEFAULT_STD, seglab_version
from seglab.artifacts.runtimes import (
    CONFIG_KEY,
    INPUT_NAME,
    ONNX_SUFFIX,
    OUTPUT_NAME,
    TORCHSCRIPT_CONFIG_FILE,
    OnnxSegmenter,
    TorchScriptSegmenter,
    load_onnx_model,
)
from seglab.errors import ConfigError, ModelError
from seglab.io_utils import atomic_path

__all__ = [
    "CONFIG_KEY",
    "FORMATS",
    "OnnxSegmenter",
    "TorchScriptSegmenter",
    "export_model",
    "load_onnx_model",
    "normalised",
    "parity",
    "parity_images",
]

FORMATS = ("onnx", "torchscript")
DEFAULT_INPUT_SIZE = (512, 512)
# The parity gate: an export that changes more predicted pixels than this is not a faithful copy.
MIN_AGREEMENT = 0.999


class LogitsOnly(nn.Module):
    """The model's ``"out"`` logits as a plain tensor (exporters want tensors, not dicts)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)["out"]


# --- loading what to export ------------------------------------------------------------------


def _source_config(source: Any) -> tuple[nn.Module, dict[str, Any]]:
    """(eval-mode CPU model, config to embed) for a module, model/run folder or ``.ckpt``."""
    if isinstance(source, nn.Module):
        spec = getattr(source, "seglab_spec", None)
        config: dict[str, Any] = {
            "model": spec if isinstance(spec, dict) else {"name": type(source).__name__},
            "classes": None,
            "normalization": {"mean": list(DEFAULT_MEAN), "std": list(DEFAULT_STD)},
            "inference": {},
        }
        return source.cpu().eval(), config
    from seglab.artifacts.loader import load_inference_model

    if Path(source).suffix.lower() == ONNX_SUFFIX:
        raise ConfigError(f"{source} is already an exported ONNX file: give the model or run")
    loaded = load_inference_model(source, "cpu")
    if not isinstance(loaded.model, nn.Module):
        raise ConfigError(f"{source} is already an exported file: give the model or run")
    config = {
        "model": loaded.spec,
        "classes": loaded.classmap.to_dict(),
        "normalization": {"mean": [float(v) for v in loaded.mean],
                          "std": [float(v) for v in loaded.std]},
        "inference": dict(loaded.settings),
    }
    return loaded.model.eval(), config


def _model_name(config: dict[str, Any]) -> str:
    return str((config.get("model") or {}).get("name", "model"))


def _default_size(config: dict[str, Any]) -> tuple[int, int]:
    settings = config.get("inference") or {}
    size = settings.get("crop") if settings.get("mode") == "slide" else settings.get("size")
    if size is None:
        return DEFAULT_INPUT_SIZE
    size = [size] if isinstance(size, int) else list(size)
    return int(size[0]), int(size[-1])


# --- parity inputs ---------------------------------------------------------------------------


def parity_images(input_size: Sequence[int], count: int = 2) -> tuple[Tensor, str]:
    """uint8 ``[count, 3, H, W]`` CamVid-11 test images resized to ``input_size``, or random.

    Returns the batch and where it came from (``"camvid11 test images"`` or ``"random"``).
    """
    from seglab.paths import data_root

    height, width = int(input_size[0]), int(input_size[-1])
    root = data_root()
    folder = root / "camvid11" / "test" if root is not None else None
    files = sorted(folder.glob("*.png"))[:count] if folder and folder.is_dir() else []
    if len(files) == count:
        from PIL import Image

        images = []
        for file in files:
            with Image.open(file) as image:
                resized = image.convert("RGB").resize((width, height), Image.BILINEAR)
            images.append(torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1))
        return torch.stack(images), "camvid11 test images"
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (count, 3, height, width), generator=generator)
    return batch.to(torch.uint8), "random"


def normalised(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Float batch as the exported graph expects it: ``(images / 255 - mean) / std``."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t


def parity(reference: Tensor, exported: Tensor) -> dict[str, float]:
    """Max |logit difference| and the share of pixels whose argmax agrees."""
    reference, exported = reference.float(), exported.float()
    if reference.shape != exported.shape:
        raise ModelError(
            f"exported model answers {tuple(exported.shape)}, eager model "
            f"{tuple(reference.shape)}"
        )
    agree = (reference.argmax(1) == exported.argmax(1)).float().mean().item()
    return {"max_abs_diff": (reference - exported).abs().max().item(), "argmax_agreement": agree}


# --- exporting -------------------------------------------------------------------------------


def export_model(
    source: nn.Module | str | os.PathLike,
    format: str = "onnx",  # noqa: A002 - the user-facing name of the option
    out: str | os.PathLike | None = None,
    *,
    dynamic: bool = False,
    input_size: Sequence[int] | None = None,
    opset: int = 17,
    parity_count: int = 2,
) -> dict[str, Any]:
    """Export ``source`` to ``out`` and check it against the eager model.

    Args:
        source: an ``nn.Module`` from :func:`seglab.build_model`, a model folder, a run folder
            or a ``.ckpt`` from ``seglab train``.
        format: ``"onnx"`` or ``"torchscript"`` (traced).
        out: file to write (replaced atomically).
        dynamic: free batch/height/width axes (ONNX only).
        input_size: ``(H, W)`` the graph is traced at (and fixed to without ``dynamic``);
            default: the model's saved inference size, else 512x512.
        opset: ONNX opset.
        parity_count: images for the parity check (CamVid-11 test images when available).

    Returns:
        A JSON-safe report: ``path``, ``format``, ``model``, ``input_size``, ``dynamic``,
        ``bytes``, ``export_seconds`` and ``parity`` (``max_abs_diff``, ``argmax_agreement``,
        ``images``, ``inputs``).

    Raises:
        ModelError: the model cannot be exported (named, with the exporter's reason).
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}: use one of {', '.join(FORMATS)}")
    if out is None:
        raise ConfigError("export needs an output file (out=...)")
    if dynamic and format == "torchscript":
        raise ConfigError(
            "--dynamic applies to ONNX only: a traced TorchScript file is checked at its "
            "input size only"
        )
    model, config = _source_config(source)
    name = _model_name(config)
    size = tuple(int(v) for v in input_size) if input_size is not None else _default_size(config)
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"input_size must be (H, W) with positive values, got {input_size}")
    config["export"] = {
        "format": format,
        "input_size": list(size),
        "dynamic": dynamic,
        "input": "normalised float32 [N, 3, H, W]",
        "output": "logits [N, C, H, W] at input size",
    }
    if format == "onnx":
        config["export"]["opset"] = opset
    if not dynamic:  # the graph only takes this size: Predictor resizes to it
        settings = config["inference"]
        if settings.get("mode") == "slide":
            settings["crop"] = list(size)
        else:
            settings.update(mode="whole", size=list(size))
    config["seglab_version"] = seglab_version()
    wrapper = LogitsOnly(model).eval()
    example = torch.zeros(1, 3, *size)
    out = Path(out)
    started = time.perf_counter()
    with atomic_path(out) as tmp:
        if format == "onnx":
            _export_onnx(wrapper, example, tmp, config, name, dynamic, opset)
        else:
            _export_torchscript(wrapper, example, tmp, config, name)
        seconds = time.perf_counter() - started
        check = _check(wrapper, tmp, format, config, size, parity_count, shown_as=out)
    return {
        "path": str(out),
        "format": format,
        "model": name,
        "input_size": list(size),
        "dynamic": dynamic,
        "bytes": out.stat().st_size,
        "export_seconds": round(seconds, 2),
        "parity": check,
    }


def _traced_quietly(name: str, action):
    """Run an exporter with its tracer chatter silenced; any failure names the model."""
    with warnings.catch_warnings():
        # Tracer warnings flag every shape test (all models have them); a branch that really
        # depends on values is caught by the parity gate instead.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notices
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            with torch.no_grad():
                return action()
        except Exception as exc:  # exporters raise many types; all mean "cannot export"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot export {name}: {type(exc).__name__}: {reason}") from exc


def _export_onnx(wrapper: nn.Module, example: Tensor, path: Path, config: dict[str, Any],
                 name: str, dynamic: bool, opset: int) -> None:
    import onnx

    axes = {0: "batch", 2: "height", 3: "width"}
    dynamic_axes = {INPUT_NAME: axes, OUTPUT_NAME: axes} if dynamic else None
    _traced_quietly(name, lambda: torch.onnx.export(
        wrapper, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False,
    ))
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = CONFIG_KEY, json.dumps(config)
    onnx.save(proto, str(path))


def _export_torchscript(wrapper: nn.Module, example: Tensor, path: Path,
                        config: dict[str, Any], name: str) -> None:
    traced = _traced_quietly(name, lambda: torch.jit.trace(wrapper, example, check_trace=False))
    extra = {TORCHSCRIPT_CONFIG_FILE: json.dumps(config)}
    _traced_quietly(name, lambda: torch.jit.save(traced, str(path), _extra_files=extra))


def _check(wrapper: nn.Module, path: Path, format: str, config: dict[str, Any],  # noqa: A002
           size: Sequence[int], count: int, shown_as: Path) -> dict[str, Any]:
    """Parity on real images at the export size (and at another size for dynamic axes).

    Refuses (ModelError) an export that changes more than 0.1% of the predicted pixels: the
    usual cause is a forward whose Python control flow depends on tensor values, which a
    trace freezes to the branch the example input took.
    """
    exported = OnnxSegmenter(path) if format == "onnx" else TorchScriptSegmenter(path)
    exported.path = shown_as  # errors name the file being written, not its temporary twin
    sizes = [tuple(size)]
    if config["export"]["dynamic"]:
        sizes.append((size[0] + size[0] // 2 + 1, size[1] + size[1] // 4 + 3))
    norm = config["normalization"]
    report: dict[str, Any] = {}
    for index, check_size in enumerate(sizes):
        images, origin = parity_images(check_size, count)
        x = normalised(images, norm["mean"], norm["std"])
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            reference = torch.cat([wrapper(x[i : i + 1]) for i in range(len(x))])
            try:
                answer = exported(x)["out"]
            except ModelError as exc:
                if index == 0:
                    raise
                raise ModelError(
                    f"cannot export {_model_name(config)} with dynamic axes: traced at "
                    f"{size[0]}x{size[1]}, its graph fails at {check_size[0]}x{check_size[1]} "
                    f"({exc}); export without --dynamic at the size you will run"
                ) from exc
        result = {**parity(reference, answer), "images": len(x), "inputs": origin,
                  "size": list(check_size)}
        if result["argmax_agreement"] < MIN_AGREEMENT and index > 0:
            raise ModelError(
                f"cannot export {_model_name(config)} with dynamic axes: traced at "
                f"{size[0]}x{size[1]}, its graph gives different answers at "
                f"{check_size[0]}x{check_size[1]} (argmax agreement "
                f"{result['argmax_agreement']:.2%}, max |logit diff| "
                f"{result['max_abs_diff']:.3g}) because shape-dependent steps were frozen; "
                "export without --dynamic at the size you will run"
            )
        if result["argmax_agreement"] < MIN_AGREEMENT:
            raise ModelError(
                f"cannot export {_model_name(config)}: the exported graph does not reproduce "
                f"the model at {check_size[0]}x{check_size[1]} (argmax agreement "
                f"{result['argmax_agreement']:.2%}, max |logit diff| "
                f"{result['max_abs_diff']:.3g}); its forward likely branches on tensor values "
                "(data-dependent Python control flow), which tracing freezes"
            )
        if index == 0:
            report.update(result)
        else:
            report["other_size"] = result
    return report
