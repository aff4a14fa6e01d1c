"""Decoded samples kept in memory: every file is read and decoded once, not once per epoch.

On a small CPU machine decoding a PNG pair each epoch takes a share of the cores the training
step needs (and the loader workers compete with the step's threads). CamVid's 367 training
pairs are 254 MB decoded at full size and 63 MB after a half-resolution resize, so
``data.cache: auto`` (the default) keeps a split in memory whenever it fits the budget
(:func:`cache_budget`).

A training transform that starts with a fixed ``Resize`` is split: the resize runs once, when
the sample is cached, and only the random rest runs per epoch. The samples are bit for bit the
ones the uncached dataset gives (the same steps in the same order on the same uint8 pixels),
so caching changes neither scores nor the exact-resume guarantee.

The cache is filled in the main process before the loader workers start (they share its
memory); decode errors surface then, naming the file, instead of mid-epoch.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from seglab.data.dataset import SegmentationDataset, image_size
from seglab.data.transforms import JointTransform, apply_joint
from seglab.errors import ConfigError

log = logging.getLogger(__name__)

CACHE_MODES = ("auto", "on", "off")
DEFAULT_CACHE_BYTES = 4 * 2**30  # SEGLAB_CACHE_BYTES overrides


def check_cache_mode(mode: str) -> str:
    """``mode`` when it is one of :data:`CACHE_MODES`, else a ``ConfigError`` naming it."""
    if mode not in CACHE_MODES:
        raise ConfigError(f"data.cache must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
    return mode


def _available_memory() -> int | None:
    """``MemAvailable`` from /proc/meminfo in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cache_budget() -> int:
    """Bytes ``auto`` may cache: ``SEGLAB_CACHE_BYTES`` if set, else the smaller of 4 GiB and a
    quarter of the memory available now (loader workers share the cache, they do not copy it)."""
    raw = os.environ.get("SEGLAB_CACHE_BYTES")
    if raw is not None:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(
                f"SEGLAB_CACHE_BYTES must be a number of bytes, got {raw!r}"
            ) from None
        if value < 0:
            raise ConfigError(f"SEGLAB_CACHE_BYTES must be >= 0, got {value}")
        return value
    available = _available_memory()
    return DEFAULT_CACHE_BYTES if available is None else min(DEFAULT_CACHE_BYTES, available // 4)


def split_fixed_resize(
    transform: JointTransform | None,
) -> tuple[JointTransform | None, JointTransform | None]:
    """``(fixed, rest)``: a leading ``v2.Resize`` of a ``v2.Compose`` and the steps after it.

    ``fixed`` is None when the transform does not start with a resize (then ``rest`` is the
    transform itself).
    """
    if isinstance(transform, v2.Compose) and transform.transforms:
        first = transform.transforms[0]
        if isinstance(first, v2.Resize):
            rest = list(transform.transforms[1:])
            return v2.Compose([first]), (v2.Compose(rest) if rest else None)
    return None, transform


def _size_after(fixed: JointTransform | None, size: tuple[int, int]) -> tuple[int, int]:
    if fixed is None:
        return size
    wanted = fixed.transforms[0].size
    if wanted is not None and len(wanted) == 2:
        return int(wanted[0]), int(wanted[1])
    return size  # a short-side resize: the original size bounds it well enough for a budget


def estimate_bytes(dataset: SegmentationDataset, fixed: JointTransform | None = None) -> int:
    """Memory the decoded split takes in the cache, from the file headers and the first
    sample (its bands and sample size), plus one byte per mask pixel."""
    if len(dataset) == 0:
        return 0
    image, _ = dataset.load_pair(0)
    per_pixel = image.shape[0] * image.element_size() + 1
    total = 0
    for image_path, _ in dataset.pairs:
        height, width = _size_after(fixed, image_size(image_path))
        total += height * width * per_pixel
    return total


class CachedDataset(Dataset):
    """``dataset``'s samples decoded once (and resized once when the transform starts with a
    fixed ``Resize``); each access runs the rest of the transform on a copy.

    Masks are stored as uint8 when every value fits (train ids below 255 and ignore 255), else
    at their decoded dtype; items are ``(uint8 image, int64 mask)`` as from the dataset.
    """

    def __init__(self, dataset: SegmentationDataset, threads: int | None = None) -> None:
        self.dataset = dataset
        fixed, self.transform = split_fixed_resize(dataset.transform)
        self.images: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []

        def load(index: int) -> tuple[torch.Tensor, torch.Tensor]:
            image, mask = dataset.load_pair(index)
            if fixed is not None:
                image, mask = apply_joint(fixed, image, mask)
            if mask.numel() and 0 <= int(mask.min()) and int(mask.max()) <= 255:
                mask = mask.to(torch.uint8)
            return image.contiguous(), mask.contiguous()

        workers = max(1, threads or min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:  # decoders release the GIL
            for image, mask in pool.map(load, range(len(dataset))):
                self.images.append(image)
                self.masks.append(mask)
        self.nbytes = sum(t.numel() * t.element_size() for t in (*self.images, *self.masks))

    def __len__(self) -> int:
        return len(self.images)

    def __getattr__(self, name: str) -> Any:  # pairs, classmap, name, ... of the dataset
        if name in ("dataset", "images", "masks", "transform", "nbytes"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.images[index].clone(), self.masks[index].to(torch.int64)
        return apply_joint(self.transform, image, mask)


def maybe_cache(dataset: SegmentationDataset, mode: str, role: str,
                budget: int | None = None) -> Dataset:
    """``dataset`` cached per ``mode`` (``auto``: when it fits :func:`cache_budget`; ``on``:
    always; ``off``: never), with one log line saying what was decided and why."""
    if check_cache_mode(mode) == "off" or len(dataset) == 0:
        return dataset
    fixed, _ = split_fixed_resize(dataset.transform)
    need = estimate_bytes(dataset, fixed)
    if mode == "auto":
        allowed = cache_budget() if budget is None else budget
        if need > allowed:
            log.info(
                "data: not caching the %s split (%s decoded, over the %s budget; data.cache: on"
                " forces it, SEGLAB_CACHE_BYTES sets the budget)", role, _mb(need), _mb(allowed)
            )
            return dataset
    cached = CachedDataset(dataset)
    log.info("data: %d %s samples decoded once and kept in memory (%s)", len(cached), role,
             _mb(cached.nbytes))
    return cached


def _mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MB"

