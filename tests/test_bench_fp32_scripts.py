"""The fp32 step benchmarks run end to end on a small model (they read seglab's own rules for
which layer takes which path, so a renamed rule must not break them unseen)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_step_breakdown_names_each_layer_kind_and_the_rest():
    out = _run("bench_fp32_step_breakdown.py", "--model", "fcn_resnet50", "--batch", "1",
               "--crop", "64", "--steps", "1")
    assert "median step" in out
    lines = [line for line in out.splitlines() if line.startswith(("conv", "batch norm", "rest"))]
    kinds = {line.rsplit(maxsplit=3)[0] for line in lines}
    assert "batch norm forward" in kinds and "batch norm backward" in kinds
    assert any(kind.startswith("conv 1x1 (") and kind.endswith(" backward") for kind in kinds)
    assert "conv 7x7 (oneDNN) forward" in kinds
    assert any(line.startswith("rest") for line in lines)
    shares = [float(line.split()[-1].rstrip("%")) for line in lines]
    assert 99.0 <= sum(shares) <= 101.0


def test_train_step_bench_times_every_way():
    out = _run("bench_fp32_train_step.py", "--model", "fcn_resnet50", "--batch", "1",
               "--crop", "64", "--repeats", "1")
    for way in ("reference", "notap", "tap", "winograd", "pointwise"):
        assert f'"{way}": {{"img_s"' in out
