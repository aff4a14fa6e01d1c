"""``SegDataModule``: a LightningDataModule over a ``DataSource`` (splits, k-fold, loaders).

Training never yields a batch of size 1 (BatchNorm cannot normalise one sample): the last
batch is dropped when it would hold a single sample, and a train split smaller than the batch
size shrinks the batch (with a warning). Eval loaders pad images of different sizes in a batch
(image 0, mask ignore index) so variable-size datasets such as VOC need no resize.

Training is reproducible and resumable mid-epoch: the train order is a permutation drawn from
``(seed, epoch)`` alone (:class:`ResumableSampler`), and each sample's augmentation runs under
RNGs seeded from ``(seed, epoch, index)`` (:class:`SeededDataset`), so neither the number of
workers, the worker seeds, prefetching nor a kill-and-resume changes what a batch holds. A
resumed epoch skips the samples its checkpoint had already trained on
(:meth:`SegDataModule.resume_at`).
"""

from __future__ import annotations

import math
import os
import random
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from seglab.data.cache import check_cache_mode, maybe_cache
from seglab.data.dataset import SegmentationDataset
from seglab.data.formats import DataSource, open_source
from seglab.data.splits import kfold
from seglab.data.transforms import JointTransform
from seglab.errors import ConfigError
from seglab.stops import ignore_in_worker


def pad_collate(batch: list[tuple[torch.Tensor, torch.Tensor]], ignore_index: int = 255):
    """Stack (image, mask) pairs, padding to the largest H and W in the batch."""
    height = max(img.shape[1] for img, _ in batch)
    width = max(img.shape[2] for img, _ in batch)
    images = torch.zeros((len(batch), batch[0][0].shape[0], height, width), dtype=torch.uint8)
    masks = torch.full((len(batch), height, width), ignore_index, dtype=torch.int64)
    for i, (img, mask) in enumerate(batch):
        images[i, :, : img.shape[1], : img.shape[2]] = img
        masks[i, : mask.shape[0], : mask.shape[1]] = mask
    return images, masks


class _Collate:
    # A class, not a lambda, so worker processes can pickle it.
    def __init__(self, ignore_index: int) -> None:
        self.ignore_index = ignore_index

    def __call__(self, batch):
        return pad_collate(batch, self.ignore_index)


def train_batching(n: int, batch_size: int, world_size: int = 1) -> tuple[int, bool]:
    """(batch size, drop_last) so that no training batch on any rank has size 1."""
    per_rank = math.ceil(n / max(world_size, 1))
    if per_rank < 2:
        raise ConfigError(
            f"the train split has {n} sample(s) ({per_rank} per process): training needs at"
            " least 2 per batch (BatchNorm cannot normalise a single sample)"
        )
    if per_rank < batch_size:
        warnings.warn(
            f"train split has {per_rank} samples per process, fewer than batch_size="
            f"{batch_size}: using batch_size={per_rank}",
            stacklevel=3,
        )
        batch_size = per_rank
    return batch_size, per_rank % batch_size == 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The RNG seed of sample ``index``'s augmentation in ``epoch`` (63 bits)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2)
    return (int(state[0]) << 31 ^ int(state[1])) & (2**63 - 1)


class SeededDataset(Dataset):
    """``dataset`` indexed by ``(index, epoch)`` keys: each sample is loaded and augmented
    with the torch (CPU), Python and numpy global RNGs seeded from ``(seed, epoch, index)``.

    The torch and Python states are put back afterwards (the model's dropout draws stay the
    same with or without loader workers); numpy's global state is left seeded (restoring it
    costs more than the rest together, and training draws nothing from it).
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:  # pairs, classmap, name, ... of the dataset
        if name in ("dataset", "seed"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: Any) -> Any:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        seed = sample_seed(self.seed, epoch, index)
        torch_state, py_state = torch.get_rng_state(), random.getstate()
        # The CPU generator alone: torch.manual_seed also seeds every accelerator (slow).
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed & 0xFFFFFFFF)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(torch_state)
            random.setstate(py_state)


class ResumableSampler(DistributedSampler):
    """Shuffled ``(index, epoch)`` keys for :class:`SeededDataset`, one rank's share.

    The order of an epoch is ``randperm`` under a generator seeded with ``seed + epoch``
    (padded and strided over ranks like ``DistributedSampler``, which Lightning then leaves
    in place). :meth:`skip` drops the first samples of one epoch: those a resumed checkpoint
    had already trained on. ``len()`` stays the full epoch so the loop's batch count holds.
    """

    def __init__(self, dataset: Any, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self._skip: tuple[int, int] | None = None  # (epoch, samples)

    def skip(self, epoch: int, samples: int) -> None:
        """Start ``epoch`` at its ``samples``-th sample (this rank's count), once."""
        self.epoch = epoch
        self._skip = (epoch, samples) if samples > 0 else None

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=generator).tolist()
        if len(order) < self.total_size:  # pad like DistributedSampler
            order += (order * math.ceil(self.total_size / max(1, len(order))))[
                : self.total_size - len(order)
            ]
        mine = order[self.rank : self.total_size : self.num_replicas]
        start = 0
        if self._skip is not None and self._skip[0] == self.epoch:
            start = min(self._skip[1], len(mine))
            self._skip = None
        return iter([(index, self.epoch) for index in mine[start:]])


class SegDataModule(L.LightningDataModule):
    """Train/val/test loaders for a dataset spec or ``DataSource``.

    Args:
        source: ``DataSource`` or spec string (``"camvid:PATH"``); ``source_options`` go to
            ``open_source``.
        batch_size, num_workers: loader settings (eval uses the same batch size).
        train_transform, eval_transform: joint transforms (``seglab.data.transforms``).
        fold, k: k-fold cross-validation over train + val pooled (the test split is never
            touched); fold ``fold`` of ``k`` becomes the val split.
        seed: seed of the k-fold assignment.
        cache: ``auto`` keeps the decoded train and val samples in memory when they fit
            (``seglab.data.cache``), ``on`` always, ``off`` never; test is read once and
            never cached.
    """

    def __init__(
        self,
        source: DataSource | str,
        batch_size: int = 8,
        num_workers: int = 0,
        train_transform: JointTransform | None = None,
        eval_transform: JointTransform | None = None,
        fold: int | None = None,
        k: int | None = None,
        seed: int = 0,
        source_options: dict[str, Any] | None = None,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        cache: str = "off",
    ) -> None:
        super().__init__()
        self.source = (
            open_source(source, **(source_options or {})) if isinstance(source, str) else source
        )
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if (fold is None) != (k is None):
            raise ConfigError("k-fold needs both fold and k")
        if k is not None and not 0 <= fold < k:
            raise ConfigError(f"fold must be in 0..{k - 1}, got {fold}")
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.fold, self.k, self.seed = fold, k, seed
        self.split_names = {"train": train_split, "val": val_split, "test": test_split}
        self.cache = check_cache_mode(cache)
        self._cached: dict[str, Any] = {}
        self.collate = _Collate(self.classmap.ignore_index)
        self._resume: tuple[int, int] = (0, 0)  # (epoch, batches already trained in it)
        self.train_sampler: ResumableSampler | None = None
        self._train_batch = batch_size

    def resume_at(self, epoch: int, batches: int) -> None:
        """Make the train loader start ``epoch`` after its first ``batches`` batches."""
        self._resume = (int(epoch), int(batches))
        if self.train_sampler is not None:
            self._apply_resume(self.train_sampler)

    def _apply_resume(self, sampler: ResumableSampler) -> None:
        epoch, batches = self._resume
        sampler.skip(epoch, batches * self._train_batch)

    def check_train_split(self, world_size: int = 1) -> None:
        """Raise ``ConfigError`` now when the train split cannot be batched (too small)."""
        train_batching(len(self._pairs("train")), self.batch_size, world_size)

    @property
    def classmap(self):
        return self.source.classmap

    def _pairs(self, role: str) -> list:
        name = self.split_names[role]
        if self.k is None or role == "test":
            return list(self.source.splits.get(name, []))
        pool = list(self.source.splits.get(self.split_names["train"], [])) + list(
            self.source.splits.get(self.split_names["val"], [])
        )
        train_idx, val_idx = kfold(len(pool), self.k, self.seed)[self.fold]
        return [pool[i] for i in (train_idx if role == "train" else val_idx)]

    def dataset(self, role: str) -> SegmentationDataset:
        """Dataset for ``"train"``, ``"val"`` or ``"test"`` (k-fold applied)."""
        transform = self.train_transform if role == "train" else self.eval_transform
        return SegmentationDataset(
            self._pairs(role), self.source.decoder, transform, f"{self.source.spec}/{role}"
        )

    def _loader_dataset(self, role: str) -> Any:
        """The dataset a loader reads: cached per ``self.cache`` (train and val only)."""
        if role == "test" or self.cache == "off":
            return self.dataset(role)
        if role not in self._cached:
            self._cached[role] = maybe_cache(self.dataset(role), self.cache, role)
        return self._cached[role]

    def _loader(self, dataset: Any, sampler: Any, batch: int, drop_last: bool):
        # Its own generator: creating an iterator (the workers' base seed) does not draw from
        # the global RNG, which the model's dropout uses.
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        return DataLoader(
            dataset,
            batch_size=batch,
            sampler=sampler,
            shuffle=False,
            generator=generator,
            drop_last=drop_last,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=_worker_init if self.num_workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self._loader_dataset("train")
        world = getattr(self.trainer, "world_size", 1) if self.trainer is not None else 1
        rank = getattr(self.trainer, "global_rank", 0) if self.trainer is not None else 0
        batch, drop_last = train_batching(len(dataset), self.batch_size, world)
        self._train_batch = batch
        sampler = ResumableSampler(dataset, self.seed, num_replicas=world, rank=rank)
        self._apply_resume(sampler)
        self.train_sampler = sampler
        return self._loader(SeededDataset(dataset, self.seed), sampler, batch, drop_last)

    def val_dataloader(self) -> DataLoader:
        dataset = self._loader_dataset("val")
        if len(dataset) == 0:
            raise ConfigError(f"{self.source.spec} has no {self.split_names['val']} split")
        return self._loader(dataset, None, self.batch_size, False)

    def test_dataloader(self) -> DataLoader:
        dataset = self.dataset("test")
        if len(dataset) == 0:
            raise ConfigError(f"{self.source.spec} has no {self.split_names['test']} split")
        return self._loader(dataset, None, self.batch_size, False)


def _worker_init(worker_id: int) -> None:
    """A worker ignores stop signals (``seglab.stops``), then seeds itself as Lightning's
    own ``worker_init_fn`` would under ``seed_everything(workers=True)`` (Lightning sets
    its own only where a loader has none)."""
    ignore_in_worker()
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id)
