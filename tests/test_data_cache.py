"""The decoded-sample cache: same samples as uncached, the budget decides, errors early."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from seglab.config import Recipe
from seglab.data.cache import CachedDataset, cache_budget, estimate_bytes, maybe_cache
from seglab.data.datamodule import SeededDataset, SegDataModule
from seglab.data.dataset import SegmentationDataset
from seglab.data.formats import open_source
from seglab.data.synthetic import make_synthetic
from seglab.data.transforms import train_transform
from seglab.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory):
    root = make_synthetic(tmp_path_factory.mktemp("cache") / "ds", n_train=6, n_val=3, n_test=2,
                          size=(40, 56), num_classes=4)
    return open_source(f"folder:{root}")


def _transform(resize: tuple[int, int] | None):
    return train_transform((24, 30), scale_range=(0.7, 1.4), hflip=0.5, rotation=10,
                           brightness=0.3, saturation=0.3, noise_sigma=4, resize=resize)


@pytest.mark.parametrize("resize", [(32, 44), None])
def test_cached_samples_equal_uncached(source, resize) -> None:
    dataset = SegmentationDataset(source.splits["train"], source.decoder, _transform(resize))
    cached = CachedDataset(dataset, threads=2)
    plain, fast = SeededDataset(dataset, 3), SeededDataset(cached, 3)
    for key in [(0, 0), (5, 0), (2, 4)]:
        (image_a, mask_a), (image_b, mask_b) = plain[key], fast[key]
        assert image_a.dtype == image_b.dtype == torch.uint8
        assert mask_a.dtype == mask_b.dtype == torch.int64
        assert torch.equal(image_a, image_b) and torch.equal(mask_a, mask_b)
    # the fixed resize ran once, at caching time: stored at the resized size, masks as uint8
    expected = resize or (40, 56)
    assert tuple(cached.images[0].shape[1:]) == expected
    assert cached.masks[0].dtype == torch.uint8
    assert len(cached) == len(dataset) and cached.classmap is dataset.classmap


def test_cached_items_do_not_alias_the_cache(source) -> None:
    dataset = SegmentationDataset(source.splits["train"], source.decoder, None)
    cached = CachedDataset(dataset, threads=1)
    image, mask = cached[0]
    image.zero_()
    mask.fill_(7)
    again_image, again_mask = cached[0]
    assert torch.equal(again_image, dataset[0][0]) and torch.equal(again_mask, dataset[0][1])


def test_estimate_matches_what_is_stored(source) -> None:
    dataset = SegmentationDataset(source.splits["train"], source.decoder, _transform((32, 44)))
    from seglab.data.cache import split_fixed_resize

    fixed, _ = split_fixed_resize(dataset.transform)
    assert estimate_bytes(dataset, fixed) == 6 * 32 * 44 * 4
    assert CachedDataset(dataset).nbytes == 6 * 32 * 44 * 4
    assert estimate_bytes(dataset) == 6 * 40 * 56 * 4


def test_auto_follows_the_budget(source, caplog: pytest.LogCaptureFixture) -> None:
    dataset = SegmentationDataset(source.splits["train"], source.decoder, None)
    with caplog.at_level(logging.INFO, logger="seglab.data.cache"):
        small = maybe_cache(dataset, "auto", "train", budget=1000)
    assert small is dataset
    assert "not caching the train split" in caplog.text and "SEGLAB_CACHE_BYTES" in caplog.text
    assert isinstance(maybe_cache(dataset, "auto", "train", budget=10**9), CachedDataset)
    assert isinstance(maybe_cache(dataset, "on", "train", budget=0), CachedDataset)
    assert maybe_cache(dataset, "off", "train") is dataset
    with pytest.raises(ConfigError, match="data.cache must be one of"):
        maybe_cache(dataset, "always", "train")


def test_budget_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGLAB_CACHE_BYTES", "12345")
    assert cache_budget() == 12345
    monkeypatch.setenv("SEGLAB_CACHE_BYTES", "lots")
    with pytest.raises(ConfigError, match="must be a number of bytes, got 'lots'"):
        cache_budget()
    monkeypatch.delenv("SEGLAB_CACHE_BYTES")
    assert 0 < cache_budget() <= 4 * 2**30


def test_bad_file_fails_when_caching_naming_it(tmp_path: Path) -> None:
    root = make_synthetic(tmp_path / "ds", n_train=4, n_val=0, n_test=0, size=(32, 32))
    broken = sorted((root / "images" / "train").glob("*.png"))[2]
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    source = open_source(f"folder:{root}")
    dataset = SegmentationDataset(source.splits["train"], source.decoder, None)
    with pytest.raises(DataError, match=broken.name):
        CachedDataset(dataset)


def test_datamodule_caches_train_and_val_not_test(source) -> None:
    module = SegDataModule(source, batch_size=2, cache="on", train_transform=_transform((32, 44)))
    assert isinstance(module.train_dataloader().dataset.dataset, CachedDataset)
    assert isinstance(module.val_dataloader().dataset, CachedDataset)
    assert isinstance(module.test_dataloader().dataset, SegmentationDataset)
    assert module._loader_dataset("train") is module._loader_dataset("train")  # filled once
    plain = SegDataModule(source, batch_size=2, train_transform=_transform((32, 44)))
    assert isinstance(plain.train_dataloader().dataset.dataset, SegmentationDataset)
    for batch_a, batch_b in zip(module.train_dataloader(), plain.train_dataloader(), strict=True):
        assert all(torch.equal(a, b) for a, b in zip(batch_a, batch_b, strict=True))


def test_recipe_cache_field_reads_yaml_booleans() -> None:
    base = {"data": {"spec": "folder:x"}, "model": {"name": "unet"}}
    assert Recipe.from_dict(base).data.cache == "auto"
    for raw, mode in ((True, "on"), (False, "off"), ("off", "off")):
        recipe = Recipe.from_dict({**base, "data": {"spec": "folder:x", "cache": raw}})
        assert recipe.data.cache == mode
    with pytest.raises(ConfigError, match="cache"):
        Recipe.from_dict({**base, "data": {"spec": "folder:x", "cache": "sometimes"}})


def test_mask_ids_above_255_stay_int64(source, monkeypatch: pytest.MonkeyPatch) -> None:
    # ids that do not fit uint8 (a dataset with more than 255 classes) must not wrap around
    dataset = SegmentationDataset(source.splits["train"], source.decoder, None)
    image, _ = dataset.load_pair(0)
    big = torch.full(tuple(image.shape[1:]), 300, dtype=torch.int64)
    monkeypatch.setattr(dataset, "load_pair", lambda index: (image, big))
    cached = CachedDataset(dataset, threads=1)
    assert cached.masks[0].dtype == torch.int64
    assert torch.equal(cached[0][1], big)
