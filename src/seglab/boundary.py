"""Boundary counts from the same evaluation pass, per image and class ``[N, 7, C]``.

What they count and the scores made of them (Boundary IoU, the boundary F-score) are defined
in :mod:`seglab.metrics.boundary`; rows in the order of its ``COUNT_KEYS``.

Ignored truth pixels are a label of their own when contours are found (a class region ending
at void has a contour there) and are never counted, as in the confusion matrix.

Why it is cheap: a pixel of label ``c`` lies within chessboard distance ``r`` of another
label exactly when the window maximum and minimum of the label map around it differ, so one
separable max/min filter of the label map finds every class's boundary band at once.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from seglab.metrics.boundary import BF_TOLERANCE_RATIO, BIOU_DILATION_RATIO


def pixels_of(ratio: float, height: int, width: int) -> int:
    """``ratio`` of the image diagonal in whole pixels (Cheng et al.'s rounding), at least 1."""
    return max(1, int(round(ratio * math.hypot(height, width))))


def _slide_max(x: torch.Tensor, radius: int, dim: int, op: Any = torch.maximum) -> torch.Tensor:
    """Maximum over ``2r+1`` neighbours along ``dim`` (edge pixels repeated, so only in-image
    pixels count), by doubling windows: log2(2r+1) elementwise maxima, no pooling kernel
    (torch's CPU max_pool2d is an order of magnitude slower on these maps)."""
    if radius == 0:
        return x
    n, k = x.shape[dim], 2 * radius + 1
    edge = [-1] * x.dim()
    edge[dim] = radius
    m = torch.cat([x.narrow(dim, 0, 1).expand(edge), x, x.narrow(dim, n - 1, 1).expand(edge)],
                  dim)
    width = 1  # m[i] = max(padded[i : i + width])
    while 2 * width <= k:
        m = _shifted(m, width, dim, op)
        width *= 2
    return _shifted(m, k - width, dim, op) if k > width else m


def _shifted(m: torch.Tensor, shift: int, dim: int, op: Any) -> torch.Tensor:
    """``op(m[i], m[i + shift])`` along ``dim`` (``shift`` shorter)."""
    length = m.shape[dim] - shift
    return op(m.narrow(dim, 0, length), m.narrow(dim, shift, length))


def _window_max(x: torch.Tensor, radius: int, op: Any = torch.maximum) -> torch.Tensor:
    """Maximum (or ``op``, e.g. bitwise or) over the ``(2r+1)^2`` square around each pixel
    of ``[..., H, W]``."""
    return _slide_max(_slide_max(x, radius, -1, op), radius, -2, op)


def near_other_label(labels: torch.Tensor, radius: int) -> torch.Tensor:
    """True where a pixel has another label within chessboard distance ``radius`` ``[N, H, W]``."""
    if labels.numel() and 0 <= int(labels.min()) and int(labels.max()) <= 255:
        x, top = labels.to(torch.uint8), 255  # bytes: a quarter of the memory traffic
        low = top - _window_max(top - x, radius)
    else:
        x = labels.to(torch.int32)
        low = -_window_max(-x, radius)
    return _window_max(x, radius) != low


def border_band(height: int, width: int, radius: int, device: torch.device) -> torch.Tensor:
    """True within ``radius`` pixels of the image border ``[H, W]``."""
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    near_row = (rows < radius) | (rows >= height - radius)
    near_col = (cols < radius) | (cols >= width - radius)
    return near_row[:, None] | near_col[None, :]


def _per_class(key: torch.Tensor, where: torch.Tensor, n: int, c: int) -> torch.Tensor:
    """Pixels counted per image and class ``[N, C]`` where ``where`` holds; ``key`` is
    ``image * C + class`` (the others go to one dropped bin: cheaper than boolean indexing)."""
    flat = torch.where(where, key, n * c)
    return torch.bincount(flat.ravel(), minlength=n * c + 1)[:-1].reshape(n, c)


def boundary_rows(
    preds: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int = 255,
    *,
    dilation_ratio: float = BIOU_DILATION_RATIO,
    tolerance_ratio: float = BF_TOLERANCE_RATIO,
) -> torch.Tensor:
    """Per-image boundary counts ``[N, 7, C]`` (int64; rows: ``metrics.boundary.COUNT_KEYS``).

    ``preds`` and ``target`` are class ids ``[N, H, W]`` at the labels' resolution.
    """
    n, h, w = target.shape
    c = num_classes
    target = target.long()
    preds = preds.long().to(target.device)
    valid = target != ignore_index
    image = torch.arange(n, device=target.device)[:, None, None]
    truth_ids = torch.where(valid, target, 0)
    truth_key, pred_key = image * c + truth_ids, image * c + preds  # bins of the counts

    # Boundary IoU: bands of width d inside each mask, the image border counting as contour.
    d = pixels_of(dilation_ratio, h, w)
    band = border_band(h, w, d, target.device)
    truth_band = (near_other_label(target, d) | band) & valid
    pred_band = (near_other_label(preds, d) | band) & valid
    both = truth_band & pred_band & (target == preds)
    biou = [_per_class(truth_key, both, n, c), _per_class(truth_key, truth_band, n, c),
            _per_class(pred_key, pred_band, n, c)]

    # BF: thin contours, matched within theta of the other map's contour of the same class.
    theta = pixels_of(tolerance_ratio, h, w)
    truth_contour = near_other_label(target, 1) & valid
    all_pred_contour = near_other_label(preds, 1)
    pred_contour = all_pred_contour & valid  # counted where the truth is not ignored
    pred_matched = _near_class_contour(target, truth_contour, preds, theta, c)
    # A truth contour may be matched across a thin void gap: every predicted contour counts.
    truth_matched = _near_class_contour(preds, all_pred_contour, truth_ids, theta, c)
    bf = [_per_class(pred_key, pred_contour, n, c),
          _per_class(pred_key, pred_contour & pred_matched, n, c),
          _per_class(truth_key, truth_contour, n, c),
          _per_class(truth_key, truth_contour & truth_matched, n, c)]
    return torch.stack(biou + bf, dim=1)


def _near_class_contour(
    labels: torch.Tensor, contour: torch.Tensor, query: torch.Tensor, radius: int, c: int
) -> torch.Tensor:
    """True where a contour pixel of ``labels`` with class ``query[p]`` lies within ``radius``.

    Up to 63 classes: one bit per class in one integer map, dilated by a window bitwise or
    (one channel instead of one per class); more classes: one channel per class present.
    """
    if c <= 63:
        dtype = torch.int16 if c <= 15 else torch.int32 if c <= 31 else torch.int64
        one = torch.ones((), dtype=dtype, device=labels.device)
        bits = torch.where(contour, one << labels.clamp(0, c - 1).to(dtype), 0)
        near = _window_max(bits, radius, torch.bitwise_or)
        return ((near >> query.clamp(0, c - 1).to(dtype)) & 1).bool()
    # Classes with contour pixels: a bincount (torch.unique sorts, several times slower).
    seen = torch.bincount(torch.where(contour, labels, c).ravel().clamp(0, c), minlength=c + 1)
    present = torch.nonzero(seen[:c]).ravel()
    out = torch.zeros_like(contour)
    if present.numel() == 0:
        return out
    slot = torch.full((c,), -1, dtype=torch.long, device=labels.device)
    slot[present] = torch.arange(present.numel(), device=labels.device)
    onehot = (labels[:, None] == present[None, :, None, None]) & contour[:, None]
    near = _window_max(onehot.to(torch.uint8), radius) > 0  # [N, K, H, W]; bytes are faster
    query_slot = slot[query.clamp(0, c - 1)]
    has = query_slot >= 0
    picked = near.gather(1, query_slot.clamp(min=0)[:, None])[:, 0]
    return picked & has
