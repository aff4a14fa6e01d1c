"""A deterministic run killed (SIGKILL) and resumed ends exactly like one never interrupted.

``python -m seglab train`` with ``trainer.seed`` and ``trainer.deterministic=true`` on tiny
synthetic data: once uninterrupted, once killed mid-epoch, resumed, killed again while a
checkpoint is being written, and resumed to the end. The final ``metrics.json`` (every score
and the confusion matrix) and the history's losses must be identical. The ten random kill
points (data loading and final evaluation too) are in benchmarks/bench_resume_kill.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from seglab.artifacts import rundir
from seglab.data.synthetic import make_synthetic

VOLATILE = ("train_time_s", "eval_time_s", "best_checkpoint", "data", "model")
# `seglab train` that SIGKILLs itself half-way through writing its N-th checkpoint (the bytes
# of a tiny model's checkpoint take microseconds: no outside poll can catch that window).
KILL_IN_SAVE = """
import os, signal, sys
import seglab.engine.callbacks as callbacks
count, real = [0], callbacks._os_write
def write(fd, data):
    count[0] += 1
    if count[0] == int(os.environ["SEGLAB_KILL_AT_SAVE"]):
        real(fd, bytes(data)[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return real(fd, data)
callbacks._os_write = write
from seglab.cli.main import app
app(prog_name="seglab")
"""
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
TIMEOUT_S = 600


def _args(data: Path) -> list[str]:
    return [
        f"data.spec=folder:{data}", "data.batch_size=2", "data.num_workers=0",
        "model.name=unet", "model.options.base_channels=4", "model.options.depth=2",
        "augment.crop_size=32", "augment.scale_range=[0.75,1.25]", "augment.noise_sigma=2",
        "trainer.max_epochs=2", "trainer.checkpoint_every_n_steps=1", "trainer.progress=false",
        "trainer.seed=7", "trainer.deterministic=true", "trainer.precision=fp32",
        "trainer.channels_last=false",
    ]  # fmt: skip


def _command(run: Path, args: list[str] | None) -> list[str]:
    base = [sys.executable, "-m", "seglab", "train"]
    if args is None:
        return [*base, "--resume", "--run-dir", str(run)]
    return [*base, *args, "--run-dir", str(run)]


def _step(run: Path) -> int | None:
    try:
        ckpt = torch.load(rundir.checkpoint_path(run, rundir.LAST), weights_only=True)
    except Exception:  # absent, or being replaced this instant
        return None
    return int(ckpt["global_step"])


def _kill_when(run: Path, args: list[str] | None, reached: Callable[[], bool]) -> None:
    process = subprocess.Popen(_command(run, args), env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + TIMEOUT_S
    while process.poll() is None and not reached() and time.monotonic() < deadline:
        time.sleep(0.002)
    assert process.poll() is None, f"the run ended before the kill point: {process.stderr.read()}"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def _comparable(run: Path) -> tuple[dict, list[dict]]:
    metrics = {k: v for k, v in rundir.read_metrics(run).items() if k not in VOLATILE}
    history = [{k: v for k, v in row.items() if k != "time_s"} for row in rundir.read_history(run)]
    return metrics, history


def test_kill_mid_epoch_and_mid_save_then_resume_is_identical(tmp_path: Path) -> None:
    data = make_synthetic(tmp_path / "data", n_train=8, n_val=2, n_test=2, size=(32, 32),
                          num_classes=3)  # fmt: skip
    args = _args(data)
    reference = tmp_path / "reference"
    done = subprocess.run(_command(reference, args), env=ENV, capture_output=True, text=True,
                          timeout=TIMEOUT_S)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    run = tmp_path / "killed"
    # 1. mid-epoch: epoch 1 has 4 steps; killed once step 3's checkpoint exists.
    _kill_when(run, args, lambda: (_step(run) or 0) >= 3)
    killed_at = _step(run)
    assert killed_at is not None and killed_at < 8 and not rundir.metrics_path(run).exists()
    # 2. resumed, then killed half-way through writing its third checkpoint.
    ckpts = rundir.checkpoint_dir(run)
    command = [sys.executable, "-c", KILL_IN_SAVE, *_command(run, None)[3:]]
    killed = subprocess.run(command, env={**ENV, "SEGLAB_KILL_AT_SAVE": "3"},
                            capture_output=True, text=True, timeout=TIMEOUT_S)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert list(ckpts.glob(".*.ckpt.*.tmp")), "the kill did not land inside a save"
    loadable = _step(run)
    assert loadable is not None and loadable >= killed_at  # last.ckpt is whole after the kill
    # 3. resumed to the end: the killed save's temporary is cleaned, the run finishes.
    resumed = subprocess.run(_command(run, None), env=ENV, capture_output=True, text=True,
                             timeout=TIMEOUT_S)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list(ckpts.glob(".*.tmp"))

    got, want = _comparable(run), _comparable(reference)
    assert json.dumps(got[0], sort_keys=True) == json.dumps(want[0], sort_keys=True)
    assert got[1] == want[1]
    assert want[0]["epochs"] == 2 and [row["epoch"] for row in got[1]] == [1, 2]
    # Same weights, bit for bit.
    final = torch.load(rundir.checkpoint_path(run, rundir.LAST), weights_only=True)
    expected = torch.load(rundir.checkpoint_path(reference, rundir.LAST), weights_only=True)
    for key, value in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][key], value), key


def test_resume_with_more_epochs_rewrites_the_recipe(tmp_path: Path) -> None:
    """trainer.max_epochs raised on resume: the recipe records it, the schedule stretches."""
    from seglab.config import Recipe
    from seglab.engine import fit

    data = make_synthetic(tmp_path / "data", n_train=4, n_val=2, n_test=2, size=(32, 32),
                          num_classes=3)  # fmt: skip
    args = [a for a in _args(data) if not a.startswith("trainer.max_epochs")]
    run = tmp_path / "run"
    fit(Recipe.from_yaml(None, [*args, "trainer.max_epochs=1"]), run)
    # What `seglab train --resume --run-dir RUN trainer.max_epochs=3` does:
    fit(Recipe.from_yaml(rundir.recipe_path(run), ["trainer.max_epochs=3"]), run, resume=True)
    assert rundir.read_recipe(run)["trainer"]["max_epochs"] == 3
    history = rundir.read_history(run)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    # Epoch 1 had ended the old schedule (LR at its floor); epoch 2 is half-way on the new one.
    assert history[1]["lr"] > 10 * max(history[0]["lr"], 1e-9)
    assert json.loads(rundir.metrics_path(run).read_text())["epochs"] == 3


def test_a_resumed_epoch_continues_the_same_batches(tmp_path: Path) -> None:
    """The loader resumed at (epoch 1, 2 batches done) yields that epoch's remaining batches,
    augmentation included, whatever else drew from the global RNGs meanwhile."""
    from seglab.data.datamodule import SegDataModule
    from seglab.data.transforms import train_transform

    data = make_synthetic(tmp_path / "data", n_train=8, n_val=0, n_test=0, size=(32, 32),
                          num_classes=3)  # fmt: skip

    def batches(resume: tuple[int, int] | None) -> list[torch.Tensor]:
        module = SegDataModule(f"folder:{data}", batch_size=2, seed=3,
                               train_transform=train_transform((24, 24), scale_range=(0.5, 1.5)))
        loader = module.train_dataloader()
        if resume is not None:
            module.resume_at(*resume)
        else:
            module.train_sampler.set_epoch(1)
        torch.rand(100)  # the model's draws must not change what the loader yields
        return [images for images, _ in loader]

    full, resumed = batches(None), batches((1, 2))
    assert len(full) == 4 and len(resumed) == 2
    assert all(torch.equal(a, b) for a, b in zip(full[2:], resumed, strict=True))
    assert not torch.equal(full[0], batches(None)[1])
