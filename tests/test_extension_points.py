"""Every extension point has one shape: a self-registering module plus a row here.

Each row registers a dummy of its kind (a data format, a model, a head, a CLI verb, a loss, a
metric) the way a new module would, finds it reachable from a recipe, the CLI (typer's
CliRunner, in-process, so the registration is visible) and, where it applies, the report and
a study; then unregisters it. Each row's docstring is the "how to add" recipe that
``docs/internals.md`` repeats.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import typer
import yaml
from PIL import Image
from pydantic import Field
from torch import nn
from typer.testing import CliRunner

from seglab.artifacts import rundir
from seglab.artifacts.model_card import CARD_FILE
from seglab.artifacts.pretrained import save_pretrained
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
    open_source,
    register_format,
)
from seglab.data.masks import index_decoder
from seglab.data.synthetic import make_synthetic
from seglab.errors import ConfigError
from seglab.losses import LossOptions, build_loss, loss_names, register_loss, unregister_loss
from seglab.metrics import (
    ClassCounts,
    metric_keys,
    metrics_from_confusion,
    register_metric,
    unregister_metric,
)
from seglab.models import build_model, register_model
from seglab.models.backbones import TimmBackbone
from seglab.models.registry import unregister_model
from seglab.models.segmentor import Segmentor
from seglab.report import ModelResult, load_run, write_report
from seglab.study.runner import folder_metrics
from seglab.study.spec import load_spec

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


def test_a_loss_is_one_registered_module(tmp_path: Path) -> None:
    """How to add a loss: declare it in ``seglab/loss_options.py`` (a ``LossOptions`` model whose
    fields are the recipe's flat ``loss.<option>`` keys, prefixed with the loss's name, and
    ``declare_loss("<name>", Model)``: recipes are checked without torch), then write
    ``seglab/losses/<family>.py`` with the ``nn.Module`` and ``@register_loss("<name>",
    options=Model) def build(options, *, ignore_index, class_weights)`` and import it in
    ``seglab/losses/__init__.py``. A plugin's loss needs only ``register_loss``, as below."""
    calls: list[float] = []

    class ScaledOptions(LossOptions):
        dummy_scale: float = Field(1.0, gt=0, description="dummy: factor on the cross-entropy")

    class ScaledCrossEntropy(nn.Module):
        def __init__(self, scale: float, ignore_index: int) -> None:
            super().__init__()
            self.scale, self.ignore_index = scale, ignore_index

        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            calls.append(self.scale)
            return self.scale * F.cross_entropy(logits.float(), target.long(),
                                                ignore_index=self.ignore_index)

    @register_loss("dummy", options=ScaledOptions)
    def build_scaled(options: ScaledOptions, *, ignore_index: int,
                     class_weights: torch.Tensor | None) -> nn.Module:
        return ScaledCrossEntropy(options.dummy_scale, ignore_index)

    try:
        data = make_synthetic(tmp_path / "data", n_train=4, n_val=2, n_test=2, size=(32, 32),
                              num_classes=3)
        base = {"data": {"spec": f"folder:{data}", "batch_size": 2, "num_workers": 0,
                         "test_split": None},
                "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
                "augment": {"crop_size": [32, 32], "scale_range": None},
                "eval": {"num_panels": 0},
                "trainer": {"max_epochs": 1, "progress": False, "precision": "fp32"}}
        # A recipe: the name and the option are validated (bounds, typos) like built-in ones.
        recipe = Recipe.from_dict({**base, "loss": {"name": "dummy", "dummy_scale": 3}})
        assert recipe.loss.dummy_scale == 3.0 and "dummy" in loss_names()
        loss = build_loss(recipe.loss)
        assert isinstance(loss, ScaledCrossEntropy) and loss.scale == 3.0
        with pytest.raises(ConfigError, match=r"loss.dummy_scale: Input should be greater than "
                                              r"0 \(got 0\) \[loss.dummy_scale: dummy: factor"):
            Recipe.from_dict({**base, "loss": {"name": "dummy", "dummy_scale": 0}})
        with pytest.raises(ConfigError, match="did you mean loss.dummy_scale"):
            Recipe.from_dict(base, ["loss.dummy_scal=2"])
        # The CLI: seglab train minimises it, and the run folder says so.
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(base))
        run = tmp_path / "run"
        result = CliRunner().invoke(app, ["train", str(path), "loss.name=dummy",
                                          "loss.dummy_scale=2", "--run-dir", str(run)])
        assert result.exit_code == 0, result.output
        assert calls and set(calls) == {2.0}  # the training and validation steps used it
        saved = yaml.safe_load((run / "recipe.yaml").read_text())["loss"]
        assert (saved["name"], saved["dummy_scale"]) == ("dummy", 2.0)
        card = (rundir.model_dir(run) / CARD_FILE).read_text()
        assert "| loss | dummy (class weights: none) |" in card and "dummy_scale: 2.0" in card
    finally:
        unregister_loss("dummy")
    # Unregistered, the name is refused again, listing the registered ones.
    with pytest.raises(ConfigError, match=r"loss.name: Input should be 'ce', .* \(got 'dummy'\)"):
        Recipe.from_dict({**base, "loss": {"name": "dummy"}})


def _pixel_error(counts: ClassCounts) -> float:
    """Share of the scored pixels whose predicted class is wrong."""
    return float(1.0 - counts.tp.sum() / counts.total) if counts.total > 0 else float("nan")


def test_a_registered_metric_reaches_metrics_json_the_cli_the_report_and_a_study(
    tmp_path: Path,
) -> None:
    """How to add a metric: a new module in ``src/seglab/metrics/`` with ``fn(counts:
    ClassCounts) -> float`` decorated ``@register_metric(key, label, fmt=, direction=, shown_in=)``
    and its import line in ``seglab/metrics/__init__.py``. metrics.json, ``seglab eval`` (and
    ``--json``), the report's table and study objectives then show it; nothing else names it."""
    register_metric("pixel_error", "Pixel error", short="error", direction="lower")(_pixel_error)
    try:
        assert "pixel_error" in metric_keys("objective")
        data = make_synthetic(tmp_path / "data", n_train=2, n_val=2, n_test=3, size=(24, 24),
                              num_classes=3)
        classmap = open_source(f"folder:{data}").classmap
        model = build_model("unet", 3, base_channels=4, depth=2)
        folder = save_pretrained(model, tmp_path / "model", classmap=classmap)

        # An evaluation through the CLI: metrics.json and the --json document carry the score.
        runner = CliRunner()
        out = tmp_path / "eval"
        done = runner.invoke(app, ["eval", str(folder), "--data", f"folder:{data}", "--json",
                                   "--out", str(out), "--no-boundary", "--panels", "0"])
        assert done.exit_code == 0, done.output
        printed = json.loads(done.stdout)
        saved = json.loads((out / "metrics.json").read_text())
        confusion = np.load(out / "confusion.npy")
        expected = 1.0 - np.trace(confusion) / confusion.sum()
        assert saved["pixel_error"] == pytest.approx(expected)
        assert printed["pixel_error"] == pytest.approx(expected)
        assert saved["pixel_error"] == pytest.approx(1.0 - saved["pixel_acc"])

        # The printed summary line names it with its short label, as a percent.
        table = runner.invoke(app, ["eval", str(folder), "--data", f"folder:{data}",
                                    "--no-boundary", "--panels", "0"])
        assert table.exit_code == 0, table.output
        assert f"error {100 * expected:.2f}" in table.stdout

        # The report: its column, the lower value marked best, and results.json.
        perfect = np.diag(confusion.sum(1))  # every pixel right: error 0, the best
        other = ModelResult("perfect", metrics_from_confusion(perfect, classmap.names))
        files = write_report([load_run(out, label="unet"), other], classmap, tmp_path / "report")
        cells = [[cell.strip() for cell in line.strip("|").split("|")]
                 for line in files.markdown.read_text().splitlines()
                 if line.startswith(("| Model ", "| unet ", "| perfect "))]
        column = cells[0].index("Pixel error %")
        rows = {row[0]: row[column] for row in cells[1:]}
        assert rows == {"unet": f"{100 * expected:.1f}", "perfect": "**0.0**"}
        results = json.loads(files.results.read_text())
        assert results["models"][0]["metrics"]["pixel_error"] == pytest.approx(expected)

        # A study objective: accepted by name, minimised by default, read from metrics.json.
        spec = load_spec({"name": "s", "base": {"data": {"spec": f"folder:{data}"},
                                                "model": {"name": "unet"}},
                          "space": {"optim.lr": {"log_uniform": [1e-4, 1e-2]}},
                          "objective": {"metric": "pixel_error"}})
        assert spec.objectives[0].direction == "minimize"
        assert folder_metrics(out, None, ["pixel_error"])["pixel_error"] == pytest.approx(expected)
    finally:
        unregister_metric("pixel_error")
    assert "pixel_error" not in metrics_from_confusion(np.eye(2, dtype=np.int64))


def test_registry_refuses_a_twice_registered_key_and_unknown_settings() -> None:
    with pytest.raises(ValueError, match="'miou' is registered twice"):
        register_metric("miou", "again")(_pixel_error)
    with pytest.raises(ValueError, match="direction must be one of higher, lower, got 'up'"):
        register_metric("x_metric", "X", direction="up")
    with pytest.raises(ValueError, match="a place must be one of"):
        register_metric("x_metric", "X", shown_in=("sidebar",))
    with pytest.raises(ValueError, match="'x_metric' is not registered"):
        unregister_metric("x_metric")
