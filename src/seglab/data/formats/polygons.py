"""Masks rasterised from vector annotations (COCO JSON, LabelMe JSON), shared by those formats.

A polygon dataset has no mask files: each pair's "mask path" names the annotation (the
LabelMe JSON file, or ``<coco json>#<image id>``) and a ``PolygonDecoder`` paints it when the
dataset asks for the mask, so nothing is written to disk and ``SegmentationDataset``,
``data check`` and training see ordinary ``int64 [H,W]`` masks.

Painting (deterministic: the same file always gives the same mask):

- Start from the background class (0) or, with ``background=false``, the ignore index.
- COCO crowd regions (``iscrowd=1``) under ``crowd=ignore`` are painted first, as ignore, so
  objects annotated individually inside a crowd keep their class.
- Then every other region, one over another, in the ``overlap`` order: ``area`` (COCO's
  default) paints the largest first so a smaller object lying on a larger one stays visible,
  equal areas in annotation-id order; ``order`` (LabelMe's default) paints in file order, the
  later shape on top, as LabelMe draws them. Ignore shapes (LabelMe ``__ignore__``, void
  labels) take their place in that order like any shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from seglab.data.classes import IGNORE_INDEX, ClassMap, default_palette, is_void
from seglab.data.masks import MaskDecoder
from seglab.errors import ConfigError, DataError

OVERLAP_CHOICES = ("area", "order")
BACKGROUND_NAMES = frozenset({"background", "_background_", "__background__"})


@dataclass(frozen=True)
class Region:
    """One annotation to paint: its train id (unused when ``ignore``) and its geometry.

    ``kind``/``data``: ``polygon`` (points ``((x, y), ...)``), ``rectangle`` (two corners),
    ``circle`` (centre, a point on the edge), ``bitmap`` (``(x0, y0, bool array)``: a mask
    placed at that corner), ``coco`` (a COCO ``segmentation``: polygons or RLE). Plain data,
    so datasets pickle into loader workers. ``key`` orders regions of equal area;
    ``where`` names the annotation in errors. ``ignore`` paints the ignore index instead of
    ``train_id``; ``beneath`` paints it before every other region (COCO crowds).
    """

    train_id: int
    kind: str
    data: Any
    key: int
    where: str
    ignore: bool = False
    beneath: bool = False


def _paint_pil(region: Region, height: int, width: int) -> np.ndarray:
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    pts = [(float(p[0]), float(p[1])) for p in region.data]
    if region.kind == "polygon":
        if len(pts) < 3:
            raise DataError(f"{region.where}: a polygon needs at least 3 points, got {len(pts)}")
        draw.polygon(pts, outline=1, fill=1)
    elif region.kind == "rectangle":
        if len(pts) != 2:
            raise DataError(f"{region.where}: a rectangle needs 2 corner points, got {len(pts)}")
        (x0, y0), (x1, y1) = pts
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=1, fill=1)
    elif region.kind == "circle":
        if len(pts) != 2:
            raise DataError(f"{region.where}: a circle needs centre + edge point, got {len(pts)}")
        (cx, cy), (ex, ey) = pts
        r = float(np.hypot(ex - cx, ey - cy))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
    else:
        raise DataError(f"{region.where}: unknown shape kind {region.kind!r}")
    return np.asarray(canvas, dtype=bool)


def _paint_bitmap(region: Region, height: int, width: int) -> np.ndarray:
    x0, y0, bits = region.data
    out = np.zeros((height, width), dtype=bool)
    x0, y0 = max(int(x0), 0), max(int(y0), 0)
    h, w = min(bits.shape[0], height - y0), min(bits.shape[1], width - x0)
    if h > 0 and w > 0:
        out[y0 : y0 + h, x0 : x0 + w] = bits[:h, :w]
    return out


def _paint_coco(region: Region, height: int, width: int) -> np.ndarray:
    from pycocotools import mask as mask_utils  # optional extra seglab[coco], for RLE only

    seg = region.data
    try:
        if isinstance(seg, list):  # polygons: [[x0, y0, x1, y1, ...], ...]
            polys = [[float(v) for v in poly] for poly in seg]
            bad = [len(p) for p in polys if len(p) < 6 or len(p) % 2]
            if bad or not polys:
                raise DataError(
                    f"{region.where}: polygon with {bad[0] if bad else 0} coordinates; each"
                    " polygon needs x,y pairs for at least 3 points"
                )
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, height, width)
        elif isinstance(seg, dict) and "counts" in seg:  # compressed RLE
            counts = seg["counts"]
            rle = {"size": seg["size"], "counts": counts.encode() if isinstance(counts, str)
                   else counts}
        else:
            raise DataError(f"{region.where}: segmentation is neither polygons nor RLE")
        bits = mask_utils.decode(rle)
    except DataError:
        raise
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise DataError(f"{region.where}: cannot rasterise segmentation ({exc})") from exc
    if bits.shape[:2] != (height, width):
        raise DataError(
            f"{region.where}: RLE size {bits.shape[1]}x{bits.shape[0]} (WxH) differs from the"
            f" image's {width}x{height}"
        )
    return bits.astype(bool)


def paint(region: Region, height: int, width: int) -> np.ndarray:
    """``bool [H,W]``: the pixels ``region`` covers."""
    if region.kind == "coco":
        return _paint_coco(region, height, width)
    if region.kind == "bitmap":
        return _paint_bitmap(region, height, width)
    return _paint_pil(region, height, width)


@dataclass(frozen=True)
class Annotation:
    """All regions of one image, with the mask size."""

    height: int
    width: int
    regions: tuple[Region, ...]


def render(ann: Annotation, ignore_index: int, background: bool, overlap: str) -> np.ndarray:
    """Paint ``ann`` into an ``int64 [H,W]`` mask (order in the module docstring)."""
    out = np.full((ann.height, ann.width), 0 if background else ignore_index, dtype=np.int64)
    painted = [(r, paint(r, ann.height, ann.width)) for r in ann.regions]
    beneath = sorted((rp for rp in painted if rp[0].beneath), key=lambda rp: rp[0].key)
    drawn = [rp for rp in painted if not rp[0].beneath]
    if overlap == "area":
        drawn = sorted(drawn, key=lambda rp: (-int(rp[1].sum()), rp[0].key))
    else:
        drawn = sorted(drawn, key=lambda rp: rp[0].key)
    for region, pixels in beneath + drawn:
        out[pixels] = ignore_index if region.ignore else region.train_id
    return out


@dataclass(frozen=True)
class PolygonDecoder(MaskDecoder):
    """A ``MaskDecoder`` whose "files" are annotations: ``decode_file(key)`` paints one.

    ``annotations`` maps the pair's mask path (as a string) to its ``Annotation``.
    """

    annotations: dict[str, Annotation] = field(default_factory=dict)
    background: bool = True
    overlap: str = "area"
    description: str = "polygon annotations"

    def decode_file(self, path: str | Path) -> np.ndarray:
        ann = self.annotations.get(str(path))
        if ann is None:
            raise DataError(f"{path}: no annotation of this name in the dataset")
        return render(ann, self.classmap.ignore_index, self.background, self.overlap)

    def describe(self) -> str:
        return self.description


def polygon_decoder(
    names: Sequence[str],
    annotations: dict[str, Annotation],
    *,
    background: bool,
    overlap: str,
    description: str,
    notes: tuple[str, ...] = (),
) -> PolygonDecoder:
    """The decoder of a polygon dataset: class map from ``names`` (+ background)."""
    all_names = (["background"] if background else []) + list(names)
    if not all_names:
        raise DataError("the annotations name no classes (no categories / labels)")
    classmap = ClassMap(
        tuple(all_names), tuple(map(tuple, default_palette(len(all_names)))), IGNORE_INDEX
    )
    lut = np.arange(256, dtype=np.int64)  # unused: masks are painted, not looked up
    return PolygonDecoder(
        "index", classmap, lut, None, notes, annotations, background, overlap, description
    )


def class_names(labels: Sequence[str], background: bool) -> tuple[list[str], dict[str, int]]:
    """Class names (background first when on) and ``label -> train id``; void labels -> -1.

    A label named like the background (``_background_``) is the background class itself.
    """
    names: list[str] = []
    ids: dict[str, int] = {}
    for label in labels:
        if label in ids:
            continue
        if is_void(label):
            ids[label] = -1
        elif label.lower() in BACKGROUND_NAMES and background:
            ids[label] = 0
        else:
            names.append(label)
            ids[label] = len(names) - 1 + (1 if background else 0)
    return names, ids


def check_overlap(value: str | None, default: str, fmt: str) -> str:
    """The ``overlap`` option, validated."""
    value = default if value is None else value
    if value not in OVERLAP_CHOICES:
        raise ConfigError(f"{fmt} option overlap={value!r}: choose one of {OVERLAP_CHOICES}")
    return value
