"""A 4-band GeoTIFF dataset end to end: inspect -> per-band mean/std in the recipe -> one epoch
with a 4-band model -> evaluation and prediction on 4-band files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.config import Recipe
from seglab.data.inspect import inspect_source
from seglab.errors import ConfigError, SeglabError
from seglab.models import build_model

tifffile = pytest.importorskip("tifffile")


def _four_band_tree(root: Path) -> Path:
    """uint16 RGB + near-infrared tiles; the class is 'vegetation' where NIR is high."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 20000, (4, 24, 32), dtype=np.uint16)
            img[3, :, 16:] += 40000  # right half: high NIR
            tifffile.imwrite(root / "images" / split / f"tile{i}.tif", img,
                             photometric="minisblack", planarconfig="separate")
            Image.fromarray((img[3] > 30000).astype(np.uint8)).save(
                root / "masks" / split / f"tile{i}.png")
    (root / "classes.csv").write_text("other,0,0,0\nvegetation,0,200,0\n")
    return root


def test_four_band_tiffs_train_evaluate_and_predict(tmp_path):
    from seglab.engine import evaluate, fit
    from seglab.predict.files import predict_paths
    from seglab.predict.predictor import Predictor

    root = _four_band_tree(tmp_path / "tiles")
    bands = inspect_source(f"folder:{root}")["bands"]
    assert bands["bands"] == 4 and bands["mean"][3] > bands["mean"][0]
    recipe = Recipe.from_dict({
        "data": {"spec": f"folder:{root}", "mean": bands["mean"], "std": bands["std"],
                 "batch_size": 2, "eval_batch_size": 2, "num_workers": 0},
        "augment": {"crop_size": [24, 32], "scale_range": [0.75, 1.25], "brightness": 0.2,
                    "saturation": 0.2, "rotation": 5},
        "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2, "in_chans": 4}},
        "optim": {"lr": 0.01},
        "eval": {"num_panels": 1},
        "trainer": {"max_epochs": 1, "progress": False, "precision": "fp32",
                    "channels_last": False},
    })
    run = fit(recipe, run_dir=tmp_path / "run")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_images"] == 2
    assert 0.0 <= metrics["miou"] <= 1.0
    config = json.loads((run / "model" / "config.json").read_text())
    assert json.dumps(config).count('"in_chans": 4') >= 1
    assert list((run / "panels").glob("*.png"))  # panels drawn from the first three bands

    doc = evaluate(run, split="val", num_workers=0)
    assert doc["num_images"] == 2 and doc["num_pixels"] == 2 * 24 * 32

    predictor = Predictor(run)
    mask = predictor.predict(root / "images" / "test" / "tile0.tif")
    assert mask.shape == (24, 32) and set(np.unique(mask).tolist()) <= {0, 1}
    summary = predict_paths(predictor, [root / "images" / "test"], tmp_path / "pred",
                            save=("mask", "overlay"))
    assert summary.ok and summary.to_dict()["num_images"] == 2
    overlay = np.asarray(Image.open(summary.items[0]["outputs"]["overlay"]))
    assert overlay.shape == (24, 32, 3)

    # An RGB file for a 4-band model is a clear error, not a shape crash.
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(rgb)
    with pytest.raises((ConfigError, SeglabError), match="3 channels but mean has 4"):
        predictor.predict(rgb)


def test_encdec_and_timm_models_take_in_chans():
    for name, options in (
        ("resnet18_encdec", {"decoder_channels": [8, 8, 8, 8, 8]}),
        ("pspnet", {"backbone": "resnet18", "head_channels": 8, "aux": False}),
    ):
        model = build_model(name, 2, in_chans=4, **options).eval()
        assert model.seglab_spec["options"]["in_chans"] == 4
        with torch.no_grad():
            assert model(torch.randn(1, 4, 33, 47))["out"].shape == (1, 2, 33, 47)
