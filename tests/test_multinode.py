"""Multi-node training without a cluster: ``scripts/torchrun_train.sh`` with ``NNODES=2`` run
as two node processes on this machine (``MASTER_ADDR=127.0.0.1``, ``NODE_RANK`` 0 and 1, one
CPU process each, Gloo), exactly the commands two real machines run.

- The two nodes train one recipe into one run folder that global rank 0 alone writes.
- Its result equals a single-process run of the same seeded recipe with the same global batch
  (2 images per node, 4 on one process). Why it can: seglab's sampler gives every process the
  strided share of one seeded order, and each image's augmentation is seeded by (epoch, index),
  so the 2-node step sees the same 4 images, augmented alike, as the 1-process step; DDP
  averages the two half-batch gradients, which is the full batch's mean gradient because
  the halves hold equal pixel counts. BatchNorm is the one layer that differs (statistics of
  2 images instead of 4), so the recipe freezes it. What is left is the order of float
  additions: weights agree to 1e-5, losses to 1e-5 relative, and the test metrics exactly
  (asserted below).
- A node killed mid-run (all its processes, as when a machine dies) makes the other stop with
  a clear error within a minute, not hang; the 2-node checkpoint then resumes on one node.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from seglab.config import Recipe
from seglab.data.synthetic import make_synthetic
from seglab.engine import fit
from seglab.engine.callbacks import read_history

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "torchrun_train.sh"
AUDIT_HELPER = Path(__file__).parent / "helpers_audit"
_RUN_KEYS = {"eval_time_s", "processes", "model", "train_time_s", "epochs", "best_checkpoint",
             "best_val_miou", "planned_epochs"}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _recipe(data: Path, **trainer: object) -> dict:
    return {
        "name": "two_nodes",
        "data": {"spec": f"folder:{data}", "batch_size": 2, "num_workers": 0},
        "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2},
                  # BatchNorm frozen (its layers are the *.1 modules of each conv block).
                  "freeze": "freeze:*.1.weight,*.1.bias"},
        # No scale jitter: a scaled-down image is padded with ignored pixels (see the docstring).
        "augment": {"crop_size": [32, 32], "scale_range": None},
        "optim": {"name": "sgd", "lr": 0.1},
        "trainer": {"max_epochs": 2, "progress": False, "precision": "fp32",
                    "channels_last": False, "checkpoint_every_n_steps": 1, **trainer},
        "eval": {"num_panels": 0},
    }  # fmt: skip


def _node(rank: int, port: int, recipe: Path, run: Path, log: Path) -> subprocess.Popen:
    """One "machine": the script as a user runs it there, with its own NODE_RANK."""
    paths = [str(AUDIT_HELPER), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHON": sys.executable, "NNODES": "2", "NODE_RANK": str(rank),
           "NPROC_PER_NODE": "1", "ACCELERATOR": "cpu", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "RUN_DIR": str(run), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(paths), "SEGLAB_TEST_AUDIT": str(run.parent / "audit"),
           "SEGLAB_TEST_AUDIT_ROOT": str(run), "PYTHONUNBUFFERED": "1"}  # fmt: skip
    return subprocess.Popen(["bash", str(SCRIPT), str(recipe)], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (torchrun starts its workers in new sessions, so a
    process group does not hold them all)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def _stop(nodes: list[subprocess.Popen]) -> None:
    for node in nodes:
        if node.poll() is None:
            for pid in _descendants(node.pid):
                _kill(pid)
            node.wait(timeout=30)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "syn"
    return make_synthetic(root, n_train=8, n_val=4, n_test=6, size=(32, 32), num_classes=3)


def test_two_nodes_train_like_one_process(
    data: Path, tmp_path: Path, report_line: Callable[[str], None]
) -> None:
    recipe_path = tmp_path / "two_nodes.yaml"
    recipe_path.write_text(yaml.safe_dump(_recipe(data)))
    run = tmp_path / "runs" / "two_nodes"
    run.parent.mkdir()
    port = _free_port()
    logs = [tmp_path / f"node{rank}.log" for rank in (0, 1)]
    started = time.monotonic()
    nodes = [_node(rank, port, recipe_path, run, logs[rank]) for rank in (0, 1)]
    try:
        for node, log in zip(nodes, logs, strict=True):
            assert node.wait(timeout=300) == 0, log.read_text()[-4000:]
    finally:
        _stop(nodes)
    two_s = time.monotonic() - started
    audit = run.parent / "audit"
    assert not audit.exists(), f"rank 1 wrote into the run folder: {audit.read_text()}"
    two = json.loads((run / "metrics.json").read_text())
    assert two["processes"] == 2
    saved = Recipe.from_yaml(run / "recipe.yaml")
    assert (saved.trainer.num_nodes, saved.trainer.devices, saved.trainer.strategy) == (2, 1, "ddp")
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 2 * 2  # 8 images, 2 per node per step: 2 steps an epoch

    # The same seeded recipe on one process, the global batch of 4 in one piece.
    one_run = tmp_path / "runs" / "one_process"
    started = time.monotonic()
    single = _recipe(data, accelerator="cpu", devices=1)
    single["data"]["batch_size"] = 4
    fit(Recipe.from_dict(single, source="the 1-process recipe"), one_run)
    one_s = time.monotonic() - started
    one = json.loads((one_run / "metrics.json").read_text())
    assert one["processes"] == 1

    weights = [load_file(r / "model" / "model.safetensors") for r in (run, one_run)]
    worst = max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[1])
    assert worst < 1e-5, f"2-node and 1-process weights differ by up to {worst}"
    for a, b in zip(read_history(run / "history.csv"), read_history(one_run / "history.csv"),
                    strict=True):  # fmt: skip
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    scores = {k: v for k, v in two.items() if k not in _RUN_KEYS}
    assert scores == {k: v for k, v in one.items() if k not in _RUN_KEYS}
    losses = [read_history(r / "history.csv")[-1]["val_loss"] for r in (run, one_run)]
    report_line(f"2 nodes x 1 CPU process (torchrun, Gloo): test mIoU {two['miou']:.6f}, pixel "
                f"acc {two['pixel_acc']:.6f}, last val_loss {losses[0]:.7f} ({two_s:.0f} s with "
                f"start-up); 1 process, same global batch: mIoU {one['miou']:.6f}, pixel acc "
                f"{one['pixel_acc']:.6f}, last val_loss {losses[1]:.7f} ({one_s:.0f} s "
                f"in-process); largest weight difference {worst:.1e}")  # fmt: skip


def test_a_dead_node_stops_the_other_and_the_run_resumes_on_one(
    data: Path, tmp_path: Path, report_line: Callable[[str], None]
) -> None:
    recipe_path = tmp_path / "long.yaml"
    recipe_path.write_text(yaml.safe_dump(_recipe(data, max_epochs=500,
                                                  early_stop_patience=None)))  # fmt: skip
    run = tmp_path / "runs" / "long"
    run.parent.mkdir()
    port = _free_port()
    logs = [tmp_path / f"node{rank}.log" for rank in (0, 1)]
    nodes = [_node(rank, port, recipe_path, run, logs[rank]) for rank in (0, 1)]
    try:
        history = run / "history.csv"
        deadline = time.monotonic() + 240
        while not (history.is_file() and len(read_history(history)) >= 2):
            assert time.monotonic() < deadline, logs[0].read_text()[-3000:]
            assert nodes[0].poll() is None, logs[0].read_text()[-3000:]
            time.sleep(0.2)
        for pid in _descendants(nodes[1].pid):  # the second machine dies: all its processes
            _kill(pid)
        killed = time.monotonic()
        code = nodes[0].wait(timeout=90)  # a hang would fail here
        waited = time.monotonic() - killed
    finally:
        _stop(nodes)
    output = logs[0].read_text()
    assert code != 0
    assert "another process of this 2-process run stopped" in output, output[-3000:]
    assert "--resume" in output
    done = len(read_history(run / "history.csv"))

    # Go on with the machine that is left: the 2-node checkpoint on one process.
    resumed = Recipe.from_yaml(run / "recipe.yaml", [
        f"trainer.max_epochs={done + 2}", "trainer.num_nodes=1", "trainer.strategy=auto"])
    fit(resumed, run, resume=True)
    epochs = [row["epoch"] for row in read_history(run / "history.csv")]
    assert epochs == list(range(1, done + 3))
    assert json.loads((run / "metrics.json").read_text())["processes"] == 1
    report_line(f"node 1 killed after {done} epochs: node 0 exited with code {code} after "
                f"{waited:.1f} s; resumed on 1 process to epoch {done + 2}")
