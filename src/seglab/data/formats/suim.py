"""``suim:PATH``: SUIM underwater scenes, RGB bit-colour BMP masks -> 8 classes.

``train_val/`` + ``TEST/`` (each ``images/`` + ``masks/``; val drawn from train_val with
``val_fraction``/``seed``) or a flat ``images/`` + ``masks/`` sample with a seeded split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seglab.data.class_tables import SUIM_CLASSES
from seglab.data.classes import ClassMap
from seglab.data.formats.base import (
    DataSource,
    Options,
    Pair,
    list_images,
    match_by_stem,
    register_format,
    seeded_split,
)
from seglab.data.masks import MaskDecoder
from seglab.data.splits import random_split


@register_format("suim")
def open_suim(root: Path, opts: Options) -> DataSource:
    """Bit-colour masks decoded by the 3-bit code r*4 + g*2 + b (= the class order)."""
    classmap = ClassMap(tuple(n for n, _ in SUIM_CLASSES), tuple(c for _, c in SUIM_CLASSES))
    decoder = MaskDecoder(
        "bits",
        classmap,
        np.arange(8, dtype=np.int64),
        notes=("8 classes from bit colours; mask channels thresholded at 128 (>= 128 -> on)",),
    )
    notes = list(decoder.notes)
    splits: dict[str, list[Pair]] = {}
    problems: list[str] = []
    if (root / "train_val").is_dir():
        for folder, name in ((root / "train_val", "train"), (root / "TEST", "test")):
            if folder.is_dir():
                pairs, probs = match_by_stem(
                    list_images(folder / "images"), list_images(folder / "masks"), str(folder)
                )
                splits[name], problems = pairs, problems + probs
        if opts.get_float("val_fraction", 0.15) > 0 and splits.get("train"):
            held = random_split(
                splits["train"], opts.get_float("val_fraction", 0.15), 0.0, opts.get_int("seed", 0)
            )
            splits["train"], splits["val"] = held["train"], held.get("val", [])
            notes.append(f"val split drawn from train_val with seed={opts.get_int('seed', 0)}")
    else:
        pairs, problems = match_by_stem(
            list_images(root / "images"), list_images(root / "masks"), str(root)
        )
        splits = seeded_split(pairs, opts, notes, "no split in this layout")
    return DataSource("suim", root, "suim", decoder, splits, notes, problems)
