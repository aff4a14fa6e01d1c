"""Prediction gallery: image | truth | each model's prediction, in the dataset palette."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from seglab.data.classes import ClassMap
from seglab.viz import colorize, error_map


@dataclass
class GallerySample:
    """One gallery row. ``image`` is uint8 ``[H, W, 3]``; masks are integer ``[H, W]``."""

    name: str
    image: np.ndarray
    truth: np.ndarray
    predictions: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class GalleryCell:
    title: str
    data: bytes
    caption: str = ""
    mime: str = "image/png"

    @property
    def extension(self) -> str:
        return "jpg" if self.mime == "image/jpeg" else "png"


def encode_png(array: np.ndarray) -> bytes:
    """uint8 ``[H, W, 3]`` array -> PNG bytes (lossless: right for flat-colour masks)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_jpeg(array: np.ndarray, quality: int = 88) -> bytes:
    """uint8 ``[H, W, 3]`` array -> JPEG bytes (photos: a fraction of the PNG size)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(
        buffer, format="JPEG", quality=quality
    )
    return buffer.getvalue()


def image_scores(
    truth: np.ndarray, prediction: np.ndarray, classmap: ClassMap
) -> tuple[float, float]:
    """(pixel accuracy, mIoU over the classes present in truth or prediction) of one image."""
    valid = truth != classmap.ignore_index
    t = truth[valid].astype(np.int64)
    p = prediction[valid].astype(np.int64)
    if t.size == 0:
        return math.nan, math.nan
    n = classmap.num_classes
    cm = np.bincount(t * n + np.clip(p, 0, n - 1), minlength=n * n).reshape(n, n)
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    return float(tp.sum() / t.size), float(np.mean(tp[present] / union[present]))


def gallery_rows(samples: list[GallerySample], classmap: ClassMap) -> list[list[GalleryCell]]:
    """Each sample as a row of PNG cells: image, truth, then one prediction per model."""
    palette = classmap.palette()
    rows = []
    for sample in samples:
        row = [
            GalleryCell("image", encode_jpeg(sample.image), sample.name, "image/jpeg"),
            GalleryCell(
                "truth", encode_png(colorize(sample.truth, palette, classmap.ignore_index))
            ),
        ]
        for label, prediction in sample.predictions.items():
            acc, miou = image_scores(sample.truth, prediction, classmap)
            caption = f"acc {100 * acc:.1f}% · mIoU {100 * miou:.1f}%" if math.isfinite(acc) else ""
            png = encode_png(colorize(prediction, palette, classmap.ignore_index))
            row.append(GalleryCell(label, png, caption))
        rows.append(row)
    return rows


def worst_rows(
    worst: dict[str, list[GallerySample]], classmap: ClassMap
) -> dict[str, list[list[GalleryCell]]]:
    """Each model's hardest images as rows of cells: image, truth, its prediction, error map.

    ``worst`` maps a model label to samples holding that model's prediction only."""
    out: dict[str, list[list[GalleryCell]]] = {}
    for label, samples in worst.items():
        rows = []
        for sample in samples:
            prediction = sample.predictions[label]
            alone = {"prediction": prediction}
            (row,) = gallery_rows(
                [GallerySample(sample.name, sample.image, sample.truth, alone)], classmap
            )
            wrong = error_map(sample.truth, prediction, classmap.ignore_index)
            valid = sample.truth != classmap.ignore_index
            share = float((sample.truth != prediction)[valid].mean()) if valid.any() else math.nan
            caption = f"{100 * share:.1f}% of pixels wrong" if math.isfinite(share) else ""
            rows.append([*row, GalleryCell("error map", encode_png(wrong), caption)])
        out[label] = rows
    return out
