"""The data people hold: 0/255 binary masks, ADE20K trees, COCO and LabelMe polygons, GeoTIFFs.

Every dataset is written by the test into ``tmp_path``; each is opened, inspected and checked
through the library functions behind ``seglab data inspect|check``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.data.dataset import image_size, read_image
from seglab.data.formats import open_source
from seglab.data.inspect import check_source, inspect_source
from seglab.data.stats import image_mean_std
from seglab.data.transforms import BandJitter, apply_joint, train_transform
from seglab.errors import ConfigError, DataError

tifffile = pytest.importorskip("tifffile")


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _binary_tree(root: Path, n: int = 5) -> Path:
    """``folder:`` layout with masks saved as 0 (background) / 255 (a 6x8 object)."""
    for i in range(n):
        _png(root / "images" / f"im{i}.png", _rgb(12, 16, i))
        mask = np.zeros((12, 16), np.uint8)
        mask[3:9, 4 + i : 12 + i] = 255
        _png(root / "masks" / f"im{i}.png", mask)
    return root


# --- 0/255 binary masks ---------------------------------------------------------------------


def test_binary_0_255_masks_are_two_classes_with_a_note(tmp_path, caplog):
    root = _binary_tree(tmp_path / "bin")
    with caplog.at_level(logging.WARNING, logger="seglab.data.formats.remap"):
        doc = inspect_source(f"folder:{root}", split="train")
    assert doc["num_classes"] == 2
    assert [c["name"] for c in doc["classes"]] == ["background", "foreground"]
    # Foreground counted as a class, not turned into ignore (the mmseg trap).
    train = open_source(f"folder:{root}").splits["train"]
    assert doc["classes"][1]["pixels"] == 48 * len(train)
    assert doc["ignore_share"] == 0.0 and doc["warnings"] == []
    assert any("only the values 0 and 255" in n for n in doc["notes"])
    assert any("only the values 0 and 255" in r.getMessage() for r in caplog.records)
    check = check_source(f"folder:{root}")
    assert check["ok"] and check["pairs_checked"] == 5 and check["warnings"] == []
    # The explicit option gives the same decoding, without the detection note.
    explicit = open_source(f"folder:{root}", values="0,255")
    assert explicit.classmap.names == ("background", "foreground")
    assert not any("only the values" in n for n in explicit.notes)
    mask = explicit.dataset("train").load_mask(0)
    assert set(np.unique(mask).tolist()) == {0, 1}


def test_a_class_table_keeps_255_as_ignore_and_the_share_is_warned(tmp_path):
    root = _binary_tree(tmp_path / "bin")
    (root / "classes.csv").write_text("background,0,0,0\nobject,255,0,0\n")
    doc = inspect_source(f"folder:{root}")
    assert doc["num_classes"] == 2 and doc["classes"][1]["pixels"] == 0
    assert doc["ignore_share"] == pytest.approx(48 / 192)
    assert len(doc["warnings"]) == 1 and "25.0% of the mask pixels are ignore" in doc["warnings"][0]
    assert "values=0,255" in doc["warnings"][0]
    check = check_source(f"folder:{root}")
    assert check["ok"]  # not a decode problem, but said
    splits = open_source(f"folder:{root}").splits  # every split is 25% ignore
    assert [w.split(":")[1].split()[-1] for w in check["warnings"]] == list(splits)


def test_values_option_remaps_listed_raw_values_and_names_strays(tmp_path):
    root = tmp_path / "tri"
    for i in range(3):
        _png(root / "images" / f"{i}.png", _rgb(6, 6, i))
        mask = np.zeros((6, 6), np.uint8)
        mask[:, 2:4], mask[:, 4:] = 128, 255
        _png(root / "masks" / f"{i}.png", mask)
    source = open_source(f"folder:{root}", values="0,128,255")
    assert source.classmap.num_classes == 3
    assert source.dataset("train").load_mask(0)[0].tolist() == [0, 0, 1, 1, 2, 2]
    doc = check_source(f"folder:{root}", values="0,255")  # 128 is not listed
    assert not doc["ok"]
    assert any("128" in p["problem"] and p["file"] for p in doc["problems"])
    with pytest.raises(ConfigError, match="values='0'"):
        open_source(f"folder:{root}", values="0")
    with pytest.raises(ConfigError, match="both remap"):
        open_source(f"folder:{root}", values="0,255", reduce_zero_label="true")


# --- ADE20K ---------------------------------------------------------------------------------


def _ade_tree(root: Path) -> Path:
    for split, n in (("training", 3), ("validation", 2)):
        for i in range(n):
            name = f"ADE_{split[:5]}_{i:08d}"
            _png(root / "images" / split / f"{name}.png", _rgb(8, 10, i))
            mask = np.zeros((8, 10), np.uint8)
            mask[:, 3:6], mask[:, 6:] = 1, 150  # wall, flag
            _png(root / "annotations" / split / f"{name}.png", mask)
    return root


def test_ade20k_tree_reduce_zero_label(tmp_path):
    tree = _ade_tree(tmp_path / "ADEChallengeData2016")
    for root in (tree, tmp_path):  # the tree itself, or the folder holding it
        source = open_source(f"ade20k:{root}")
        assert {k: len(v) for k, v in source.splits.items()} == {"train": 3, "val": 2}
    cm = source.classmap
    assert cm.num_classes == 150 and cm.names[0] == "wall" and cm.names[-1] == "flag"
    assert cm.colors[0] == (120, 120, 120)
    row = source.dataset("val").load_mask(0)[0].tolist()
    assert row == [255] * 3 + [0] * 3 + [149] * 4  # 0 -> ignore, 1 -> wall, 150 -> flag
    doc = inspect_source(f"ade20k:{tree}")
    assert doc["ignore_share"] == pytest.approx(0.3) and doc["warnings"]  # over 20%: said
    assert check_source(f"ade20k:{tree}")["ok"]
    full = open_source(f"ade20k:{tree}", reduce_zero_label="false")
    assert full.classmap.num_classes == 151 and full.classmap.names[0] == "other"
    assert full.dataset("train").load_mask(0)[0].tolist() == [0] * 3 + [1] * 3 + [150] * 4
    _png(tree / "annotations" / "validation" / "ADE_valid_00000001.png", np.full((8, 10), 151))
    bad = check_source(f"ade20k:{tree}")
    assert not bad["ok"] and "151" in bad["problems"][0]["problem"]


def test_folder_accepts_training_validation_and_reduce_zero_label(tmp_path):
    root = _ade_tree(tmp_path / "ade_like")
    source = open_source(f"folder:{root}", reduce_zero_label="true")
    assert set(source.splits) == {"train", "val"}
    assert any("training (train)" in n for n in source.notes)
    assert source.classmap.num_classes == 150  # inferred from the largest raw value
    assert source.dataset("train").load_mask(0)[0, :4].tolist() == [255, 255, 255, 0]


# --- COCO -----------------------------------------------------------------------------------


def _coco(root: Path, name: str, images: list[tuple[int, str]], anns: list[dict]) -> Path:
    doc = {
        "images": [{"id": i, "file_name": f, "height": 20, "width": 20} for i, f in images],
        "annotations": anns,
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    path = root / "annotations" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def _square(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def test_coco_polygons_overlaps_and_crowd(tmp_path):
    pytest.importorskip("pycocotools")
    from pycocotools import mask as mask_utils

    root = tmp_path / "coco"
    for split, ids in (("train2017", (1, 2, 3)), ("val2017", (4,))):
        for i in ids:
            _png(root / split / f"{i:012d}.png", _rgb(20, 20, i))
    crowd = np.zeros((20, 20), np.uint8, order="F")
    crowd[15:, :] = 1
    rle = mask_utils.encode(crowd)
    rle["counts"] = rle["counts"].decode()
    train_anns = [
        # A large dog with a small cat on it; the cat has the lower id, so only the area rule
        # keeps it visible.
        {"id": 1, "image_id": 1, "category_id": 3, "segmentation": _square(4, 4, 8, 8),
         "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 7, "segmentation": _square(0, 0, 14, 14),
         "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 7, "segmentation": rle, "iscrowd": 1},
        {"id": 4, "image_id": 2, "category_id": 3, "segmentation": _square(2, 2, 6, 6),
         "iscrowd": 0},
    ]
    _coco(root, "instances_train2017.json",
          [(i, f"{i:012d}.png") for i in (1, 2, 3)], train_anns)
    _coco(root, "instances_val2017.json", [(4, "000000000004.png")],
          [{"id": 9, "image_id": 4, "category_id": 7, "segmentation": _square(1, 1, 9, 9)}])
    source = open_source(f"coco:{root}")
    assert source.classmap.names == ("background", "cat", "dog")  # category id order
    assert {k: len(v) for k, v in source.splits.items()} == {"train": 3, "val": 1}
    mask = source.dataset("train").load_mask(0)
    assert mask[6, 6] == 1 and mask[1, 1] == 2 and mask[18, 18] == 255 and mask[17, 1] == 255
    assert mask[0, 19] == 0
    by_order = open_source(f"coco:{root}", overlap="order").dataset("train").load_mask(0)
    assert by_order[6, 6] == 2  # annotation id order: the dog (id 2) over the cat
    as_class = open_source(f"coco:{root}", crowd="class").dataset("train").load_mask(0)
    assert as_class[18, 18] == 2
    skipped = open_source(f"coco:{root}", crowd="skip").dataset("train").load_mask(0)
    assert skipped[18, 18] == 0
    doc = inspect_source(f"coco:{root}")
    assert any("1 crowd regions" in n for n in doc["notes"])
    assert any("1 images without annotations" in n for n in doc["notes"])
    assert doc["classes"][1]["pixels"] > 0 and doc["classes"][2]["pixels"] > 0
    assert check_source(f"coco:{root}")["ok"]


def test_coco_problems_are_listed(tmp_path):
    pytest.importorskip("pycocotools")
    root = tmp_path / "coco"
    _png(root / "images" / "a.png", _rgb(20, 20, 0))
    _coco(root, "labels.json", [(1, "a.png"), (2, "missing.png")], [
        {"id": 1, "image_id": 1, "category_id": 3, "segmentation": [[1, 1, 5, 1]]},
        {"id": 2, "image_id": 1, "category_id": 99, "segmentation": _square(0, 0, 2, 2)},
    ])
    doc = check_source(f"coco:{root}", val_fraction=0, test_fraction=0)
    texts = [p["problem"] for p in doc["problems"]]
    assert any("missing.png" in t for t in texts)
    assert any("category_id 99" in t for t in texts)
    assert any("annotation 1" in t and "at least 3 points" in t for t in texts)


# --- LabelMe --------------------------------------------------------------------------------


def _labelme(path: Path, image: str, shapes: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": "5.4.1", "shapes": shapes, "imagePath": image,
                                "imageData": None, "imageHeight": 16, "imageWidth": 16}))


def test_labelme_shapes_rasterised_in_file_order(tmp_path):
    root = tmp_path / "lm"
    for split, n in (("train", 3), ("val", 1)):
        for i in range(n):
            _png(root / split / f"img{i}.png", _rgb(16, 16, i))
            _labelme(root / split / f"img{i}.json", f"img{i}.png", [
                {"label": "road", "points": [[0, 0], [15, 0], [15, 15], [0, 15]],
                 "shape_type": "polygon"},
                {"label": "car", "points": [[2, 2], [6, 6]], "shape_type": "rectangle"},
                {"label": "sign", "points": [[12, 12], [12, 14]], "shape_type": "circle"},
                {"label": "__ignore__", "points": [[8, 0], [10, 0], [10, 3], [8, 3]],
                 "shape_type": "polygon"},
                {"label": "lane", "points": [[0, 8], [15, 8]], "shape_type": "line"},
            ])
    source = open_source(f"labelme:{root}")
    # Class list from the files: background first, then the labels sorted by name.
    assert source.classmap.names == ("background", "car", "road", "sign")
    assert {k: len(v) for k, v in source.splits.items()} == {"train": 3, "val": 1}
    mask = source.dataset("train").load_mask(0)
    assert mask[4, 4] == 1 and mask[10, 2] == 2 and mask[12, 12] == 3
    assert mask[1, 9] == 255 and mask[1, 11] == 2  # __ignore__ drawn after the road
    assert any("skipped shapes without area: 4 line" in n for n in source.notes)
    by_area = open_source(f"labelme:{root}", overlap="area").dataset("val").load_mask(0)
    assert by_area[4, 4] == 1 and by_area[10, 2] == 2
    assert check_source(f"labelme:{root}")["ok"]
    doc = inspect_source(f"labelme:{root}")
    assert doc["classes"][2]["pixels"] > doc["classes"][1]["pixels"] > 0


def test_labelme_label_list_and_missing_image(tmp_path):
    root = tmp_path / "lm"
    (root).mkdir()
    (root / "labels.txt").write_text("__ignore__\n_background_\nperson\ncar\n")
    _png(root / "a.png", _rgb(16, 16, 0))
    _labelme(root / "a.json", "a.png", [
        {"label": "car", "points": [[0, 0], [8, 8]], "shape_type": "rectangle"},
    ])
    _labelme(root / "b.json", "b.png", [])
    source = open_source(f"labelme:{root}", strict=False, val_fraction=0, test_fraction=0)
    assert source.classmap.names == ("background", "person", "car")
    assert any("image not found for" in p and "b.json" in p for p in source.problems)
    assert source.dataset("train").load_mask(0)[4, 4] == 2


# --- GeoTIFF --------------------------------------------------------------------------------


def _tiff_tree(root: Path, bands: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            img = rng.integers(0, 65536, (bands, 10, 14), dtype=np.uint16)
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(root / "images" / split / f"t{i}.tif", img, photometric="minisblack",
                             planarconfig="separate")
            _png(root / "masks" / split / f"t{i}.png", (img[-1] > 32767).astype(np.uint8))
    return root


def test_geotiff_folder_inspected_and_checked(tmp_path):
    root = _tiff_tree(tmp_path / "geo")
    doc = inspect_source(f"folder:{root}")
    assert doc["bands"]["bands"] == 4 and doc["image_sizes"] == [
        {"height": 10, "width": 14, "count": 6}
    ]
    # The documented uint16 rule (v / 257, rounded), then the mean over the 4 train images.
    raws = [tifffile.imread(p) for p in sorted((root / "images" / "train").glob("*.tif"))]
    scaled = np.stack([np.rint(r / 257.0) for r in raws]) / 255.0
    assert doc["bands"]["mean"] == pytest.approx(scaled.mean(axis=(0, 2, 3)), abs=1e-4)
    assert doc["bands"]["std"] == pytest.approx(scaled.std(axis=(0, 2, 3)), abs=1e-4)
    assert any(n.startswith("4 bands, per-band mean") for n in doc["notes"])
    assert check_source(f"folder:{root}")["ok"]
    image = read_image(root / "images" / "train" / "t0.tif")
    assert image.shape == (4, 10, 14) and image.dtype == torch.uint8
    assert image_size(root / "images" / "train" / "t0.tif") == (10, 14)


def test_tiff_layouts_and_value_rules(tmp_path):
    rng = np.random.default_rng(1)
    bands = rng.integers(0, 256, (5, 6, 7), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "sep.tif", bands, photometric="minisblack",
                     planarconfig="separate")
    tifffile.imwrite(tmp_path / "contig.tif", np.moveaxis(bands, 0, -1),
                     photometric="minisblack", planarconfig="contig")
    assert torch.equal(read_image(tmp_path / "sep.tif"), torch.from_numpy(bands))
    assert torch.equal(read_image(tmp_path / "contig.tif"), torch.from_numpy(bands))
    # 12-bit data in 16-bit files: MaxSampleValue (tag 281) is the full scale.
    twelve = np.full((2, 3, 4), 4095, np.uint16)
    tifffile.imwrite(tmp_path / "12bit.tif", twelve, photometric="minisblack",
                     planarconfig="separate", extratags=[(281, "H", 1, 4095, True)])
    assert read_image(tmp_path / "12bit.tif").unique().tolist() == [255]
    tifffile.imwrite(tmp_path / "float.tif", np.full((4, 4), 0.5, np.float32))
    grey = read_image(tmp_path / "float.tif")
    assert grey.shape == (3, 4, 4) and grey.unique().tolist() == [128]  # 1 band read as 3
    rgba = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    assert read_image(tmp_path / "rgba.tif").shape == (3, 6, 7)  # alpha dropped
    tifffile.imwrite(tmp_path / "dem.tif", np.full((4, 4), 312.5, np.float32))
    with pytest.raises(DataError, match=r"dem.tif: float TIFF with values 312.5"):
        read_image(tmp_path / "dem.tif")
    tifffile.imwrite(tmp_path / "neg.tif", np.full((4, 4), -3, np.int16))
    with pytest.raises(DataError, match="negative values"):
        read_image(tmp_path / "neg.tif")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError, match="broken.tif"):
        read_image(tmp_path / "broken.tif")


def test_mean_std_refuses_mixed_band_counts(tmp_path):
    root = _tiff_tree(tmp_path / "geo")
    tifffile.imwrite(root / "images" / "train" / "t1.tif", np.zeros((3, 10, 14), np.uint8),
                     photometric="rgb", planarconfig="separate")
    with pytest.raises(DataError, match="t1.tif has 3 bands but .*t0.tif has 4"):
        image_mean_std(open_source(f"folder:{root}").dataset("train"))


def test_augmentation_runs_on_any_band_count():
    torch.manual_seed(0)
    transform = train_transform((8, 8), scale_range=(0.5, 1.5), rotation=10, brightness=0.4,
                                saturation=0.4, noise_sigma=2)
    for bands in (1, 3, 4, 12):
        image = torch.randint(0, 256, (bands, 11, 13), dtype=torch.uint8)
        out, mask = apply_joint(transform, image, torch.zeros(11, 13, dtype=torch.int64))
        assert out.shape == (bands, 8, 8) and out.dtype == torch.uint8 and mask.shape == (8, 8)
    # Off RGB, brightness scales every band by one factor (band ratios kept).
    image = torch.full((4, 5, 5), 100, dtype=torch.uint8)
    image[3] = 50
    jitter = BandJitter(brightness=0.5, saturation=0.5)
    for _ in range(5):
        out, _ = jitter(image, torch.zeros(5, 5, dtype=torch.int64))
        assert out[0, 0, 0] >= 50 and torch.equal(out[:3], out[:1].expand(3, 5, 5))
        assert abs(int(out[3, 0, 0]) * 2 - int(out[0, 0, 0])) <= 1


def test_data_check_prints_the_ignore_warning(tmp_path):
    from typer.testing import CliRunner

    from seglab.cli.main import app

    root = _binary_tree(tmp_path / "bin")
    (root / "classes.csv").write_text("background,0,0,0\nobject,255,0,0\n")
    result = CliRunner().invoke(app, ["data", "check", f"folder:{root}"])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "are ignore" in result.output
