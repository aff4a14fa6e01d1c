"""``camvid:PATH``: the four CamVid layouts in circulation, told apart by their files.

- SegNet 11-class: ``train.txt``/``val.txt``/``test.txt`` + ``trainannot/`` index masks.
- 32-class colour: ``label_colors.txt`` + ``*_L.png`` RGB masks (CamSeq01).
- fastai: ``codes.txt`` + ``*_P.png`` index masks, optional ``valid.txt``.
- Kaggle: ``class_dict.csv`` + ``train_labels/`` RGB masks.

Option: ``keep_void`` (train Void as a class instead of ignoring it).
"""

from __future__ import annotations

from pathlib import Path

from seglab.data.class_tables import CAMVID11
from seglab.data.classes import TableRow, read_class_table
from seglab.data.formats.base import (
    SPLIT_NAMES,
    DataSource,
    Options,
    Pair,
    first_dir,
    list_images,
    match_by_stem,
    read_list,
    read_list_text,
    register_format,
    seeded_split,
)
from seglab.data.masks import color_decoder, index_decoder
from seglab.errors import DataError


@register_format("camvid")
def open_camvid(root: Path, opts: Options) -> DataSource:
    """Dispatch on the files present (see the module docstring)."""
    if (root / "train.txt").is_file() and (root / "trainannot").is_dir():
        return _segnet(root, opts)
    if (root / "class_dict.csv").is_file() and (root / "train_labels").is_dir():
        return _kaggle(root, opts)
    if (root / "label_colors.txt").is_file():
        return _colour(root, opts)
    if (root / "codes.txt").is_file():
        return _fastai(root, opts)
    raise DataError(
        f"{root}: not a known CamVid layout; expected train.txt + trainannot/ (SegNet 11-class),"
        " label_colors.txt + *_L.png (32-class), codes.txt + *_P.png (fastai) or class_dict.csv"
        " + train_labels/ (Kaggle)"
    )


def _segnet(root: Path, opts: Options) -> DataSource:
    keep_void = opts.get_bool("keep_void", False)
    decoder = index_decoder([TableRow(n, c) for n, c in CAMVID11], keep_void=keep_void)
    splits: dict[str, list[Pair]] = {}
    problems: list[str] = []
    for split in SPLIT_NAMES:
        listing = root / f"{split}.txt"
        if not listing.is_file():
            continue
        pairs = []
        for line_no, line in enumerate(read_list_text(listing).splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                problems.append(f"{listing} line {line_no}: expected 'image annotation'")
                continue
            # The lists hold absolute paths from the authors' machine: keep folder + file name.
            image, mask = (root / Path(p).parent.name / Path(p).name for p in parts)
            missing = [p for p in (image, mask) if not p.is_file()]
            if missing:
                problems += [f"{listing} line {line_no}: file not found: {p}" for p in missing]
                continue
            pairs.append((image, mask))
        splits[split] = pairs
    notes = ["splits from train.txt/val.txt/test.txt (basenames of the listed paths)"]
    return DataSource(
        "camvid", root, "camvid/segnet-11", decoder, splits, notes + list(decoder.notes), problems
    )


def _colour(root: Path, opts: Options) -> DataSource:
    rows = read_class_table(root / "label_colors.txt")
    decoder = color_decoder(rows, keep_void=opts.get_bool("keep_void", False))
    image_dir = first_dir(root, ("images", "701_StillsRaw_full", "raw"))
    label_dir = first_dir(root, ("labels", "LabeledApproved_full", "label"))
    if image_dir is None or label_dir is None:
        raise DataError(f"{root}: expected images/ and labels/ beside label_colors.txt")
    pairs, problems = match_by_stem(list_images(image_dir), list_images(label_dir), str(root))
    notes: list[str] = []
    splits = seeded_split(pairs, opts, notes, "no split in this layout")
    return DataSource(
        "camvid", root, "camvid/colour-32", decoder, splits, list(decoder.notes) + notes, problems
    )


def _fastai(root: Path, opts: Options) -> DataSource:
    rows = read_class_table(root / "codes.txt")
    decoder = index_decoder(rows, keep_void=opts.get_bool("keep_void", False))
    image_dir = first_dir(root, ("images",))
    label_dir = first_dir(root, ("labels",))
    if image_dir is None or label_dir is None:
        raise DataError(f"{root}: expected images/ and labels/ beside codes.txt")
    pairs, problems = match_by_stem(list_images(image_dir), list_images(label_dir), str(root))
    notes: list[str] = []
    if (root / "valid.txt").is_file():
        val_stems = set(read_list(root / "valid.txt"))
        splits = {
            "train": [p for p in pairs if p[0].stem not in val_stems],
            "val": [p for p in pairs if p[0].stem in val_stems],
        }
        notes.append("val split from valid.txt")
    else:
        splits = seeded_split(pairs, opts, notes, "no valid.txt")
    return DataSource(
        "camvid",
        root,
        "camvid/fastai-codes",
        decoder,
        splits,
        list(decoder.notes) + notes,
        problems,
    )


def _kaggle(root: Path, opts: Options) -> DataSource:
    rows = read_class_table(root / "class_dict.csv")
    decoder = color_decoder(rows, keep_void=opts.get_bool("keep_void", False))
    splits: dict[str, list[Pair]] = {}
    problems: list[str] = []
    for split in SPLIT_NAMES:
        if (root / split).is_dir():
            pairs, probs = match_by_stem(
                list_images(root / split), list_images(root / f"{split}_labels"), str(root / split)
            )
            splits[split], problems = pairs, problems + probs
    return DataSource(
        "camvid", root, "camvid/kaggle-class-dict", decoder, splits, list(decoder.notes), problems
    )
