"""The bad-input catalogue: every case gets a clear seglab error, no traceback, nothing left.

Each case builds a tiny hostile input in ``tmp_path`` and asserts three things: a
``seglab.errors`` exception (or, through the CLI, exit code 1/2 with the message on stderr and
no traceback) whose message names the file or value and says what is wrong; and that the
folder holds exactly what it held before (no half-written output, no run folder, no temp file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from seglab.cli.main import app
from seglab.errors import ConfigError, DataError, ModelError, SeglabError

# --- helpers ---------------------------------------------------------------------------------


def snapshot(root: Path) -> set[str]:
    """Every path under ``root`` (hidden temp files included), relative to it."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def expect_error(
    action: Callable[[], object], kind: type[SeglabError], *fragments: str, root: Path
) -> str:
    """Run ``action``; it must raise ``kind`` naming every fragment and leave ``root`` as it was."""
    before = snapshot(root)
    with pytest.raises(kind) as info:
        action()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "Traceback" not in message
    assert snapshot(root) == before, "files were left behind"
    return message


def expect_cli_error(
    args: list[str], *fragments: str, root: Path, code: tuple[int, ...] = (1,)
) -> str:
    """Run the CLI in-process; it must exit ``code`` naming every fragment, with no traceback."""
    before = snapshot(root)
    result = CliRunner().invoke(app, [str(a) for a in args])
    output = result.output  # stdout and stderr as the terminal shows them
    assert result.exit_code in code, f"exit {result.exit_code}: {output}\n{result.exception!r}"
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    assert "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in output, f"{fragment!r} not in {output!r}"
    assert snapshot(root) == before, "files were left behind"
    return output


def png(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as a PNG (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def rgb(h: int = 8, w: int = 10, value: int = 60) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def folder_dataset(root: Path, n: int = 3, mask: np.ndarray | None = None) -> Path:
    """``images/`` + ``masks/`` index masks (classes bg, fg) + ``classes.csv``."""
    for i in range(n):
        png(root / "images" / f"p{i}.png", rgb(value=40 * i))
        png(root / "masks" / f"p{i}.png", np.zeros((8, 10), np.uint8) if mask is None else mask)
    (root / "classes.csv").write_text("name,r,g,b\nbg,0,0,0\nfg,255,255,255\n")
    return root


def first_pair_error(root: Path, **options) -> None:
    """Decode every pair of the train split (raises on the first bad one)."""
    from seglab.data.formats import open_source

    dataset = open_source(f"folder:{root}", val_fraction=0, test_fraction=0,
                          **options).dataset("train")
    for i in range(len(dataset)):
        dataset[i]


# --- data: folder, camvid, voc, cityscapes specs ---------------------------------------------


def _open(spec: str, **options) -> Callable[[], object]:
    from seglab.data.formats import open_source

    return lambda: open_source(spec, **options)


def test_data_spec_folder_missing(tmp_path):
    expect_error(_open(f"folder:{tmp_path / 'nope'}"), DataError, "not found", "nope",
                 root=tmp_path)


def test_data_spec_folder_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    expect_error(_open(f"folder:{tmp_path / 'empty'}"), DataError, "empty", "empty",
                 root=tmp_path)


def test_data_spec_unknown_format(tmp_path):
    expect_error(_open(f"zarr:{tmp_path}"), ConfigError, "'zarr:", "format one of",
                 root=tmp_path)


def test_data_spec_without_format(tmp_path):
    expect_error(_open(str(tmp_path)), ConfigError, str(tmp_path), "<format>:<path>",
                 root=tmp_path)


def test_data_unknown_format_option(tmp_path):
    folder_dataset(tmp_path / "d")
    expect_error(_open(f"folder:{tmp_path / 'd'}", colour_mode="x"), ConfigError,
                 "colour_mode", root=tmp_path)


def test_data_option_of_wrong_type(tmp_path):
    folder_dataset(tmp_path / "d")
    expect_error(_open(f"folder:{tmp_path / 'd'}", seed="abc"), ConfigError, "seed", "'abc'",
                 root=tmp_path)


def test_data_split_fraction_out_of_range(tmp_path):
    folder_dataset(tmp_path / "d")
    expect_error(_open(f"folder:{tmp_path / 'd'}", val_fraction=1.5), SeglabError,
                 "val_fraction", "1.5", root=tmp_path)


def test_data_no_masks_folder(tmp_path):
    png(tmp_path / "d" / "images" / "a.png", rgb())
    expect_error(_open(f"folder:{tmp_path / 'd'}"), DataError, str(tmp_path / "d"),
                 root=tmp_path)


def test_data_image_without_mask(tmp_path):
    root = folder_dataset(tmp_path / "d")
    png(root / "images" / "lonely.png", rgb())
    expect_error(_open(f"folder:{root}"), DataError, "image without mask", "lonely.png",
                 root=tmp_path)


def test_data_mask_without_image(tmp_path):
    root = folder_dataset(tmp_path / "d")
    png(root / "masks" / "orphan.png", np.zeros((8, 10), np.uint8))
    expect_error(_open(f"folder:{root}"), DataError, "orphan.png", root=tmp_path)


def test_data_image_and_mask_sizes_differ(tmp_path):
    root = folder_dataset(tmp_path / "d")
    png(root / "masks" / "p0.png", np.zeros((4, 5), np.uint8))
    expect_error(lambda: first_pair_error(root), DataError, "p0.png", "size mismatch", "5x4",
                 root=tmp_path)


def test_data_mask_id_out_of_range(tmp_path):
    mask = np.zeros((8, 10), np.uint8)
    mask[0, :4] = 7
    root = folder_dataset(tmp_path / "d", mask=mask)
    expect_error(lambda: first_pair_error(root), DataError, str(root / "masks" / "p"),
                 "outside 0..1", ": 7 (4 px)", root=tmp_path)


def test_data_colour_mask_unknown_colour(tmp_path):
    mask = np.zeros((8, 10, 3), np.uint8)
    mask[0, :3] = (1, 2, 3)
    root = folder_dataset(tmp_path / "d", mask=mask)
    (root / "classes.csv").write_text("name,r,g,b\nbg,0,0,0\nfg,255,0,0\n")
    expect_error(lambda: first_pair_error(root), DataError, str(root / "masks" / "p"),
                 "RGB(1, 2, 3)", "not in the class table", root=tmp_path)


def test_data_mask_is_not_an_image(tmp_path):
    root = folder_dataset(tmp_path / "d")
    (root / "masks" / "p1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    expect_error(lambda: first_pair_error(root), DataError, "p1.png", "cannot decode",
                 root=tmp_path)


def test_data_image_truncated(tmp_path):
    root = folder_dataset(tmp_path / "d")
    noisy = np.random.default_rng(0).integers(0, 255, (8, 10, 3), np.uint8)
    png(root / "images" / "p2.png", noisy)
    path = root / "images" / "p2.png"
    path.write_bytes(path.read_bytes()[:60])
    expect_error(lambda: first_pair_error(root), DataError, "p2.png", root=tmp_path)


def test_data_class_table_not_numeric(tmp_path):
    root = folder_dataset(tmp_path / "d")
    (root / "classes.csv").write_text("name,r,g,b\nbg,0,0,0\nfg,red,0,0\n")
    expect_error(_open(f"folder:{root}"), DataError, "classes.csv", "line 3",
                 "not 3 integers", root=tmp_path)


def test_data_class_table_not_utf8(tmp_path):
    root = folder_dataset(tmp_path / "d")
    (root / "classes.csv").write_bytes(b"name,r,g,b\nbg,0,0,0\n\xff\xfe\xfa,1,2,3\n")
    message = expect_error(_open(f"folder:{root}"), DataError, "classes.csv", root=tmp_path)
    assert "utf-8" in message.lower()


def test_data_split_list_not_utf8(tmp_path):
    root = folder_dataset(tmp_path / "d")
    (root / "train.txt").write_bytes(b"p0\n\xff\xfe\n")
    expect_error(_open(f"folder:{root}"), DataError, "train.txt", "UTF-8", root=tmp_path)


def test_data_split_list_names_missing_image(tmp_path):
    root = folder_dataset(tmp_path / "d")
    (root / "train.txt").write_text("p0\np1\nghost\n")
    (root / "val.txt").write_text("p2\n")
    expect_error(_open(f"folder:{root}"), DataError, "ghost", root=tmp_path)


def test_data_unknown_split(tmp_path):
    root = folder_dataset(tmp_path / "d")
    source = _open(f"folder:{root}")()
    expect_error(lambda: source.dataset("holdout"), DataError, "holdout", root=tmp_path)


def test_data_empty_split_requested(tmp_path):
    root = folder_dataset(tmp_path / "d", n=2)
    source = _open(f"folder:{root}", val_fraction=0, test_fraction=0)()
    expect_error(lambda: source.dataset("val"), DataError, "val", root=tmp_path)


def test_data_camvid_unknown_layout(tmp_path):
    png(tmp_path / "cv" / "x.png", rgb())
    expect_error(_open(f"camvid:{tmp_path / 'cv'}"), DataError, "not a known CamVid layout",
                 str(tmp_path / "cv"), root=tmp_path)


def test_data_camvid_list_names_missing_files(tmp_path):
    root = tmp_path / "cv"
    (root / "trainannot").mkdir(parents=True)
    (root / "train.txt").write_text("/SegNet/CamVid/train/a.png /SegNet/CamVid/trainannot/a.png\n")
    expect_error(_open(f"camvid:{root}"), DataError, "a.png", root=tmp_path)


def test_data_voc_without_segmentation_class(tmp_path):
    png(tmp_path / "voc" / "JPEGImages" / "a.png", rgb())
    expect_error(_open(f"voc:{tmp_path / 'voc'}"), DataError, "SegmentationClass",
                 str(tmp_path / "voc"), root=tmp_path)


def test_data_voc_list_names_missing_image(tmp_path):
    base = tmp_path / "voc"
    Image.fromarray(rgb()).save(png(base / "JPEGImages" / "a.png", rgb()).with_suffix(".jpg"))
    png(base / "SegmentationClass" / "a.png", np.zeros((8, 10), np.uint8))
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nmissing_one\n")
    expect_error(_open(f"voc:{base}"), DataError, "missing_one", root=tmp_path)


def test_data_cityscapes_without_gtfine(tmp_path):
    png(tmp_path / "cs" / "leftImg8bit" / "train" / "x" / "x_0_leftImg8bit.png", rgb())
    expect_error(_open(f"cityscapes:{tmp_path / 'cs'}"), DataError, "gtFine",
                 str(tmp_path / "cs"), root=tmp_path)


def test_data_cityscapes_image_without_mask(tmp_path):
    root = tmp_path / "cs"
    png(root / "leftImg8bit" / "train" / "aachen" / "aachen_0_leftImg8bit.png", rgb())
    (root / "gtFine" / "train" / "aachen").mkdir(parents=True)
    expect_error(_open(f"cityscapes:{root}"), DataError, "aachen_0_leftImg8bit.png",
                 "aachen_0_gtFine_labelIds.png", root=tmp_path)


def test_data_cityscapes_unknown_class_view(tmp_path):
    root = tmp_path / "cs"
    png(root / "leftImg8bit" / "train" / "aachen" / "aachen_0_leftImg8bit.png", rgb())
    png(root / "gtFine" / "train" / "aachen" / "aachen_0_gtFine_labelIds.png",
        np.zeros((8, 10), np.uint8))
    expect_error(_open(f"cityscapes:{root}", classes=5), SeglabError, "classes", "5",
                 root=tmp_path)


def test_data_cli_check_names_the_corrupt_file(tmp_path):
    root = folder_dataset(tmp_path / "d")
    (root / "images" / "p1.png").write_bytes(b"not an image")
    expect_cli_error(["data", "check", f"folder:{root}"], "p1.png", root=tmp_path)


def test_data_cli_check_missing_folder(tmp_path):
    expect_cli_error(["data", "check", f"folder:{tmp_path / 'gone'}"], "gone", "not found",
                     root=tmp_path)


def test_data_cli_option_without_value(tmp_path):
    root = folder_dataset(tmp_path / "d")
    expect_cli_error(["data", "check", f"folder:{root}", "-o", "seed"], "'seed'", "KEY=VALUE",
                     root=tmp_path)


def test_data_cli_weight_param_not_a_number(tmp_path):
    root = folder_dataset(tmp_path / "d")
    expect_cli_error(["data", "inspect", f"folder:{root}", "--weights", "enet",
                      "--weight-param", "c=abc"], "c='abc'", "number", root=tmp_path)


def test_data_cli_weight_param_unknown_key(tmp_path):
    root = folder_dataset(tmp_path / "d")
    expect_cli_error(["data", "inspect", f"folder:{root}", "--weights", "enet",
                      "--weight-param", "zeta=1"], "zeta", root=tmp_path)


def test_data_exif_rotated_image_is_read_as_shown(tmp_path):
    """A photo whose EXIF says 'rotate 90' is the rotated picture, in the loader and in check."""
    from PIL import ImageOps

    from seglab.data.formats import open_source
    from seglab.data.inspect import check_source

    root = folder_dataset(tmp_path / "d", n=2)
    stored = np.random.default_rng(1).integers(0, 255, (8, 8, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 clockwise to display
    Image.fromarray(stored).save(root / "images" / "p0.webp", exif=exif, lossless=True)
    (root / "images" / "p0.png").unlink()
    png(root / "masks" / "p0.png", np.zeros((8, 8), np.uint8))
    shown = np.asarray(ImageOps.exif_transpose(Image.open(root / "images" / "p0.webp")))
    dataset = open_source(f"folder:{root}", val_fraction=0, test_fraction=0).dataset("train")
    index = [p[0].name for p in dataset.pairs].index("p0.webp")
    image, _ = dataset[index]
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), shown)
    assert check_source(f"folder:{root}")["ok"]


def test_data_16bit_photo_is_refused_or_converted(tmp_path):
    root = folder_dataset(tmp_path / "d")
    Image.fromarray(np.full((8, 10), 40000, np.uint16)).save(root / "images" / "p0.png")
    from seglab.data.formats import open_source

    dataset = open_source(f"folder:{root}", val_fraction=0, test_fraction=0).dataset("train")
    index = [p[0].name for p in dataset.pairs].index("p0.png")
    try:
        image, _ = dataset[index]
    except DataError as exc:
        assert "p0.png" in str(exc) and "16-bit" in str(exc)
    else:  # a correct conversion: the 8-bit image a viewer shows (40000 / 65535 of white)
        assert image.dtype == torch.uint8 and image.shape == (3, 8, 10)
        assert set(image.unique().tolist()) <= {155, 156}


def test_data_decompression_bomb_mask(tmp_path):
    root = folder_dataset(tmp_path / "d", n=2)
    # A 14000 x 14000 one-bit mask compresses to a few kB but decodes to 196 MP.
    Image.new("1", (14000, 14000)).save(root / "masks" / "p0.png")
    expect_error(lambda: first_pair_error(root), DataError, "p0.png", root=tmp_path)


# --- recipes ---------------------------------------------------------------------------------


def _recipe(path: Path, overrides: list[str] | None = None) -> Callable[[], object]:
    from seglab.config import Recipe

    return lambda: Recipe.from_yaml(path, overrides)


GOOD_RECIPE = "data:\n  spec: folder:/data\nmodel:\n  name: unet\n"
# A recipe that trains in a second (should a case wrongly start training).
TINY_RECIPE = (GOOD_RECIPE + "  options: {base_channels: 4, depth: 2}\ntrainer: {max_epochs: 1}\n"
               "augment: {crop_size: null}\n")


def test_recipe_file_missing(tmp_path):
    expect_error(_recipe(tmp_path / "nope.yaml"), ConfigError, "nope.yaml", "does not exist",
                 root=tmp_path)


def test_recipe_is_a_folder(tmp_path):
    (tmp_path / "r.yaml").mkdir()
    expect_error(_recipe(tmp_path / "r.yaml"), ConfigError, "r.yaml", "folder", root=tmp_path)


def test_recipe_not_utf8(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(GOOD_RECIPE.encode() + b"name: caf\xe9\n")  # Latin-1 e-acute
    expect_error(_recipe(path), ConfigError, "r.yaml", "UTF-8", "line 5", root=tmp_path)


def test_recipe_binary_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"\x00\x01\x02PK\x03\x04")
    expect_error(_recipe(path), ConfigError, "r.yaml", root=tmp_path)


def test_recipe_bad_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD_RECIPE + "optim: {lr: [0.1\n")
    expect_error(_recipe(path), ConfigError, "r.yaml", "not valid YAML", "line", root=tmp_path)


def test_recipe_top_level_list(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("- data\n- model\n")
    expect_error(_recipe(path), ConfigError, "r.yaml", "mapping", root=tmp_path)


def test_recipe_unknown_section(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD_RECIPE + "optimiser:\n  lr: 0.1\n")
    expect_error(_recipe(path), ConfigError, "r.yaml", "optimiser", "unknown field",
                 root=tmp_path)


def test_recipe_unknown_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD_RECIPE + "optim:\n  lrr: 0.1\n")
    expect_error(_recipe(path), ConfigError, "optim.lrr", "unknown field", root=tmp_path)


def test_recipe_wrong_type(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD_RECIPE + "optim:\n  lr: fast\n")
    expect_error(_recipe(path), ConfigError, "optim.lr", "'fast'", root=tmp_path)


def test_recipe_section_is_a_value(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD_RECIPE + "optim: 0.1\n")
    expect_error(_recipe(path), ConfigError, "optim", "0.1", root=tmp_path)


def test_recipe_missing_model_name(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  spec: folder:/data\nmodel: {}\n")
    expect_error(_recipe(path), ConfigError, "model.name", "required", root=tmp_path)


def test_recipe_spec_without_format(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  spec: /data/camvid\nmodel:\n  name: unet\n")
    expect_error(_recipe(path), ConfigError, "data.spec", "'/data/camvid'", root=tmp_path)


def test_recipe_mean_std_lengths_differ(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD_RECIPE.replace("/data\n", "/data\n  mean: [0.5, 0.5]\n  std: [1, 1, 1]\n"))
    expect_error(_recipe(path), ConfigError, "data.mean has 2 values", root=tmp_path)


def test_recipe_std_zero(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD_RECIPE.replace("/data\n", "/data\n  mean: [0, 0, 0]\n  std: [1, 0, 1]\n"))
    expect_error(_recipe(path), ConfigError, "data.std", "> 0", root=tmp_path)


def test_recipe_unknown_loss(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD_RECIPE + "loss:\n  name: hinge\n")
    expect_error(_recipe(path), ConfigError, "loss.name", "'hinge'", root=tmp_path)


def test_recipe_unknown_logger(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD_RECIPE + "trainer:\n  loggers: [csv, neptune]\n")
    expect_error(_recipe(path), ConfigError, "trainer.loggers", "'neptune'", root=tmp_path)


def test_recipe_override_without_equals(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD_RECIPE)
    expect_error(_recipe(path, ["optim.lr"]), ConfigError, "'optim.lr'", "section.field=value",
                 root=tmp_path)


def test_recipe_override_into_a_value(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD_RECIPE + "optim:\n  lr: 0.1\n")
    expect_error(_recipe(path, ["optim.lr.max=1"]), ConfigError, "'lr' is a value",
                 root=tmp_path)


def test_recipe_override_unknown_field(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD_RECIPE)
    expect_error(_recipe(path, ["trainer.epochs=3"]), ConfigError, "trainer.epochs",
                 "unknown field", root=tmp_path)


def test_recipe_override_wrong_type(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD_RECIPE)
    expect_error(_recipe(path, ["data.batch_size=many"]), ConfigError, "data.batch_size",
                 "'many'", root=tmp_path)


def test_recipe_cli_bad_override_leaves_no_run_folder(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD_RECIPE)
    expect_cli_error(["train", path, "optim.lr=-1", "--run-dir", tmp_path / "run"],
                     "optim.lr", "-1", root=tmp_path)


def test_recipe_cli_not_utf8(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    expect_cli_error(["train", path, "--run-dir", tmp_path / "run"], "r.yaml", "UTF-8",
                     root=tmp_path)


# --- model folders ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    from seglab.models import build_model

    torch.manual_seed(0)
    return build_model("unet", 3, base_channels=4, depth=2).eval()


@pytest.fixture()
def model_dir(tiny_model, tmp_path) -> Path:
    from seglab.artifacts.pretrained import save_pretrained

    return save_pretrained(tiny_model, tmp_path / "m")


def _edit_config(folder: Path, edit: Callable[[dict], None]) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def _load(folder: Path) -> Callable[[], object]:
    from seglab.artifacts.loader import load_inference_model

    return lambda: load_inference_model(folder, "cpu")


def test_model_folder_missing(tmp_path):
    from seglab.artifacts.pretrained import from_pretrained

    expect_error(lambda: from_pretrained(tmp_path / "gone"), ModelError, "gone",
                 "does not exist", root=tmp_path)


def test_model_config_missing(model_dir, tmp_path):
    from seglab.artifacts.pretrained import from_pretrained

    (model_dir / "config.json").unlink()
    expect_error(lambda: from_pretrained(model_dir), ModelError, "config.json", "missing",
                 root=tmp_path)


def test_model_weights_missing(model_dir, tmp_path):
    (model_dir / "model.safetensors").unlink()
    expect_error(_load(model_dir), ModelError, "model.safetensors", root=tmp_path)


def test_model_weights_corrupt(model_dir, tmp_path):
    (model_dir / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad")
    expect_error(_load(model_dir), ModelError, "model.safetensors", "cannot read",
                 root=tmp_path)


def test_model_weights_float64(model_dir, tiny_model, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.double() if v.is_floating_point() else v
             for k, v in tiny_model.state_dict().items()}
    save_file(state, str(model_dir / "model.safetensors"))
    expect_error(_load(model_dir), ModelError, "model.safetensors", "float64", "float32",
                 root=tmp_path)


def test_model_weights_integer_dtype(model_dir, tiny_model, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.to(torch.int32) for k, v in tiny_model.state_dict().items()}
    save_file(state, str(model_dir / "model.safetensors"))
    expect_error(_load(model_dir), ModelError, "model.safetensors", "int32", root=tmp_path)


def test_model_config_not_json(model_dir, tmp_path):
    (model_dir / "config.json").write_text("{'model': unet}")
    expect_error(_load(model_dir), ModelError, "config.json", "not valid JSON", root=tmp_path)


def test_model_config_not_utf8(model_dir, tmp_path):
    (model_dir / "config.json").write_bytes(b'{"model": "\xff"}')
    expect_error(_load(model_dir), ModelError, "config.json", root=tmp_path)


def test_model_config_lacks_model_entry(model_dir, tmp_path):
    _edit_config(model_dir, lambda c: c.pop("model"))
    expect_error(_load(model_dir), ModelError, "config.json", "'model'", root=tmp_path)


def test_model_config_mean_two_values(model_dir, tmp_path):
    _edit_config(model_dir, lambda c: c["normalization"].update(mean=[0.5, 0.5]))
    expect_error(_load(model_dir), ModelError, "config.json", "mean", "2 values", "3",
                 root=tmp_path)


def test_model_config_mean_not_numeric(model_dir, tmp_path):
    _edit_config(model_dir, lambda c: c["normalization"].update(mean=["red", 0.5, 0.5]))
    expect_error(_load(model_dir), ModelError, "config.json", "mean", "'red'", root=tmp_path)


def test_model_config_mean_not_a_list(model_dir, tmp_path):
    _edit_config(model_dir, lambda c: c["normalization"].update(mean=0.5))
    expect_error(_load(model_dir), ModelError, "config.json", "mean", "0.5", root=tmp_path)


def test_model_config_std_zero(model_dir, tmp_path):
    _edit_config(model_dir, lambda c: c["normalization"].update(std=[0.2, 0.0, 0.2]))
    expect_error(_load(model_dir), ModelError, "config.json", "std", "> 0", root=tmp_path)


def test_model_config_std_not_finite(model_dir, tmp_path):
    path = model_dir / "config.json"
    path.write_text(path.read_text().replace("0.229", "NaN"))
    expect_error(_load(model_dir), ModelError, "config.json", "std", "nan", root=tmp_path)


def test_model_config_normalization_not_a_mapping(model_dir, tmp_path):
    _edit_config(model_dir, lambda c: c.update(normalization=[0.5, 0.5]))
    expect_error(_load(model_dir), ModelError, "config.json", "normalization", root=tmp_path)


@pytest.mark.parametrize(
    "size", [[0, 64], [64], "big", [64.5, 64], [-8, 8]], ids=["zero", "one-value", "text",
                                                              "float", "negative"]
)
def test_model_config_bad_inference_size(model_dir, tmp_path, size):
    _edit_config(model_dir, lambda c: c.update(inference={"size": size}))
    expect_error(_load(model_dir), ModelError, "config.json", "inference.size",
                 json.dumps(size).strip('"'), root=tmp_path)


def test_model_config_unknown_inference_mode(model_dir, tmp_path):
    _edit_config(model_dir, lambda c: c.update(inference={"mode": "tiles"}))
    expect_error(_load(model_dir), ModelError, "config.json", "inference.mode", "'tiles'",
                 root=tmp_path)


def test_model_config_wrong_num_classes(model_dir, tmp_path):
    _edit_config(model_dir, lambda c: c["model"].update(num_classes=5))
    expect_error(_load(model_dir), ModelError, "model.safetensors", "do not fit",
                 root=tmp_path)


def test_model_config_num_classes_not_integer(model_dir, tmp_path):
    _edit_config(model_dir, lambda c: c["model"].update(num_classes="three"))
    expect_error(_load(model_dir), ModelError, "num_classes", "'three'", root=tmp_path)


def test_model_config_class_names_count_differs(model_dir, tmp_path):
    _edit_config(model_dir, lambda c: c.update(classes={"names": ["a", "b"]}))
    expect_error(_load(model_dir), ModelError, "config.json", "2 class", "3", root=tmp_path)


def test_model_config_unknown_model_name(model_dir, tmp_path):
    _edit_config(model_dir, lambda c: c["model"].update(name="unett"))
    expect_error(_load(model_dir), ModelError, "'unett'", "unknown model", root=tmp_path)


def test_model_config_option_of_wrong_type(model_dir, tmp_path):
    _edit_config(model_dir, lambda c: c["model"]["options"].update(base_channels="four"))
    expect_error(_load(model_dir), ModelError, "unet", "base_channels", root=tmp_path)


def test_model_config_per_band_mean_is_valid(tmp_path):
    """Not a bad input: one mean/std value per band of a 4-band model loads and predicts."""
    from seglab.artifacts.pretrained import save_pretrained
    from seglab.models import build_model

    model = build_model("unet", 2, base_channels=4, depth=2, in_chans=4)
    save_pretrained(model, tmp_path / "m4", mean=[0.1] * 4, std=[0.2] * 4)
    loaded = _load(tmp_path / "m4")()
    assert list(loaded.mean) == [0.1] * 4 and list(loaded.std) == [0.2] * 4
    _edit_config(tmp_path / "m4", lambda c: c["normalization"].update(mean=[0.1] * 3))
    expect_error(_load(tmp_path / "m4"), ModelError, "mean", "3 values", "4", root=tmp_path)


def test_model_save_with_wrong_band_count(tiny_model, tmp_path):
    from seglab.artifacts.pretrained import save_pretrained

    expect_error(lambda: save_pretrained(tiny_model, tmp_path / "m", mean=[0.5, 0.5]),
                 ModelError, "mean", "2 values", root=tmp_path)


# --- losses and weight files ----------------------------------------------------------------


def _loss(overrides: list[str], class_weights: torch.Tensor | None = None) -> Callable[[], object]:
    from seglab.config import Recipe
    from seglab.losses import build_loss

    def run() -> object:
        recipe = Recipe.from_dict({"data": {"spec": "folder:/d"}, "model": {"name": "unet"}},
                                  overrides)
        loss = build_loss(recipe.loss, class_weights=class_weights)
        return loss(torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4)))

    return run


def test_loss_focal_alpha_wrong_length(tmp_path):
    expect_error(_loss(["loss.name=focal", "loss.focal_alpha=[0.5,0.5]"]), ConfigError,
                 "loss.focal_alpha has 2 values", "3 classes", root=tmp_path)


def test_loss_focal_alpha_negative(tmp_path):
    expect_error(_loss(["loss.name=focal", "loss.focal_alpha=[-1,1,1]"]), ConfigError,
                 "loss.focal_alpha", "-1.0", root=tmp_path)


def test_loss_class_weights_wrong_length(tmp_path):
    expect_error(_loss([], class_weights=torch.ones(2)), ConfigError, "class weights",
                 "2 values", "3 classes", root=tmp_path)


def test_recipe_unknown_class_weight_strategy(tmp_path):
    expect_error(_loss(["loss.class_weights=magic"]), ConfigError, "'magic'",
                 "median_frequency", root=tmp_path)


def test_recipe_unknown_class_weight_param(tmp_path):
    expect_error(_loss(["loss.class_weights=enet", "loss.class_weight_params={k: 1}"]),
                 ConfigError, "class_weight_params", "'enet' takes c", root=tmp_path)


def test_model_weights_option_missing_file(tmp_path):
    from seglab.models import build_model

    missing = str(tmp_path / "init.pth")
    expect_error(lambda: build_model("lraspp_mobilenet_v3_large", 3, weights=missing),
                 ModelError, "init.pth", root=tmp_path)


def test_model_weights_option_pickle_payload(tmp_path):
    from seglab.models.weights import read_state_dict

    path = tmp_path / "init.pth"
    torch.save({"state_dict": _Payload()}, path)
    expect_error(lambda: read_state_dict(path), ModelError, "init.pth", "cannot read",
                 root=tmp_path)


def test_model_weights_option_not_tensors(tmp_path):
    from seglab.models.weights import read_state_dict

    path = tmp_path / "init.pth"
    torch.save({"lr": 0.1, "epoch": 3}, path)
    expect_error(lambda: read_state_dict(path), ModelError, "init.pth", "state dict of tensors",
                 root=tmp_path)


def test_model_unknown_option(tmp_path):
    from seglab.models import build_model

    expect_error(lambda: build_model("unet", 3, depthh=2), ModelError, "'depthh'",
                 "base_channels", root=tmp_path)


def test_cli_message_control_characters_are_escaped(tmp_path):
    folder = tmp_path / "evil\x1b[2Jname\rx"
    output = expect_cli_error(["data", "check", f"folder:{folder}"], "evilname\\rx",
                              root=tmp_path)
    assert "\x1b" not in output and "\r" not in output


# --- checkpoints -----------------------------------------------------------------------------


class _Payload:
    def __reduce__(self):
        return (print, ("this pickle runs code",))


def _pickle_checkpoint(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": _Payload()}, path)
    return path


def test_checkpoint_pickle_payload(tmp_path):
    ckpt = _pickle_checkpoint(tmp_path / "evil.ckpt")
    message = expect_error(_load(ckpt), ModelError, "evil.ckpt", root=tmp_path)
    assert "pickle" in message


def test_checkpoint_truncated(tmp_path):
    (tmp_path / "cut.ckpt").write_bytes(b"PK\x03\x04 cut short")
    expect_error(_load(tmp_path / "cut.ckpt"), ModelError, "cut.ckpt", root=tmp_path)


def test_checkpoint_empty_file(tmp_path):
    (tmp_path / "zero.ckpt").write_bytes(b"")
    expect_error(_load(tmp_path / "zero.ckpt"), ModelError, "zero.ckpt", root=tmp_path)


def test_checkpoint_foreign(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.ckpt")
    expect_error(_load(tmp_path / "other.ckpt"), ModelError, "other.ckpt",
                 "not a seglab training checkpoint", root=tmp_path)


def test_checkpoint_unknown_file_type(tmp_path):
    (tmp_path / "weights.h5").write_bytes(b"\x89HDF")
    expect_error(_load(tmp_path / "weights.h5"), ConfigError, "weights.h5", "'.h5'",
                 root=tmp_path)


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "recipe.yaml").write_text(TINY_RECIPE.replace("/data", str(tmp_path / "d")))
    folder_dataset(tmp_path / "d", n=4)
    return run


def test_resume_pickle_checkpoint(tmp_path):
    run = _run_folder(tmp_path)
    _pickle_checkpoint(run / "checkpoints" / "last.ckpt")
    output = expect_cli_error(["train", "--resume", "--run-dir", run],
                              str(run / "checkpoints" / "last.ckpt"), "pickle", root=tmp_path)
    assert "\x1b" not in output  # torch's message carries terminal escapes: never printed


def test_resume_folder_without_recipe(tmp_path):
    (tmp_path / "run").mkdir()
    expect_cli_error(["train", "--resume", "--run-dir", tmp_path / "run"], "recipe.yaml",
                     "does not exist", root=tmp_path)


def test_resume_without_run_folder(tmp_path):
    expect_cli_error(["train", "--resume", "--run-dir", tmp_path / "none"], "none",
                     root=tmp_path)


# --- ONNX files ------------------------------------------------------------------------------


def _onnx(path: Path, config: str | None) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if config is not None:
        helper.set_model_props(model, {"seglab_config": config})
    onnx.save(model, path)
    return path


def test_onnx_not_an_onnx_file(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"definitely not protobuf \xff\xff")
    expect_error(_load(tmp_path / "m.onnx"), ModelError, "m.onnx", root=tmp_path)


def test_onnx_without_embedded_config(tmp_path):
    path = _onnx(tmp_path / "m.onnx", None)
    expect_error(_load(path), ModelError, "m.onnx", "seglab_config", root=tmp_path)


def test_onnx_embedded_config_not_json(tmp_path):
    path = _onnx(tmp_path / "m.onnx", "{not json")
    expect_error(_load(path), ModelError, "m.onnx", "JSON", root=tmp_path)


def test_onnx_embedded_config_lacks_normalisation(tmp_path):
    path = _onnx(tmp_path / "m.onnx", json.dumps({"classes": None, "inference": {}}))
    expect_error(_load(path), ModelError, "m.onnx", "normalization", root=tmp_path)


# --- predict / export / bench ----------------------------------------------------------------


@pytest.fixture()
def photo(tmp_path) -> Path:
    return png(tmp_path / "in" / "x.png", rgb(16, 16))


def test_predict_source_missing(tmp_path, photo):
    expect_cli_error(["predict", tmp_path / "nomodel", photo, "--out", tmp_path / "o"],
                     "nomodel", "not found", root=tmp_path)


def test_predict_input_missing(model_dir, tmp_path):
    expect_cli_error(["predict", model_dir, tmp_path / "ghost.png", "--out", tmp_path / "o"],
                     "ghost.png", "not found", root=tmp_path)


@pytest.mark.parametrize("size", ["0x0", "big", "10x", "-4"], ids=["zero", "text", "half",
                                                                   "negative"])
def test_predict_bad_size(model_dir, tmp_path, photo, size):
    expect_cli_error(["predict", model_dir, photo, "--out", tmp_path / "o", "--size", size],
                     "--size", repr(size), root=tmp_path)


def test_predict_bad_scales(model_dir, tmp_path, photo):
    expect_cli_error(["predict", model_dir, photo, "--out", tmp_path / "o", "--tta",
                      "--scales", "1,zero"], "--scales", "1,zero", root=tmp_path)


def test_predict_unknown_output_kind(model_dir, tmp_path, photo):
    expect_cli_error(["predict", model_dir, photo, "--out", tmp_path / "o", "--save", "heat"],
                     "heat", root=tmp_path)


def test_predict_output_is_a_file(model_dir, tmp_path, photo):
    (tmp_path / "o").write_text("a file")
    expect_cli_error(["predict", model_dir, photo, "--out", tmp_path / "o"], "o", root=tmp_path)


def test_predict_model_with_bad_config(model_dir, tmp_path, photo):
    _edit_config(model_dir, lambda c: c["normalization"].update(std=[0, 0, 0]))
    expect_cli_error(["predict", model_dir, photo, "--out", tmp_path / "o"], "config.json",
                     "std", root=tmp_path)


def test_predict_unknown_precision(model_dir, tmp_path, photo):
    expect_cli_error(["predict", model_dir, photo, "--out", tmp_path / "o", "--precision",
                      "fp8"], "'fp8'", "fp32", root=tmp_path)


def test_predict_alpha_out_of_range(model_dir, tmp_path, photo):
    expect_cli_error(["predict", model_dir, photo, "--out", tmp_path / "o", "--alpha", "2"],
                     "'--alpha'", root=tmp_path, code=(2,))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("verb", ["predict", "bench"])
def test_cuda_device_without_cuda(model_dir, tmp_path, photo, verb):
    args = ([verb, model_dir, photo, "--out", tmp_path / "o"] if verb == "predict"
            else [verb, model_dir, "--input", "32x32"])
    expect_cli_error([*args, "--device", "cuda:3"], "'cuda:3'", "CUDA is not available",
                     root=tmp_path)


def test_eval_model_missing(tmp_path):
    expect_cli_error(["eval", tmp_path / "nope"], "nope", "not found", root=tmp_path)


def test_eval_data_missing(model_dir, tmp_path):
    expect_cli_error(["eval", model_dir, "--data", f"folder:{tmp_path / 'nodata'}"], "nodata",
                     "not found", root=tmp_path)


def test_study_file_missing(tmp_path):
    expect_cli_error(["study", "run", tmp_path / "nope.yaml"], "study file", "nope.yaml",
                     root=tmp_path)


def test_export_unknown_format(model_dir, tmp_path):
    expect_cli_error(["export", model_dir, "-f", "tflite", "-o", tmp_path / "m.tflite"],
                     "tflite", root=tmp_path)


def test_export_bad_input_size(model_dir, tmp_path):
    expect_cli_error(["export", model_dir, "-o", tmp_path / "m.onnx", "--input", "axb"],
                     "--input", "'axb'", root=tmp_path)


def test_export_into_read_only_folder(model_dir, tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() == 0:  # root writes through a 0555 folder: use a read-only filesystem
        out = Path("/sys/seglab_export.onnx")
    else:
        target.chmod(0o555)
        out = target / "m.onnx"
    try:
        expect_cli_error(["export", model_dir, "-o", out], out.name, "cannot write",
                         root=tmp_path)
    finally:
        target.chmod(0o755)


def test_export_missing_source(tmp_path):
    expect_cli_error(["export", tmp_path / "none", "-o", tmp_path / "m.onnx"], "none",
                     root=tmp_path)


def test_bench_unknown_backend(tmp_path):
    expect_cli_error(["bench", "unet:base_channels=4,depth=2", "--backend", "tensorrt",
                      "--input", "32x32", "--repeats", "1", "--warmup", "0"], "tensorrt",
                     root=tmp_path)


def test_bench_unknown_model(tmp_path):
    expect_cli_error(["bench", "resnet9000", "--input", "32x32"], "'resnet9000'",
                     "neither a registered model", root=tmp_path)


def test_bench_model_option_of_wrong_type(tmp_path):
    expect_cli_error(["bench", "unet:base_channels=abc", "--input", "32x32", "--repeats", "1",
                      "--warmup", "0"], "unet", "base_channels", root=tmp_path)


@pytest.mark.parametrize("args,fragment", [
    (["--input", "0x32"], "--input"), (["--batch", "0"], "--batch"),
    (["--batch", "two"], "--batch"),
], ids=["input-zero", "batch-zero", "batch-text"])
def test_bench_bad_sizes(tmp_path, args, fragment):
    expect_cli_error(["bench", "unet:base_channels=4,depth=2", *args], fragment,
                     root=tmp_path)


# --- CLI values ------------------------------------------------------------------------------


def test_models_show_unknown_model(tmp_path):
    expect_cli_error(["models", "show", "unett"], "'unett'", "Did you mean", root=tmp_path)


def test_models_show_bad_freeze(tmp_path):
    expect_cli_error(["models", "show", "unet", "--num-classes", "2", "--freeze", "last:x"],
                     "last:x", root=tmp_path)


def test_models_show_bad_input(tmp_path):
    expect_cli_error(["models", "show", "unet", "--input", "wide"], "--input", "'wide'",
                     root=tmp_path)


def test_cli_integer_option_not_a_number(tmp_path):
    expect_cli_error(["models", "show", "unet", "--num-classes", "many"], "'--num-classes'",
                     "valid integer", root=tmp_path, code=(2,))


def test_cli_path_with_brackets_prints_literally(tmp_path):
    folder = tmp_path / "scan [copy]"
    expect_cli_error(["data", "check", f"folder:{folder}"], "scan [copy]", root=tmp_path)


def test_cli_path_with_closing_tag_prints_literally(tmp_path):
    folder = tmp_path / "a[/b]"
    expect_cli_error(["data", "check", f"folder:{folder}"], "a[/b]", root=tmp_path)


# --- faults ----------------------------------------------------------------------------------


def test_data_error_in_a_dataloader_worker_is_the_error_itself(tmp_path):
    from torch.utils.data import DataLoader

    from seglab.data.formats import open_source

    mask = np.zeros((8, 10), np.uint8)
    mask[2, 2] = 9
    root = folder_dataset(tmp_path / "d", n=2, mask=mask)
    dataset = open_source(f"folder:{root}", val_fraction=0, test_fraction=0).dataset("train")
    loader = DataLoader(dataset, batch_size=2, num_workers=1)
    message = expect_error(lambda: next(iter(loader)), DataError, ".png", "outside 0..1",
                           root=tmp_path)
    assert "worker" not in message and "File " not in message
    assert message.splitlines()[0].startswith(str(root)), message


class _BrokenDataset(torch.utils.data.Dataset):
    """Every item raises the DataError a decoder raises on a corrupt file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        raise DataError(f"{self.folder / f'bad{i}.png'}: cannot decode image\n  (second line)")


def test_data_error_in_a_worker_keeps_its_message_and_the_worker_traceback(tmp_path):
    from torch.utils.data import DataLoader

    from seglab.errors import unwrap_worker_message

    with pytest.raises(DataError) as info:
        next(iter(DataLoader(_BrokenDataset(tmp_path), num_workers=1)))
    assert str(info.value) == f"{tmp_path / 'bad0.png'}: cannot decode image\n  (second line)"
    assert "Traceback" in info.value.worker_traceback
    assert unwrap_worker_message("plain message") == "plain message"


def test_cli_prints_an_uncaught_worker_data_error_as_its_message(tmp_path):
    """The root command turns a SeglabError no verb caught (here from a worker) into a message."""
    import typer
    from torch.utils.data import DataLoader

    from seglab.cli.output import ErrorHandlingGroup

    assert isinstance(typer.main.get_command(app), ErrorHandlingGroup)
    demo = typer.Typer(cls=ErrorHandlingGroup)

    @demo.command()
    def load() -> None:
        next(iter(DataLoader(_BrokenDataset(tmp_path), num_workers=1)))

    @demo.command()
    def other() -> None:
        pass

    before = snapshot(tmp_path)
    result = CliRunner().invoke(demo, ["load"])
    assert result.exit_code == 1, result.output
    assert f"error: {tmp_path / 'bad0.png'}: cannot decode image" in result.output
    assert "worker" not in result.output and "Traceback" not in result.output
    assert snapshot(tmp_path) == before


def test_cli_out_of_memory_is_a_message(tmp_path):
    """Running out of memory (torch's allocator error) prints what to shrink, exit 1."""
    import typer

    from seglab.cli.output import ErrorHandlingGroup

    demo = typer.Typer(cls=ErrorHandlingGroup)

    @demo.command()
    def big() -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB\nmore")

    @demo.command()
    def other() -> None:
        pass

    result = CliRunner().invoke(demo, ["big"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "out of memory (CUDA out of memory. Tried to allocate 80.00 GiB)" in result.output
    assert "smaller batch" in result.output and "Traceback" not in result.output


def test_one_image_train_split_leaves_no_run_folder(tmp_path):
    folder_dataset(tmp_path / "d", n=1)
    path = tmp_path / "r.yaml"
    path.write_text(TINY_RECIPE.replace("/data", str(tmp_path / "d")))
    expect_cli_error(["train", path, "--run-dir", tmp_path / "run"], "train", root=tmp_path)


def test_unknown_model_in_train_leaves_no_run_folder(tmp_path):
    folder_dataset(tmp_path / "d", n=4)
    path = tmp_path / "r.yaml"
    path.write_text(TINY_RECIPE.replace("/data", str(tmp_path / "d")).replace("unet", "unett"))
    expect_cli_error(["train", path, "--run-dir", tmp_path / "run"], "'unett'", root=tmp_path)


def _tiny_recipe(tmp_path: Path, extra: str = "") -> Path:
    folder_dataset(tmp_path / "d", n=4)
    path = tmp_path / "r.yaml"
    path.write_text(TINY_RECIPE.replace("/data", str(tmp_path / "d")) + extra)
    return path


def test_bad_freeze_policy_leaves_no_run_folder(tmp_path):
    path = _tiny_recipe(tmp_path)
    expect_cli_error(["train", path, "model.freeze=last:x", "--run-dir", tmp_path / "run"],
                     "last:x", root=tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_fp16_on_cpu_leaves_no_run_folder(tmp_path):
    path = _tiny_recipe(tmp_path)
    expect_cli_error(["train", path, "trainer.precision=fp16", "trainer.accelerator=cpu",
                      "--run-dir", tmp_path / "run"], "fp16", root=tmp_path)


def test_second_training_into_a_locked_run_folder_is_refused(tmp_path):
    import subprocess
    import sys

    path = _tiny_recipe(tmp_path)
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from seglab.artifacts.lock import folder_lock\n"
         "with folder_lock(sys.argv[1], 'seglab train'):\n"
         "    print('locked', flush=True)\n"
         "    time.sleep(120)\n", str(run)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        expect_cli_error(["train", path, "--run-dir", run], str(run), str(holder.pid),
                         root=tmp_path)
    finally:
        holder.kill()
        holder.wait()


LATIN1_RECIPE = GOOD_RECIPE.encode() + b"name: caf\xe9\n"


def test_compare_recipe_not_utf8(tmp_path):
    folder_dataset(tmp_path / "d", n=4)
    (tmp_path / "r.yaml").write_bytes(LATIN1_RECIPE)
    expect_cli_error(["compare", "unet", "--data", f"folder:{tmp_path / 'd'}", "--recipe",
                      tmp_path / "r.yaml", "--runs-root", tmp_path / "runs", "--name", "c"],
                     "r.yaml", "UTF-8", root=tmp_path)


def test_study_file_not_utf8(tmp_path):
    (tmp_path / "s.yaml").write_bytes(b"name: \xe9tude\nbase: r.yaml\n")
    expect_cli_error(["study", "run", tmp_path / "s.yaml"], "s.yaml", "UTF-8", root=tmp_path)


def test_run_folder_recipe_not_utf8(model_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    model_dir.rename(run / "model")
    (run / "recipe.yaml").write_bytes(LATIN1_RECIPE)
    expect_error(_load(run), SeglabError, "recipe.yaml", "UTF-8", root=tmp_path)
