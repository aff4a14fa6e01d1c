"""Data loaders for training when the data layer's ``SegDataModule`` is not installed.

``seglab.engine.training`` uses ``seglab.data.datamodule.SegDataModule`` when it exists (the
contract in docs/internals.md); this module is the engine's own equivalent so training works
either way: shuffled training batches with ``drop_last`` (never a batch of one image, which
crashes BatchNorm), validation/test batches grouped by image size (datasets with mixed sizes
need no padding), seeded shuffling, uint8 images and int64 masks straight to the device.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from seglab.errors import ConfigError


class SameSizeBatches(Sampler[list[int]]):
    """Batches of dataset indices whose images share one size, in dataset order."""

    def __init__(self, dataset: Any, batch_size: int) -> None:
        from seglab.data.dataset import image_size

        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, (image_path, _) in enumerate(dataset.pairs):
            groups[image_size(image_path)].append(index)
        self.batches = [
            members[i : i + batch_size]
            for members in groups.values()
            for i in range(0, len(members), batch_size)
        ]
        self.batches.sort(key=lambda batch: batch[0])

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class RecipeDataModule(L.LightningDataModule):
    """Train/val/test loaders for one ``DataSource`` (splits by name)."""

    def __init__(
        self,
        source: Any,
        *,
        train_split: str = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        batch_size: int = 8,
        eval_batch_size: int = 4,
        num_workers: int = 2,
        train_transform: Callable | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.source = source
        self.train_split, self.val_split, self.test_split = train_split, val_split, test_split
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.train_transform = train_transform
        self.seed = seed

    def _loader_options(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }

    def train_dataloader(self) -> DataLoader:
        dataset = self.source.dataset(self.train_split, self.train_transform)
        if len(dataset) < 2:
            raise ConfigError(
                f"split '{self.train_split}' of {self.source.spec} has {len(dataset)} image(s): "
                "training needs at least 2 (BatchNorm cannot learn from batches of one)"
            )
        # drop_last: a final batch of one image would crash BatchNorm; a batch larger than the
        # split shrinks to the split so an epoch is never empty.
        batch_size = min(self.batch_size, len(dataset))
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,
            generator=generator,
            **self._loader_options(),
        )

    def _eval_loader(self, split: str | None) -> DataLoader | list:
        if not split or not self.source.splits.get(split):
            return []
        dataset = self.source.dataset(split)
        return DataLoader(
            dataset,
            batch_sampler=SameSizeBatches(dataset, self.eval_batch_size),
            **self._loader_options(),
        )

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader(self.val_split)

    def test_dataloader(self) -> DataLoader | list:
        return self._eval_loader(self.test_split)
