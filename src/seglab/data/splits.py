"""Seeded splits: a random train/val/test split for layouts without one, and k-fold indices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from seglab.errors import ConfigError

T = TypeVar("T")


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) sizes: val/test get at least one item each once n >= 3."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"val_fraction={val_fraction}, test_fraction={test_fraction}: each must be in [0, 1)"
            " and their sum below 1"
        )
    n_val = round(n * val_fraction)
    n_test = round(n * test_fraction)
    if n >= 3:
        n_val = max(n_val, 1) if val_fraction > 0 else 0
        n_test = max(n_test, 1) if test_fraction > 0 else 0
    else:
        n_val = n_test = 0  # too few to hold anything out: all of it trains
    return n - n_val - n_test, n_val, n_test


def random_split(
    items: Sequence[T], val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> dict[str, list[T]]:
    """Shuffle ``items`` (sorted order first, so the result depends only on the seed) and cut."""
    n_train, n_val, _ = split_sizes(len(items), val_fraction, test_fraction)
    order = np.random.default_rng(seed).permutation(len(items))
    shuffled = [items[i] for i in order]
    splits = {
        "train": shuffled[:n_train],
        "val": shuffled[n_train : n_train + n_val],
        "test": shuffled[n_train + n_val :],
    }
    return {name: part for name, part in splits.items() if part}


def kfold(n: int, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train_indices, val_indices) folds over ``range(n)``; every index is in one val fold.

    Fold sizes differ by at most one; indices inside each part are sorted.
    """
    if k < 2:
        raise ConfigError(f"k-fold needs k >= 2, got k={k}")
    if n < k:
        raise ConfigError(f"k-fold with k={k} needs at least {k} samples, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(order, k)
    result = []
    for i, val in enumerate(folds):
        train = np.concatenate([f for j, f in enumerate(folds) if j != i])
        result.append((np.sort(train), np.sort(val)))
    return result
