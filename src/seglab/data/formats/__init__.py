"""On-disk layouts -> ``DataSource`` (class map, mask decoder, (image, mask) pairs per split).

``open_source("camvid:PATH")``; one small module per layout:

- ``folder``: ``images/`` + ``masks/`` matched by file stem, optional ``train/val/test``
  sub-folders or split lists, optional class table; index or colour masks auto-detected.
- ``camvid``: SegNet 11-class (``train.txt``...), 32-class colour ``*_L.png`` +
  ``label_colors.txt``, fastai ``codes.txt`` + ``*_P.png``, Kaggle ``class_dict.csv``.
- ``voc``: ``VOCdevkit/VOC2012`` (+ SBD ``train_aug.txt``) or a flat VOC-style folder.
- ``cityscapes``: ``leftImg8bit`` + ``gtFine/*_gtFine_labelIds.png``, ``classes=34|19|7``.
- ``suim``: SUIM bit-colour BMP masks -> 8 classes.
- ``synthetic``: a folder written by ``make_synthetic`` (generated there if missing).
- ``ade20k``: ``images/training`` + ``annotations/training`` (ADEChallengeData2016), 150 classes.
- ``coco``: COCO-style JSON polygons / RLE rasterised; ``labelme``: LabelMe JSON shapes.

Options come as keyword arguments (strings from the CLI are parsed: ``classes=19``,
``keep_void=true``). Layouts without a split get a seeded random split, reported in ``notes``.

Adding a format: a module ``formats/<name>.py`` whose adapter ``(root, opts) -> DataSource``
is decorated ``@register_format("<name>")``, and its name on the registry line below.
"""

from __future__ import annotations

# The registry line: importing a format module registers its adapter in FORMATS.
from seglab.data.formats import (  # noqa: F401
    ade20k,
    camvid,
    cityscapes,
    coco,
    folder,
    labelme,
    suim,
    synthetic,
    voc,
)
from seglab.data.formats.base import (
    FORMATS,
    IMAGE_SUFFIXES,
    SPLIT_NAMES,
    DataSource,
    Format,
    Options,
    Pair,
    list_images,
    load_dataset,
    match_by_stem,
    open_source,
    parse_spec,
    register_format,
)

__all__ = [
    "FORMATS",
    "IMAGE_SUFFIXES",
    "SPLIT_NAMES",
    "DataSource",
    "Format",
    "Options",
    "Pair",
    "list_images",
    "load_dataset",
    "match_by_stem",
    "open_source",
    "parse_spec",
    "register_format",
]
