"""Export a trained model to ONNX or TorchScript, check it against eager PyTorch, run it back.

The exported graph has one input, ``input``: a *normalised* float32 ``[N, B, H, W]`` batch
(B = 3 for RGB, one per band for multi-band models; ``(pixels / 255 - mean) / std`` with the
model's own per-band mean/std), and one output, ``out``: the
class logits ``[N, C, H, W]`` at the input's size. Auxiliary heads are dropped. Without
``dynamic`` every axis is fixed to the export size (batch 1); with it batch, height and width
are free (ONNX only).

The model's config (spec, classes, normalisation, inference settings) travels inside the file:
as ONNX ``metadata_props`` (key ``seglab_config``, JSON) or as a TorchScript extra file
(``seglab_config.json``), so an exported file alone is enough for :class:`seglab.Predictor`.
The wrappers that run exported files live in :mod:`seglab.artifacts.runtimes` (re-exported
here: ``OnnxSegmenter``, ``TorchScriptSegmenter``, ``load_onnx_model``).

ONNX with dynamic axes goes through the dynamo exporter, a fixed-size graph through the
(much faster, equally exact there) legacy one; each falls back to the other, with a note in
the report, when it cannot take the model or its graph fails the parity gate
(:mod:`seglab.export.writers`). ``int8`` writes a quantised copy instead
(:mod:`seglab.export.quantize`), its agreement with the fp32 model reported, not gated.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from seglab.artifacts.adapted import inner_module
from seglab.artifacts.pretrained import seglab_version
from seglab.artifacts.runtimes import (
    CONFIG_KEY,
    INPUT_NAME,
    ONNX_SUFFIX,
    OnnxSegmenter,
    TorchScriptSegmenter,
    load_onnx_model,
)
from seglab.artifacts.settings import ModelSettings, model_settings
from seglab.class_ids import class_ids
from seglab.errors import ConfigError, ModelError
from seglab.export.writers import (
    EXPORTERS,
    LogitsOnly,
    exporter_order,
    write_onnx,
    write_torchscript,
)
from seglab.io_utils import atomic_path

__all__ = [
    "CONFIG_KEY",
    "DYNAMIC_CHECK_SIZES",
    "EXPORTERS",
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
# A dynamic-axes graph is checked at the traced size and at these two odd sizes (odd sizes
# catch frozen pooling bins, crops and paddings that a multiple of 32 would hide).
DYNAMIC_CHECK_SIZES = ((145, 163), (97, 211))
# Below this int8 agreement the report says the quantised model changes many predictions.
INT8_NOTE_BELOW = 0.99


# --- loading what to export ------------------------------------------------------------------


def _source_config(source: Any, settings: ModelSettings) -> tuple[nn.Module, dict[str, Any],
                                                                 list[str]]:
    """(eval-mode CPU model taking RGB, config to embed, notes on defaults used) for a module,
    model/run folder, ``.ckpt`` or state dict, loaded by the one loader with ``settings``."""
    from seglab.artifacts.loader import load_inference_model

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


def parity_images(input_size: Sequence[int], count: int = 2,
                  bands: int = 3) -> tuple[Tensor, str]:
    """uint8 ``[count, bands, H, W]``: CamVid-11 test images resized to ``input_size`` for an
    RGB model, else (no data, or another band count) random pixels.

    Returns the batch and where it came from (``"camvid11 test images"`` or ``"random"``).
    """
    from seglab.paths import data_root

    height, width = int(input_size[0]), int(input_size[-1])
    root = data_root()
    folder = root / "camvid11" / "test" if root is not None else None
    files = sorted(folder.glob("*.png"))[:count] if folder and folder.is_dir() else []
    if len(files) == count and bands == 3:
        from PIL import Image

        images = []
        for file in files:
            with Image.open(file) as image:
                resized = image.convert("RGB").resize((width, height), Image.BILINEAR)
            images.append(torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1))
        return torch.stack(images), "camvid11 test images"
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (count, bands, height, width), generator=generator)
    return batch.to(torch.uint8), "random"


def normalised(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Float batch as the exported graph expects it: ``(images / 255 - mean) / std``."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)  # one value per band
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t


def parity(reference: Tensor, exported: Tensor) -> dict[str, float]:
    """Max |logit difference| and the share of pixels whose argmax agrees."""
    reference, exported = reference.float(), exported.float()
    if reference.shape != exported.shape:
        raise ModelError(
            f"exported model answers {tuple(exported.shape)}, eager model "
            f"{tuple(reference.shape)}"
        )
    agree = (class_ids(reference) == class_ids(exported)).float().mean().item()
    return {"max_abs_diff": (reference - exported).abs().max().item(), "argmax_agreement": agree}


# --- exporting -------------------------------------------------------------------------------


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
    from seglab.export.quantize import METHODS

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
        "input": f"normalised float32 [N, {len(config['normalization']['mean'])}, H, W]",
        "output": "logits [N, C, H, W] at input size",
    }
    if batch != 1:
        config["export"]["batch"] = batch
    if not dynamic:  # the graph only takes this size: Predictor resizes to it
        settings = config["inference"]
        if settings.get("mode") == "slide":
            settings["crop"] = list(size)
        else:
            settings.update(mode="whole", size=list(size))
    config["seglab_version"] = seglab_version()
    wrapper = LogitsOnly(model).eval()
    notes: list[str] = []
    started = time.perf_counter()
    with atomic_path(out) as tmp:
        if format == "onnx":
            check = _export_onnx(wrapper, tmp, config, name, size, dynamic, opset,
                                 exporter_order(exporter, dynamic), parity_count, notes, out)
        else:
            write_torchscript(wrapper, size, tmp, config, name)
            check = _check(wrapper, tmp, format, config, size, parity_count, shown_as=out)
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
            check = _check(wrapper, tmp, "onnx", config, size, count, shown_as=out)
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
    from seglab.export.quantize import calibration_images, quantize_onnx
    from seglab.export.writers import embed_onnx_config

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
    check = _check(wrapper, fp32, "onnx", config, size, parity_count, shown_as=out,
                   gate=False)
    worst = min([check["argmax_agreement"]]
                + [c["argmax_agreement"] for c in check.get("other_sizes", [])])
    if worst < INT8_NOTE_BELOW:
        notes.append(f"int8 changes {1 - worst:.2%} of the predicted pixels against fp32: "
                     "check the accuracy on your test set before using it")
    return {**config["export"]["int8"], "parity_vs_fp32_eager": check,
            "fp32_bytes": fp32_bytes}


def _check(wrapper: nn.Module, path: Path, format: str, config: dict[str, Any],  # noqa: A002
           size: Sequence[int], count: int, shown_as: Path,
           gate: bool = True) -> dict[str, Any]:
    """Parity on real images at the export size (and at two odd sizes for dynamic axes).

    Refuses (ModelError, unless ``gate`` is off) an export that changes more than 0.1% of
    the predicted pixels: the usual cause is a forward whose Python control flow depends on
    tensor values, which a trace freezes to the branch the example input took, or (legacy
    exporter, dynamic axes) shape arithmetic frozen at the traced size.
    """
    exported = OnnxSegmenter(path) if format == "onnx" else TorchScriptSegmenter(path)
    exported.path = shown_as  # errors name the file being written, not its temporary twin
    sizes = [tuple(size)]
    if config["export"]["dynamic"]:
        sizes += [s for s in DYNAMIC_CHECK_SIZES if s != tuple(size)]
    norm = config["normalization"]
    used = config["export"].get("exporter", "trace")
    count = config["export"].get("batch", count)  # a fixed batch is checked whole
    report: dict[str, Any] = {}
    for index, check_size in enumerate(sizes):
        images, origin = parity_images(check_size, count, bands=len(norm["mean"]))
        x = normalised(images, norm["mean"], norm["std"])
        where = f"{check_size[0]}x{check_size[1]}"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            reference = torch.cat([wrapper(x[i : i + 1]) for i in range(len(x))])
            try:
                answer = exported(x)["out"]
            except ModelError as exc:
                if index == 0:
                    raise
                raise ModelError(
                    f"cannot export {_model_name(config)} with dynamic axes ({used} exporter): "
                    f"traced at {size[0]}x{size[1]}, its graph fails at {where} ({exc}); "
                    "export without --dynamic at the size you will run"
                ) from exc
        result = {**parity(reference, answer), "images": len(x), "inputs": origin,
                  "size": list(check_size)}
        if gate and result["argmax_agreement"] < MIN_AGREEMENT:
            measured = (f"argmax agreement {result['argmax_agreement']:.2%}, max |logit diff| "
                        f"{result['max_abs_diff']:.3g}")
            if index > 0:
                raise ModelError(
                    f"cannot export {_model_name(config)} with dynamic axes ({used} exporter): "
                    f"traced at {size[0]}x{size[1]}, its graph gives different answers at "
                    f"{where} ({measured}) because shape-dependent steps were frozen; "
                    "export without --dynamic at the size you will run"
                )
            raise ModelError(
                f"cannot export {_model_name(config)}: the exported graph does not reproduce "
                f"the model at {where} ({measured}); its forward likely branches on tensor "
                "values (data-dependent Python control flow), which tracing freezes"
            )
        if index == 0:
            report.update(result)
        else:
            report.setdefault("other_size", result)
            report.setdefault("other_sizes", []).append(result)
    return report
