"""``coco:PATH``: COCO-style JSON (``images``, ``annotations``, ``categories``) rasterised to masks.

Annotation files: ``annotations=FILE`` or the ``*.json`` files in ``PATH/annotations/`` and
``PATH/`` that hold COCO ``images`` + ``annotations`` (``instances_*.json`` preferred when
present, as in COCO's own ``annotations/`` folder). The split comes from the file name
(``train`` / ``val`` / ``test`` in it, e.g. ``instances_val2017.json``); a single file
without one gets a seeded random split. Images: ``images=DIR``, else the first folder among
``PATH/<name>`` (``instances_train2017.json`` -> ``train2017``), ``PATH/images/<name>``,
``PATH/images``, ``PATH`` and the JSON's folder that holds the listed ``file_name``.

Classes: the file's ``categories`` in id order, after a ``background`` class 0 for pixels no
annotation covers (``background=false``: those pixels are ignore instead). Masks are painted
with pycocotools (the ``coco`` extra), polygons and RLE alike; overlaps and crowd regions as
in ``formats.polygons``: ``overlap=area`` (default, smaller objects on top) or ``order``
(annotation id order, later on top); ``crowd=ignore`` (default: ``iscrowd=1`` regions are
ignore, under the individually annotated objects), ``class`` (painted as their category) or
``skip`` (left out).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seglab.data.formats.base import (
    DataSource,
    Options,
    Pair,
    register_format,
    seeded_split,
)
from seglab.data.formats.polygons import (
    Annotation,
    Region,
    check_overlap,
    class_names,
    polygon_decoder,
)
from seglab.errors import ConfigError, DataError

CROWD_CHOICES = ("ignore", "class", "skip")
SPLIT_WORDS = (("train", "train"), ("val", "val"), ("test", "test"))


def _load(path: Path) -> dict[str, Any] | None:
    """The JSON document, or None when it is not COCO-style."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read COCO annotation file {path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        return None
    if not isinstance(doc.get("annotations"), list) or not isinstance(doc.get("categories"), list):
        return None
    return doc


def _split_of(path: Path) -> str | None:
    stem = path.stem.lower()
    return next((split for word, split in SPLIT_WORDS if word in stem), None)


def _annotation_files(root: Path, given: str | None) -> list[tuple[Path, dict[str, Any]]]:
    if given:
        path = Path(given) if Path(given).is_absolute() else root / given
        doc = _load(path) if path.is_file() else None
        if doc is None:
            raise DataError(f"{path}: not a COCO annotation file (images, annotations, categories)")
        return [(path, doc)]
    candidates = sorted((root / "annotations").glob("*.json")) + sorted(root.glob("*.json"))
    preferred = [p for p in candidates if p.name.startswith("instances_")]
    found = [(p, d) for p in (preferred or candidates) if (d := _load(p)) is not None]
    if not found:
        raise DataError(
            f"{root}: no COCO annotation file (a .json with images, annotations and categories)"
            " in annotations/ or the folder itself; name one with -o annotations=FILE"
        )
    return found


def _image_dir(root: Path, ann_file: Path, images_opt: str | None, sample: str) -> Path | None:
    """The first candidate folder holding ``sample`` (a listed ``file_name``)."""
    guess = ann_file.stem.removeprefix("instances_")
    dirs = [Path(images_opt)] if images_opt else []
    dirs += [root / guess, root / "images" / guess, root / "images", root, ann_file.parent,
             ann_file.parent / "images", ann_file.parent.parent / guess]
    return next((d for d in dirs if (d / sample).is_file()), None)


def _categories(docs: list[tuple[Path, dict[str, Any]]]) -> list[tuple[int, str]]:
    """``(id, name)`` sorted by id, the same in every file."""
    cats: dict[int, str] = {}
    for path, doc in docs:
        for cat in doc["categories"]:
            try:
                cid, name = int(cat["id"]), str(cat["name"])
            except (KeyError, TypeError, ValueError):
                raise DataError(
                    f"{path}: category {cat!r} needs an integer id and a name"
                ) from None
            if cats.get(cid, name) != name:
                raise DataError(
                    f"{path}: category id {cid} is {name!r} here but {cats[cid]!r} in another file"
                )
            cats[cid] = name
    names = list(cats.values())
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"COCO categories repeat names: {', '.join(repeated)}")
    return sorted(cats.items())


@register_format("coco")
def open_coco(root: Path, opts: Options) -> DataSource:
    """Pairs ``(image file, "<json>#<image id>")`` per split; masks painted on demand."""
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        raise ConfigError(
            "coco: format needs pycocotools to rasterise polygons and RLE: pip install "
            "'seglab[coco]'"
        ) from None
    background = opts.get_bool("background", True)
    overlap = check_overlap(opts.get_str("overlap"), "area", "coco")
    crowd = opts.get_str("crowd", "ignore", CROWD_CHOICES)
    images_opt = opts.get_str("images")
    docs = _annotation_files(root, opts.get_str("annotations"))
    cats = _categories(docs)
    names, label_ids = class_names([name for _, name in cats], background)
    train_id = {cid: label_ids[name] for cid, name in cats}

    by_split: dict[str, list[Pair]] = {}
    annotations: dict[str, Annotation] = {}
    problems: list[str] = []
    notes: list[str] = []
    unnamed = [p for p, _ in docs if _split_of(p) is None]
    if len(docs) > 1 and unnamed:
        raise DataError(
            f"{root}: several COCO files, and {unnamed[0].name} names no split (train/val/test);"
            " pick one with -o annotations=FILE"
        )
    counts = {"crowd": 0, "empty": 0}
    for path, doc in docs:
        split = _split_of(path) or "all"
        if split in by_split:
            raise DataError(f"{root}: two COCO files for the {split} split ({path.name})")
        pairs, probs = _read_file(path, doc, root, images_opt, train_id, crowd, annotations,
                                  counts)
        by_split[split] = pairs
        problems += probs
    if "all" in by_split:
        splits = seeded_split(by_split.pop("all"), opts, notes, "one COCO file without a split")
    else:
        splits = by_split
        notes.append("splits from file names: " + ", ".join(
            f"{p.name} ({_split_of(p)})" for p, _ in docs))
    notes.append(
        f"{len(cats)} categories from the file(s)"
        + (", background class 0 for unannotated pixels" if background
           else ", unannotated pixels -> ignore (background=false)")
    )
    order = "largest first, smaller on top" if overlap == "area" else "id order, later on top"
    notes.append(f"overlapping annotations painted {order} (overlap={overlap})")
    if counts["crowd"]:
        notes.append(f"{counts['crowd']} crowd regions (iscrowd=1): crowd={crowd}")
    if counts["empty"]:
        notes.append(f"{counts['empty']} images without annotations")
    decoder = polygon_decoder(
        names, annotations, background=background, overlap=overlap,
        description="COCO polygons/RLE rasterised (pycocotools)",
    )
    return DataSource("coco", root, "coco/json", decoder, splits, notes, problems)


def _read_file(
    path: Path, doc: dict[str, Any], root: Path, images_opt: str | None,
    train_id: dict[int, int], crowd: str, annotations: dict[str, Annotation],
    counts: dict[str, int],
) -> tuple[list[Pair], list[str]]:
    """Pairs and annotations of one COCO file (added to ``annotations``), and its problems."""
    problems: list[str] = []
    images: dict[int, dict[str, Any]] = {}
    for img in doc["images"]:
        try:
            images[int(img["id"])] = {"file": str(img["file_name"]), "h": int(img["height"]),
                                      "w": int(img["width"]), "regions": []}
        except (KeyError, TypeError, ValueError):
            problems.append(f"{path}: image entry {img!r} needs id, file_name, height, width")
    for ann in doc["annotations"]:
        where = f"{path.name} annotation {ann.get('id', '?')}"
        try:
            image_id, cat_id, ann_id = int(ann["image_id"]), int(ann["category_id"]), int(ann["id"])
        except (KeyError, TypeError, ValueError):
            problems.append(f"{where}: needs integer id, image_id and category_id")
            continue
        if image_id not in images:
            problems.append(f"{where}: image_id {image_id} is not among the file's images")
            continue
        if cat_id not in train_id:
            problems.append(f"{where}: category_id {cat_id} is not among the categories")
            continue
        if "segmentation" not in ann:
            problems.append(f"{where}: no segmentation")
            continue
        is_crowd = bool(ann.get("iscrowd", 0))
        counts["crowd"] += is_crowd
        if is_crowd and crowd == "skip":
            continue
        label = train_id[cat_id]
        crowd_ignore = is_crowd and crowd == "ignore"
        images[image_id]["regions"].append(Region(
            max(label, 0), "coco", ann["segmentation"], ann_id, where, label < 0 or crowd_ignore,
            beneath=crowd_ignore,
        ))
    pairs: list[Pair] = []
    if not images:
        return pairs, problems + [f"{path}: lists no images"]
    first = next(iter(images.values()))["file"]
    folder = _image_dir(root, path, images_opt, first)
    if folder is None:
        return pairs, problems + [
            f"{path}: image {first} not found (looked in images=DIR, {root}/"
            f"{path.stem.removeprefix('instances_')}, {root}/images, {root}, {path.parent})"
        ]
    for image_id in sorted(images):
        entry = images[image_id]
        image = folder / entry["file"]
        if not image.is_file():
            problems.append(f"{path}: image file not found: {image}")
            continue
        key = str(Path(f"{path}#{image_id}"))
        counts["empty"] += not entry["regions"]
        annotations[key] = Annotation(entry["h"], entry["w"], tuple(entry["regions"]))
        pairs.append((image, Path(key)))
    return pairs, problems
