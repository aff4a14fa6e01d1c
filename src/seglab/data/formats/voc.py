"""``voc:PATH``: ``VOCdevkit/VOC2012`` (+ SBD ``train_aug.txt``) or a flat VOC-style folder.

Palette-index PNG masks, 255 (object borders) -> ignore. Class names from
``class_names.txt`` when present, else the 21 VOC classes. Option: ``aug=auto|true|false``
(train on the SBD-augmented list ``ImageSets/Segmentation/train_aug.txt``).
"""

from __future__ import annotations

from pathlib import Path

from seglab.data.class_tables import VOC_CLASSES
from seglab.data.classes import TableRow, default_palette, read_class_table
from seglab.data.formats.base import (
    DataSource,
    Options,
    Pair,
    list_images,
    match_by_stem,
    read_list,
    register_format,
    seeded_split,
)
from seglab.data.masks import index_decoder
from seglab.errors import DataError


@register_format("voc")
def open_voc(root: Path, opts: Options) -> DataSource:
    """Find the VOC2012 folder under ``root``; splits from ``ImageSets`` or a seeded split."""
    base = next(
        (
            p
            for p in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root)
            if (p / "JPEGImages").is_dir()
        ),
        None,
    )
    if base is None or not (base / "SegmentationClass").is_dir():
        raise DataError(f"{root}: expected VOCdevkit/VOC2012 or JPEGImages/ + SegmentationClass/")
    table = base / "class_names.txt"
    rows = read_class_table(table) if table.is_file() else [TableRow(n, None) for n in VOC_CLASSES]
    rows = [
        TableRow(r.name, tuple(int(v) for v in default_palette(len(rows))[i]))
        for i, r in enumerate(rows)
    ]
    decoder = index_decoder(rows, keep_void=True)  # VOC's void is the 255 border, not a class
    notes = [f"{len(rows)} classes, palette index masks, 255 (object borders) -> ignore"]
    lists_dir = base / "ImageSets" / "Segmentation"
    problems: list[str] = []

    def pairs_for(stems: list[str], mask_dirs: list[Path], listing: Path) -> list[Pair]:
        pairs = []
        for stem in stems:
            image = base / "JPEGImages" / f"{stem}.jpg"
            mask = next(
                (d / f"{stem}.png" for d in mask_dirs if (d / f"{stem}.png").is_file()), None
            )
            if not image.is_file():
                problems.append(f"{listing}: image not found: {image}")
            elif mask is None:
                problems.append(f"{listing}: image without mask: {image}")
            else:
                pairs.append((image, mask))
        return pairs

    splits: dict[str, list[Pair]] = {}
    if lists_dir.is_dir():
        for split in ("train", "val"):
            if (lists_dir / f"{split}.txt").is_file():
                splits[split] = pairs_for(
                    read_list(lists_dir / f"{split}.txt"),
                    [base / "SegmentationClass"],
                    lists_dir / f"{split}.txt",
                )
        aug_list = lists_dir / "train_aug.txt"
        aug = opts.get_str("aug", "auto", ("auto", "true", "false"))
        if aug == "true" and not aug_list.is_file():
            raise DataError(f"aug=true but {aug_list} (the SBD-augmented train list) is missing")
        if aug != "false" and aug_list.is_file():
            val_stems = {p[0].stem for p in splits.get("val", [])}
            stems = [s for s in read_list(aug_list) if s not in val_stems]
            mask_dirs = [base / "SegmentationClassAug", base / "SegmentationClass"]
            splits["train"] = pairs_for(stems, mask_dirs, aug_list)
            notes.append(
                f"train = SBD-augmented list train_aug.txt ({len(splits['train'])} pairs,"
                " val images excluded)"
            )
        notes.append("splits from ImageSets/Segmentation")
    else:
        pairs, problems = match_by_stem(
            list_images(base / "JPEGImages"), list_images(base / "SegmentationClass"), str(base)
        )
        splits = seeded_split(pairs, opts, notes, "flat VOC-style folder, no ImageSets")
    return DataSource("voc", root, "voc", decoder, splits, notes, problems)
