"""Per-image confusion counts: the dataset's confusion matrix kept image by image.

Evaluation stores, for every scored image, its confusion matrix (``[C, C]``, rows = truth,
columns = prediction, ignored pixels not counted) when the classes are few, else its per-class
true-positive, truth and prediction pixel counts. The sum over images is the dataset-level
matrix of :mod:`seglab.metrics`, so nothing about the dataset-level scores changes; bootstrap
intervals (:mod:`seglab.bootstrap`) and paired tests (:mod:`seglab.paired`) resample these
rows. Boundary counts (:mod:`seglab.boundary`) travel in the same file.

``per_image.npz`` holds ``images`` (str), ``names`` (str), ``tp``, ``truth``, ``pred``
(int64 ``[N, C]``), ``confusion`` (int64 ``[N, C, C]``, only when C <=
:data:`FULL_MATRIX_MAX_CLASSES`) and ``boundary`` (int64 ``[N, 7, C]``, when computed).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab.errors import DataError
from seglab.metrics import MIOU, PIXEL_ACC
from seglab.metrics.confusion import check_class_ids

# 64 x 64 int64 = 32 KiB per image; above it (ADE20K's 150 classes: 176 KiB) keep 3 x C.
FULL_MATRIX_MAX_CLASSES = 64
TABLE_COLUMNS = ("image", "pixels", PIXEL_ACC, MIOU, "worst_class", "worst_iou")


def row_width(num_classes: int) -> int:
    """Length of one image's row of counts (:func:`image_rows`)."""
    if num_classes <= FULL_MATRIX_MAX_CLASSES:
        return num_classes * num_classes
    return 3 * num_classes


def image_rows(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """One row of counts per image ``[N, row_width(C)]`` (int64) from class ids ``[N, H, W]``.

    The row is the flattened ``[C, C]`` confusion matrix when C <= FULL_MATRIX_MAX_CLASSES,
    else the concatenated per-class ``tp``, ``truth`` and ``pred`` counts. One bincount for
    the whole batch (the image index is folded into the bin).
    """
    if preds.shape != target.shape or preds.dim() != 3:
        raise ValueError(
            f"per-image counts need class ids [N, H, W] of equal shape, got "
            f"{tuple(preds.shape)} and {tuple(target.shape)}"
        )
    n = preds.shape[0]
    c = num_classes
    target = target.reshape(n, -1).long()
    preds = preds.reshape(n, -1).long()
    valid = target != ignore_index
    if (valid & ((target < 0) | (target >= c) | (preds < 0) | (preds >= c))).any():
        check_class_ids(target[valid], preds[valid], c, ignore_index)  # raises, naming values
    # Ignored pixels go to one extra bin that is dropped (cheaper than boolean indexing).
    image = torch.arange(n, device=preds.device)[:, None]
    if c <= FULL_MATRIX_MAX_CLASSES:
        flat = torch.where(valid, (image * c + target) * c + preds, n * c * c)
        return torch.bincount(flat.ravel(), minlength=n * c * c + 1)[:-1].reshape(n, c * c)

    def count(where: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        flat = torch.where(where, image * c + labels, n * c)
        return torch.bincount(flat.ravel(), minlength=n * c + 1)[:-1].reshape(n, c)

    return torch.cat([count(valid & (target == preds), target), count(valid, target),
                      count(valid, preds)], dim=1)


@dataclass
class PerImageCounts:
    """Per-image counts of one evaluation (``N`` images, ``C`` classes)."""

    images: list[str]
    names: list[str]
    tp: np.ndarray  # [N, C] true positives
    truth: np.ndarray  # [N, C] truth pixels
    pred: np.ndarray  # [N, C] predicted pixels (where the truth is not ignored)
    confusion: np.ndarray | None = None  # [N, C, C] where the classes are few
    boundary: np.ndarray | None = None  # [N, 7, C], see seglab.boundary.COUNT_KEYS

    @classmethod
    def from_rows(
        cls,
        images: list[str],
        names: list[str],
        rows: np.ndarray,
        boundary: np.ndarray | None = None,
    ) -> PerImageCounts:
        """Build from the rows of :func:`image_rows` (stacked over the dataset)."""
        rows = np.asarray(rows, dtype=np.int64)
        c = len(names)
        if rows.shape != (len(images), row_width(c)):
            raise ValueError(f"per-image rows of shape {rows.shape} for {len(images)} images, "
                             f"{c} classes")
        if c <= FULL_MATRIX_MAX_CLASSES:
            confusion = rows.reshape(-1, c, c)
            tp = np.diagonal(confusion, axis1=1, axis2=2).copy()
            return cls(list(images), list(names), tp, confusion.sum(2), confusion.sum(1),
                       confusion, boundary)
        return cls(list(images), list(names), rows[:, :c], rows[:, c:2 * c], rows[:, 2 * c:],
                   None, boundary)

    @property
    def num_images(self) -> int:
        return len(self.images)

    def dataset_confusion(self) -> np.ndarray | None:
        """The dataset-level confusion matrix (sum over images), None when not stored."""
        return None if self.confusion is None else self.confusion.sum(0)

    def image_scores(self) -> dict[str, np.ndarray]:
        """Each image's pixel accuracy, mIoU (classes in its truth or prediction), IoUs."""
        tp, truth, pred = (a.astype(np.float64) for a in (self.tp, self.truth, self.pred))
        union = truth + pred - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)
            pixels = truth.sum(1)
            acc = np.where(pixels > 0, tp.sum(1) / np.where(pixels > 0, pixels, 1), np.nan)
        present = union > 0
        miou = np.array([row[m].mean() if m.any() else np.nan for row, m in zip(iou, present,
                                                                                  strict=True)])
        return {"pixels": pixels.astype(np.int64), PIXEL_ACC: acc, MIOU: miou, "iou": iou}

    def table(self) -> list[dict[str, Any]]:
        """One row per image: pixels, pixel acc, mIoU, its worst class and that class's IoU."""
        scores = self.image_scores()
        rows = []
        for i, image in enumerate(self.images):
            iou = scores["iou"][i]
            worst = int(np.nanargmin(iou)) if np.isfinite(iou).any() else None
            rows.append({
                "image": image,
                "pixels": int(scores["pixels"][i]),
                PIXEL_ACC: float(scores[PIXEL_ACC][i]),
                MIOU: float(scores[MIOU][i]),
                "worst_class": self.names[worst] if worst is not None else "",
                "worst_iou": float(iou[worst]) if worst is not None else float("nan"),
            })
        return rows

    def select(self, order: np.ndarray) -> PerImageCounts:
        """The same counts for the images at positions ``order`` (in that order)."""
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[order]

        return PerImageCounts([self.images[i] for i in order], self.names, self.tp[order],
                              self.truth[order], self.pred[order], pick(self.confusion),
                              pick(self.boundary))


def table_csv(counts: PerImageCounts) -> str:
    """``per_image.csv``: the rows of :meth:`PerImageCounts.table`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(TABLE_COLUMNS)
    for row in counts.table():
        writer.writerow([_cell(row[key]) for key in TABLE_COLUMNS])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.6f}"
    return str(value)


def save_counts(counts: PerImageCounts, handle: Any) -> None:
    """Write ``counts`` as an ``.npz`` into an open binary file (compressed, no pickles)."""
    arrays = {
        "images": np.asarray(counts.images, dtype=str),
        "names": np.asarray(counts.names, dtype=str),
        "tp": counts.tp, "truth": counts.truth, "pred": counts.pred,
    }
    if counts.confusion is not None:
        arrays["confusion"] = counts.confusion
    if counts.boundary is not None:
        arrays["boundary"] = counts.boundary
    np.savez_compressed(handle, **arrays)


def load_counts(path: str | os.PathLike) -> PerImageCounts:
    """Read a ``per_image.npz`` written by :func:`save_counts` (clear error when broken)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the per-image counts ({exc})") from exc
    missing = {"images", "names", "tp", "truth", "pred"} - set(arrays)
    if missing:
        raise DataError(f"{path}: per-image counts lack {sorted(missing)}")
    n, c = len(arrays["images"]), len(arrays["names"])
    for key in ("tp", "truth", "pred"):
        if arrays[key].shape != (n, c):
            raise DataError(f"{path}: '{key}' has shape {arrays[key].shape}, expected {(n, c)}")
    return PerImageCounts(
        [str(x) for x in arrays["images"]], [str(x) for x in arrays["names"]],
        arrays["tp"].astype(np.int64), arrays["truth"].astype(np.int64),
        arrays["pred"].astype(np.int64), arrays.get("confusion"), arrays.get("boundary"),
    )
