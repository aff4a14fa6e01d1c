"""A misspelt name gets the nearest right one: recipe keys, and models in every verb."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from seglab.cli.main import app
from seglab.compare import compare
from seglab.config import Recipe
from seglab.errors import ConfigError, ModelError
from seglab.recipes import resolve_recipe


def test_an_override_typo_names_the_command_line_and_the_key_meant() -> None:
    with pytest.raises(ConfigError) as info:
        Recipe.from_yaml(resolve_recipe("camvid11_lraspp"), ["optim.lrr=0.1"])
    message = str(info.value)
    assert "optim.lrr: unknown field (from the command line); did you mean optim.lr?" in message
    with pytest.raises(ConfigError, match=r"trainer\.max_epoch: unknown field; did you mean "
                                          r"trainer\.max_epochs\?"):
        Recipe.from_dict({"data": {"spec": "folder:x"}, "trainer": {"max_epoch": 3}})


def test_bench_and_compare_suggest_the_model_meant(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "lraspp_mobilenet_v3_larg", "--input", "32x32"])
    assert result.exit_code == 1
    assert "Did you mean lraspp_mobilenet_v3_large" in result.output
    with pytest.raises(ModelError, match="Did you mean unet"):
        compare(["unett"], f"folder:{tmp_path}", runs_root=tmp_path / "runs",
                progress=lambda message: None)
    assert not (tmp_path / "runs" / "compare" / "unett").exists()  # nothing trained
