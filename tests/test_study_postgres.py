"""A study spread over worker processes that die, on real shared storages.

Two ``seglab study run`` workers (separate processes, as on two machines) run one 4-point
grid; one of them is killed with SIGKILL in the middle of a trial; then the study is run
again. The storage must end with every grid point COMPLETE exactly once, the killed trial
FAIL (marked by whichever worker saw it dead), and every trial in its own run folder.

- PostgreSQL: a real server (``tests/postgres_server.py``: ``initdb`` + ``pg_ctl`` in a
  temporary folder, 127.0.0.1 only). The two workers write to *different* study folders,
  as two machines without a shared disk: the database alone keeps them apart.
- Journal file: one folder both workers share (the NFS case), journal and trial folders in it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from seglab.artifacts.rundir import is_finished
from seglab.config import Recipe
from seglab.data.synthetic import make_synthetic
from seglab.study import run_study
from seglab.study.storage import open_storage, storage_url

sys.path.insert(0, str(Path(__file__).parent))
from postgres_server import PostgresServer, find_bin_dir, postgres_server  # noqa: E402

GRID = {"optim.name": {"choice": ["sgd", "adam"]}, "optim.lr": {"choice": [0.01, 0.03]}}


@pytest.fixture(scope="module")
def postgres(report_line: Callable[[str], None]) -> Iterator[PostgresServer]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: install the "
                    "Debian package postgresql (.ci/run does)")  # fmt: skip
    if not any(_importable(m) for m in ("psycopg", "psycopg2")):
        pytest.skip("no PostgreSQL driver: pip install 'seglab[postgres]'")
    with postgres_server(bin_dir) as server:
        report_line(f"PostgreSQL server started by the tests: {server.version}")
        print(f"\nPostgreSQL server: {server.version} at 127.0.0.1:{server.port}")
        yield server


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synthetic"
    return make_synthetic(root, n_train=8, n_val=2, n_test=2, size=(32, 32), num_classes=3)


def _spec(data: Path, name: str) -> dict:
    base = {
        "data": {"spec": f"folder:{data}", "batch_size": 2, "num_workers": 0},
        "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
        "augment": {"crop_size": [32, 32], "scale_range": None},
        "trainer": {"max_epochs": 2, "checkpoint_every_n_steps": 1, "precision": "fp32",
                    "channels_last": False},
        "eval": {"num_panels": 0},
    }  # fmt: skip
    return {"name": name, "base": base, "space": GRID, "grid": True, "seed": 0}


def _worker(spec: Path, out: Path, storage: str, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "seglab", "study", "run", str(spec), "--out", str(out),
               "--storage", storage, "--json"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Files, not pipes: a killed worker must not leave a reader waiting on a pipe.
    return subprocess.Popen(command, env=env, stdout=log.with_suffix(".out").open("w"),
                            stderr=log.with_suffix(".err").open("w"), text=True)  # fmt: skip


def _running_trial_of(storage: object, name: str, pid: int, timeout: float) -> int:
    """The number of a trial that process ``pid`` holds RUNNING (waits up to ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:  # the workers have not created the study yet
            time.sleep(0.2)
            continue
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.system_attrs.get("seglab_pid") == pid:
                return trial.number
        time.sleep(0.1)
    raise AssertionError(f"worker {pid} held no running trial within {timeout:.0f} s")


@pytest.mark.parametrize("kind", ["postgres", "journal"])
def test_two_workers_one_killed_mid_trial_finish_the_grid_once(
    kind: str, synthetic: Path, tmp_path: Path, request: pytest.FixtureRequest,
    report_line: Callable[[str], None],
) -> None:  # fmt: skip
    name = f"grid_{kind}"
    spec_path = tmp_path / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump(_spec(synthetic, name)))
    if kind == "postgres":
        storage = request.getfixturevalue("postgres").url
        outs = [tmp_path / "machine_a", tmp_path / "machine_b"]  # no shared disk
    else:
        shared = tmp_path / "shared"
        storage = f"journal:{shared / 'study.log'}"
        outs = [shared / "studies"] * 2  # one folder on a shared disk
    opened = open_storage(storage_url(storage, tmp_path))

    started = time.monotonic()
    a, b = (_worker(spec_path, out, storage, tmp_path / f"worker_{i}")
            for i, out in zip("ab", outs, strict=True))  # fmt: skip
    try:
        killed = _running_trial_of(opened, name, b.pid, timeout=120)
        b.send_signal(signal.SIGKILL)  # mid-trial: no handler, no tell, the trial stays RUNNING
        b.wait(timeout=30)
        assert a.wait(timeout=300) == 0, (tmp_path / "worker_a.err").read_text()[-3000:]
    finally:
        for worker in (a, b):
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    # The killed machine runs its command again: the study goes on to its count.
    again = run_study(spec_path, storage=storage, out=outs[1])
    seconds = time.monotonic() - started
    assert again.stopped == "done" and again.results["finished"] == 4

    study = optuna.load_study(study_name=name, storage=opened)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    points = [(t.params["optim.name"], t.params["optim.lr"]) for t in complete]
    assert len(complete) == 4 and len(set(points)) == 4  # each grid point once, none twice
    dead = trials[killed]
    assert dead.state == TrialState.FAIL and "interrupted" in dead.user_attrs["error"]
    others = [t for t in trials if t.state == TrialState.FAIL and t.number != killed]
    # A worker that asked when the count was already held gives its empty trial back.
    assert all(t.user_attrs["error"].startswith("skipped") for t in others), others
    assert not [t for t in trials if t.state == TrialState.RUNNING]

    # Trial folders: one per trial number, never shared, each the run of its own trial.
    folders = [Path(t.user_attrs["run_dir"]) for t in trials if "run_dir" in t.user_attrs]
    assert len(set(folders)) == len(folders)
    for trial in complete:
        run = Path(trial.user_attrs["run_dir"])
        assert run.name == str(trial.number) and is_finished(run)
        recipe = Recipe.from_yaml(run / "recipe.yaml")
        assert recipe.name == f"{name}-trial{trial.number}"
        assert (recipe.optim.name, recipe.optim.lr) == points[complete.index(trial)]
    report_line(f"study on {kind}: 2 workers, one killed in trial {killed}, re-run: "
                f"{len(complete)} grid points complete once, {len(trials)} trials, "
                f"{seconds:.0f} s")  # fmt: skip
    outputs = [json.loads(p.read_text()) for p in [tmp_path / "worker_a.out"]]
    assert outputs[0]["target"] == 4


def test_postgres_urls_pick_an_installed_driver_and_hide_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    from seglab.errors import ConfigError
    from seglab.study import storage

    url = "postgresql://seglab:s3cret@db.example:5432/studies"
    assert storage.hide_password(url) == "postgresql://seglab:***@db.example:5432/studies"
    assert storage.hide_password("postgresql://seglab@h/db") == "postgresql://seglab@h/db"
    installed: set[str] = {"psycopg"}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name in installed else
                        (None if name.startswith("psycopg") else real(name, *a)))  # fmt: skip
    assert storage._with_driver(url).startswith("postgresql+psycopg://seglab:s3cret@")
    installed.add("psycopg2")  # SQLAlchemy's default driver for postgresql:// is psycopg2
    assert storage._with_driver(url) == url
    assert storage._with_driver("postgresql+psycopg2://u@h/d") == "postgresql+psycopg2://u@h/d"
    installed.clear()
    with pytest.raises(ConfigError) as info:
        storage.open_storage(url)
    assert "seglab[postgres]" in str(info.value) and "s3cret" not in str(info.value)
