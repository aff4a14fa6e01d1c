"""``export_model``: load the model, write the file (ONNX with exporter fallback, or
TorchScript), gate it on parity, and optionally replace it by an int8 copy.

The file embeds the model's config: spec, classes, normalisation and its inference settings
(:class:`~seglab.artifacts.model.InferenceSettings`: size, mode, crop, stride, scales, flip),
so the exported file is run the way ``seglab eval`` runs the model it came from. A fixed-size
graph takes one input size: it keeps ``flip`` but not multi-scale ``scales`` (said in the
report's notes; ``--dynamic`` keeps them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from seglab.artifacts.adapted import inner_module
from seglab.artifacts.loader import load_inference_model
from seglab.artifacts.pretrained import seglab_version
from seglab.artifacts.runtimes import INPUT_NAME, ONNX_SUFFIX
from seglab.artifacts.settings import ModelSettings, model_settings
from seglab.errors import ConfigError, ModelError
from seglab.export.parity import check_export, normalised
from seglab.export.quantize import METHODS, calibration_images, quantize_onnx
from seglab.export.writers import (
    EXPORTERS,
    LogitsOnly,
    embed_onnx_config,
    exporter_order,
    model_name,
    write_onnx,
    write_torchscript,
)
from seglab.io_utils import atomic_path

FORMATS = ("onnx", "torchscript")
DEFAULT_INPUT_SIZE = (512, 512)
# Below this int8 agreement the report says the quantised model changes many predictions.
INT8_NOTE_BELOW = 0.99


def _source_config(source: Any, settings: ModelSettings) -> tuple[nn.Module, dict[str, Any],
                                                                 list[str]]:
    """(eval-mode CPU model taking RGB, config to embed, notes on defaults used) for a module,
    model/run folder, ``.ckpt`` or state dict, loaded by the one loader with ``settings``."""
    if not isinstance(source, nn.Module) and Path(source).suffix.lower() == ONNX_SUFFIX:
        raise ConfigError(f"{source} is already an exported ONNX file: give the model or run")
    loaded = load_inference_model(source, "cpu", settings=settings)
    if not isinstance(loaded.model, nn.Module):
        raise ConfigError(f"{source} is already an exported file: give the model or run")
    num_classes = loaded.classmap.num_classes
    spec = loaded.spec or {"name": type(inner_module(loaded.model)).__name__, "options": {}}
    generic = any(note.startswith("classes:") for note in loaded.notes)
    config = {
        "model": {**spec, "num_classes": num_classes},  # read back by every runtime
        "classes": None if generic else loaded.classmap.to_dict(),
        # The graph reads RGB (a BGR model reverses the channels inside it), so the
        # normalisation is stored in RGB order.
        "normalization": {"mean": [float(v) for v in loaded.mean],
                          "std": [float(v) for v in loaded.std]},
        "inference": dict(loaded.settings),
    }
    return loaded.model.cpu().eval(), config, list(loaded.notes)


def _default_size(config: dict[str, Any]) -> tuple[int, int]:
    settings = config.get("inference") or {}
    size = settings.get("crop") if settings.get("mode") == "slide" else settings.get("size")
    if size is None:
        return DEFAULT_INPUT_SIZE
    size = [size] if isinstance(size, int) else list(size)
    return int(size[0]), int(size[-1])


def _fixed_size(inference: dict[str, Any], size: tuple[int, int]) -> list[str]:
    """Fit the saved inference settings to a graph that takes ``size`` only (in place):
    Predictor resizes to it; scales other than 1 would feed it other sizes, so they go, with
    the note returned (flip keeps the size and stays)."""
    if inference.get("mode") == "slide":
        inference["crop"] = list(size)
    else:
        inference.update(mode="whole", size=list(size))
    scales = inference.get("scales")
    if scales is None or [float(s) for s in scales] == [1.0]:
        return []
    inference["scales"] = [1.0]
    return [f"the model runs at scales {', '.join(f'{s:g}' for s in scales)}; a fixed-size "
            "graph takes one size, so the file runs at scale 1 (export --dynamic to keep the "
            "scales)"]


def _writable(out: Path) -> None:
    """Fail before the (slow) export when ``out``'s folder cannot take a new file."""
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the export {out.name} into {folder}: {exc.strerror or exc} "
            "(choose a writable folder with --out)"
        ) from None


def export_model(
    source: nn.Module | str | os.PathLike,
    format: str = "onnx",  # noqa: A002 - the user-facing name of the option
    out: str | os.PathLike | None = None,
    *,
    dynamic: bool = False,
    input_size: Sequence[int] | None = None,
    opset: int | None = None,
    parity_count: int = 2,
    exporter: str = "auto",
    int8: str | None = None,
    calibration: str | os.PathLike | None = None,
    calibration_count: int = 16,
    batch: int = 1,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    scale: float | None = None,
    channels: str | None = None,
    classes: Any = None,
    settings: ModelSettings | None = None,
) -> dict[str, Any]:
    """Export ``source`` to ``out`` and check it against the eager model.

    Args:
        source: an ``nn.Module`` (from :func:`seglab.build_model`, or any module returning a
            tensor, ``{"out": logits}`` or a tuple whose first item is the logits), a model
            folder, a run folder, a ``.ckpt`` from ``seglab train`` or a state dict (with
            ``settings.model``).
        format: ``"onnx"`` or ``"torchscript"`` (traced).
        out: file to write (replaced atomically: nothing half-written is ever left).
        dynamic: free batch/height/width axes (ONNX only), checked at the traced size and at
            :data:`DYNAMIC_CHECK_SIZES`.
        input_size: ``(H, W)`` the graph is traced at (and fixed to without ``dynamic``);
            default: the model's saved inference size, else 512x512.
        opset: ONNX opset (default 18 for the dynamo exporter, 17 for the legacy one).
        parity_count: images for the parity check (CamVid-11 test images when available).
        exporter: ``"auto"`` (dynamo for dynamic axes, legacy for a fixed size, each falling
            back to the other with a note), ``"dynamo"`` or ``"legacy"`` (ONNX only).
        int8: ``"static"`` or ``"dynamic"`` to write an int8-quantised ONNX file instead of
            the fp32 one (the fp32 export is made and checked first).
        calibration: folder of calibration images for static int8 (default CamVid-11 train).
        calibration_count: calibration images.
        batch: the batch a fixed-size ONNX graph takes (without ``dynamic``; default 1).
        mean, std, scale, channels, classes: the model's input normalisation (``scale`` 1 or
            255 says which pixel scale ``mean``/``std`` are on), channel order and class table
            (see :class:`~seglab.artifacts.settings.ModelSettings`; ``settings`` gives them
            all at once). Required for a module that is not a seglab registry model (those
            default to ImageNet's, said in ``notes``). The file embeds them, its class count
            too, so seglab reads it back alone; a BGR model's graph reverses the channels
            itself and takes RGB.

    Returns:
        A JSON-safe report: ``path``, ``format``, ``model``, ``input_size``, ``dynamic``,
        ``exporter``, ``opset``, ``notes``, ``bytes``, ``export_seconds`` and ``parity``
        (``max_abs_diff``, ``argmax_agreement``, ``images``, ``inputs``, ``size``, and for
        dynamic axes ``other_size`` / ``other_sizes``); with ``int8`` also ``int8`` (method,
        calibration, ``parity`` of the int8 file against eager fp32, ``fp32_bytes``), and
        ``defaults``: the defaults used for what was not given (e.g. ImageNet statistics).

    Raises:
        ConfigError: bad arguments or an output folder that cannot be written (named).
        ModelError: the model cannot be exported (named, with each exporter's reason).
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}: use one of {', '.join(FORMATS)}")
    if out is None:
        raise ConfigError("export needs an output file (out=...)")
    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown exporter {exporter!r}: use one of {', '.join(EXPORTERS)}")
    if format == "torchscript" and (dynamic or int8):
        option = "--dynamic" if dynamic else "--int8"
        raise ConfigError(
            f"{option} applies to ONNX only: a traced TorchScript file is checked at its "
            "input size only"
        )
    if int8 is not None and int8 not in METHODS:
        raise ConfigError(f"unknown int8 method {int8!r}: use one of {', '.join(METHODS)}")
    if batch < 1 or (batch != 1 and (dynamic or format != "onnx")):
        raise ConfigError(f"batch={batch}: a fixed batch other than 1 applies to a fixed-size "
                          "ONNX export only (dynamic axes take any batch)")
    out = Path(out)
    _writable(out)
    settings = model_settings(settings, mean=mean, std=std, scale=scale, channels=channels,
                              classes=classes)
    model, config, loader_notes = _source_config(source, settings)
    name = model_name(config)
    size = tuple(int(v) for v in input_size) if input_size is not None else _default_size(config)
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"input_size must be (H, W) with positive values, got {input_size}")
    config["export"] = {
        "format": format,
        "input_size": list(size),
        "dynamic": dynamic,
        "input": f"normalised float32 [N, {len(config['normalization']['mean'])}, H, W]",
        "output": "logits [N, C, H, W] at input size",
    }
    if batch != 1:
        config["export"]["batch"] = batch
    notes: list[str] = []
    if not dynamic:
        notes += _fixed_size(config["inference"], size)
    config["seglab_version"] = seglab_version()
    wrapper = LogitsOnly(model).eval()
    started = time.perf_counter()
    with atomic_path(out) as tmp:
        if format == "onnx":
            check = _export_onnx(wrapper, tmp, config, name, size, dynamic, opset,
                                 exporter_order(exporter, dynamic), parity_count, notes, out)
        else:
            write_torchscript(wrapper, size, tmp, config, name)
            check = check_export(wrapper, tmp, format, config, size, parity_count, shown_as=out)
        seconds = time.perf_counter() - started
        report_int8 = None
        if int8 is not None:
            report_int8 = _quantize(wrapper, tmp, config, size, int8, calibration,
                                    calibration_count, parity_count, notes, out)
    return {
        "path": str(out),
        "format": format,
        "model": name,
        "input_size": list(size),
        "dynamic": dynamic,
        "exporter": config["export"].get("exporter", "torch.jit.trace"),
        "opset": config["export"].get("opset"),
        "notes": notes,
        "bytes": out.stat().st_size,
        "export_seconds": round(seconds, 2),
        "parity": check,
        **({"int8": report_int8} if report_int8 is not None else {}),
        # Defaults the loader used (e.g. ImageNet statistics for a registry model).
        "defaults": [n for n in loader_notes if not n.startswith("classes:")],
    }


def _export_onnx(wrapper: nn.Module, tmp: Path, config: dict[str, Any], name: str,
                 size: tuple[int, int], dynamic: bool, opset: int | None, order: list[str],
                 count: int, notes: list[str], out: Path) -> dict[str, Any]:
    """Write and check with each exporter of ``order`` until one passes the parity gate."""
    reasons: list[str] = []
    for choice in order:
        try:
            write_onnx(wrapper, size, tmp, config, name, dynamic, opset, choice,
                       config["export"].get("batch", 1))
            check = check_export(wrapper, tmp, "onnx", config, size, count, shown_as=out)
        except ModelError as exc:
            reason = str(exc).removeprefix(f"cannot export {name}: ")
            reasons.append(f"{choice} exporter: {reason}" if len(order) > 1 else reason)
            continue
        if reasons:
            deprecated = (", which torch deprecates" if choice == "legacy" else "")
            notes.append(f"the {order[0]} exporter could not export {name} "
                         f"({reasons[0].removeprefix(order[0] + ' exporter: ')}); exported "
                         f"with the {choice} exporter{deprecated}")
        return check
    raise ModelError(f"cannot export {name}: {'; '.join(reasons)}")


def _quantize(wrapper: nn.Module, fp32: Path, config: dict[str, Any], size: tuple[int, int],
              method: str, calibration: Any, count: int, parity_count: int,
              notes: list[str], out: Path) -> dict[str, Any]:
    """Replace the checked fp32 file ``fp32`` by its int8 copy; report how much changed."""
    norm = config["normalization"]
    batch, origin = None, "none (dynamic ranges)"
    if method == "static":
        if len(norm["mean"]) != 3:
            raise ModelError(
                f"int8 static calibration reads RGB images; this model takes "
                f"{len(norm['mean'])} bands: use --int8 dynamic"
            )
        images, origin = calibration_images(size, count, calibration)
        batch = normalised(images, norm["mean"], norm["std"])
    fp32_bytes = fp32.stat().st_size
    with tempfile.TemporaryDirectory(prefix="seglab-int8-") as scratch:
        int8_path = Path(scratch) / "int8.onnx"
        done = quantize_onnx(fp32, int8_path, method, batch, INPUT_NAME)
        config["export"]["int8"] = {**done, "calibration": origin}
        embed_onnx_config(int8_path, config)
        shutil.move(int8_path, fp32)  # the scratch folder may be on another file system
    check = check_export(wrapper, fp32, "onnx", config, size, parity_count, shown_as=out,
                   gate=False)
    worst = min([check["argmax_agreement"]]
                + [c["argmax_agreement"] for c in check.get("other_sizes", [])])
    if worst < INT8_NOTE_BELOW:
        notes.append(f"int8 changes {1 - worst:.2%} of the predicted pixels against fp32: "
                     "check the accuracy on your test set before using it")
    return {**config["export"]["int8"], "parity_vs_fp32_eager": check,
            "fp32_bytes": fp32_bytes}
