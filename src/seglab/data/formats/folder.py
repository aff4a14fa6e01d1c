"""``folder:PATH``: ``images/`` + ``masks/`` matched by file stem.

Optional ``train/val/test`` sub-folders or split lists (``train.txt``, ``splits/val.txt``),
optional class table (``classes.csv``, ``label_colors.txt``, ``codes.txt``...); index or colour
masks auto-detected (``mask=auto|index|color``). Options: ``classes=PATH``, ``ignore_index``,
``keep_void``, ``values=v0,v1,...`` (raw mask values of classes 0..K-1, e.g. ``values=0,255``),
``reduce_zero_label`` (mmseg's: raw 0 -> ignore, k -> k-1).

Split sub-folders may use the ADE20K names: ``training`` (train), ``validation`` / ``valid``
(val), ``testing`` (test). Without a class table, masks holding exactly the values 0 and 255
are read as binary (0 -> background, 255 -> foreground) with a note, instead of as one class
whose foreground would be the ignore index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
from seglab.data.formats.remap import (
    BINARY_VALUES,
    binary_note,
    parse_values,
    reduce_zero_decoder,
    values_decoder,
)
from seglab.data.masks import MaskDecoder, color_decoder, index_decoder, read_mask_array
from seglab.errors import ConfigError, DataError

# Split sub-folder names: seglab's, then ADE20K's and other common spellings.
SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("val", "validation", "valid"),
    "test": ("test", "testing"),
}

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


def _mask_values(masks: list[Path]) -> set[int]:
    """The raw values present in ``masks`` (first channel of grey-as-RGB masks)."""
    seen = np.zeros(256, dtype=bool)
    for mask in masks:
        raw = read_mask_array(mask)
        seen[np.unique(raw if raw.ndim == 2 else raw[..., 0])] = True
    return {int(v) for v in np.flatnonzero(seen)}


def _rows_from_values(seen: set[int], ignore_index: int) -> list[TableRow]:
    ids = sorted(seen - {ignore_index})
    n = ids[-1] + 1 if ids else 1
    pal = default_palette(n)
    return [TableRow(f"class_{i}", tuple(int(v) for v in pal[i])) for i in range(n)]


def split_folders(image_dir: Path) -> dict[str, str]:
    """``{split: sub-folder name}`` for the split sub-folders present under ``image_dir``."""
    found: dict[str, str] = {}
    for split, names in SPLIT_FOLDERS.items():
        name = next((n for n in names if (image_dir / n).is_dir()), None)
        if name is not None:
            found[split] = name
    return found


def _splits(
    root: Path, image_dir: Path, mask_dir: Path, opts: Options, notes: list[str]
) -> tuple[dict[str, list[Pair]], list[Path], list[str]]:
    """Pairs per split (sub-folders, else split lists, else a seeded split), masks, problems."""
    splits: dict[str, list[Pair]] = {}
    problems: list[str] = []
    sub_splits = split_folders(image_dir)
    if sub_splits:
        all_masks: list[Path] = []
        for split, name in sub_splits.items():
            masks = list_images(mask_dir / name)
            pairs, probs = match_by_stem(
                list_images(image_dir / name), masks, str(image_dir / name)
            )
            splits[split], all_masks = pairs, all_masks + masks
            problems += probs
        shown = [s if n == s else f"{n} ({s})" for s, n in sub_splits.items()]
        notes.append(f"splits from sub-folders: {', '.join(shown)}")
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
    values = parse_values(opts.get_str("values"), fmt)
    reduce_zero = opts.get_bool("reduce_zero_label", False)
    if values and reduce_zero:
        raise ConfigError(
            f"{fmt} options values= and reduce_zero_label=true both remap raw mask values:"
            " give one (values=0,1,2 lists every class's raw value)"
        )
    table_opt = opts.get_str("classes")
    table = (
        Path(table_opt)
        if table_opt
        else next((root / n for n in CLASS_TABLE_NAMES if (root / n).is_file()), None)
    )
    rows = read_class_table(table) if table else None
    kind = _mask_kind(all_masks[0], rows, opts.get_str("mask", "auto", ("auto", "index", "color")))
    if kind == "color" and (values or reduce_zero):
        raise ConfigError(
            f"{all_masks[0]} is an RGB colour mask: values= and reduce_zero_label remap the"
            " raw ids of class-index masks (colour masks map through the class table)"
        )
    if table is not None:
        notes.append(f"class table: {table.name}")
    decoder = _decoder(all_masks, rows, kind, values, reduce_zero, ignore_index, keep_void,
                       notes, str(root))
    return DataSource(
        fmt, root, f"folder/{kind}", decoder, splits, notes + list(decoder.notes), problems
    )


def _decoder(
    masks: list[Path], rows: list[TableRow] | None, kind: str, values: list[int] | None,
    reduce_zero: bool, ignore_index: int, keep_void: bool, notes: list[str], where: str,
) -> MaskDecoder:
    """The mask decoder of a folder: explicit remap, else table, else inferred from the masks."""
    if values:
        return values_decoder(values, rows, ignore_index, where=f"{where} values=")
    if kind == "color":
        assert rows is not None  # _mask_kind refuses colour masks without a table
        return color_decoder(rows, keep_void=keep_void, ignore_index=ignore_index)
    if rows is None:
        seen = _mask_values(masks)
        if reduce_zero:
            top = max(seen - {0, ignore_index}, default=1)
            pal = default_palette(top)
            rows = [TableRow(f"class_{k + 1}", tuple(int(v) for v in pal[k])) for k in range(top)]
            notes.append(
                f"no class table: {top} classes inferred from mask values 1..{top}"
                " (add classes.csv 'name,r,g,b' to name them)"
            )
        elif seen == set(BINARY_VALUES):
            notes.append(binary_note(where))
            return values_decoder(BINARY_VALUES, None, ignore_index, where=where)
        else:
            rows = _rows_from_values(seen, ignore_index)
            notes.append(
                f"no class table: {len(rows)} classes inferred from mask values 0..{len(rows) - 1}"
                " (add classes.csv 'name,r,g,b' to name them)"
            )
    if reduce_zero:
        return reduce_zero_decoder(rows, ignore_index)
    return index_decoder(rows, keep_void=keep_void, ignore_index=ignore_index)
