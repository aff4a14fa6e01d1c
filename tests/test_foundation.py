"""The package entry points and the small shared utilities."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import seglab
from seglab.cli.main import app
from seglab.io_utils import atomic_dir, atomic_write_text
from seglab.paths import data_root

runner = CliRunner()


def test_version_flag_prints_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"seglab {seglab.__version__}"


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout


def test_console_script_runs_in_a_fresh_process() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "seglab", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert seglab.__version__ in out.stdout


def test_data_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path / "missing"))
    assert data_root() is None


def test_unknown_public_name_raises() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = seglab.nope  # type: ignore[attr-defined]


def test_atomic_write_leaves_no_partial_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    atomic_write_text(target, "first")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("interrupted")
    assert target.read_text() == "first"
    assert not (tmp_path / "folder").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_replaces_existing_folder(tmp_path: Path) -> None:
    target = tmp_path / "model"
    for text in ("v1", "v2"):
        with atomic_dir(target) as tmp:
            (tmp / "w.txt").write_text(text)
    assert (target / "w.txt").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_json_safe_writes_undefined_scores_as_null() -> None:
    import json

    import numpy as np
    import torch

    from seglab.io_utils import json_safe

    doc = {"miou": float("nan"), 3: (np.float32(0.5), np.int64(2), torch.tensor(1.5)), "x": "s"}
    assert json_safe(doc) == {"miou": None, "3": [0.5, 2, 1.5], "x": "s"}
    json.dumps(json_safe(doc), allow_nan=False)  # strict JSON
