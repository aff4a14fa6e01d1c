"""``folder:PATH``: ``images/`` + ``masks/`` matched by file stem.

Optional ``train/val/test`` sub-folders or split lists (``train.txt``, ``splits/val.txt``),
optional class table (``classes.csv``, ``label_colors.txt``, ``codes.txt``...); index or colour
masks auto-detected (``mask=auto|index|color``). Options: ``classes=PATH``, ``ignore_index``,
``keep_void``.
"""

from __future__ import annotations

from pathlib import Path

from seglab.data.classes import (
    IGNORE_INDEX,
    TableRow,
    default_palette,
    read_class_table,
)
from seglab.data.formats.base import (
    IMAGE_SUFFIXES,
    SPLIT_NAMES,
    DataSource,
    Options,
    Pair,
    first_dir,
    list_images,
    match_by_stem,
    read_list,
    register_format,
    seeded_split,
)
from seglab.data.masks import color_decoder, index_decoder, read_mask_array
from seglab.errors import DataError

CLASS_TABLE_NAMES = (
    "classes.csv",
    "class_dict.csv",
    "label_colors.txt",
    "classes.txt",
    "codes.txt",
    "class_names.txt",
    "labels.txt",
)


def _mask_kind(first_mask: Path, rows: list[TableRow] | None, requested: str) -> str:
    if requested != "auto":
        return requested
    raw = read_mask_array(first_mask)
    if raw.ndim == 2:
        return "index"
    if (raw[..., 0] == raw[..., 1]).all() and (raw[..., 0] == raw[..., 2]).all():
        return "index"
    if rows is None or any(r.color is None for r in rows):
        raise DataError(
            f"{first_mask} is an RGB colour mask but no class table with colours was found;"
            " add classes.csv (name,r,g,b per line) or label_colors.txt ('R G B<TAB>Name')"
        )
    return "color"


def _rows_from_masks(masks: list[Path], ignore_index: int) -> list[TableRow]:
    import numpy as np

    seen = np.zeros(256, dtype=bool)
    for mask in masks:
        raw = read_mask_array(mask)
        seen[np.unique(raw if raw.ndim == 2 else raw[..., 0])] = True
    seen[ignore_index] = False
    ids = np.flatnonzero(seen)
    n = int(ids.max()) + 1 if ids.size else 1
    pal = default_palette(n)
    return [TableRow(f"class_{i}", tuple(int(v) for v in pal[i])) for i in range(n)]


def _splits(
    root: Path, image_dir: Path, mask_dir: Path, opts: Options, notes: list[str]
) -> tuple[dict[str, list[Pair]], list[Path], list[str]]:
    """Pairs per split (sub-folders, else split lists, else a seeded split), masks, problems."""
    splits: dict[str, list[Pair]] = {}
    problems: list[str] = []
    sub_splits = [s for s in SPLIT_NAMES if (image_dir / s).is_dir()]
    if sub_splits:
        all_masks: list[Path] = []
        for split in sub_splits:
            masks = list_images(mask_dir / split)
            pairs, probs = match_by_stem(
                list_images(image_dir / split), masks, str(image_dir / split)
            )
            splits[split], all_masks = pairs, all_masks + masks
            problems += probs
        notes.append(f"splits from sub-folders: {', '.join(sub_splits)}")
        return splits, all_masks, problems
    all_masks = list_images(mask_dir)
    pairs, problems = match_by_stem(list_images(image_dir), all_masks, str(image_dir))
    lists = {s: root / f"{s}.txt" for s in SPLIT_NAMES} | {
        s: root / "splits" / f"{s}.txt"
        for s in SPLIT_NAMES
        if (root / "splits" / f"{s}.txt").is_file()
    }
    lists = {s: p for s, p in lists.items() if p.is_file()}
    if lists:
        by_stem = {img.stem: (img, mask) for img, mask in pairs}
        for split, path in lists.items():
            stems = read_list(path)
            missing = [s for s in stems if s not in by_stem]
            problems += [f"{path}: {s!r} has no image/mask pair" for s in missing[:20]]
            splits[split] = [by_stem[s] for s in stems if s in by_stem]
        notes.append(f"splits from lists: {', '.join(str(p.name) for p in lists.values())}")
    elif pairs:
        splits = seeded_split(pairs, opts, notes, "no split on disk")
    return splits, all_masks, problems


@register_format("folder")
def open_folder(root: Path, opts: Options, fmt: str = "folder") -> DataSource:
    """The generic layout; ``fmt`` names the source (``synthetic`` reuses this reader)."""
    notes: list[str] = []
    image_dir = first_dir(root, ("images", "imgs", "JPEGImages"))
    mask_dir = first_dir(root, ("masks", "labels", "annotations", "SegmentationClass"))
    if image_dir is None or mask_dir is None:
        raise DataError(
            f"{root}: expected images/ and masks/ folders (found: "
            f"{', '.join(sorted(p.name for p in root.iterdir())) or 'nothing'})"
        )
    splits, all_masks, problems = _splits(root, image_dir, mask_dir, opts, notes)
    if not all_masks:
        raise DataError(f"{mask_dir}: no mask files ({', '.join(IMAGE_SUFFIXES)})")

    ignore_index = opts.get_int("ignore_index", IGNORE_INDEX)
    keep_void = opts.get_bool("keep_void", False)
    table_opt = opts.get_str("classes")
    table = (
        Path(table_opt)
        if table_opt
        else next((root / n for n in CLASS_TABLE_NAMES if (root / n).is_file()), None)
    )
    rows = read_class_table(table) if table else None
    kind = _mask_kind(all_masks[0], rows, opts.get_str("mask", "auto", ("auto", "index", "color")))
    if rows is None:
        rows = _rows_from_masks(all_masks, ignore_index)
        notes.append(
            f"no class table: {len(rows)} classes inferred from mask values 0..{len(rows) - 1}"
            " (add classes.csv 'name,r,g,b' to name them)"
        )
    else:
        notes.append(f"class table: {table.name}")
    if kind == "color":
        decoder = color_decoder(rows, keep_void=keep_void, ignore_index=ignore_index)
    else:
        decoder = index_decoder(rows, keep_void=keep_void, ignore_index=ignore_index)
    return DataSource(
        fmt, root, f"folder/{kind}", decoder, splits, notes + list(decoder.notes), problems
    )
