"""Recipes: YAML round trip, CLI overrides, plain-words errors, shipped configs validate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from seglab.config import Recipe, apply_overrides, expand_data_root
from seglab.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
MINIMAL = {"data": {"spec": "folder:/tmp/x"}, "model": {"name": "unet"}}


def test_defaults_and_roundtrip(tmp_path: Path) -> None:
    recipe = Recipe.from_dict(MINIMAL)
    assert recipe.optim.name == "sgd" and recipe.schedule.name == "poly"
    assert recipe.trainer.precision == "auto"
    path = tmp_path / "recipe.yaml"
    recipe.to_yaml(path)
    again = Recipe.from_yaml(path)
    assert again == recipe
    assert yaml.safe_load(path.read_text())["augment"]["crop_size"] == [512, 512]


def test_overrides_parse_yaml_values() -> None:
    recipe = Recipe.from_dict(
        MINIMAL,
        [
            "optim.lr=0.02",
            "augment.crop_size=320",
            "augment.scale_range=[0.75, 1.5]",
            "model.options.weights=null",
            "model.options.backbone=resnet18",
            "trainer.grad_clip=1",
            "loss.second=lovasz",
        ],
    )
    assert recipe.optim.lr == 0.02
    assert recipe.augment.crop_size == (320, 320)
    assert recipe.augment.scale_range == (0.75, 1.5)
    assert recipe.model.options == {"weights": None, "backbone": "resnet18"}
    assert recipe.trainer.grad_clip == 1.0
    assert recipe.loss.second == "lovasz"
    # The input mapping is not modified.
    assert "options" not in MINIMAL["model"]


def test_recipe_from_overrides_alone() -> None:
    recipe = Recipe.from_yaml(None, ["data.spec=synthetic:/tmp/s", "model.name=fcn8s"])
    assert recipe.data.spec == "synthetic:/tmp/s"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["optim.lr=-1"], "optim.lr: Input should be greater than 0"),
        (["optim.lrr=0.1"], "optim.lrr: unknown field"),
        (["trainer.precision=fp8"], "trainer.precision"),
        (["data.batch_size=1"], "BatchNorm needs it"),
        (["data.spec=camvid11"], "is not '<format>:<path>'"),
        (["eval.mode=slide"], "eval.mode=slide needs eval.crop"),
        (["optim.name=adam", "optim.nesterov=true"], "nesterov needs optim.name=sgd"),
        (["loss.name=hinge"], "loss.name"),
    ],
)
def test_errors_name_the_field(overrides: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        Recipe.from_dict(MINIMAL, overrides)
    assert fragment in str(info.value)


def test_missing_required_fields_are_listed() -> None:
    with pytest.raises(ConfigError) as info:
        Recipe.from_dict({})
    assert "data: required but not given" in str(info.value)
    assert "model: required but not given" in str(info.value)


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="section.field=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"optim": 3}, ["optim.lr=1"])


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Recipe.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Recipe.from_yaml(bad)


def test_data_root_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path))
    assert expand_data_root("camvid:${SEGLAB_DATA}/camvid11") == f"camvid:{tmp_path}/camvid11"
    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="SEGLAB_DATA"):
        expand_data_root("camvid:${SEGLAB_DATA}/camvid11")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_validate(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGLAB_DATA", str(path.parent))  # any existing folder will do
    recipe = Recipe.from_yaml(path)
    from seglab.models.registry import list_models

    known = {info.name: info for info in list_models()}
    assert recipe.model.name in known, f"{path.name}: unknown model {recipe.model.name}"
    unknown = set(recipe.model.options) - set(known[recipe.model.name].options)
    assert not unknown, f"{path.name}: {recipe.model.name} has no option(s) {unknown}"
