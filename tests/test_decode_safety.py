"""Hostile and unusual image/mask files: a clear DataError naming the file, or a correct decode.

Cases from the reliability issue: 16-bit PNG photos, EXIF-rotated images and masks, a
14000x14000 mask (decompression bomb), running out of memory, truncated, mutated (the kind
that crashes torchvision's native PNG decoder), non-image bytes and empty files; and
``data check`` flagging exactly the files the loaders fail on.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from seglab.data import decode
from seglab.data.containers import probe
from seglab.data.dataset import image_size, read_image
from seglab.data.formats import open_source
from seglab.data.inspect import check_source
from seglab.data.masks import read_mask_array
from seglab.errors import DataError


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bytes(width: int, height: int, *, depth: int = 8, colour: int = 2, rows=None,
              level: int = 6) -> bytes:
    """A PNG written by hand (valid CRCs and zlib stream); ``rows`` yields filtered rows."""
    channels = {0: 1, 2: 3, 6: 4}[colour]
    if rows is None:
        zero = b"\x00" * (1 + width * channels * depth // 8)
        rows = (zero for _ in range(height))
    packer = zlib.compressobj(level)
    idat = b"".join(packer.compress(r) for r in rows) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def bad_filter_png() -> bytes:
    """CRCs and zlib stream intact, row 20 has filter type 5: SIGSEGV in torchvision 0.29."""
    rng = np.random.default_rng(0)
    rows = [bytes([5 if y == 20 else 0]) + rng.integers(0, 256, 64 * 3, np.uint8).tobytes()
            for y in range(48)]
    return png_bytes(64, 48, rows=rows)


def _photo(h: int = 24, w: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], -1).astype(np.uint8)


def _with_exif(arr: np.ndarray, fmt: str, orientation: int, **kw) -> bytes:
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, fmt, exif=exif, **kw)
    return buf.getvalue()


def _run_isolated(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


# -- 16-bit --------------------------------------------------------------------------------


def test_16bit_rgb_png_photo_becomes_8bit_high_byte(tmp_path):
    # torchvision's decoder gave uint16 here ("Promotion for uint16" later in training).
    values = np.random.default_rng(1).integers(0, 65536, (6, 8, 3)).astype(">u2")
    rows = (b"\x00" + values[y].tobytes() for y in range(6))
    path = tmp_path / "photo16.png"
    path.write_bytes(png_bytes(8, 6, depth=16, rows=rows))
    image = read_image(path)
    assert image.dtype == torch.uint8 and image.shape == (3, 6, 8)
    assert torch.equal(image, torch.from_numpy((values >> 8).astype(np.uint8)).permute(2, 0, 1))
    # Same pixels as Pillow reads them (it keeps the high byte of 16-bit colour PNGs).
    with Image.open(path) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), image.permute(1, 2, 0).numpy())


def test_16bit_grey_png_goes_through_the_training_pipeline(tmp_path):
    from seglab.data.transforms import normalize, train_transform

    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    grey = (np.arange(96 * 128, dtype=np.uint32).reshape(96, 128) * 5).astype(np.uint16)
    for i in range(3):
        Image.fromarray(grey).save(root / "images" / f"p{i}.png")
        Image.fromarray(np.zeros((96, 128), np.uint8)).save(root / "masks" / f"p{i}.png")
    (root / "classes.csv").write_text("name,r,g,b\nbg,0,0,0\nfg,255,255,255\n")
    assert check_source(f"folder:{root}")["ok"]
    image = read_image(root / "images" / "p0.png")
    assert image.dtype == torch.uint8 and int(image[0, -1, -1]) == (int(grey[-1, -1]) >> 8)
    ds = open_source(f"folder:{root}", val_fraction=0, test_fraction=0).dataset("train")
    ds.transform = train_transform(crop_size=(64, 64), brightness=0.2, saturation=0.2)
    out, mask = ds[0]
    assert out.shape[-2:] == mask.shape[-2:] == (64, 64)
    assert normalize(out).dtype == torch.float32


# -- EXIF orientation ----------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_exif_orientation_matches_pillow_for_every_format(tmp_path, fmt, orientation):
    kw = {"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}
    path = tmp_path / f"r{orientation}.{fmt.lower()}"
    path.write_bytes(_with_exif(_photo(), fmt, orientation, **kw))
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    image = read_image(path)
    assert np.array_equal(image.permute(1, 2, 0).numpy(), expected), (fmt, orientation)
    assert image_size(path) == expected.shape[:2]


def test_exif_rotated_webp_is_rotated_like_its_mask_and_check_reports_it(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    stored = _photo(24, 32)
    # Displayed (rotated 90 clockwise) the image is 32 high, 24 wide; the mask is drawn so.
    for i in range(3):
        (root / "images" / f"p{i}.webp").write_bytes(
            _with_exif(stored, "WEBP", 6, lossless=True))
        mask = np.zeros((32, 24), np.uint8)
        mask[:4] = 1  # top rows of the displayed image
        Image.fromarray(mask).save(root / "masks" / f"p{i}.png")
    (root / "classes.csv").write_text("name,r,g,b\nbg,0,0,0\nfg,255,255,255\n")
    ds = open_source(f"folder:{root}", val_fraction=0, test_fraction=0).dataset("train")
    image, mask = ds.load_pair(0)
    assert image.shape == (3, 32, 24) and mask.shape == (32, 24)
    assert torch.equal(image, decode.orient_tensor(torch.from_numpy(stored).permute(2, 0, 1), 6))
    report = check_source(f"folder:{root}")
    assert report["ok"]
    notes = [w for w in report["warnings"] if "EXIF orientation 6" in w]
    assert len(notes) == 3 and "p0.webp" in " ".join(notes)


def test_mask_drawn_on_stored_pixels_of_rotated_image_names_the_orientation(tmp_path):
    image = tmp_path / "a.jpg"
    image.write_bytes(_with_exif(_photo(24, 32), "JPEG", 6))
    mask = tmp_path / "a.png"
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(mask)
    from seglab.data.classes import TableRow
    from seglab.data.dataset import SegmentationDataset
    from seglab.data.masks import index_decoder

    rows = [TableRow("a", None), TableRow("b", None)]
    ds = SegmentationDataset([(image, mask)], index_decoder(rows))
    with pytest.raises(DataError, match=r"a\.jpg .*a\.png .*EXIF orientation: image rotated"):
        ds.load_pair(0)


def test_mask_exif_orientation_is_applied(tmp_path):
    ids = np.zeros((24, 32), np.uint8)
    ids[0, 0] = 1
    path = tmp_path / "m.png"
    path.write_bytes(_with_exif(ids, "PNG", 8))
    out = read_mask_array(path)
    assert out.shape == (32, 24) and out[-1, 0] == 1  # rotated 90 counter-clockwise


# -- size limits and memory ----------------------------------------------------------------


def test_14000px_mask_is_a_clear_error_not_a_decompression_bomb(tmp_path):
    path = tmp_path / "huge_mask.png"
    path.write_bytes(png_bytes(14000, 14000, colour=0, level=1))
    with pytest.raises(DataError, match=r"huge_mask\.png: mask is 14000x14000 = 196,000,000 "
                                        r"pixels, above seglab's limit .*SEGLAB_MAX_IMAGE_PIX"):
        read_mask_array(path)
    with pytest.raises(DataError, match=r"huge_mask\.png: image is 14000x14000"):
        read_image(path)


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    Image.fromarray(_photo(24, 32)).save(path)
    bmp = tmp_path / "small.bmp"
    Image.fromarray(_photo(24, 32)).save(bmp)
    monkeypatch.setenv(decode.ENV_MAX_PIXELS, "700")
    for p in (path, bmp):
        with pytest.raises(DataError, match=rf"{p.name}: image is 32x24 = 768 pixels.*700"):
            read_image(p)
    monkeypatch.setenv(decode.ENV_MAX_PIXELS, "0")
    assert decode.max_pixels() is None and read_image(path).shape == (3, 24, 32)
    monkeypatch.setenv(decode.ENV_MAX_PIXELS, "lots")
    with pytest.raises(DataError, match=r"SEGLAB_MAX_IMAGE_PIXELS='lots' is not a pixel count"):
        read_image(path)
    monkeypatch.delenv(decode.ENV_MAX_PIXELS)
    decode.set_max_pixels(100)
    try:
        with pytest.raises(DataError, match=r"small\.png: mask is 32x24"):
            read_mask_array(path)
    finally:
        decode._override.clear()
    assert decode.max_pixels() == decode.DEFAULT_MAX_PIXELS


def test_out_of_memory_names_the_file_and_size(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(8000, 8000, level=1))  # 192 MB of pixels, 190 kB of file
    result = _run_isolated(f"""
        import resource
        import torch, torchvision.io
        from seglab.data.dataset import read_image
        from seglab.errors import DataError
        size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + 120 * 2**20, resource.RLIM_INFINITY))
        try:
            read_image({str(path)!r})
        except DataError as exc:
            print("DataError:", exc)
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "DataError:" in result.stdout and "big.png: not enough memory" in result.stdout
    assert "8000x8000" in result.stdout


# -- broken files ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_truncated_file_names_the_file(tmp_path, suffix):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buf, {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP"}[suffix])
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    for reader in (read_image, read_mask_array):
        with pytest.raises(DataError, match=rf"cut\{suffix}: cannot decode"):
            reader(path)


def test_mutated_png_that_crashes_torchvision_is_a_data_error(tmp_path):
    path = tmp_path / "mutated.png"
    path.write_bytes(bad_filter_png())
    assert probe(path.read_bytes()).native is False  # PNG never reaches the native decoder
    # The same bytes straight into torchvision's decoder kill the process ...
    native = _run_isolated(f"""
        from torchvision.io import decode_image, read_file
        decode_image(read_file({str(path)!r}))
    """)
    assert native.returncode < 0, "torchvision no longer crashes here: the test input is stale"
    # ... seglab's readers report it (the fuzz test runs them in a subprocess).
    for reader in (read_image, read_mask_array):
        with pytest.raises(DataError, match=r"mutated\.png: cannot decode"):
            reader(path)


@pytest.mark.parametrize("reader", [read_image, read_mask_array, image_size])
def test_non_image_bytes_and_empty_files(tmp_path, reader):
    text = tmp_path / "notes.png"
    text.write_bytes(b"these are not the pixels you are looking for\n" * 20)
    with pytest.raises(DataError, match=r"notes\.png: cannot (decode|read)"):
        reader(text)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.jpg: (image|mask) file is empty \(0 bytes\)"):
        reader(empty)
    with pytest.raises(DataError, match=r"file not found: .*missing\.png"):
        reader(tmp_path / "missing.png")


# -- data check agrees with the loaders ------------------------------------------------------


def test_check_flags_exactly_the_pairs_the_loaders_fail_on(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    good = _photo(24, 32)
    images = {
        "good": lambda p: Image.fromarray(good).save(p.with_suffix(".png")),
        "photo16": lambda p: p.with_suffix(".png").write_bytes(
            png_bytes(32, 24, depth=16)),
        "rotated": lambda p: p.with_suffix(".jpg").write_bytes(
            _with_exif(_photo(32, 24), "JPEG", 8)),
        "mutated": lambda p: p.with_suffix(".png").write_bytes(
            bad_filter_png()),
        "cut": lambda p: p.with_suffix(".png").write_bytes(
            png_bytes(32, 24)[:60]),
        "empty": lambda p: p.with_suffix(".png").write_bytes(b""),
        "zbigmask": lambda p: Image.fromarray(good).save(p.with_suffix(".png")),
    }
    for name, write in images.items():
        write(root / "images" / name)
        Image.fromarray(np.zeros((24, 32), np.uint8)).save(root / "masks" / f"{name}.png")
    (root / "masks" / "zbigmask.png").write_bytes(png_bytes(14000, 14000, colour=0, level=1))
    (root / "classes.csv").write_text("name,r,g,b\nbg,0,0,0\nfg,255,255,255\n")
    report = check_source(f"folder:{root}")
    flagged = {p["file"] for p in report["problems"]}
    ds = open_source(f"folder:{root}", strict=False, val_fraction=0,
                     test_fraction=0).dataset("train")
    failing = set()
    for i, (image_path, _) in enumerate(ds.pairs):
        try:
            ds[i]
        except DataError as exc:
            failing.add(str(image_path))
            assert image_path.name in str(exc) or "zbigmask.png" in str(exc)
    assert flagged == failing
    assert {p.split("/")[-1] for p in failing} == {"mutated.png", "cut.png", "empty.png",
                                                  "zbigmask.png"}
