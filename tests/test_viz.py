"""seglab.viz: colourised masks, overlays and panels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.data.classes import ClassMap
from seglab.errors import DataError
from seglab.viz import classes_present, colorize, overlay, panel, to_rgb_image

CLASSMAP = ClassMap(("sky", "road", "car"), ((128, 128, 128), (128, 64, 128), (64, 0, 128)))


def test_colorize_maps_each_id_to_its_colour_and_ignore_to_black():
    mask = np.array([[0, 1], [2, 255]])
    rgb = colorize(mask, CLASSMAP.palette(), ignore_index=255)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [128, 128, 128]
    assert rgb[0, 1].tolist() == [128, 64, 128]
    assert rgb[1, 0].tolist() == [64, 0, 128]
    assert rgb[1, 1].tolist() == [0, 0, 0]


def test_colorize_accepts_tensors_classmaps_and_a_chosen_ignore_colour():
    mask = torch.tensor([[1, 255]])
    rgb = colorize(mask, CLASSMAP, ignore_color=(255, 255, 255))
    assert rgb[0, 0].tolist() == [128, 64, 128]
    assert rgb[0, 1].tolist() == [255, 255, 255]


def test_colorize_refuses_ids_outside_the_classes():
    with pytest.raises(DataError, match=r"\[7\]"):
        colorize(np.array([[0, 7]]), CLASSMAP.palette())
    with pytest.raises(DataError, match="integer"):
        colorize(np.zeros((2, 2), dtype=np.float32), CLASSMAP.palette())


def test_overlay_blends_by_alpha_and_keeps_ignored_pixels():
    image = np.full((1, 3, 3), 200, dtype=np.uint8)
    mask = np.array([[0, 2, 255]])
    assert (overlay(image, mask, CLASSMAP, alpha=0.0) == image).all()
    full = overlay(image, mask, CLASSMAP, alpha=1.0)
    assert full[0, 1].tolist() == [64, 0, 128]
    half = overlay(image, mask, CLASSMAP, alpha=0.5)
    assert half[0, 1].tolist() == [132, 100, 164]
    assert half[0, 2].tolist() == [200, 200, 200]  # ignore shows the image


def test_overlay_takes_chw_tensors_and_checks_sizes():
    image = torch.zeros(3, 4, 5, dtype=torch.uint8)
    out = overlay(image, torch.zeros(4, 5, dtype=torch.int64), CLASSMAP, alpha=0.5)
    assert out.shape == (4, 5, 3)
    with pytest.raises(DataError, match="sizes must match"):
        overlay(image, np.zeros((5, 4), dtype=np.int64), CLASSMAP)


def test_to_rgb_image_scales_floats():
    rgb = to_rgb_image(torch.ones(3, 2, 2) * 0.5)
    assert rgb.dtype == np.uint8 and rgb[0, 0].tolist() == [128, 128, 128]


def test_classes_present_ignores_ignore_index():
    masks = [np.array([[0, 255]]), np.array([[2, 2]])]
    assert classes_present(masks, 3) == [0, 2]


def test_panel_writes_a_png_with_one_column_per_mask(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    truth = np.zeros((60, 80), dtype=np.int64)
    truth[30:, :] = 1
    truth[0, 0] = 255
    preds = {"model a": truth.copy(), "model b": np.full((60, 80), 2)}
    out = panel(image, truth, preds, CLASSMAP, tmp_path / "sub" / "p.png", title="sample")
    assert out.exists() and not list(out.parent.glob(".*.tmp"))
    with Image.open(out) as png:
        width, height = png.size
        pixels = np.asarray(png.convert("RGB"))
    assert width == 4 * 4 * 100  # four columns of 4 inches at 100 dpi
    assert height > 3 * 100  # one row of 3-inch-high pictures plus titles and legend
    # The car colour of "model b" must appear in the picture, not just in the legend.
    car = (pixels == np.array([64, 0, 128])).all(-1)
    assert car.sum() > 60 * 80 * 0.5


def test_panel_without_truth_and_with_overlay(tmp_path):
    image = torch.zeros(3, 20, 20, dtype=torch.uint8)
    out = panel(image, None, {"pred": torch.ones(20, 20, dtype=torch.int64)}, CLASSMAP,
                tmp_path / "p.png", alpha=0.5)
    with Image.open(out) as png:
        assert png.size[0] == 2 * 4 * 100


def test_panel_refuses_mismatched_masks(tmp_path):
    with pytest.raises(DataError, match="pred"):
        panel(np.zeros((10, 10, 3), np.uint8), None, {"pred": np.zeros((5, 5), np.int64)},
              CLASSMAP, tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()
