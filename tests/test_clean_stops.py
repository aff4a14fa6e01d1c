"""SIGTERM and SIGINT to a real ``seglab train``: one line, exit 143 / 130, no traceback, the
last checkpoint saved, and ``--resume`` finishes the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seglab import stops
from seglab.artifacts import rundir
from seglab.data.synthetic import make_synthetic

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synthetic"
    return make_synthetic(root, n_train=8, n_val=2, n_test=2, size=(32, 32), num_classes=3)


def _train(data: Path, run: Path, workers: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "seglab", "train", f"data.spec=folder:{data}",
            "model.name=unet", "model.options.base_channels=4", "model.options.depth=2",
            "data.batch_size=2", f"data.num_workers={workers}", "augment.crop_size=[32,32]",
            "trainer.max_epochs=3", "trainer.checkpoint_every_n_steps=1",
            "trainer.precision=fp32", "trainer.progress=false", "--run-dir", str(run), *extra]


def _stop_once_checkpointed(command: list[str], run: Path, signum: int,
                            group: bool) -> subprocess.CompletedProcess:
    """Start ``command``; once its first checkpoint exists, send ``signum`` (to the whole
    process group, DataLoader workers included, when ``group``)."""
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)  # fmt: skip
    last = rundir.checkpoint_path(run, rundir.LAST)
    deadline = time.monotonic() + 120
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be stopped"
    if group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def test_sigterm_to_the_group_saves_stops_with_143_and_resumes(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = _stop_once_checkpointed(_train(data, run, workers=1), run, signal.SIGTERM, True)
    assert result.returncode == 143, result.stderr
    assert "Traceback" not in result.stderr and "killed by signal" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("stopped ")]
    assert len(lines) == 1, result.stderr
    assert f"resume with: seglab train --resume --run-dir {run}" in lines[0]
    assert rundir.checkpoint_path(run, rundir.LAST).is_file()
    assert not rundir.metrics_path(run).exists()  # stopped: not scored
    resumed = subprocess.run([sys.executable, "-m", "seglab", "train", "--resume",
                              "--run-dir", str(run)],
                             env=ENV, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert rundir.metrics_path(run).is_file()
    # The resumed run says so, and not that it starts from random weights.
    assert "resuming from epoch" in resumed.stderr
    assert "random initialisation" not in resumed.stderr
    # stdout is a pipe: one plain line per epoch trained, counted from 1 of the total.
    assert "epoch 3/3: train loss" in resumed.stdout


def test_ctrl_c_stops_with_130_and_one_line(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = _stop_once_checkpointed(_train(data, run, workers=0), run, signal.SIGINT, False)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert "stopped at epoch" in result.stderr and "--resume" in result.stderr
    assert rundir.checkpoint_path(run, rundir.LAST).is_file()


def test_outside_a_deferring_block_a_signal_raises_stopped_at_once() -> None:
    # what the blocks must hand back: Python's default, or SIG_IGN where the parent ignores
    # SIGINT (a job started in the background by a non-interactive shell, nohup)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(stops.Stopped) as info, stops.catch_stops():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert info.value.exit_code == 143
    with stops.catch_stops(defer=True):  # recorded, not raised
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stops.pending() == signal.SIGINT
    stops.clear_pending()
    assert signal.getsignal(signal.SIGINT) is before


def test_any_verb_stopped_prints_one_line_and_the_signal_s_exit_code(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from seglab.cli.main import app

    def stopped(*args: object, **kwargs: object) -> None:
        raise stops.Stopped(signal.SIGTERM)

    monkeypatch.setattr("seglab.compare.compare", stopped)
    result = CliRunner().invoke(app, ["compare", "unet", "--data", "folder:x"])
    assert result.exit_code == 143
    assert result.output.strip() == "stopped by SIGTERM"
