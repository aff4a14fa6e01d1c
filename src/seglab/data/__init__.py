"""Datasets: class tables, mask decoding, on-disk layouts, transforms, statistics, loaders.

Entry points: ``open_source("camvid:PATH")`` -> ``DataSource`` (``.classmap``, ``.splits``,
``.dataset(split, transform)``), ``ClassMap``, ``SegmentationDataset``, ``SegDataModule``.
Submodules are imported on first use so ``import seglab.data`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ClassMap": "seglab.data.classes",
    "open_source": "seglab.data.formats",
    "DataSource": "seglab.data.formats",
    "SegmentationDataset": "seglab.data.dataset",
    "load_dataset": "seglab.data.formats",
    "read_image": "seglab.data.dataset",
    "SegDataModule": "seglab.data.datamodule",
    "make_synthetic": "seglab.data.synthetic",
    "train_transform": "seglab.data.transforms",
    "eval_transform": "seglab.data.transforms",
    "normalize": "seglab.data.transforms",
    "class_pixel_counts": "seglab.data.stats",
    "class_weights": "seglab.data.stats",
    "inspect_source": "seglab.data.inspect",
    "check_source": "seglab.data.inspect",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'seglab.data' has no attribute {name!r}")
