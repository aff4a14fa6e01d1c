"""Pictures of segmentations: colourised masks, overlays, image | truth | prediction panels.

Everything here takes numpy arrays or torch tensors (any device) and returns/writes uint8 RGB,
so the engine, predict and the report can share one look. ``panel`` draws with matplotlib's
object API on an Agg canvas (no pyplot global state, no display needed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seglab.errors import DataError
from seglab.io_utils import atomic_path

if TYPE_CHECKING:
    from seglab.data.classes import ClassMap

IGNORE_COLOR = (0, 0, 0)


def _to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor on any device
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _palette_array(palette: Any) -> np.ndarray:
    """A ``ClassMap``, or anything shaped ``[K, 3]``, as a uint8 palette."""
    if hasattr(palette, "palette") and callable(palette.palette):
        palette = palette.palette()
    pal = _to_numpy(palette)
    if pal.ndim != 2 or pal.shape[1] != 3 or len(pal) == 0:
        raise DataError(f"palette must have shape [num_classes, 3], got {tuple(pal.shape)}")
    if pal.min() < 0 or pal.max() > 255:
        raise DataError("palette colours must lie in 0..255")
    return pal.astype(np.uint8)


def _mask_array(mask: Any) -> np.ndarray:
    arr = _to_numpy(mask)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise DataError(f"mask must have shape [H, W], got {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"mask must hold integer class ids, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def to_rgb_image(image: Any) -> np.ndarray:
    """An image as uint8 ``[H, W, 3]``.

    Accepts ``[3, H, W]`` (torch layout) or ``[H, W, 3]``/``[H, W]``, uint8 or float in 0..1.
    """
    arr = _to_numpy(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3) and arr.shape[-1] < min(arr.shape[:2]):
        arr = arr[..., :3] if arr.shape[-1] > 3 else arr[..., :1]  # multi-band: first bands
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise DataError(f"image must have shape [3, H, W] or [H, W, 3], got {tuple(arr.shape)}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    raise DataError(f"image must be uint8 or float in 0..1, got dtype {arr.dtype}")


def colorize(
    mask: Any,
    palette: Any,
    ignore_index: int = 255,
    ignore_color: Sequence[int] = IGNORE_COLOR,
) -> np.ndarray:
    """Class-id mask ``[H, W]`` -> uint8 RGB ``[H, W, 3]`` using ``palette`` (``[K, 3]``).

    Pixels equal to ``ignore_index`` are drawn in ``ignore_color`` (black by default). A value
    that is neither a class id nor the ignore index is an error, not a silent colour.
    """
    ids = _mask_array(mask)
    pal = _palette_array(palette)
    num_classes = len(pal)
    ignored = ids == ignore_index
    bad = ~ignored & ((ids < 0) | (ids >= num_classes))
    if bad.any():
        values = np.unique(ids[bad])[:5].tolist()
        raise DataError(
            f"mask holds values {values} outside the {num_classes} classes "
            f"(ignore index {ignore_index})"
        )
    # Lookup table: one row per class plus a last row for ignored pixels.
    lut = np.concatenate([pal, np.asarray(ignore_color, dtype=np.uint8).reshape(1, 3)])
    return lut[np.where(ignored, num_classes, ids)]


def overlay(
    image: Any,
    mask: Any,
    palette: Any,
    alpha: float = 0.5,
    ignore_index: int = 255,
) -> np.ndarray:
    """Blend the colourised ``mask`` over ``image``: uint8 ``[H, W, 3]``.

    ``alpha`` is the weight of the mask colour (0 = image only, 1 = mask only); ignored pixels
    show the image unchanged.
    """
    if not 0.0 <= alpha <= 1.0:
        raise DataError(f"overlay alpha must lie in 0..1, got {alpha}")
    rgb = to_rgb_image(image)
    ids = _mask_array(mask)
    if rgb.shape[:2] != ids.shape:
        raise DataError(f"image is {rgb.shape[:2]} but mask is {ids.shape}: sizes must match")
    colours = colorize(ids, palette, ignore_index).astype(np.float32)
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colours
    blended = np.where((ids == ignore_index)[..., None], rgb, np.rint(blended))
    return blended.astype(np.uint8)


# Error map colours: a wrong pixel stands out in red on a pale field of correct ones.
ERROR_COLOR = (220, 38, 38)
CORRECT_COLOR = (236, 238, 242)


def error_map(truth: Any, prediction: Any, ignore_index: int = 255) -> np.ndarray:
    """Where ``prediction`` differs from ``truth``: uint8 ``[H, W, 3]``, wrong pixels red,
    right ones pale, ignored ones in the ignore colour."""
    t, p = _mask_array(truth), _mask_array(prediction)
    if t.shape != p.shape:
        raise DataError(f"error map: truth is {t.shape} but the prediction is {p.shape}")
    out = np.empty((*t.shape, 3), dtype=np.uint8)
    out[...] = CORRECT_COLOR
    out[t != p] = ERROR_COLOR
    out[t == ignore_index] = IGNORE_COLOR
    return out


def classes_present(masks: Sequence[np.ndarray], num_classes: int) -> list[int]:
    """Sorted class ids (``0..num_classes-1``) that occur in any of ``masks``."""
    seen = np.zeros(num_classes, dtype=bool)
    for mask in masks:
        valid = mask[(mask >= 0) & (mask < num_classes)]
        seen |= np.bincount(valid.ravel(), minlength=num_classes)[:num_classes] > 0
    return np.flatnonzero(seen).tolist()


def panel(
    image: Any,
    truth: Any | None,
    preds: Mapping[str, Any],
    classmap: ClassMap,
    path: str | os.PathLike,
    *,
    title: str | None = None,
    alpha: float | None = None,
    dpi: int = 100,
) -> Path:
    """Write a PNG: image | truth | one column per prediction, with a legend of the classes shown.

    ``truth`` may be None (predictions only). ``preds`` maps a column title (e.g. a model
    name) to a mask. With ``alpha`` set, masks are drawn over the image instead of alone.
    The legend lists only the classes present in the drawn masks (plus "ignore" when the truth
    has ignored pixels). The file is written atomically; the path is returned.
    """
    # lazy: matplotlib adds 0.8-1.0 s (this loaded machine) to importing viz, which seglab
    # predict's colour masks and overlays use without it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rgb = to_rgb_image(image)
    palette = _palette_array(classmap)
    ignore = classmap.ignore_index
    columns: list[tuple[str, np.ndarray | None]] = [("image", None)]
    if truth is not None:
        columns.append(("truth", _mask_array(truth)))
    columns += [(str(name), _mask_array(mask)) for name, mask in preds.items()]
    for name, mask in columns[1:]:
        if mask.shape != rgb.shape[:2]:
            raise DataError(f"panel: {name} mask is {mask.shape} but the image is {rgb.shape[:2]}")

    height, width = rgb.shape[:2]
    col_w = 4.0
    col_h = col_w * height / width
    fig = Figure(figsize=(col_w * len(columns), col_h), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    for ax, (name, mask) in zip(axes, columns, strict=True):
        if mask is None:
            picture = rgb
        elif alpha is not None:
            picture = overlay(rgb, mask, palette, alpha, ignore)
        else:
            picture = colorize(mask, palette, ignore)
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(name, fontsize=11)
        ax.set_axis_off()

    masks = [mask for _, mask in columns[1:] if mask is not None]
    handles = [
        Patch(facecolor=palette[i] / 255.0, edgecolor="0.3", label=classmap.names[i])
        for i in classes_present(masks, len(palette))
    ]
    if truth is not None and bool((columns[1][1] == ignore).any()):
        handles.append(Patch(facecolor=np.asarray(IGNORE_COLOR) / 255.0, edgecolor="0.3",
                             label="ignore"))
    per_row = max(3, int(col_w * len(columns) / 1.7))  # about 1.7 inches per legend entry
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), per_row),
                   fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=12)
    # Margins in inches, turned into figure fractions: titles on top, legend rows below.
    legend_rows = -(-len(handles) // per_row)
    top_in = 0.75 if title else 0.4
    bottom_in = 0.15 + 0.28 * legend_rows
    fig.set_figheight(col_h + top_in + bottom_in)
    fig_h = fig.get_figheight()
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - top_in / fig_h, bottom=bottom_in / fig_h,
                        wspace=0.03)

    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    return target
