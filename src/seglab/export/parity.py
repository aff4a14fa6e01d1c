"""The parity gate of an export: real (or seeded random) inputs, and how far the exported
graph's logits and argmax stray from the eager model's.

An export that changes more than 0.1% of the predicted pixels (:data:`MIN_AGREEMENT`) is
refused; a dynamic-axes graph is also checked at two odd sizes (:data:`DYNAMIC_CHECK_SIZES`),
where frozen pooling bins, crops and paddings show up.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from seglab.artifacts.runtimes import OnnxSegmenter, TorchScriptSegmenter
from seglab.class_ids import class_ids
from seglab.errors import ModelError
from seglab.export.writers import model_name
from seglab.paths import data_root

# The parity gate: an export that changes more predicted pixels than this is not a faithful copy.
MIN_AGREEMENT = 0.999
# A dynamic-axes graph is checked at the traced size and at these two odd sizes (odd sizes
# catch frozen pooling bins, crops and paddings that a multiple of 32 would hide).
DYNAMIC_CHECK_SIZES = ((145, 163), (97, 211))


def parity_images(input_size: Sequence[int], count: int = 2,
                  bands: int = 3) -> tuple[Tensor, str]:
    """uint8 ``[count, bands, H, W]``: CamVid-11 test images resized to ``input_size`` for an
    RGB model, else (no data, or another band count) random pixels.

    Returns the batch and where it came from (``"camvid11 test images"`` or ``"random"``).
    """
    height, width = int(input_size[0]), int(input_size[-1])
    root = data_root()
    folder = root / "camvid11" / "test" if root is not None else None
    files = sorted(folder.glob("*.png"))[:count] if folder and folder.is_dir() else []
    if len(files) == count and bands == 3:
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


def check_export(wrapper: nn.Module, path: Path, format: str, config: dict[str, Any],  # noqa: A002
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
                    f"cannot export {model_name(config)} with dynamic axes ({used} exporter): "
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
                    f"cannot export {model_name(config)} with dynamic axes ({used} exporter): "
                    f"traced at {size[0]}x{size[1]}, its graph gives different answers at "
                    f"{where} ({measured}) because shape-dependent steps were frozen; "
                    "export without --dynamic at the size you will run"
                )
            raise ModelError(
                f"cannot export {model_name(config)}: the exported graph does not reproduce "
                f"the model at {where} ({measured}); its forward likely branches on tensor "
                "values (data-dependent Python control flow), which tracing freezes"
            )
        if index == 0:
            report.update(result)
        else:
            report.setdefault("other_size", result)
            report.setdefault("other_sizes", []).append(result)
    return report
