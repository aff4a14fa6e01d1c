"""SIGKILL a deterministic training at random points, ``--resume`` it, compare with a run that
was never interrupted.

A tiny synthetic dataset and U-Net (``trainer.seed``, ``trainer.deterministic=true``, fp32,
a checkpoint every step, two loader workers, random scale/flip/colour/noise augmentation)
are trained once without interruption through ``python -m seglab train``. Then, for each of
N kill points drawn at random (seeded) among four moments, a fresh run is started, killed
with SIGKILL at that moment, and continued with ``seglab train --resume``:

- ``load``: the run folder has its recipe, no checkpoint yet (data loading, model set-up);
- ``step``: the k-th training step's checkpoint exists (k random): mid-epoch or epoch end;
- ``write``: half-way through writing the j-th checkpoint (j random; the process kills itself
  there, as no outside poll catches a write of microseconds);
- ``eval``: the final test evaluation has scored the split and is about to write its files
  (again killed from inside, at that moment).

Each resumed run's ``metrics.json`` (every score, the confusion matrix, epochs, best val
mIoU; not wall times or paths) and its ``history.csv`` losses must equal the reference's.
Prints a table and ends with one JSON line.
Usage: python benchmarks/bench_resume_kill.py [--points 10] [--seed 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from seglab.artifacts import rundir
from seglab.data.synthetic import make_synthetic

TRAIN_STEPS = 3 * 4  # 3 epochs of 8 images in batches of 2
# `seglab train` that SIGKILLs itself inside its j-th checkpoint write or its final evaluation.
FAULTY_TRAIN = """
import os, signal
import seglab.engine.callbacks as callbacks
import seglab.engine.evaluation as evaluation
fault = os.environ["SEGLAB_FAULT"]
count, real = [0], callbacks._os_write
def write(fd, data):
    count[0] += 1
    if fault == "write:%d" % count[0]:
        real(fd, bytes(data)[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return real(fd, data)
def evaluated(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
callbacks._os_write = write
if fault == "eval:0":
    evaluation.write_evaluation = evaluated
from seglab.cli.main import app
app(prog_name="seglab")
"""
VOLATILE = ("train_time_s", "eval_time_s", "best_checkpoint", "data", "model")
HISTORY_TIMES = ("time_s",)


def _args(data: Path, workers: int) -> list[str]:
    return [
        f"data.spec=folder:{data}", "data.batch_size=2", f"data.num_workers={workers}",
        "model.name=unet", "model.options.base_channels=4", "model.options.depth=2",
        "augment.crop_size=32", "augment.scale_range=[0.75,1.25]", "augment.brightness=0.2",
        "augment.noise_sigma=2", "trainer.max_epochs=3", "trainer.checkpoint_every_n_steps=1",
        "trainer.progress=false", "trainer.seed=7", "trainer.deterministic=true",
        "trainer.precision=fp32", "trainer.channels_last=false",
    ]  # fmt: skip


def _train(args: list[str], run: Path, resume: bool = False) -> list[str]:
    base = [sys.executable, "-m", "seglab", "train"]
    return [*base, "--resume", "--run-dir", str(run)] if resume else [
        *base, *args, "--run-dir", str(run)]  # fmt: skip


def _step(run: Path) -> int | None:
    path = rundir.checkpoint_path(run, rundir.LAST)
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # absent, or being replaced right now
        return None


def _reached(run: Path, kind: str, param: int) -> bool:
    if kind == "load":
        return rundir.recipe_path(run).is_file()
    if kind == "step":
        step = _step(run)
        return step is not None and step >= param
    raise ValueError(kind)


def comparable(run: Path) -> tuple[dict, list[dict]]:
    """metrics.json without wall times and paths; history rows without their times."""
    metrics = {k: v for k, v in rundir.read_metrics(run).items() if k not in VOLATILE}
    history = [{k: v for k, v in row.items() if k not in HISTORY_TIMES}
               for row in rundir.read_history(run)]  # fmt: skip
    return metrics, history


def _same(a: tuple[dict, list[dict]], b: tuple[dict, list[dict]]) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def kill_and_resume(args: list[str], run: Path, kind: str, param: int,
                    env: dict[str, str]) -> dict:  # fmt: skip
    command = _train(args, run)
    if kind in ("write", "eval"):  # killed from inside, at that exact moment
        command = [sys.executable, "-c", FAULTY_TRAIN, *command[3:]]
        env = {**env, "SEGLAB_FAULT": f"{kind}:{param}"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    while process.poll() is None and (kind in ("write", "eval")
                                      or not _reached(run, kind, param)):  # fmt: skip
        time.sleep(0.002)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    finished_first = process.wait() == 0
    at_kill = _step(run)
    temps_left = len(list(rundir.checkpoint_dir(run).glob(".*.tmp")))
    start = time.monotonic()
    resumed = subprocess.run(_train(args, run, resume=True), env=env, capture_output=True,
                             text=True)  # fmt: skip
    return {
        "kind": kind, "param": param, "killed": not finished_first, "step_at_kill": at_kill,
        "temps_after_kill": temps_left, "resume_rc": resumed.returncode,
        "resume_s": round(time.monotonic() - start, 1),
        "temps_after_resume": len(list(rundir.checkpoint_dir(run).glob(".*.tmp"))),
        "error": resumed.stderr[-400:] if resumed.returncode else "",
    }  # fmt: skip


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", default="", help="comma-separated point indices to run")
    ns = parser.parse_args()
    root = ns.out or Path(tempfile.mkdtemp(prefix="seglab-resume-"))
    root.mkdir(parents=True, exist_ok=True)
    data = make_synthetic(root / "data", n_train=8, n_val=2, n_test=2, size=(32, 32),
                          num_classes=3)  # fmt: skip
    args = _args(data, ns.workers)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    ref_run = root / "reference"
    shutil.rmtree(ref_run, ignore_errors=True)
    done = subprocess.run(_train(args, ref_run), env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"reference run failed: {done.stderr[-2000:]}")
    reference = comparable(ref_run)
    ref_s = time.monotonic() - start
    rng = random.Random(ns.seed)
    kinds = ["load", "step", "write", "eval"]
    points = []
    for i in range(ns.points):
        kind = kinds[i % len(kinds)] if i < len(kinds) else rng.choice(kinds)
        param = {"step": rng.randint(1, TRAIN_STEPS - 1), "write": rng.randint(1, TRAIN_STEPS)}
        param = {**param, "eval": 0}
        points.append((kind, param.get(kind, 0)))
    rows = []
    only = {int(x) for x in ns.only.split(",") if x.strip()}
    for i, (kind, param) in enumerate(points):
        if only and i not in only:
            continue
        run = root / f"kill_{i}"
        shutil.rmtree(run, ignore_errors=True)
        row = kill_and_resume(args, run, kind, param, env)
        row["identical"] = row["resume_rc"] == 0 and _same(comparable(run), reference)
        rows.append(row)
        print(f"{i:2d} {kind:5s} {param:3d} killed={row['killed']!s:5s} "
              f"step@kill={row['step_at_kill']!s:4s} temps={row['temps_after_kill']} -> "
              f"{row['temps_after_resume']} resume rc={row['resume_rc']} "
              f"identical={row['identical']} ({row['resume_s']} s) {row['error']}",
              flush=True)  # fmt: skip
    summary = {
        "benchmark": "resume_kill",
        "points": len(rows),
        "identical": sum(r["identical"] for r in rows),
        "killed": sum(r["killed"] for r in rows),
        "reference_s": round(ref_s, 1),
        "workers": ns.workers,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg()[0],
        "rows": rows,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
