"""Dataset statistics: class pixel counts, image mean/std, and class-weight strategies.

Notation for the weight formulas: ``n_c`` = pixels of class c in the split (ignore pixels not
counted), ``N = sum_c n_c``, ``f_c = n_c / N`` (class pixel share), ``C`` = number of classes.
Every formula below is the one definition of its strategy: ``seglab data inspect --weights``
and training both call :func:`class_weights` on the split's :class:`PixelStats`.

- ``inverse``: ``w_c = 1 / (C * f_c)`` (1 for every class when balanced); absent classes 0.
- ``median_frequency`` (Eigen & Fergus 2015): ``w_c = median(freq) / freq_c`` with
  ``freq_c = n_c / (pixels of the images that contain c)`` and the median over the present
  classes; needs per-image presence (a ``PixelStats``); absent classes 0.
- ``enet`` (Paszke et al. 2016): ``w_c = 1 / ln(c + f_c)``, ``c = 1.02`` (weights in ~[1, 50]);
  absent classes 0.
- ``effective_number`` (Cui et al. 2019): ``w_c = (1 - beta) / (1 - beta^n_c)``, normalised
  so the present classes' weights sum to their count; ``beta`` defaults to ``1 - 1/max_c n_c``
  because pixel counts are large (the paper's 0.999 would make all weights equal); absent 0.
- ``camvid_linear`` (32-class CamVid study): ``w_c = X - 100 * f_c``; X is required and must
  exceed the largest class share in percent; absent classes get ``Y`` (required when a class
  is absent), as in the study.
- ``camvid_ratio`` (32-class CamVid study): ``w_c = X * max_c n_c / N - Y * f_c``; X and Y
  are required; absent classes get ``X * max_c n_c / N`` (the formula at ``f_c = 0``), as in
  the study.
- ``none``: every weight 1.

``absent_weight`` overrides the weight of every class with ``n_c = 0``. Negative weights are
an error naming the class (choose a larger ``X``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from seglab.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass
class PixelStats:
    """Per-class pixel statistics of one split (from ``compute_pixel_stats``)."""

    counts: np.ndarray  # int64 [C]: pixels per class
    ignore_pixels: int
    present_pixels: np.ndarray  # int64 [C]: total pixels of the images that contain class c
    images_with_class: np.ndarray  # int64 [C]
    num_images: int

    @property
    def total_pixels(self) -> int:
        return int(self.counts.sum()) + self.ignore_pixels

    def shares(self) -> np.ndarray:
        """Class share of all labelled (non-ignore) pixels."""
        labelled = self.counts.sum()
        return self.counts / labelled if labelled else np.zeros_like(self.counts, dtype=float)


def compute_pixel_stats(dataset: Any, progress: Callable[[int], None] | None = None) -> PixelStats:
    """One pass over the masks of ``dataset`` (a ``SegmentationDataset``: images not decoded).

    Other datasets are iterated as ``(image, mask)`` pairs. ``progress(i)`` is called per mask.
    """
    num_classes = dataset.classmap.num_classes
    ignore_index = dataset.classmap.ignore_index
    counts = np.zeros(num_classes, dtype=np.int64)
    present_pixels = np.zeros(num_classes, dtype=np.int64)
    images_with = np.zeros(num_classes, dtype=np.int64)
    ignore = 0
    load = getattr(dataset, "load_mask", None)
    for i in range(len(dataset)):
        mask = load(i) if load is not None else np.asarray(dataset[i][1])
        flat = mask.reshape(-1)
        valid = flat[flat != ignore_index]
        ignore += flat.size - valid.size
        per_image = np.bincount(valid, minlength=num_classes)[:num_classes]
        counts += per_image
        present = per_image > 0
        present_pixels[present] += flat.size
        images_with[present] += 1
        if progress is not None:
            progress(i)
    return PixelStats(counts, ignore, present_pixels, images_with, len(dataset))


def class_pixel_counts(dataset: Any) -> np.ndarray:
    """Pixels per class over ``dataset`` (ignore pixels excluded): ``int64 [num_classes]``."""
    return compute_pixel_stats(dataset).counts


def image_mean_std(dataset: Any, max_images: int | None = None) -> tuple[list[float], list[float]]:
    """Per-band mean and std on the 0..1 scale (for ``normalize`` with dataset statistics).

    One value per band, whatever the band count (3 for RGB, 4 or 12 for multi-band
    imagery); every image must have the same count. A ``SegmentationDataset`` is read image
    by image (masks not decoded, no transform); ``max_images`` takes that many images evenly
    spaced over the dataset (all by default).
    """
    n = len(dataset)
    indices = _spread(n, max_images)
    if not indices:
        raise ConfigError("image_mean_std: the dataset is empty")
    hist: np.ndarray | None = None  # int64 [bands, 256]: exact, and cheap for uint8 pixels
    for i in indices:
        image, where = _image_at(dataset, i)
        bands = image.shape[0]
        if hist is None:
            hist, first = np.zeros((bands, 256), dtype=np.int64), where
        elif bands != len(hist):
            raise DataError(
                f"{where} has {bands} bands but {first} has {len(hist)}: every image of a"
                " dataset needs the same band count"
            )
        flat = np.asarray(image, dtype=np.uint8).reshape(bands, -1)
        for band in range(bands):  # numpy's bincount on uint8: several times torch's speed here
            hist[band] += np.bincount(flat[band], minlength=256)
    values = np.arange(256) / 255.0
    pixels = hist.sum(1)
    mean = hist @ values / pixels
    std = np.sqrt(np.maximum(hist @ (values * values) / pixels - mean**2, 0.0))
    return mean.tolist(), std.tolist()


def _spread(n: int, count: int | None) -> list[int]:
    """``count`` indices evenly spaced over ``range(n)`` (all of them when None or >= n)."""
    if count is None or count >= n:
        return list(range(n))
    if count <= 0:
        return []
    return sorted({round(k * (n - 1) / max(count - 1, 1)) for k in range(count)})


def _image_at(dataset: Any, index: int) -> tuple[torch.Tensor, str]:
    """Image ``index`` of ``dataset`` as ``uint8 [C,H,W]`` and a name for messages."""
    pairs = getattr(dataset, "pairs", None)
    if pairs is not None:
        # lazy: data.dataset brings torchvision (+1.7-2.4 s on this loaded machine) to a recipe's
        # validation, which reads this module's strategy names.
        from seglab.data.dataset import read_image

        return read_image(pairs[index][0]), str(pairs[index][0])
    return torch.as_tensor(dataset[index][0]), f"image {index}"


def band_statistics(dataset: Any, max_images: int | None = 64) -> dict[str, Any]:
    """Per-band mean/std for ``data inspect``: ``{"bands", "mean", "std", "images"}``.

    ``mean``/``std`` are on the 0..1 scale, ready for the recipe's ``data.mean`` /
    ``data.std`` (needed for any band count other than 3, where ImageNet's values do not
    apply); ``images`` is how many evenly spaced images were read (``max_images``).
    """
    mean, std = image_mean_std(dataset, max_images)
    return {
        "bands": len(mean),
        "mean": [round(v, 4) for v in mean],
        "std": [round(max(v, 1e-4), 4) for v in std],  # a constant band must not give std 0
        "images": len(_spread(len(dataset), max_images)),
    }


def band_note(bands: dict[str, Any]) -> str:
    """One line for ``data inspect``'s notes from a ``band_statistics`` document."""
    return (
        f"{bands['bands']} bands, per-band mean {bands['mean']} std {bands['std']} (0..1 scale,"
        f" {bands['images']} images): the recipe's data.mean / data.std"
    )


IGNORE_SHARE_WARNING = 0.2


class IgnoreTally:
    """Counts ignore pixels over decoded masks, for ``ignore_share_warning``."""

    def __init__(self, ignore_index: int) -> None:
        self.ignore_index = ignore_index
        self.ignored = 0
        self.total = 0

    def add(self, mask: Any) -> None:
        self.ignored += int((mask == self.ignore_index).sum())
        self.total += int(mask.numel() if hasattr(mask, "numel") else np.asarray(mask).size)

    def warnings(self, where: str) -> list[str]:
        """``[warning]`` when the share is over the limit, else ``[]``."""
        warning = ignore_share_warning(self.ignored, self.total, where)
        return [warning] if warning else []


def ignore_share_warning(
    ignore_pixels: int, total_pixels: int, where: str, limit: float = IGNORE_SHARE_WARNING
) -> str | None:
    """A warning when more than ``limit`` of the pixels are ignore (a mis-read mask, often).

    The usual cause is a mask encoding the reader took for ignore: binary masks saved as
    0/255 read with a class table, or raw ids the table does not list as classes.
    """
    if total_pixels <= 0 or ignore_pixels / total_pixels <= limit:
        return None
    text = (
        f"{where}: {ignore_pixels / total_pixels:.1%} of the mask pixels are ignore (over"
        f" {limit:.0%}); check that the masks are read as intended (0/255 binary masks: -o"
        " values=0,255; ADE20K-style 0 = unlabelled: -o reduce_zero_label=true)"
    )
    log.warning(text)
    return text


# --- class weights ---------------------------------------------------------------------------


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    if total <= 0:
        raise ConfigError("class weights: no labelled pixels (all counts are 0)")
    return counts / total


def _inverse(counts: np.ndarray, stats: PixelStats | None) -> np.ndarray:
    present = counts > 0
    w = np.zeros(len(counts))
    w[present] = 1.0 / (len(counts) * _shares(counts)[present])
    return w


def _median_frequency(counts: np.ndarray, stats: PixelStats | None) -> np.ndarray:
    if stats is None:
        raise ConfigError(
            "median_frequency (Eigen & Fergus) divides each class's pixels by those of the "
            "images that contain it: pass the PixelStats of compute_pixel_stats(dataset), "
            "not plain counts"
        )
    present = counts > 0
    freq = np.where(present, counts / np.maximum(stats.present_pixels, 1), 0.0)
    w = np.zeros(len(counts))
    w[present] = np.median(freq[present]) / freq[present]
    return w


def _enet(counts: np.ndarray, stats: PixelStats | None, c: float = 1.02) -> np.ndarray:
    if c <= 1:
        raise ConfigError(f"enet weights need c > 1 (1/ln(c + p) must be finite), got c={c}")
    return np.where(counts > 0, 1.0 / np.log(c + _shares(counts)), 0.0)


def _effective_number(
    counts: np.ndarray, stats: PixelStats | None, beta: float | None = None
) -> np.ndarray:
    present = counts > 0
    if beta is None:
        beta = 1.0 - 1.0 / float(counts.max())
    if not 0 <= beta < 1:
        raise ConfigError(f"effective_number weights need 0 <= beta < 1, got beta={beta}")
    n = counts[present].astype(np.float64)
    # (1 - beta^n) computed as -expm1(n * log(beta)) to keep precision for beta near 1.
    effective = -np.expm1(n * math.log(beta)) if beta > 0 else np.ones_like(n)
    w = np.zeros(len(counts))
    w[present] = (1.0 - beta) / effective
    w[present] *= present.sum() / w[present].sum()
    return w


def _camvid_linear(
    counts: np.ndarray, stats: PixelStats | None, X: float, Y: float | None = None
) -> np.ndarray:
    w = X - 100.0 * _shares(counts)
    if Y is not None:
        w[counts == 0] = Y
    return w


def _camvid_ratio(counts: np.ndarray, stats: PixelStats | None, X: float, Y: float) -> np.ndarray:
    shares = _shares(counts)
    return X * counts.max() / counts.sum() - Y * shares


def _none(counts: np.ndarray, stats: PixelStats | None) -> np.ndarray:
    return np.ones(len(counts))


STRATEGIES: dict[str, Callable[..., np.ndarray]] = {
    "none": _none,
    "inverse": _inverse,
    "median_frequency": _median_frequency,
    "enet": _enet,
    "effective_number": _effective_number,
    "camvid_linear": _camvid_linear,
    "camvid_ratio": _camvid_ratio,
}
REQUIRED_PARAMS: dict[str, tuple[str, ...]] = {"camvid_linear": ("X",), "camvid_ratio": ("X", "Y")}
STRATEGY_PARAMS: dict[str, tuple[str, ...]] = {
    "none": (),
    "inverse": (),
    "median_frequency": (),
    "enet": ("c",),
    "effective_number": ("beta",),
    "camvid_linear": ("X", "Y"),
    "camvid_ratio": ("X", "Y"),
}


def class_weights(
    counts: np.ndarray | Sequence[int] | PixelStats,
    strategy: str = "median_frequency",
    *,
    absent_weight: float | None = None,
    names: Sequence[str] | None = None,
    **params: float,
) -> torch.Tensor:
    """Loss weights per class (``float32 [C]``); the formulas are in the module docstring.

    Args:
        counts: the split's ``PixelStats`` (from :func:`compute_pixel_stats`), or plain
            pixels per class for the strategies that need nothing else (``median_frequency``
            needs the per-image presence of a ``PixelStats``).
        strategy: one of ``STRATEGIES``.
        absent_weight: weight of every class with no pixels; None (default) keeps each
            strategy's own rule (0, or the 32-class CamVid study's: ``Y`` for
            ``camvid_linear``, ``X * max_c n_c / N`` for ``camvid_ratio``).
        names: class names, used in error messages.
        **params: the strategy's parameters (``c``, ``beta``, ``X``, ``Y``).
    """
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"unknown class-weight strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    unknown = set(params) - set(STRATEGY_PARAMS[strategy])
    if unknown:
        allowed = ", ".join(STRATEGY_PARAMS[strategy]) or "none"
        raise ConfigError(
            f"strategy {strategy!r} has no parameter(s) {', '.join(sorted(unknown))};"
            f" takes: {allowed}"
        )
    missing = [p for p in REQUIRED_PARAMS.get(strategy, ()) if p not in params]
    if missing:
        raise ConfigError(
            f"strategy {strategy!r} needs parameter(s) {', '.join(missing)}"
            f" (e.g. --weight-param {missing[0]}=50 on the command line)"
        )
    params = {k: float(v) for k, v in params.items()}
    stats = counts if isinstance(counts, PixelStats) else None
    array = np.asarray(stats.counts if stats is not None else counts, dtype=np.int64)
    if array.ndim != 1 or array.size == 0 or (array < 0).any():
        raise ConfigError("class weights need a 1-D array of non-negative pixel counts")
    weights = np.asarray(STRATEGIES[strategy](array, stats, **params), dtype=np.float64)
    absent = array == 0
    if absent_weight is not None:
        weights = np.where(absent, float(absent_weight), weights)
    negative = np.flatnonzero(weights < 0)
    if negative.size:
        i = negative[0]
        raise ConfigError(
            f"strategy {strategy!r} gives {_label(names, i)} a negative weight"
            f" ({weights[i]:.3g}); " + ("choose a weight >= 0" if absent[i] else "increase X")
        )
    if strategy == "camvid_linear" and absent_weight is None and "Y" not in params:
        if absent.any():
            listed = ", ".join(_label(names, i) for i in np.flatnonzero(absent)[:5])
            raise ConfigError(
                f"strategy 'camvid_linear' gives classes absent from the data the weight Y "
                f"(32-class CamVid study), and {int(absent.sum())} are absent ({listed}): "
                "pass Y (e.g. --weight-param Y=10) or absent_weight"
            )
    return torch.tensor(weights, dtype=torch.float32)


def _label(names: Sequence[str] | None, index: int) -> str:
    return names[index] if names is not None else f"class {index}"
