"""Run folders: one writer (lock), nothing written before every check passed, the user's umask,
checkpoints that survive a full disk or a kill mid-save, report folders that survive a kill,
and resumed checkpoints read as plain data only."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import torch

from seglab.artifacts import rundir
from seglab.artifacts.lock import FolderLockedError, folder_lock, is_locked, lock_path
from seglab.config import Recipe
from seglab.data.synthetic import make_synthetic
from seglab.engine import callbacks as engine_callbacks
from seglab.engine import fit
from seglab.engine.callbacks import AtomicCheckpointIO
from seglab.engine.run_plan import check_run_dir as _check_run_dir
from seglab.engine.schedules import IterationSchedule
from seglab.errors import ConfigError, ModelError, SeglabError
from seglab.io_utils import atomic_dir, atomic_write_text, clean_stale_temps, recover_dir

TINY_UNET = {"name": "unet", "options": {"base_channels": 4, "depth": 2}}
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synthetic"
    return make_synthetic(root, n_train=4, n_val=2, n_test=2, size=(32, 32), num_classes=3)


def _recipe(data: Path, **sections) -> Recipe:
    base = {
        "name": "t",
        "data": {"spec": f"folder:{data}", "batch_size": 2, "num_workers": 0},
        "model": TINY_UNET,
        "augment": {"crop_size": [32, 32]},
        "trainer": {"max_epochs": 1, "progress": False, "precision": "fp32"},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return Recipe.from_dict(base)


def _holder(folder: Path, fork: bool = False) -> subprocess.Popen:
    """A process that holds ``folder``'s lock until killed (prints 'locked' once it does);
    ``fork``: it first forks a child that outlives it (as DataLoader workers briefly do)."""
    code = textwrap.dedent(f"""
        import os, sys, time
        from seglab.artifacts.lock import folder_lock
        with folder_lock({str(folder)!r}, "seglab train"):
            if {fork!r} and os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            print("locked", flush=True)
            time.sleep(120)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                               env=ENV)  # fmt: skip
    assert process.stdout.readline().strip() == "locked"
    return process


# --- the lock --------------------------------------------------------------------------------


def test_a_locked_folder_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    holder = _holder(folder)
    try:
        assert is_locked(folder)
        with pytest.raises(FolderLockedError) as info, folder_lock(folder):
            pass
        message = str(info.value)
        assert str(folder) in message and f"pid {holder.pid}" in message
        assert "seglab train" in message
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the lock with its process: no stale lock blocks the next writer.
    with folder_lock(folder):
        assert is_locked(folder)
        with folder_lock(folder):  # nested in one process (fit -> train_one): allowed
            pass
    assert not lock_path(folder).exists()


def test_a_killed_holders_forked_children_do_not_keep_the_lock(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    holder = _holder(folder, fork=True)
    holder.kill()
    holder.wait()
    with folder_lock(folder):  # its child still sleeps, and holds no lock
        pass


def test_two_trainings_into_one_folder_the_second_is_refused(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "shared"
    holder = _holder(run)  # stands for a first `seglab train` that is still running
    try:
        second = subprocess.run(
            [sys.executable, "-m", "seglab", "train", f"data.spec=folder:{data}",
             "model.name=unet", "model.options.base_channels=4", "trainer.max_epochs=1",
             "--run-dir", str(run)],
            env=ENV, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode != 0
    assert str(run) in second.stderr and f"pid {holder.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    assert not rundir.recipe_path(run).exists()  # the refused run wrote nothing


def test_compare_into_a_locked_folder_is_refused(data: Path, tmp_path: Path) -> None:
    from seglab.compare import compare

    holder = _holder(tmp_path / "cmp")
    try:
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid}"):
            compare(["unet"], f"folder:{data}", name="cmp", runs_root=tmp_path,
                    progress=lambda _: None)  # fmt: skip
    finally:
        holder.kill()
        holder.wait()


# --- nothing written before every check -----------------------------------------------------


@pytest.mark.parametrize(
    ("sections", "error", "named"),
    [
        ({"model": {"name": "no_such_model"}}, SeglabError, "no_such_model"),
        ({"model": {**TINY_UNET, "freeze": "stem:banana"}}, SeglabError, "banana"),
        ({"trainer": {"precision": "fp16", "accelerator": "cpu"}}, ConfigError, "fp16"),
    ],
    ids=["unknown-model", "bad-freeze", "fp16-on-cpu"],
)
def test_a_bad_recipe_fails_before_the_folder_exists(
    data: Path, tmp_path: Path, sections: dict, error: type, named: str
) -> None:
    run = tmp_path / "run"
    with pytest.raises(error, match=named):
        fit(_recipe(data, **sections), run)
    assert not run.exists()


def test_a_one_image_train_split_fails_before_anything_is_written(tmp_path: Path) -> None:
    one = make_synthetic(tmp_path / "one", n_train=1, n_val=1, n_test=1, size=(32, 32))
    run = tmp_path / "run"
    run.mkdir()  # a folder the user made: it stays, empty
    with pytest.raises(ConfigError, match="1 sample"):
        fit(_recipe(one), run)
    assert list(run.iterdir()) == []


def test_a_folder_without_checkpoint_is_not_a_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rundir.recipe_path(run).write_text("name: t\n")  # a start killed while loading data
    rundir.history_path(run).write_text("epoch,train_loss\n")
    assert _check_run_dir(run, resume=False) is None  # may be trained again
    assert _check_run_dir(run, resume=True) is None  # --resume starts it from the beginning
    rundir.checkpoint_dir(run).mkdir()
    rundir.checkpoint_path(run, rundir.LAST).write_bytes(b"x")
    with pytest.raises(ConfigError, match="already holds a run"):
        _check_run_dir(run, resume=False)
    assert _check_run_dir(run, resume=True) == rundir.checkpoint_path(run, rundir.LAST)
    with pytest.raises(ConfigError, match="does not exist"):
        _check_run_dir(tmp_path / "never", resume=True)


# --- umask -----------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "inner.txt").write_text("y")
        io = AtomicCheckpointIO()
        io.save_checkpoint({"w": torch.zeros(2)}, tmp_path / "ck" / "last.ckpt")
        with folder_lock(tmp_path / "locked"):
            lock_mode = lock_path(tmp_path / "locked").stat().st_mode & 0o777
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "ck" / "last.ckpt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert lock_mode == 0o666 & ~umask


# --- checkpoints -----------------------------------------------------------------------------


def _other_filesystem(tmp_path: Path) -> Path:
    """A folder on another filesystem than the system temp folder (/dev/shm), else tmp_path."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        if shm.stat().st_dev != Path(tempfile.gettempdir()).stat().st_dev:
            return Path(tempfile.mkdtemp(prefix="seglab-test-", dir=shm))
    return tmp_path


def test_a_full_disk_mid_save_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _other_filesystem(tmp_path)
    try:
        target = folder / "checkpoints" / "last.ckpt"
        io = AtomicCheckpointIO()
        io.save_checkpoint({"step": 1, "w": torch.arange(10.0)}, target)
        calls = {"n": 0}
        real_write = os.write

        def full_disk(fd: int, data: bytes) -> int:
            calls["n"] += 1
            if calls["n"] > 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, bytes(data)[: len(data) // 2])  # half of it lands

        monkeypatch.setattr(engine_callbacks, "_os_write", full_disk)
        with pytest.raises(SeglabError, match="No space left") as info:
            io.save_checkpoint({"step": 2, "w": torch.zeros(1_000_000)}, target)
        assert str(target) in str(info.value)
        assert calls["n"] == 2
        kept = torch.load(target, weights_only=True)
        assert kept["step"] == 1 and torch.equal(kept["w"], torch.arange(10.0))
        assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
    finally:
        if folder != tmp_path:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)


def test_a_kill_mid_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    folder = _other_filesystem(tmp_path)
    target = folder / "checkpoints" / "last.ckpt"
    code = textwrap.dedent(f"""
        import torch
        from seglab.engine.callbacks import AtomicCheckpointIO
        io = AtomicCheckpointIO()
        io.save_checkpoint({{"step": 0, "w": torch.ones(4)}}, {str(target)!r})
        print("first", flush=True)
        step = 1
        big = torch.rand(4_000_000)
        while True:  # 16 MB per save: the kill lands inside one
            io.save_checkpoint({{"step": step, "w": big}}, {str(target)!r})
            step += 1
    """)
    try:
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                   text=True, env=ENV)  # fmt: skip
        assert process.stdout.readline().strip() == "first"
        deadline = time.monotonic() + 60
        while not list(target.parent.glob(".last.ckpt.*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        temps = list(target.parent.glob(".last.ckpt.*.tmp"))
        kept = torch.load(target, weights_only=True)  # whole: the old one or a complete new one
        assert kept["w"].numel() in (4, 4_000_000)
        assert temps, "the kill did not land inside a save"
        # The next start (or save) removes what the killed writer left.
        assert sorted(clean_stale_temps(target)) == sorted(temps)
        assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
    finally:
        if folder != tmp_path:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)


class _Payload:
    """Any class: torch.save pickles it, weights_only refuses it."""

    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_resume_refuses_a_pickle_checkpoint_naming_the_file(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    recipe = _recipe(data)
    run.mkdir()
    recipe.to_yaml(rundir.recipe_path(run))
    last = rundir.checkpoint_path(run, rundir.LAST)
    last.parent.mkdir()
    torch.save({"state_dict": {}, "loops": {}, "optimizer_states": [], "x": _Payload()}, last)
    with pytest.raises(ModelError, match="pickled Python objects") as info:
        fit(recipe, run, resume=True)
    assert str(last) in str(info.value)
    with pytest.raises(ModelError, match="pickled"):
        AtomicCheckpointIO().load_checkpoint(last)
    assert not rundir.model_dir(run).exists()


def test_resume_with_more_epochs_stretches_the_schedule() -> None:
    from seglab.config import ScheduleConfig

    def schedule(total: int) -> IterationSchedule:
        model = torch.nn.Linear(2, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return IterationSchedule(optimizer, ScheduleConfig(name="poly"), total, 5, 0.1)

    first = schedule(10)
    for _ in range(10):
        first.optimizer.step()
        first.step()
    assert first.get_last_lr()[0] == pytest.approx(0.0, abs=1e-9)  # the old end: LR 0
    longer = schedule(20)  # max_epochs doubled on resume
    longer.load_state_dict(first.state_dict())
    assert longer.total_steps == 20 and longer.last_epoch == 10
    assert longer.optimizer.param_groups[0]["lr"] > 0.01  # half-way, not at the floor
    same = schedule(10)
    same.load_state_dict(first.state_dict())
    assert same.total_steps == 10


# --- report folders --------------------------------------------------------------------------


def test_a_report_folder_is_never_missing_and_leftovers_are_cleaned(tmp_path: Path) -> None:
    target = tmp_path / "compare"
    with atomic_dir(target) as tmp:
        (tmp / "report.md").write_text("v1")
    # A writer of an older kind killed between its two renames: only the set-aside copy.
    os.replace(target, tmp_path / ".compare.old")
    dead = tmp_path / ".compare.deadhost-999999.abcd1234.tmp"
    dead.mkdir()
    (dead / "half.png").write_bytes(b"\x89PNG")
    legacy = tmp_path / ".compare.k3j4h5g6"  # an older seglab's mkdtemp leftover
    legacy.mkdir()
    os.utime(legacy, (time.time() - 7200, time.time() - 7200))
    recover_dir(target)
    assert (target / "report.md").read_text() == "v1"  # the previous report came back
    assert not legacy.exists()
    # Another machine's temporary is kept until it is old (it may still be writing).
    assert dead.exists()
    os.utime(dead, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    with atomic_dir(target) as tmp:
        (tmp / "report.md").write_text("v2")
    assert (target / "report.md").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compare"]


def test_a_writer_killed_inside_atomic_dir_leaves_the_old_report(tmp_path: Path) -> None:
    target = tmp_path / "compare"
    with atomic_dir(target) as tmp:
        (tmp / "report.md").write_text("v1")
    code = textwrap.dedent(f"""
        import time
        from seglab.io_utils import atomic_dir
        with atomic_dir({str(target)!r}) as tmp:
            (tmp / "report.md").write_text("half")
            print("inside", flush=True)
            time.sleep(120)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                               env=ENV)  # fmt: skip
    assert process.stdout.readline().strip() == "inside"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert (target / "report.md").read_text() == "v1"
    assert len(list(tmp_path.glob(".compare.*.tmp"))) == 1
    with atomic_dir(target) as tmp:
        (tmp / "report.md").write_text("v2")
    assert (target / "report.md").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compare"]


def test_last_checkpoint_follows_every_epoch_when_validation_is_sparse(
    data: Path, tmp_path: Path
) -> None:
    # trainer.val_every=2 over 3 epochs: the last epoch has no validation, and last.ckpt must
    # still hold it (a resume would otherwise train that epoch twice).
    run = tmp_path / "run"
    fit(_recipe(data, trainer={"max_epochs": 3, "val_every": 2}), run)
    state = torch.load(rundir.checkpoint_path(run, rundir.LAST), map_location="cpu",
                       weights_only=True)
    assert (state["epoch"], state["global_step"]) == (2, 6)
