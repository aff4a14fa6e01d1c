"""int8 quantisation of an ONNX export (ONNX Runtime's static or dynamic quantiser).

``static`` (the default) calibrates activation ranges on real images: CamVid-11 train images
from ``SEGLAB_DATA`` when present (resized to the export size), else a folder the caller
names. Weights are int8 per output channel, activations uint8 (QDQ format: ONNX Runtime fuses
it into integer convolutions on CPUs with VNNI / AMX). ``dynamic`` needs no images but only
quantises MatMul/Gemm-style nodes' weights and computes activation scales at run time (slow
integer convolutions on a CPU); it is mostly for transformer models.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from seglab.errors import ConfigError, ModelError
from seglab.export.writers import first_line
from seglab.paths import data_root

METHODS = ("static", "dynamic")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def calibration_images(size: Sequence[int], count: int,
                       folder: str | Path | None = None) -> tuple[Tensor, str]:
    """uint8 ``[count, 3, H, W]`` images resized to ``size``, and where they came from.

    ``folder`` (any images in it, sorted) or else CamVid-11's train split under
    ``SEGLAB_DATA``; the test split is never used for calibration, so the test mIoU of an
    int8 model stays a fair score.

    Raises:
        ConfigError: no folder given and no CamVid-11 data, or too few images in the folder.
    """
    if folder is None:
        root = data_root()
        folder = root / "camvid11" / "train" if root is not None else None
        if folder is None or not folder.is_dir():
            raise ConfigError(
                "int8 static quantisation needs calibration images: set SEGLAB_DATA (CamVid-11 "
                "train images are used) or give a folder of images (--calibration DIR)"
            )
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"calibration folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < count:
        raise ConfigError(f"{folder}: {len(files)} image(s), calibration needs {count}")
    # Evenly spread over the split: consecutive frames of one video are nearly the same image.
    picks = [files[int(i * len(files) / count)] for i in range(count)]
    height, width = int(size[0]), int(size[-1])
    images = []
    for file in picks:
        with Image.open(file) as image:
            resized = image.convert("RGB").resize((width, height), Image.BILINEAR)
        images.append(torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1))
    return torch.stack(images), f"{count} images from {folder}"


class _Reader:
    """ONNX Runtime's calibration-data-reader protocol over a normalised batch, one image a
    call; ``rewind`` starts again from the first (calibrators that read the data twice)."""

    def __init__(self, batch: Tensor, input_name: str) -> None:
        self._items = [{input_name: batch[i : i + 1].numpy()} for i in range(len(batch))]
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._items):
            return None
        self._next += 1
        return self._items[self._next - 1]

    def rewind(self) -> None:
        self._next = 0


def quantize_onnx(fp32: Path, out: Path, method: str, normalised_batch: Tensor | None,
                  input_name: str) -> dict[str, Any]:
    """Write an int8 copy of the fp32 export ``fp32`` to ``out``; returns what was done.

    ``normalised_batch`` is the calibration batch as the graph takes it (static only).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown int8 method {method!r}: use one of {', '.join(METHODS)}")
    # lazy: onnxruntime is the optional export extra; its quantiser takes 1.9 s to import
    # (loaded 2-core CPU) and only --int8 needs it.
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="seglab-int8-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        try:
            # Shape inference + graph cleanup first, as ONNX Runtime's quantiser recommends.
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation, not a need
            prepared = fp32
        try:
            if method == "dynamic":
                quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8,
                                 per_channel=True)
            else:
                if normalised_batch is None:
                    raise ConfigError("static int8 quantisation needs calibration images")
                quantize_static(
                    str(prepared), str(out), _Reader(normalised_batch, input_name),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                )
        except ConfigError:
            raise
        except Exception as exc:  # the quantiser raises untyped errors
            raise ModelError(f"cannot quantise {fp32.name} to int8: {first_line(exc)}") from exc
    return {"method": method, "format": "QDQ" if method == "static" else "dynamic",
            "weights": "int8 per channel",
            "activations": "uint8, calibrated" if method == "static" else "dynamic ranges"}
