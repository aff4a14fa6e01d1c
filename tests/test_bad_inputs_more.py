"""More of the bad-input catalogue (issue 27): never a wrong number without a word.

Diverged training, edits on ``--resume``, hostile recipe values and YAML, odd masks and split
lists, overlapping splits, partial predict output, weights' mode, push and model-card content,
and filesystem errors. Each case asserts the message names the file or value and, for the
refusals, that nothing is left behind (the helpers of ``test_bad_inputs``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_bad_inputs import expect_cli_error, expect_error, folder_dataset, png, rgb
from typer.testing import CliRunner

from seglab.cli.main import app
from seglab.config import Recipe
from seglab.errors import ConfigError, DataError, ModelError

BASE = ["data.spec=folder:/nowhere", "model.name=unet"]


def _recipe(overrides: list[str]):
    return lambda: Recipe.from_yaml(None, [*BASE, *overrides])


# --- recipe values: NaN/inf, sizes, seeds, devices, limits, names ------------------------------

BAD_VALUES = [
    ("optim.lr=.inf", "optim.lr"),
    ("optim.lr=.nan", "optim.lr"),
    ("optim.lr=-.inf", "optim.lr"),
    ("optim.weight_decay=.inf", "optim.weight_decay"),
    ("loss.focal_gamma=.nan", "loss.focal_gamma"),
    ("model.options.width=.nan", "model.options.width"),
    ("data.mean=[0.5,.nan,0.5]", "data.mean[1]"),
    ("augment.crop_size=0", "augment.crop_size"),
    ("augment.resize=[-1,64]", "augment.resize"),
    ("augment.eval_resize=[64,0]", "augment.eval_resize"),
    ("augment.scale_range=[2.0,1.0]", "augment.scale_range"),
    ("eval.stride=0", "eval.stride"),
    ("eval.crop=-5", "eval.crop"),
    ("eval.scales=[]", "eval.scales"),
    ("trainer.seed=-1", "trainer.seed"),
    ("trainer.seed=4294967296", "trainer.seed"),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches"),
    ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches"),
    ("trainer.devices=abc", "trainer.devices"),
    ("trainer.devices=0", "trainer.devices"),
    ("trainer.max_minutes=.inf", "trainer.max_minutes"),
    ("name=", "name"),
    ("name=/abs/path", "/abs/path"),
    ("name=../../x", "../../x"),
    ("name=..", "'..'"),
    ("name=a/b", "a/b"),
]


@pytest.mark.parametrize(("override", "named"), BAD_VALUES, ids=[v[0] for v in BAD_VALUES])
def test_recipe_value_refused(override, named, tmp_path):
    expect_error(_recipe([override]), ConfigError, named, root=tmp_path)


def test_cli_run_name_option_escaping_runs_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expect_cli_error(["train", *BASE, "--name", "../escape"], "--name", "../escape",
                     root=tmp_path)


# --- YAML: alias bombs, recursive aliases, echoed input truncated --------------------------------

BOMB = "\n".join(
    ["name: bomb", "data: {spec: 'folder:/nowhere'}", "model: {name: unet}",
     "optim: {lr: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]}"]
    + [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
)  # 80 aliases, 10^9 values once expanded


def test_recipe_alias_bomb_refused_quickly(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    message = expect_error(lambda: Recipe.from_yaml(path), ConfigError, str(path), "aliases",
                           root=tmp_path)
    assert len(message) < 400


def test_recipe_too_many_aliases(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text("v: &v 1\nitems: [" + ", ".join(["*v"] * 150) + "]\n")
    expect_error(lambda: Recipe.from_yaml(path), ConfigError, str(path), "100 YAML aliases",
                 root=tmp_path)


def test_recipe_recursive_alias(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("data: {spec: 'folder:/x'}\nmodel: {name: unet, options: &o {deep: *o}}\n")
    expect_error(lambda: Recipe.from_yaml(path), ConfigError, str(path), "refers to itself",
                 root=tmp_path)


def test_override_recursive_alias(tmp_path):
    expect_error(_recipe(["model.options.x=&a [*a]"]), ConfigError, "override model.options.x",
                 root=tmp_path)


def test_study_file_alias_bomb(tmp_path):
    from seglab.study.spec import load_spec

    path = tmp_path / "study.yaml"
    path.write_text(BOMB.replace("name: bomb", "name: s\nspace: {}"))
    expect_error(lambda: load_spec(path), ConfigError, str(path), "aliases", root=tmp_path)


def test_cli_alias_bomb_under_model_options_takes_no_lock(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = ["name: bomb", "data: {spec: 'folder:/nowhere'}", "a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 8)}]" for i in range(1, 8)]
    lines += ["model: {name: unet, options: {w: *a7}}"]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    expect_cli_error(["train", path], str(path), "aliases", root=tmp_path)  # no runs/ left


def test_long_value_echo_is_truncated(tmp_path):
    message = expect_error(_recipe(["optim.lr=" + "x" * 20000]), ConfigError, "optim.lr",
                           "xxx...xxx", root=tmp_path)
    assert len(message) < 1500


def test_huge_list_echo_is_truncated(tmp_path):
    big = "[" + ",".join(["1"] * 5000) + "]"
    message = expect_error(_recipe([f"trainer.max_epochs={big}"]), ConfigError,
                           "trainer.max_epochs", root=tmp_path)
    assert len(message) < 1500


# --- training: divergence, trainer settings, resume edits ---------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from seglab.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("hostile") / "data"
    return make_synthetic(root, n_train=4, n_val=2, n_test=2, size=(32, 32), num_classes=3)


def _train_args(data: Path) -> list[str]:
    return [f"data.spec=folder:{data}", "data.batch_size=2", "data.num_workers=0",
            "model.name=unet", "model.options.base_channels=4", "model.options.depth=2",
            "augment.crop_size=32", "augment.scale_range=[0.75,1.25]", "trainer.max_epochs=1",
            "trainer.progress=false", "trainer.seed=7", "trainer.deterministic=true",
            "trainer.precision=fp32", "trainer.channels_last=false", "data.cache=off"]


def test_diverged_training_is_an_error_and_exports_nothing(tiny_data, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", *_train_args(tiny_data), "optim.lr=1e30",
                                      "--run-dir", str(run)])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert "diverged at step" in errors[0] and "optim.lr" in errors[0], errors[0]
    assert "Traceback" not in result.output
    assert not (run / "model").exists() and not (run / "metrics.json").exists()
    for ckpt in (run / "checkpoints").glob("*.ckpt"):  # whatever was saved is finite
        state = torch.load(ckpt, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize(("override", "named"), [
    ("trainer.strategy=bogus", "trainer.strategy='bogus'"),
    ("trainer.accelerator=warp", "trainer.accelerator='warp'"),
])
def test_lightning_setting_refused_before_writing(override, named, tiny_data, tmp_path):
    expect_cli_error(["train", *_train_args(tiny_data), override, "--run-dir",
                      tmp_path / "run"], named, root=tmp_path)


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("hostile_run") / "run"
    result = CliRunner().invoke(app, ["train", *_train_args(tiny_data), "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    return run


RESUME_REFUSED = [
    ("optim.lr=0.5", "optim.lr (0.01 -> 0.5)"),
    ("data.batch_size=4", "data.batch_size"),
    ("model.options.base_channels=8", "model.options.base_channels"),
    ("model.options.depth=3", "model.options.depth"),
    ("loss.name=dice", "loss.name"),
    ("trainer.seed=3", "trainer.seed"),
    ("schedule.name=cosine", "schedule.name"),
    ("augment.hflip=0.0", "augment.hflip"),
    ("data.spec=folder:{copy}", "data.spec"),  # the same images elsewhere: another dataset
]


@pytest.mark.parametrize(("override", "named"), RESUME_REFUSED,
                         ids=[v[0] for v in RESUME_REFUSED])
def test_resume_edit_refused_naming_the_key(override, named, trained_run, tiny_data, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "run")
    if "{copy}" in override:
        override = override.format(copy=shutil.copytree(tiny_data, tmp_path / "other"))
    output = expect_cli_error(["train", "--resume", "--run-dir", run, override,
                               "trainer.max_epochs=2"], named, "cannot resume", root=tmp_path)
    assert "trainer.max_epochs" in output  # says what may change


def test_resume_edited_recipe_yaml_refused(trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "run")
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["loss"]["label_smoothing"] = 0.2
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    expect_cli_error(["train", "--resume", "--run-dir", run, "trainer.max_epochs=2"],
                     "loss.label_smoothing", root=tmp_path)


def test_resume_rule_allows_what_it_applies():
    from seglab.engine.resume_rule import refused_changes

    saved = Recipe.from_yaml(None, BASE).to_dict()
    edited = Recipe.from_yaml(None, [*BASE, "trainer.max_epochs=90", "eval.flip=true",
                                     "data.num_workers=0", "trainer.loggers=[csv]"]).to_dict()
    assert refused_changes(saved, edited) == []
    moved = Recipe.from_yaml(None, [*BASE, "optim.momentum=0.5"]).to_dict()
    assert refused_changes(saved, moved) == ["optim.momentum (0.9 -> 0.5)"]


# --- loaded models with NaN weights ---------------------------------------------------------------


@pytest.fixture()
def nan_model_dir(tmp_path) -> Path:
    from seglab.artifacts.pretrained import save_pretrained
    from seglab.models import build_model

    model = build_model("unet", 3, base_channels=4, depth=2).eval()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    return save_pretrained(model, tmp_path / "m")


def test_nan_weights_in_model_folder_refused(nan_model_dir, tmp_path):
    from seglab.artifacts.pretrained import from_pretrained

    expect_error(lambda: from_pretrained(nan_model_dir), ModelError, "model.safetensors",
                 "NaN", root=tmp_path)


def test_nan_weights_through_predict_cli(nan_model_dir, tmp_path):
    png(tmp_path / "in" / "a.png", rgb(32, 32))
    expect_cli_error(["predict", nan_model_dir, tmp_path / "in", "--out", tmp_path / "out"],
                     "NaN", "model.safetensors", root=tmp_path)


def test_inf_weights_in_checkpoint_refused(tmp_path):
    from seglab.models.weights import load_matching

    module = torch.nn.Linear(2, 2)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    state["bias"][0] = float("inf")
    expect_error(lambda: load_matching(module, state, source="x.ckpt"), ModelError, "x.ckpt",
                 "bias", root=tmp_path)


# --- masks and images read as stored -------------------------------------------------------------


@pytest.mark.parametrize("bits", [2, 4])
def test_low_bit_mask_ids_are_raw(bits, tmp_path):
    from seglab.data.masks import read_mask_array

    ids = np.array([[0, 1, 2, 3]], np.uint8) % (2**bits)
    path = tmp_path / "m.png"
    Image.fromarray(ids).save(path, bits=bits)
    assert read_mask_array(path).tolist() == ids.tolist()


def test_one_bit_mask_ids_are_raw(tmp_path):
    from seglab.data.masks import read_mask_array

    path = tmp_path / "m.png"
    Image.fromarray(np.array([[0, 1, 1, 0]], bool)).save(path)
    assert read_mask_array(path).tolist() == [[0, 1, 1, 0]]


def test_cmyk_tiff_read_as_rgb(tmp_path):
    from seglab.data.dataset import read_image

    cmyk = np.zeros((6, 5, 4), np.uint8)
    cmyk[..., 0] = 255  # full cyan ink
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.tif")
    image = read_image(tmp_path / "c.tif")
    assert image.shape == (3, 6, 5) and image[:, 0, 0].tolist() == [0, 255, 255]


# --- split lists ---------------------------------------------------------------------------------


def _listed(root: Path, names: list[str]) -> Path:
    for i, name in enumerate(names):  # distinct bytes: data check compares content
        png(root / "images" / f"{name}.png", rgb(value=10 * i))
        png(root / "masks" / f"{name}.png", np.zeros((8, 10), np.uint8))
    (root / "classes.csv").write_text("name,r,g,b\nbg,0,0,0\nfg,255,255,255\n")
    return root


LIST_ENCODINGS = {
    "utf8": ("street 1\n2021.05.00\n", "utf-8"),
    "utf8_bom": ("\ufeffstreet 1\n2021.05.00\n", "utf-8"),
    "utf16_bom": ("street 1\r\n2021.05.00\r\n", "utf-16"),
    "crlf": ("street 1\r\n2021.05.00.png\r\n", "utf-8"),
    "paths": ("images/street 1.png\n/abs/x/2021.05.00.png\n", "utf-8"),
}


@pytest.mark.parametrize("kind", sorted(LIST_ENCODINGS))
def test_split_list_lines_read_whole(kind, tmp_path):
    from seglab.data.formats import open_source

    root = _listed(tmp_path / "d", ["street 1", "street", "2021.05.00", "2021.05", "other"])
    text, encoding = LIST_ENCODINGS[kind]
    (root / "train.txt").write_bytes(text.encode(encoding))
    (root / "val.txt").write_text("other\n")
    source = open_source(f"folder:{root}")
    names = sorted(image.stem for image, _ in source.splits["train"])
    assert names == ["2021.05.00", "street 1"]


def test_split_list_image_mask_pairs_still_read(tmp_path):
    from seglab.data.formats import open_source

    root = _listed(tmp_path / "d", ["a", "b"])
    (root / "train.txt").write_text("images/a.png masks/a.png\nimages/b.png masks/b.png\n")
    assert len(open_source(f"folder:{root}").splits["train"]) == 2


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"\xef\xbb\xbf\r\n"])
def test_empty_split_list_is_an_error(content, tmp_path):
    from seglab.data.formats import open_source

    root = _listed(tmp_path / "d", ["a", "b"])
    (root / "train.txt").write_text("a\n")
    (root / "val.txt").write_bytes(content)
    expect_error(lambda: open_source(f"folder:{root}"), DataError, str(root / "val.txt"),
                 "names no images", root=tmp_path)


def test_utf16_without_bom_refused_clearly(tmp_path):
    from seglab.data.formats import open_source

    root = _listed(tmp_path / "d", ["a"])
    (root / "train.txt").write_bytes("a\n".encode("utf-16-le") + b"\xff\xd8")
    expect_error(lambda: open_source(f"folder:{root}"), DataError, "train.txt", "UTF-8",
                 root=tmp_path)


# --- data check: overlaps, repeats, band counts --------------------------------------------------


def test_check_same_image_in_train_and_val_lists(tmp_path):
    from seglab.data.inspect import check_source

    root = _listed(tmp_path / "d", ["a", "b", "c"])
    (root / "train.txt").write_text("a\nb\n")
    (root / "val.txt").write_text("b\nc\n")
    doc = check_source(f"folder:{root}")
    assert not doc["ok"]
    said = " ".join(p["problem"] for p in doc["problems"])
    assert "train, val" in said and "b.png" in said


def test_check_same_bytes_under_two_names_in_two_splits_warns(tmp_path):
    from seglab.data.inspect import check_source

    root = folder_dataset(tmp_path / "d", n=3)
    (root / "train.txt").write_text("p0\np1\n")
    (root / "val.txt").write_text("p2\n")
    shutil.copy(root / "images" / "p0.png", root / "images" / "p2.png")
    doc = check_source(f"folder:{root}")
    said = " ".join(doc["warnings"])
    assert "same bytes" in said and "p0.png" in said and "p2.png" in said


def test_check_repeat_within_a_split_is_a_warning(tmp_path):
    from seglab.data.inspect import check_source

    root = _listed(tmp_path / "d", ["a", "b"])
    (root / "train.txt").write_text("a\na\nb\n")
    doc = check_source(f"folder:{root}")
    assert any("a.png is listed 2 times in train" in w for w in doc["warnings"])


def test_check_mixed_band_counts(tmp_path):
    import tifffile

    from seglab.data.inspect import check_source

    root = folder_dataset(tmp_path / "d", n=2)
    (root / "images" / "p1.png").unlink()
    tifffile.imwrite(root / "images" / "p1.tif", np.zeros((4, 8, 10), np.uint8),
                     photometric="minisblack")  # four bands, beside an RGB image
    doc = check_source(f"folder:{root}", val_fraction=0, test_fraction=0)
    said = " ".join(p["problem"] for p in doc["problems"])
    assert "different band counts" in said and "p1.tif" in said, doc


# --- files: predict's summary, weights' mode, push, model card, filesystem errors ---------------


@pytest.fixture()
def model_dir(tmp_path) -> Path:
    from seglab.artifacts.pretrained import save_pretrained
    from seglab.models import build_model

    torch.manual_seed(0)
    return save_pretrained(build_model("unet", 3, base_channels=4, depth=2).eval(),
                           tmp_path / "m")


def test_predict_summary_written_last(model_dir, tmp_path, monkeypatch):
    from seglab.predict import files
    from seglab.predict.predictor import Predictor

    for i in range(3):
        png(tmp_path / "in" / f"{i}.png", rgb(32, 32, 20 * i))
    out = tmp_path / "out"
    predictor = Predictor(model_dir)
    files.predict_paths(predictor, [tmp_path / "in"], out)
    assert json.loads((out / "summary.json").read_text())["num_images"] == 3

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.OutputWriter, "write_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        files.predict_paths(predictor, [tmp_path / "in"], out)
    assert not (out / "summary.json").exists()  # the folder now says it is unfinished
    monkeypatch.undo()
    files.predict_paths(predictor, [tmp_path / "in"], out)  # a re-run completes it
    assert (out / "summary.json").is_file()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_weights_follow_the_umask(umask, tmp_path):
    from seglab.artifacts.pretrained import save_pretrained
    from seglab.models import build_model

    old = os.umask(umask)
    try:
        folder = save_pretrained(build_model("unet", 2, base_channels=4, depth=2), tmp_path / "m")
    finally:
        os.umask(old)
    for name in ("model.safetensors", "config.json"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o666 & ~umask, name


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_push_refuses_a_file_that_is_not_what_its_name_says(name, model_dir, tmp_path):
    if name == "model.safetensors":
        torch.save({"w": torch.zeros(1)}, model_dir / name)  # a pickle under that name
    else:
        (model_dir / name).write_bytes(b"\x80\x04not json")
    expect_cli_error(["push", model_dir, "org/name", "--to-dir", tmp_path / "staged"],
                     str(model_dir / name), "not a", root=tmp_path)


def test_model_card_escapes_html_in_class_names(tmp_path):
    from seglab.artifacts.pretrained import save_pretrained
    from seglab.data.classes import ClassMap
    from seglab.models import build_model

    classmap = ClassMap(names=["bg", "<script>alert(1)</script>"],
                        colors=[(0, 0, 0), (255, 0, 0)])
    folder = save_pretrained(build_model("unet", 2, base_channels=4, depth=2), tmp_path / "m",
                             classmap=classmap)
    card = (folder / "README.md").read_text()
    assert "<script>" not in card and "&lt;script&gt;" in card


@pytest.mark.parametrize(("code", "words"), [
    (errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only"), (errno.EACCES, "permission"),
])
def test_filesystem_error_is_one_line_naming_the_path(code, words, model_dir, tmp_path,
                                                      monkeypatch):
    from seglab.predict import files

    png(tmp_path / "in" / "a.png", rgb(32, 32))
    target = tmp_path / "out" / "summary.json"

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(target))

    monkeypatch.setattr(files, "write_summary", fail)
    result = CliRunner().invoke(app, ["predict", str(model_dir), str(tmp_path / "in"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(target) in errors[0] and words in errors[0], result.output
    assert "Traceback" not in result.output


def test_skipped_inputs_line_has_no_markup(model_dir, tmp_path):
    png(tmp_path / "in" / "a.png", rgb(32, 32))
    (tmp_path / "in" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    result = CliRunner().invoke(app, ["predict", str(model_dir), str(tmp_path / "in"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "input(s) skipped" in result.output and "[bold" not in result.output
    assert "b.png" in result.output


def test_resume_with_another_class_table_refused(tmp_path):
    from seglab.data.classes import ClassMap
    from seglab.engine.resume_rule import check_resume_edits

    recipe = Recipe.from_yaml(None, BASE).to_dict()
    saved = ClassMap(names=("bg", "fg"), colors=((0, 0, 0), (255, 255, 255))).to_dict()
    now = ClassMap(names=("bg", "fg", "sky"),
                   colors=((0, 0, 0), (255, 255, 255), (0, 0, 255))).to_dict()
    checkpoint = {"hyper_parameters": {"recipe": recipe, "classmap": saved}}
    expect_error(lambda: check_resume_edits(checkpoint, recipe, now, tmp_path / "last.ckpt"),
                 ConfigError, "class table", "last.ckpt", root=tmp_path)


# --- a training that learned nothing says so -----------------------------------------------------


def test_flat_loss_warning():
    from seglab.engine.health import flat_loss_warning

    assert "stayed at its start value" in flat_loss_warning(
        [{"train_loss": 1.0986}, {"train_loss": 1.0990}, {"train_loss": 1.0979}])
    assert flat_loss_warning([{"train_loss": 1.1}, {"train_loss": 0.8}, {"train_loss": 0.6}]) \
        is None
    assert flat_loss_warning([{"train_loss": 1.1}, {"train_loss": 1.1}]) is None  # too short


def test_one_class_warning_names_the_class():
    from seglab.engine.health import one_class_warning

    confusion = np.array([[50, 0, 0], [30, 0, 0], [20, 0, 0]])  # rows truth, cols prediction
    assert "'road'" in one_class_warning(confusion, ["road", "car", "sky"])
    assert one_class_warning(np.diag([5, 5, 5]), ["road", "car", "sky"]) is None
    assert one_class_warning(np.array([[9, 0], [0, 0]]), ["road", "car"]) is None  # one truth


def test_report_markdown_escapes_html_in_class_names():
    from seglab.report.tables import markdown_table

    table = markdown_table(["Class", "m<1>"], [["<img src=x onerror=alert(1)>", "5.0"]])
    assert "<img" not in table and "&lt;img src=x" in table and "m&lt;1&gt;" in table
