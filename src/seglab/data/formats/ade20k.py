"""``ade20k:PATH``: the ADE20K SceneParsing layout (``ADEChallengeData2016``).

``images/training/*.jpg`` + ``annotations/training/*.png`` (and ``validation``), the
annotations 8-bit class-index PNGs with 0 = "other / unlabelled" and 1..150 the ADE20K-150
classes (``class_tables.ADE20K_150``, mmsegmentation's names and palette). ``PATH`` may be
``ADEChallengeData2016`` itself or the folder holding it.

Options:

- ``reduce_zero_label`` (default true, as mmsegmentation's ``ADE20KDataset``): raw 0 ->
  ignore, raw k -> class k-1, so 150 classes are trained. ``false`` trains raw 0 as a class
  ``other`` (151 classes, ids as stored).
- ``classes=PATH``: a class table replacing the built-in names (one row per raw value
  1..K with ``reduce_zero_label``, else 0..K-1), for ADE-style datasets with other classes.
"""

from __future__ import annotations

from pathlib import Path

from seglab.data.class_tables import ADE20K_150
from seglab.data.classes import TableRow, read_class_table
from seglab.data.formats.base import (
    DataSource,
    Options,
    Pair,
    list_images,
    match_by_stem,
    register_format,
)
from seglab.data.formats.folder import split_folders
from seglab.data.formats.remap import reduce_zero_decoder
from seglab.data.masks import index_decoder
from seglab.errors import DataError

ROOT_NAMES = ("ADEChallengeData2016", "ade20k", "ADE20K")


def _find_root(root: Path) -> Path:
    if (root / "images").is_dir() and (root / "annotations").is_dir():
        return root
    for name in ROOT_NAMES:
        inner = root / name
        if (inner / "images").is_dir() and (inner / "annotations").is_dir():
            return inner
    raise DataError(
        f"{root}: not an ADE20K SceneParsing tree; expected images/training/ and"
        " annotations/training/ (plus validation/), as in ADEChallengeData2016 (found: "
        f"{', '.join(sorted(p.name for p in root.iterdir())) or 'nothing'})"
    )


@register_format("ade20k")
def open_ade20k(root: Path, opts: Options) -> DataSource:
    """Pairs from the split sub-folders; the ADE20K-150 table unless ``classes=PATH``."""
    tree = _find_root(root)
    reduce_zero = opts.get_bool("reduce_zero_label", True)
    table = opts.get_str("classes")
    rows = (
        read_class_table(table) if table else [TableRow(n, c) for n, c in ADE20K_150]
    )
    notes = [f"class table: {Path(table).name if table else 'ADE20K-150 (built in)'}"]
    if tree != root:
        notes.append(f"ADE20K tree found in {tree.name}/")
    if reduce_zero:
        decoder = reduce_zero_decoder(rows)
    else:
        other = [] if table else [TableRow("other", (0, 0, 0))]
        decoder = index_decoder(other + rows)
        notes.append("reduce_zero_label=false: raw 0 trained as a class")
    image_dir, mask_dir = tree / "images", tree / "annotations"
    found = split_folders(image_dir)
    if not found:
        raise DataError(
            f"{image_dir}: no split folders; expected training/ and validation/ (or"
            " train/ and val/)"
        )
    splits: dict[str, list[Pair]] = {}
    problems: list[str] = []
    for split, name in found.items():
        if not (mask_dir / name).is_dir():
            problems.append(f"{mask_dir / name}: annotation folder missing for {image_dir / name}")
            continue
        pairs, probs = match_by_stem(
            list_images(image_dir / name), list_images(mask_dir / name), str(image_dir / name)
        )
        splits[split] = pairs
        problems += probs
    notes.append("splits from sub-folders: " + ", ".join(f"{n} ({s})" for s, n in found.items()))
    return DataSource(
        "ade20k", root, f"ade20k/{decoder.classmap.num_classes}", decoder, splits,
        notes + list(decoder.notes), problems,
    )
