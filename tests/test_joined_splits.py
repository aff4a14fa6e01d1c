"""``data.train_split: train+val``: train on several splits joined (a final model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from seglab.artifacts import rundir
from seglab.config import Recipe
from seglab.data.formats import open_source
from seglab.data.synthetic import make_synthetic
from seglab.engine.training import train_one
from seglab.errors import DataError


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synthetic"
    return make_synthetic(root, n_train=4, n_val=3, n_test=2, size=(32, 32), num_classes=3)


def test_join_splits_concatenates_in_order(data: Path) -> None:
    source = open_source(f"folder:{data}")
    source.join_splits("train+val")
    assert source.splits["train+val"] == source.splits["train"] + source.splits["val"]
    source.join_splits("train")  # a plain name is left alone
    assert set(source.splits) == {"train", "val", "test", "train+val"}


@pytest.mark.parametrize(("name", "message"), [
    ("train+extra", "no split 'extra'; splits: train, val, test"),
    ("train+train", "a part repeats"),
])
def test_join_splits_errors_name_the_problem(data: Path, name: str, message: str) -> None:
    source = open_source(f"folder:{data}")
    with pytest.raises(DataError, match=message):
        source.join_splits(name)
    assert name not in source.splits


def test_training_on_train_plus_val_without_validation(data: Path, tmp_path: Path) -> None:
    recipe = Recipe.from_dict({
        "name": "trainval",
        "data": {"spec": f"folder:{data}", "batch_size": 2, "num_workers": 0,
                 "train_split": "train+val", "val_split": None},
        "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
        "augment": {"crop_size": [32, 32]},
        "trainer": {"max_epochs": 1, "progress": False, "precision": "fp32"},
    })
    metrics = train_one(recipe, tmp_path / "run").metrics
    assert metrics["split"] == "test"
    # 7 joined samples in batches of 2 (the last single one dropped): 3 steps, where the
    # train split alone (4 samples) would give 2
    checkpoint = rundir.read_checkpoint(rundir.checkpoint_path(tmp_path / "run", rundir.LAST))
    assert checkpoint["global_step"] == 3
    assert (tmp_path / "run" / "model").is_dir()
