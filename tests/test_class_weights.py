"""Class weights: the studies' absent-class rules, one median frequency for inspect and training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from seglab.cli.main import app
from seglab.config import Recipe
from seglab.data.stats import PixelStats, class_weights
from seglab.engine import fit
from seglab.errors import ConfigError

# Four classes over 4 images of 100 pixels: class 3 never appears.
COUNTS = np.array([700, 200, 100, 0])
PRESENT_PIXELS = np.array([400, 200, 400, 0])  # class 1 lives in 2 images, classes 0, 2 in all
STATS = PixelStats(COUNTS, 0, PRESENT_PIXELS, np.array([4, 2, 4, 0]), 4)


def test_absent_classes_follow_the_32_class_camvid_study() -> None:
    f = COUNTS / 1000
    linear = class_weights(STATS, "camvid_linear", X=80, Y=7).numpy()
    np.testing.assert_allclose(linear, [80 - 70, 80 - 20, 80 - 10, 7], rtol=1e-6)
    ratio = class_weights(STATS, "camvid_ratio", X=2, Y=1).numpy()
    np.testing.assert_allclose(ratio, [*(2 * 0.7 - f[:3]), 2 * 0.7], rtol=1e-6)
    # absent_weight is the explicit override, for every strategy.
    np.testing.assert_allclose(class_weights(STATS, "camvid_ratio", X=2, Y=1, absent_weight=0)
                               .numpy()[3], 0)
    assert class_weights(STATS, "camvid_linear", X=80, absent_weight=5).numpy()[3] == 5
    with pytest.raises(ConfigError, match=r"weight Y .*1 are absent \(road\)"):
        class_weights(STATS, "camvid_linear", X=80, names=["a", "b", "c", "road"])
    with pytest.raises(ConfigError, match="negative weight"):
        class_weights(STATS, "camvid_linear", X=80, Y=-1)
    # Without an absent class Y is not needed.
    assert class_weights(COUNTS[:3], "camvid_linear", X=80).shape == (3,)


@pytest.mark.parametrize(
    ("strategy", "params"),
    [("inverse", {}), ("median_frequency", {}), ("enet", {}), ("effective_number", {})],
)
def test_other_strategies_give_absent_classes_zero(strategy: str, params: dict) -> None:
    weights = class_weights(STATS, strategy, **params).numpy()
    assert weights[3] == 0 and (weights[:3] > 0).all()
    assert class_weights(STATS, "none").tolist() == [1, 1, 1, 1]


def test_median_frequency_is_eigen_and_fergus() -> None:
    # freq_c = n_c / pixels of the images containing c = (1.75, 1.0, 0.25); median 1.0.
    weights = class_weights(STATS, "median_frequency").numpy()
    np.testing.assert_allclose(weights, [1 / 1.75, 1.0, 4.0, 0.0], rtol=1e-6)
    # Plain counts cannot give it (no per-image presence): an error, not the global share.
    with pytest.raises(ConfigError, match="PixelStats"):
        class_weights(COUNTS, "median_frequency")


def _inspect(
    spec: str, strategy: str | None = None, params: tuple[str, ...] = (), **options: object
) -> dict:
    """The ``seglab data inspect --json`` document."""
    args = ["data", "inspect", spec, "--json"]
    if strategy:
        args += ["--weights", strategy]
    for p in params:
        args += ["--weight-param", p]
    for key, value in options.items():
        args += ["-o", f"{key}={value}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _weights(doc: dict) -> np.ndarray:
    return np.array(doc["weights"]["values"])


def test_camseq01_absent_classes_through_inspect(shared_data: Path) -> None:
    spec = f"camvid:{shared_data / 'camseq01-sample'}"
    classes = _inspect(spec)["classes"]
    counts = np.array([c["pixels"] for c in classes])
    absent = counts == 0
    assert len(classes) == 31 and int(absent.sum()) == 9  # the count (train split)
    ratio = _weights(_inspect(spec, "camvid_ratio", ("X=2", "Y=1")))
    np.testing.assert_allclose(ratio[absent], 2 * counts.max() / counts.sum(), rtol=1e-5)
    np.testing.assert_allclose(ratio[~absent], 2 * counts.max() / counts.sum()
                               - counts[~absent] / counts.sum(), rtol=1e-5)
    linear = _weights(_inspect(spec, "camvid_linear", ("X=60", "Y=12")))
    np.testing.assert_allclose(linear[absent], 12)
    override = _weights(_inspect(spec, "camvid_linear", ("X=60", "absent_weight=0")))
    np.testing.assert_allclose(override[absent], 0)
    np.testing.assert_allclose(override[~absent], linear[~absent])


def test_training_stores_the_median_frequency_weights_inspect_shows(
    shared_data: Path, tmp_path: Path
) -> None:
    options = {"val_fraction": 0.15, "test_fraction": 0.15, "seed": 0}
    spec = f"camvid:{shared_data / 'camvid32-tiny'}"
    recipe = Recipe.from_dict({
        "name": "weights",
        "data": {"spec": spec, "options": options, "batch_size": 4, "num_workers": 0},
        "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
        "augment": {"crop_size": [64, 64]},
        "loss": {"class_weights": "median_frequency"},
        "trainer": {"max_epochs": 1, "limit_train_batches": 1, "progress": False},
    })
    run = fit(recipe, tmp_path / "run")
    checkpoint = torch.load(
        run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    stored = np.array(checkpoint["hyper_parameters"]["class_weights"])
    doc = _inspect(spec, "median_frequency", **options)
    np.testing.assert_allclose(stored, _weights(doc), rtol=1e-5, atol=1e-6)
    # Not the global-share formula training used to apply (Eigen & Fergus differ here: many
    # classes live in few images).
    counts = np.array([c["pixels"] for c in doc["classes"]])
    share, present = counts / counts.sum(), counts > 0
    global_share = np.zeros_like(share)
    global_share[present] = np.median(share[present]) / share[present]
    assert np.abs(stored - global_share).max() > 1.0
