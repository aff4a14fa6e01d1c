"""Shipped recipes: package data listed by name, `seglab train NAME`, a wheel that carries them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seglab.cli.main import app
from seglab.errors import ConfigError
from seglab.recipes import list_recipes, recipes_dir, resolve_recipe

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_every_shipped_file_is_package_data() -> None:
    # A file the package-data patterns miss would be absent from the wheel.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["seglab.recipes"]
    shipped = [p.relative_to(recipes_dir()).as_posix() for p in recipes_dir().rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".py"]
    assert len(shipped) >= 20
    missed = [name for name in shipped if not any(fnmatch(name, pat) for pat in patterns)]
    assert not missed, missed


def test_configs_is_a_link_to_the_recipes() -> None:
    link = ROOT / "configs"
    if not (ROOT / ".git").exists():
        pytest.skip("not a source checkout")
    assert link.is_symlink() and link.resolve() == recipes_dir()
    listed = subprocess.run(["git", "ls-files", "-s", "configs"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    assert listed.startswith("120000 "), listed  # tracked as a symlink, not as copies


def test_list_recipes_and_studies() -> None:
    recipes = {info.name: info for info in list_recipes("recipe")}
    assert "camvid11_lraspp" in recipes and "camvid11_lraspp_pruned" not in recipes
    assert recipes["camvid11_lraspp"].summary.startswith("LR-ASPP MobileNetV3-Large")
    assert recipes["camvid11_unet"].summary.endswith("13-minute budget.")  # "et al." kept
    studies = {info.name for info in list_recipes("study")}
    assert "camvid11_lraspp_pruned" in studies
    with pytest.raises(ConfigError, match="unknown recipe kind 'bogus'"):
        list_recipes("bogus")


def test_resolve_names_paths_and_typos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = recipes_dir() / "camvid11_lraspp.yaml"
    monkeypatch.chdir(tmp_path)  # no checkout here: configs/ paths fall back to the package
    assert resolve_recipe("camvid11_lraspp") == shipped
    assert resolve_recipe("camvid11_lraspp.yaml") == shipped
    assert resolve_recipe("configs/camvid11_lraspp.yaml") == shipped
    assert resolve_recipe("camvid11_lraspp_pruned", kind="study").parent.name == "studies"
    mine = tmp_path / "camvid11_lraspp.yaml"  # a local file wins over the shipped name
    mine.write_text("name: mine\n")
    assert resolve_recipe("camvid11_lraspp.yaml") == Path("camvid11_lraspp.yaml")
    with pytest.raises(ConfigError, match="did you mean camvid11_lraspp"):
        resolve_recipe("camvid11_lrasp")
    with pytest.raises(ConfigError, match="'missing/recipe.yaml' is neither a file"):
        resolve_recipe("missing/recipe.yaml")


def test_cli_list_show_and_errors() -> None:
    result = runner.invoke(app, ["recipes", "list", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    names = [r["name"] for r in doc["recipes"]]
    assert doc["kind"] == "recipe" and "camvid11_lraspp" in names and names == sorted(names)
    assert all(Path(r["path"]).is_file() for r in doc["recipes"])
    table = runner.invoke(app, ["recipes", "list"])
    assert table.exit_code == 0 and "camvid11_lraspp" in table.stdout
    studies = runner.invoke(app, ["recipes", "list", "--studies", "--json"])
    assert "camvid11_lraspp_pruned" in studies.stdout
    shown = runner.invoke(app, ["recipes", "show", "camvid11_lraspp"])
    assert shown.stdout == (recipes_dir() / "camvid11_lraspp.yaml").read_text()
    path = runner.invoke(app, ["recipes", "show", "camvid11_lraspp", "--path"])
    assert Path(path.stdout.strip()) == recipes_dir() / "camvid11_lraspp.yaml"
    bad = runner.invoke(app, ["recipes", "show", "nope_recipe"])
    assert bad.exit_code == 1 and "shipped recipe name" in " ".join(bad.output.split())


def test_train_takes_a_recipe_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path / "data"))
    # The name resolves to the shipped file; the (absent) dataset is the next thing to fail.
    result = runner.invoke(app, ["train", "camvid11_lraspp", f"data.spec=folder:{tmp_path}/none"])
    assert result.exit_code == 1
    assert "neither a file" not in result.output and str(tmp_path / "none") in result.output
    typo = runner.invoke(app, ["train", "camvid11_lrasp"])
    assert typo.exit_code == 1 and "did you mean camvid11_lraspp" in " ".join(typo.output.split())


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git for the build's file list")
def test_the_wheel_carries_the_recipes(tmp_path: Path) -> None:
    """Build the wheel (no isolation: setuptools of this environment) and look inside."""
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=240, env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    if build.returncode != 0 and "No module named" in build.stderr:
        pytest.skip(f"cannot build without isolation here: {build.stderr[-300:]}")
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("seglab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for info in list_recipes():
        assert f"seglab/recipes/{info.path.relative_to(recipes_dir()).as_posix()}" in names
    assert "seglab/recipes/__init__.py" in names
