"""Multi-process training and evaluation on CPU (Gloo): real processes, not a simulation.

One 2-process DDP training run (``trainer.accelerator=cpu trainer.devices=2`` through
``python -m seglab train``, Lightning's own launcher) is shared by the tests below: it must
finish, leave a run folder only rank 0 wrote, resume on one process, and its end-of-fit test
scores must equal a single-process ``seglab eval`` of the same model, which in turn must equal
``seglab eval --devices 2``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from seglab.data.synthetic import make_synthetic
from seglab.engine import distributed
from seglab.engine.callbacks import read_history
from seglab.errors import ConfigError

# Keys that describe the run rather than the scores.
_RUN_KEYS = {"eval_time_s", "processes", "model", "train_time_s", "epochs", "best_checkpoint",
             "best_val_miou", "planned_epochs"}
_ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _seglab(*args: str, env: dict | None = None, timeout: float = 300):
    done = subprocess.run(
        [sys.executable, "-m", "seglab", *args], env={**_ENV, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def _scores(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in _RUN_KEYS}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    # 7 test images with eval batch 2: the second shard is shorter, where a padding
    # DistributedSampler would have scored one image twice.
    data = make_synthetic(
        tmp_path_factory.mktemp("data") / "syn", n_train=8, n_val=3, n_test=7, size=(32, 32),
        num_classes=3,
    )
    run = tmp_path_factory.mktemp("runs") / "ddp"
    audit = run.parent / "rank1_writes.txt"
    # Every file the second process writes under the run folder is logged (tests/helpers_audit).
    helper = Path(__file__).parent / "helpers_audit"
    paths = os.pathsep.join([str(helper), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {"PYTHONPATH": paths, "SEGLAB_TEST_AUDIT": str(audit),
           "SEGLAB_TEST_AUDIT_ROOT": str(run)}
    started = time.perf_counter()
    _seglab(
        "train", f"data.spec=folder:{data}", "data.batch_size=2", "data.eval_batch_size=2",
        "data.num_workers=0", "model.name=unet", "model.options.base_channels=4",
        "model.options.depth=2", "augment.crop_size=32", "trainer.max_epochs=1",
        "trainer.progress=false", "trainer.precision=fp32", "trainer.accelerator=cpu",
        "trainer.devices=2", "trainer.checkpoint_every_n_steps=1", "eval.num_panels=1",
        "--run-dir", str(run), env=env,
    )
    return run, time.perf_counter() - started


def test_two_processes_train_and_rank_zero_alone_writes(ddp_run: tuple[Path, float]) -> None:
    run, seconds = ddp_run
    print(f"2-process DDP training run: {seconds:.1f} s")
    audit = run.parent / "rank1_writes.txt"
    assert not audit.exists(), f"rank 1 wrote into the run folder: {audit.read_text()}"
    names = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())
    # No temporary files left by two processes racing for the same name.
    assert not [n for n in names if ".tmp" in n or n.endswith("~")], names
    assert {"recipe.yaml", "history.csv", "metrics.json", "checkpoints/last.ckpt"} <= set(names)
    assert [row["epoch"] for row in read_history(run / "history.csv")] == [1]
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["processes"] == 2 and doc["num_images"] == 7
    # Every test pixel counted exactly once: 7 images of 32x32 (synthetic masks have no ignore).
    assert sum(row["support"] for row in doc["per_class"].values()) == 7 * 32 * 32
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["epoch"] == 0
    # 8 images over 2 processes at batch 2: 2 optimiser steps per epoch (4 on one process).
    assert state["global_step"] == 2


def test_eval_metrics_match_across_process_counts(
    ddp_run: tuple[Path, float], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from seglab.cli.main import app
    from seglab.engine.evaluation import evaluate

    run, _ = ddp_run
    fit_doc = json.loads((run / "metrics.json").read_text())
    one = evaluate(run, num_panels=0, precision="fp32", device="cpu", num_workers=0)
    result = CliRunner().invoke(app, ["eval", str(run), "--devices", "2", "--accelerator",
                                      "cpu", "--fp32", "--panels", "0", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    two = json.loads((tmp_path / "metrics.json").read_text())
    assert one["processes"] == 1 and two["processes"] == 2
    assert _scores(one) == _scores(two)
    # The test at the end of the 2-process fit scored like one process.
    assert _scores(fit_doc) == _scores(one)
    # Per-image counts gathered from the shards: every image once, summing to the matrix.
    from seglab.per_image import load_counts

    shards = load_counts(tmp_path / "per_image.npz")
    np.testing.assert_array_equal(shards.confusion, load_counts(run / "per_image.npz").confusion)
    np.testing.assert_array_equal(shards.dataset_confusion(), np.load(tmp_path / "confusion.npy"))
    assert two["ci"] == json.loads(json.dumps(one["ci"]))
    bad = CliRunner().invoke(app, ["eval", str(run), "--devices", "2", "--accelerator", "tpu"])
    assert bad.exit_code != 0 and "unknown accelerator 'tpu'" in bad.output


def test_checkpoint_resumes_on_one_process(ddp_run: tuple[Path, float], tmp_path: Path) -> None:
    import shutil

    from seglab.config import Recipe
    from seglab.engine import fit

    run, _ = ddp_run
    copy = tmp_path / "resumed"
    shutil.copytree(run, copy)
    recipe = Recipe.from_yaml(copy / "recipe.yaml", ["trainer.max_epochs=2", "trainer.devices=1"])
    fit(recipe, copy, resume=True)
    assert [row["epoch"] for row in read_history(copy / "history.csv")] == [1, 2]
    state = torch.load(copy / "checkpoints" / "last.ckpt", weights_only=True)
    # Epoch 2 on one process: all 4 of its batches after the 2 of the 2-process epoch.
    assert state["epoch"] == 1 and state["global_step"] == 2 + 4
    assert json.loads((copy / "metrics.json").read_text())["processes"] == 1


def test_shards_cover_every_item_once() -> None:
    for n in (0, 1, 7, 8, 33):
        for world_size in (1, 2, 3, 5):
            for block in (1, 2, 4):
                parts = [distributed.shard(n, r, world_size, block) for r in range(world_size)]
                flat = [i for part in parts for i in part]
                assert flat == list(range(n))
                assert all(p.start % block == 0 for p in parts if len(p))
    with pytest.raises(ConfigError, match="rank 2"):
        distributed.shard(4, 2, 2)


def test_rank_zero_from_the_launchers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "SLURM_PROCID", "SLURM_NTASKS", "NODE_RANK", "LOCAL_RANK", "GROUP_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.is_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "1")  # a process Lightning's launcher started
    assert not distributed.is_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "1")  # local rank 0 of the second machine
    assert not distributed.is_rank_zero()
    monkeypatch.setenv("RANK", "0")  # torchrun's global rank wins
    assert distributed.is_rank_zero()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="RANK"):
        distributed.is_rank_zero()


def test_sync_batchnorm_keeps_frozen_batchnorm_frozen() -> None:
    from seglab.models.freeze import apply_freeze, convert_sync_batchnorm

    model = nn.Sequential()
    model.add_module("backbone", nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    model.add_module("head", nn.Sequential(nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2)))
    apply_freeze(model, "freeze:backbone.*")
    converted = convert_sync_batchnorm(model)
    frozen_bn, trainable_bn = converted.backbone[1], converted.head[1]
    assert isinstance(frozen_bn, nn.SyncBatchNorm) and isinstance(trainable_bn, nn.SyncBatchNorm)
    converted.train()  # what Lightning does every epoch
    assert not frozen_bn.training and trainable_bn.training
    before = frozen_bn.running_mean.clone()
    converted.backbone(torch.randn(2, 3, 8, 8) * 5 + 3)  # eval mode: no sync, no update
    assert torch.equal(frozen_bn.running_mean, before)
    assert not any(p.requires_grad for p in frozen_bn.parameters())
    assert all(p.requires_grad for p in trainable_bn.parameters())
    # The plain conversion loses the lock: the reason for convert_sync_batchnorm.
    plain = nn.SyncBatchNorm.convert_sync_batchnorm(model).train()
    assert plain.backbone[1].training


def test_trainer_strategy_choices() -> None:
    from seglab.config import Recipe
    from seglab.engine.trainer_setup import lightning_strategy, process_count

    def recipe(**trainer: object) -> Recipe:
        return Recipe.from_dict(
            {"data": {"spec": "folder:x"}, "model": {"name": "unet"}, "trainer": trainer}
        )

    assert process_count("auto") is None and process_count(2, 3) == 6
    assert process_count("0,1") == 2 and process_count("[0, 1, 2]") == 3
    with pytest.raises(ConfigError, match="trainer.devices"):
        process_count(0)
    assert lightning_strategy(recipe(accelerator="cpu")) == "auto"
    ddp = lightning_strategy(recipe(accelerator="cpu", devices=2))
    assert type(ddp).__name__ == "DDPStrategy" and ddp.process_group_backend == "gloo"
    spawn = lightning_strategy(recipe(accelerator="cpu", devices=2, strategy="ddp_spawn"))
    assert spawn._start_method == "spawn"
    with pytest.raises(ConfigError, match="fsdp"):
        lightning_strategy(recipe(accelerator="cpu", devices=2, strategy="fsdp"))
    with pytest.raises(ConfigError, match="sync_batchnorm needs GPUs"):
        lightning_strategy(recipe(accelerator="cpu", devices=2, sync_batchnorm=True))


@pytest.mark.parametrize("outcome", ["done", "failed"])
def test_seglab_train_destroys_its_process_group(monkeypatch, tmp_path, outcome) -> None:
    """Under torchrun Lightning leaves a Gloo group to interpreter shutdown, where Gloo's
    threads can abort the finished process (SIGABRT, seen as a failed node): ``seglab train``
    destroys the group itself when it is done, and when it fails."""
    import types

    import torch.distributed as dist
    from typer.testing import CliRunner

    from seglab.cli.main import app
    from seglab.errors import DataError

    def fake_fit(cfg, run_dir, resume):
        assert dist.is_initialized()  # training runs inside the group
        if outcome == "failed":
            raise DataError("no images")
        return types.SimpleNamespace(folds=None, scored=False, run_dir=run_dir)

    monkeypatch.setattr("seglab.engine.fit", fake_fit)
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1),
                            rank=0, world_size=1)
    try:
        result = CliRunner().invoke(app, ["train", "data.spec=folder:/nowhere",
                                          "model.name=unet", "--run-dir", str(tmp_path / "r")])
        assert result.exit_code == (0 if outcome == "done" else 1), result.output
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_finish_without_a_group_does_nothing() -> None:
    distributed.finish()
    assert distributed.world() == (0, 1)
