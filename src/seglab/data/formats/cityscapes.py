"""``cityscapes:PATH``: ``leftImg8bit/<split>/<city>/`` + ``gtFine/*_gtFine_labelIds.png``.

Option ``classes=34|19|7`` (default 19): the label ids, the train ids, or the categories;
the official label table and its remaps are ``classes.CITYSCAPES_LABELS`` / ``cityscapes_view``.
"""

from __future__ import annotations

from pathlib import Path

from seglab.data.classes import cityscapes_view
from seglab.data.formats.base import SPLIT_NAMES, DataSource, Options, Pair, register_format
from seglab.data.masks import MaskDecoder
from seglab.errors import DataError

_VIEW_NOTES = {
    34: "34 label ids as classes",
    19: "19 train ids, the other 15 label ids -> ignore",
    7: "7 categories, void category -> ignore",
}


@register_format("cityscapes")
def open_cityscapes(root: Path, opts: Options) -> DataSource:
    """Pairs per split from the fine annotations; a missing mask is a layout problem."""
    classes = opts.get_int("classes", 19)
    classmap, lut = cityscapes_view(classes)
    decoder = MaskDecoder("index", classmap, lut, notes=(_VIEW_NOTES[classes],))
    image_root, gt_root = root / "leftImg8bit", root / "gtFine"
    if not image_root.is_dir() or not gt_root.is_dir():
        raise DataError(f"{root}: expected leftImg8bit/ and gtFine/ folders")
    splits: dict[str, list[Pair]] = {}
    problems: list[str] = []
    for split in SPLIT_NAMES:
        if not (image_root / split).is_dir():
            continue
        pairs = []
        for image in sorted((image_root / split).glob("*/*_leftImg8bit.png")):
            prefix = image.name[: -len("_leftImg8bit.png")]
            mask = gt_root / split / image.parent.name / f"{prefix}_gtFine_labelIds.png"
            if mask.is_file():
                pairs.append((image, mask))
            else:
                problems.append(f"image without mask: {image} (expected {mask})")
        splits[split] = pairs
    if not any(splits.values()):
        problems.append(f"no leftImg8bit/<split>/<city>/*_leftImg8bit.png files under {root}")
    return DataSource(
        "cityscapes", root, f"cityscapes/{classes}", decoder, splits, list(decoder.notes), problems
    )
