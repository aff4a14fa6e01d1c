"""Extension points, one row each: a data format, a model, a head and a CLI verb.

Each row registers a dummy of its kind the way a new module would, finds it reachable from a
recipe, the CLI (typer's CliRunner, in-process, so the registration is visible) and, where it
applies, the report; its fixture unregisters it. The row's docstring is the "how to add" recipe.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from seglab.cli.main import app
from seglab.compare import compare
from seglab.config import Recipe
from seglab.data.classes import TableRow
from seglab.data.datamodule import SegDataModule
from seglab.data.formats import (
    FORMATS,
    SPLIT_NAMES,
    DataSource,
    Options,
    list_images,
    match_by_stem,
    register_format,
)
from seglab.data.masks import index_decoder
from seglab.data.synthetic import make_synthetic
from seglab.models import build_model, register_model
from seglab.models.backbones import TimmBackbone
from seglab.models.registry import unregister_model
from seglab.models.segmentor import Segmentor

# What compare trains with: small, fast, no crops (the images are 32x32).
TINY_RECIPE = [
    "data.batch_size=4", "data.eval_batch_size=4", "data.num_workers=0",
    "augment.crop_size=null", "augment.scale_range=null", "optim.name=adamw", "optim.lr=0.003",
    "trainer.early_stop_patience=null", "trainer.checkpoint_every_n_steps=null",
    "trainer.progress=false", "eval.num_panels=0",
]


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.stdout


def _write_pairs(root: Path, image_dir: str, mask_dir: str, counts: dict[str, int]) -> None:
    """``root/<split>/<image_dir>/i.png`` and a 2-class mask (bright half = 1) of each."""
    rng = np.random.default_rng(0)
    for split, count in counts.items():
        for i in range(count):
            image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            mask = (image.mean(axis=2) > 127).astype(np.uint8)
            for folder, array in ((image_dir, image), (mask_dir, mask)):
                (root / split / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / split / folder / f"{i}.png")


# --- format ----------------------------------------------------------------------------------


def open_dummy_format(root: Path, opts: Options) -> DataSource:
    """``dummyfmt:PATH``: ``<split>/rgb/*.png`` + ``<split>/gt/*.png``, two classes."""
    decoder = index_decoder([TableRow("ground", (0, 0, 0)), TableRow("thing", (255, 0, 0))])
    splits, problems = {}, []
    for split in SPLIT_NAMES:
        where = root / split
        splits[split], found = match_by_stem(list_images(where / "rgb"),
                                             list_images(where / "gt"), str(where))
        problems += found
    return DataSource("dummyfmt", root, "dummyfmt/rgb+gt", decoder, splits, problems=problems)


@pytest.fixture
def dummy_format(tmp_path: Path) -> Iterator[str]:
    register_format("dummyfmt")(open_dummy_format)
    _write_pairs(tmp_path / "data", "rgb", "gt", {"train": 8, "val": 4, "test": 4})
    yield f"dummyfmt:{tmp_path / 'data'}"
    FORMATS.pop("dummyfmt", None)


def test_a_format_is_one_registered_adapter(dummy_format: str, tmp_path: Path) -> None:
    """How to add a data format: write ``seglab/data/formats/<name>.py`` with an adapter
    ``(root: Path, opts: Options) -> DataSource`` (class map, mask decoder, pairs per split)
    decorated ``@register_format("<name>")``, built from ``list_images``/``match_by_stem``;
    import the module on the registry line of ``seglab/data/formats/__init__.py``. Recipes
    (``data.spec: <name>:PATH``), ``seglab data check|inspect`` and their help then know it."""
    recipe = Recipe.from_dict({"data": {"spec": dummy_format}, "model": {"name": "unet"}})
    datamodule = SegDataModule(recipe.data.spec, batch_size=4)
    datamodule.setup("fit")
    images, masks = next(iter(datamodule.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32)
    assert set(masks.unique().tolist()) <= {0, 1}

    assert "dummyfmt" in _invoke("data", "check", "--help")
    check = json.loads(_invoke("data", "check", dummy_format, "--json"))
    assert check["ok"] and check["pairs_checked"] == 16
    inspected = json.loads(_invoke("data", "inspect", dummy_format, "--json"))
    assert inspected["layout"] == "dummyfmt/rgb+gt"
    assert [row["name"] for row in inspected["classes"]] == ["ground", "thing"]

    outcome = compare(["unet:base_channels=4,depth=2"], dummy_format, overrides=TINY_RECIPE,
                      name="fmt", epochs=1, runs_root=tmp_path / "runs", gallery_size=1,
                      progress=lambda message: None)
    report = json.loads(outcome.report.results.read_text())
    assert report["data"] == dummy_format and report["classes"]["names"] == ["ground", "thing"]


# --- model -----------------------------------------------------------------------------------


class DummyNet(nn.Module):
    """One 3x3 convolution: logits at the input size, as every seglab model returns them."""

    def __init__(self, num_classes: int, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, num_classes, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.body(x)}


def build_dummy(num_classes: int, *, width: int = 4) -> nn.Module:
    """The builder: ``num_classes`` first, every option keyword-only with its default."""
    return DummyNet(num_classes, width)


@pytest.fixture
def dummy_model() -> Iterator[str]:
    register_model("dummy", build_dummy, family="dummy", backbone="none",
                   description="one 3x3 convolution (extension-point test)")
    yield "dummy"
    unregister_model("dummy")


def test_a_model_is_one_registered_builder(dummy_model: str, tmp_path: Path) -> None:
    """How to add a model: write ``seglab/models/<name>.py`` with a builder
    ``(num_classes, *, option=default, ...) -> nn.Module`` returning ``{"out": logits}`` at the
    input size, and call ``register_model("<name>", builder, family=..., backbone=...,
    description=...)`` there; add one import line to ``seglab/models/__init__.py``. Recipes
    (``model.name``), ``seglab models list|show``, bench and the compare report then know it."""
    recipe = Recipe.from_dict({"data": {"spec": "folder:unused"},
                               "model": {"name": dummy_model, "options": {"width": 2}}})
    model = build_model(recipe.model.name, 3, **recipe.model.options)
    assert model(torch.zeros(1, 3, 20, 24))["out"].shape == (1, 3, 20, 24)
    assert model.seglab_spec == {"name": "dummy", "num_classes": 3, "options": {"width": 2}}

    listed = json.loads(_invoke("models", "list", "--family", "dummy", "--json"))
    assert [row["name"] for row in listed["models"]] == ["dummy"]
    shown = json.loads(_invoke("models", "show", "dummy", "-o", "width=2", "--num-classes", "2",
                               "--input", "16x16", "--json"))
    assert shown["name"] == "dummy" and shown["outputs"] == {"out": [1, 2, 16, 16]}

    data = make_synthetic(tmp_path / "data", n_train=8, n_val=4, n_test=4, size=(32, 32),
                          num_classes=2)
    outcome = compare([f"{dummy_model}:width=2"], f"folder:{data}", overrides=TINY_RECIPE,
                      name="model", epochs=1, runs_root=tmp_path / "runs", gallery_size=1,
                      progress=lambda message: None)
    (result,) = outcome.results
    assert result.status == "trained" and result.bench["params"] == shown["total_params"]
    report = json.loads(outcome.report.results.read_text())
    assert report["models"][0]["label"] == result.label == "dummy-width2"
    assert "dummy-width2" in outcome.report.html.read_text()


# --- head ------------------------------------------------------------------------------------


class DummyHead(nn.Module):
    """A head: the backbone's feature list (shallow to deep) -> logits at the deepest stride."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(features[-1])


def build_dummy_head(num_classes: int, *, backbone: str = "resnet18",
                     backbone_weights: str | None = None, in_chans: int = 3) -> nn.Module:
    """A composed model: a timm backbone, the new head, ``Segmentor`` upsamples to the input."""
    encoder = TimmBackbone(backbone, output_stride=32, weights=backbone_weights,
                           in_chans=in_chans)
    return Segmentor(encoder, DummyHead(encoder.channels[-1], num_classes))


@pytest.fixture
def dummy_head_model() -> Iterator[str]:
    register_model("dummyhead", build_dummy_head, family="dummyhead", backbone="any (resnet18)",
                   description="a 1x1 classifier on the deepest features (extension-point test)",
                   backbone_weights=("imagenet",))
    yield "dummyhead"
    unregister_model("dummyhead")


def test_a_head_is_one_module_composed_on_a_backbone(dummy_head_model: str) -> None:
    """How to add a head: write ``seglab/models/heads/<name>.py`` with an ``nn.Module`` taking
    the backbone's feature list (``TimmBackbone.channels``/``reductions`` give each stage's
    width and stride) and returning logits (or ``{"out", "aux"}``); register a model that
    composes it, ``Segmentor(TimmBackbone(backbone, ...), YourHead(...))``, with
    ``register_model`` beside it (as ``models/composed.py`` does for its families)."""
    recipe = Recipe.from_dict({"data": {"spec": "folder:unused"},
                               "model": {"name": dummy_head_model}})
    model = build_model(recipe.model.name, 5, **recipe.model.options).eval()
    assert isinstance(model.head, DummyHead)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 48))["out"].shape == (1, 5, 64, 48)

    listed = json.loads(_invoke("models", "list", "--family", "dummyhead", "--json"))
    assert [row["name"] for row in listed["models"]] == ["dummyhead"]
    shown = json.loads(_invoke("models", "show", "dummyhead", "--input", "64x64", "--depth", "1",
                               "--json"))
    assert "head" in {layer["name"] for layer in shown["layers"]}


# --- CLI verb --------------------------------------------------------------------------------


def dummy_verb(name: str = typer.Argument(..., help="Who to greet.")) -> None:
    """Say hello (a verb of the extension-point test)."""
    typer.echo(f"hello {name}")


@pytest.fixture
def dummy_verb_registered() -> Iterator[str]:
    before = list(app.registered_commands)
    app.command("dummyverb")(dummy_verb)
    yield "dummyverb"
    app.registered_commands[:] = before


def test_a_verb_is_one_module_and_one_line_in_main(dummy_verb_registered: str) -> None:
    """How to add a CLI verb: write ``seglab/cli/<verb>.py`` with a typer function that parses
    its options (``cli/parse.py``), calls one library function and prints (``cli/output.py``:
    ``fail`` for an ``error: ...`` line, ``print_json`` for ``--json``); in ``cli/main.py`` add
    its import and ``app.command("<verb>")(function)`` before ``guard_json_verbs(app)``. There
    is no plugin discovery: those two lines are the registration."""
    assert dummy_verb_registered in _invoke("--help")
    assert _invoke(dummy_verb_registered, "world").strip() == "hello world"
