"""Bad input: each case gives a clear DataError naming the file and what is wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.data.dataset import read_image
from seglab.data.formats import open_source
from seglab.data.inspect import check_source
from seglab.errors import DataError


def _tree(root, n=3, mask=None, size=(8, 10)):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((*size, 3), 40 * i, np.uint8)).save(root / "images" / f"p{i}.png")
        m = np.zeros(size, np.uint8) if mask is None else mask
        Image.fromarray(m).save(root / "masks" / f"p{i}.png")
    (root / "classes.csv").write_text("name,r,g,b\nbg,0,0,0\nfg,255,255,255\n")
    return root


def test_corrupt_image(tmp_path):
    root = _tree(tmp_path)
    (root / "images" / "p1.png").write_bytes(b"this is not an image")
    ds = open_source(f"folder:{root}", val_fraction=0, test_fraction=0).dataset("train")
    index = [p[0].name for p in ds.pairs].index("p1.png")
    with pytest.raises(DataError, match=r"p1\.png: cannot decode image"):
        ds[index]


def test_truncated_png(tmp_path):
    path = tmp_path / "t.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"t\.png"):
        read_image(path)


def test_size_mismatch(tmp_path):
    root = _tree(tmp_path)
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(root / "masks" / "p0.png")
    ds = open_source(f"folder:{root}", val_fraction=0, test_fraction=0).dataset("train")
    index = [p[0].name for p in ds.pairs].index("p0.png")
    with pytest.raises(DataError, match=r"size mismatch: image .*p0\.png is 10x8 .* is 5x4"):
        ds[index]


def test_unknown_colour_names_file_colour_and_count(tmp_path):
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[0, :3] = (1, 2, 3)
    root = _tree(tmp_path, mask=rgb)
    (root / "classes.csv").write_text("name,r,g,b\nbg,0,0,0\nfg,255,0,0\n")
    ds = open_source(f"folder:{root}").dataset("train")
    with pytest.raises(
        DataError, match=r"p\d\.png: colour\(s\) not in the class table: RGB\(1, 2, 3\) \(3 px\)"
    ):
        ds.load_mask(0)


def test_out_of_range_id(tmp_path):
    mask = np.zeros((8, 10), np.uint8)
    mask[1, 1:5] = 7
    root = _tree(tmp_path, mask=mask)
    with pytest.raises(DataError, match=r"p\d\.png: class id\(s\) outside 0\.\.1 .*: 7 \(4 px\)"):
        open_source(f"folder:{root}").dataset("train").load_mask(0)


def test_image_without_mask_is_reported(tmp_path):
    root = _tree(tmp_path)
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(root / "images" / "lonely.png")
    with pytest.raises(DataError, match=r"image without mask: .*lonely\.png"):
        open_source(f"folder:{root}")
    report = check_source(f"folder:{root}")
    assert not report["ok"] and any("lonely.png" in p["problem"] for p in report["problems"])


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="empty"):
        open_source(f"folder:{tmp_path}")


def test_16bit_mask(tmp_path):
    root = _tree(tmp_path)
    Image.fromarray(np.full((8, 10), 300, np.uint16)).save(root / "masks" / "p0.png")
    with pytest.raises(DataError, match=r"p0\.png: I;16.* mask \(16-bit values\)"):
        open_source(f"folder:{root}", val_fraction=0, test_fraction=0).dataset("train").load_mask(0)


def test_rgba_and_grey_images_become_rgb(tmp_path):
    rgba = np.zeros((8, 10, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    Image.fromarray(rgba).save(tmp_path / "a.png")
    Image.fromarray(np.full((8, 10), 77, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.full((8, 10, 3), 9, np.uint8)).save(tmp_path / "b.bmp")
    a, g, b = (read_image(tmp_path / n) for n in ("a.png", "g.png", "b.bmp"))
    assert a.shape == g.shape == b.shape == (3, 8, 10) and a.dtype == torch.uint8
    assert a[0].unique().tolist() == [200] and g.unique().tolist() == [77]


def test_exif_orientation_honoured(tmp_path):
    im = Image.fromarray(np.zeros((8, 10, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    im.save(tmp_path / "r.jpg", exif=exif)
    assert read_image(tmp_path / "r.jpg").shape == (3, 10, 8)


def test_unreadable_class_table(tmp_path):
    root = _tree(tmp_path)
    (root / "classes.csv").write_bytes(b"name,r,g,b\nbg,0,zero,0\n")
    with pytest.raises(DataError, match=r"classes\.csv line 2: colour is not 3 integers"):
        open_source(f"folder:{root}")
    (root / "classes.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match=r"cannot read class table .*classes\.csv"):
        open_source(f"folder:{root}")


def test_check_reports_all_problems_at_once(tmp_path):
    root = _tree(tmp_path, n=4)
    (root / "images" / "p0.png").write_bytes(b"junk")
    Image.fromarray(np.full((8, 10), 9, np.uint8)).save(root / "masks" / "p1.png")
    report = check_source(f"folder:{root}")
    assert report["pairs_checked"] == 4 and len(report["problems"]) == 2
