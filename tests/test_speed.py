"""Defaults that fit the data: the train crop is capped at the images, and the speed report."""

from __future__ import annotations

import io
import itertools
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2

from seglab.config import Recipe
from seglab.data.formats import open_source
from seglab.data.synthetic import make_synthetic
from seglab.engine.run_plan import train_crop as _train_crop
from seglab.engine.speed import SpeedReport, crop_for_images, training_image_size
from seglab.engine.training import _datamodule


def _images(folder: Path, sizes: list[tuple[int, int]]) -> list[tuple[Path, Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i, (h, w) in enumerate(sizes):
        path = folder / f"{i}.png"
        Image.fromarray(np.zeros((h, w, 3), dtype=np.uint8)).save(path)
        pairs.append((path, path))
    return pairs


def test_crop_is_capped_at_the_largest_image_with_its_cost(tmp_path):
    pairs = _images(tmp_path, [(96, 128), (80, 140)])
    assert training_image_size(pairs) == (96, 140)
    with pytest.warns(UserWarning, match=r"crops 96x140 instead.*cost 19\.5x the pixels"):
        assert crop_for_images((512, 512), None, pairs) == (96, 140)
    with pytest.warns(UserWarning, match="augment.resize"):
        assert crop_for_images((512, 512), (64, 80), pairs) == (64, 80)


def test_a_crop_that_fits_is_kept_silently(tmp_path):
    pairs = _images(tmp_path, [(96, 128)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert crop_for_images((96, 64), None, pairs) == (96, 64)
        assert crop_for_images(None, None, pairs) is None
        assert crop_for_images((512, 512), None, []) == (512, 512)  # no images to go by


def test_training_uses_the_capped_crop(tmp_path):
    root = make_synthetic(tmp_path / "synthetic", n_train=3, n_val=1, n_test=1, size=(32, 40),
                          num_classes=3)
    recipe = Recipe.from_dict({
        "name": "t", "data": {"spec": f"folder:{root}", "batch_size": 2, "num_workers": 0},
        "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
    })
    assert recipe.augment.crop_size == (512, 512)  # the default, far larger than 32x40
    source = open_source(recipe.data.spec)
    with pytest.warns(UserWarning, match="32x40"):
        datamodule = _datamodule(recipe, source, _train_crop(recipe, source))
    crops = [t for t in datamodule.train_transform.transforms if isinstance(t, v2.RandomCrop)]
    assert [tuple(c.size) for c in crops] == [(32, 40)]


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(report: SpeedReport, batches: int) -> None:
    data = TensorDataset(torch.randn(2 * batches, 4), torch.randn(2 * batches, 1))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[report], accelerator="cpu")
    trainer.fit(_Tiny(), DataLoader(data, batch_size=2))


def test_speed_report_gives_images_per_second_and_the_epoch_estimate():
    stream = io.StringIO()
    # A clock that advances 0.5 s per reading: start after batch 1, stop after batch 6.
    report = SpeedReport(warmup=1, batches=5, stream=stream,
                         clock=itertools.count(0.0, 0.5).__next__)
    _fit(report, batches=8)
    assert report.images_per_s == pytest.approx(10 / 0.5)  # 5 batches of 2 in 0.5 s
    assert report.epoch_s == pytest.approx(8 * 0.5 / 5)
    text = stream.getvalue()
    assert text.count("speed:") == 1
    assert "20.0 images/s" in text and "one epoch (8 batches)" in text


def test_speed_report_on_an_epoch_shorter_than_the_window():
    report = SpeedReport(warmup=1, batches=5, stream=io.StringIO(),
                         clock=itertools.count(0.0, 1.0).__next__)
    _fit(report, batches=3)  # batches 2 and 3 are timed, reported at the epoch's end
    assert report.images_per_s == pytest.approx(4 / 1.0)
    assert report.epoch_s == pytest.approx(3 * 1.0 / 2)
