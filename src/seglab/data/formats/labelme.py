"""``labelme:PATH``: LabelMe JSON files (one per image, ``shapes`` + ``imagePath``) as masks.

Files: the ``*.json`` LabelMe files in ``PATH`` (or ``PATH/annotations/``); split
sub-folders ``train/val/test`` (or ``training``/``validation``) when present, else a seeded
random split. The image is the file's ``imagePath`` (relative to the JSON), else an image
with the JSON's stem beside it or in ``PATH/images/``; an image kept only inside the JSON
(``imageData``) is a problem to fix (save it beside the JSON).

Classes: a ``labels.txt`` / ``class_names.txt`` in ``PATH`` (or ``classes=PATH``), one name
per line in train-id order as labelme2voc uses it (``__ignore__`` -> ignore, ``_background_``
-> the background class); else ``background`` (class 0: unannotated pixels) plus the labels
found in the files, sorted by name. ``background=false`` makes unannotated pixels ignore.

Shapes: ``polygon``, ``rectangle``, ``circle`` and ``mask`` are painted; ``point``,
``line`` and ``linestrip`` cover no area and are skipped (counted in the notes). Overlaps
(``formats.polygons``): ``overlap=order`` (default: file order, the later shape on top, as
LabelMe draws them) or ``area`` (smaller on top); ``__ignore__`` shapes paint the ignore
index in that same order.
"""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from seglab.data.classes import is_void, read_class_table
from seglab.data.dataset import image_size
from seglab.data.formats.base import (
    IMAGE_SUFFIXES,
    DataSource,
    Options,
    Pair,
    register_format,
    seeded_split,
)
from seglab.data.formats.folder import split_folders
from seglab.data.formats.polygons import (
    BACKGROUND_NAMES,
    Annotation,
    Region,
    check_overlap,
    class_names,
    polygon_decoder,
)
from seglab.errors import DataError

AREA_SHAPES = ("polygon", "rectangle", "circle", "mask")
SKIPPED_SHAPES = ("point", "line", "linestrip", "points")
LABEL_FILES = ("labels.txt", "class_names.txt", "classes.txt")


def _read(path: Path) -> dict[str, Any] | None:
    """The LabelMe document, or None for a JSON that is not one (no ``shapes`` list)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read LabelMe file {path}: {exc}") from exc
    return doc if isinstance(doc, dict) and isinstance(doc.get("shapes"), list) else None


def _image_for(json_path: Path, doc: dict[str, Any], root: Path) -> Path | None:
    listed = doc.get("imagePath")
    if listed:
        # LabelMe writes Windows separators on Windows.
        candidate = json_path.parent / str(listed).replace("\\", "/")
        if candidate.is_file():
            return candidate
    for folder in (json_path.parent, root / "images", json_path.parent.parent / "images"):
        for suffix in IMAGE_SUFFIXES:
            for name in (json_path.stem + suffix, json_path.stem + suffix.upper()):
                if (folder / name).is_file():
                    return folder / name
    return None


def _bitmap(shape: dict[str, Any], where: str) -> np.ndarray:
    try:
        raw = base64.b64decode(shape["mask"])
        with Image.open(io.BytesIO(raw)) as im:
            return np.asarray(im.convert("L")) > 0
    except (KeyError, TypeError, ValueError, UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{where}: mask shape without a readable base64 PNG ({exc})") from exc


def _regions(
    path: Path, doc: dict[str, Any], label_ids: dict[str, int], skipped: Counter
) -> tuple[tuple[Region, ...], list[str]]:
    regions: list[Region] = []
    problems: list[str] = []
    for index, shape in enumerate(doc["shapes"]):
        where = f"{path} shape {index}"
        if not isinstance(shape, dict) or "label" not in shape:
            problems.append(f"{where}: a shape needs a label")
            continue
        kind = str(shape.get("shape_type") or "polygon")
        if kind in SKIPPED_SHAPES:
            skipped[kind] += 1
            continue
        if kind not in AREA_SHAPES:
            problems.append(f"{where}: unknown shape_type {kind!r}")
            continue
        label = str(shape["label"])
        if label not in label_ids:  # only with a label list: the files' labels are all in
            problems.append(f"{where}: label {label!r} is not in the class list")
            continue
        train_id = label_ids[label]
        points = shape.get("points") or []
        try:
            points = tuple((float(p[0]), float(p[1])) for p in points)
        except (TypeError, ValueError, IndexError):
            problems.append(f"{where}: points must be [x, y] pairs")
            continue
        if kind == "mask":
            if not points:
                problems.append(f"{where}: mask shape without its corner point")
                continue
            data: Any = (round(points[0][0]), round(points[0][1]), _bitmap(shape, where))
            kind = "bitmap"
        else:
            data = points
        regions.append(Region(max(train_id, 0), kind, data, index, where, train_id < 0))
    return tuple(regions), problems


def _collect(root: Path) -> dict[str, list[Path]]:
    """LabelMe JSON files per split (``all`` when the folder has no split sub-folders)."""
    base = root / "annotations" if (root / "annotations").is_dir() else root
    found = split_folders(base)
    if found:
        return {split: sorted((base / name).glob("*.json")) for split, name in found.items()}
    return {"all": sorted(base.glob("*.json"))}


@register_format("labelme")
def open_labelme(root: Path, opts: Options) -> DataSource:
    """Pairs ``(image, json)``; classes from a label list or the files; masks painted."""
    background = opts.get_bool("background", True)
    overlap = check_overlap(opts.get_str("overlap"), "order", "labelme")
    table_opt = opts.get_str("classes")
    table = Path(table_opt) if table_opt else next(
        (root / n for n in LABEL_FILES if (root / n).is_file()), None
    )
    files = _collect(root)
    docs: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for split, paths in files.items():
        docs[split] = [(p, d) for p in paths if (d := _read(p)) is not None]
    if not any(docs.values()):
        raise DataError(
            f"{root}: no LabelMe JSON files (with a 'shapes' list) here or in annotations/"
        )
    notes: list[str] = []
    if table is not None:
        labels = [row.name for row in read_class_table(table)]
        notes.append(f"class list: {table.name}")
    else:
        seen = {str(s.get("label")) for ds in docs.values() for _, d in ds for s in d["shapes"]
                if isinstance(s, dict) and "label" in s
                and str(s.get("shape_type") or "polygon") not in SKIPPED_SHAPES}
        labels = sorted(seen, key=lambda n: (not (is_void(n) or n.lower() in BACKGROUND_NAMES), n))
        notes.append(f"class list from the files: {len(labels)} labels, sorted by name")
    names, label_ids = class_names(labels, background)
    annotations: dict[str, Annotation] = {}
    problems: list[str] = []
    skipped: Counter = Counter()
    by_split: dict[str, list[Pair]] = {}
    for split, entries in docs.items():
        pairs: list[Pair] = []
        for path, doc in entries:
            image = _image_for(path, doc, root)
            if image is None:
                embedded = " (its image is only embedded as imageData)" if doc.get(
                    "imageData") else ""
                problems.append(f"image not found for {path}: imagePath "
                                f"{doc.get('imagePath')!r}{embedded}; save the image beside it")
                continue
            regions, probs = _regions(path, doc, label_ids, skipped)
            problems += probs
            try:
                height, width = int(doc["imageHeight"]), int(doc["imageWidth"])
            except (KeyError, TypeError, ValueError):
                height, width = image_size(image)
            annotations[str(path)] = Annotation(height, width, regions)
            pairs.append((image, path))
        by_split[split] = pairs
    if "all" in by_split:
        splits = seeded_split(by_split.pop("all"), opts, notes, "no split sub-folders")
    else:
        splits = by_split
        notes.append(f"splits from sub-folders: {', '.join(splits)}")
    order = "file order, later on top" if overlap == "order" else "largest first, smaller on top"
    notes.append(f"overlapping shapes painted in {order} (overlap={overlap})")
    if skipped:
        notes.append("skipped shapes without area: "
                     + ", ".join(f"{n} {k}" for k, n in sorted(skipped.items())))
    decoder = polygon_decoder(
        names, annotations, background=background, overlap=overlap,
        description="LabelMe shapes rasterised",
    )
    return DataSource("labelme", root, "labelme/json", decoder, splits, notes, problems)
