"""Trainings side by side in worker processes: same runs as in-process, clear failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from test_compare import TINY_MODELS, TINY_RECIPE, tiny_data  # noqa: F401  (fixture)

from seglab.compare import compare
from seglab.config import Recipe
from seglab.errors import ConfigError, DataError
from seglab.parallel_training import TrainingJob, check_jobs, run_trainings, threads_per_job


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_jobs_must_be_a_positive_whole_number(bad: Any) -> None:
    with pytest.raises(ConfigError, match="jobs must be a whole number"):
        check_jobs(bad)


def test_threads_are_shared_out_and_never_zero() -> None:
    assert threads_per_job(2, threads=2) == 1
    assert threads_per_job(3, threads=2) == 1
    assert threads_per_job(2, threads=8) == 4
    assert threads_per_job(1, threads=6) == 6


def _scores(root: Path) -> dict[str, Any]:
    metrics = json.loads((root / "metrics.json").read_text())
    return {k: metrics[k] for k in ("miou", "pixel_acc", "epochs")}


def test_side_by_side_trainings_match_in_process_ones(tiny_data: str, tmp_path: Path) -> None:  # noqa: F811
    """Two jobs in worker processes produce the scores of the same trainings run in this
    process, thread for thread (each worker gets this process's threads divided by two)."""
    runs = {}
    threads = torch.get_num_threads()
    for jobs in (1, 2):
        messages: list[str] = []
        if jobs == 1:  # the in-process run uses what each worker will get
            torch.set_num_threads(threads_per_job(2, threads))
        try:
            outcome = compare(TINY_MODELS, tiny_data, overrides=TINY_RECIPE, name=f"j{jobs}",
                              epochs=2, runs_root=tmp_path, gallery_size=0, jobs=jobs,
                              progress=messages.append)
        finally:
            torch.set_num_threads(threads)
        assert [r.status for r in outcome.results] == ["trained", "trained"]
        runs[jobs] = [_scores(tmp_path / f"j{jobs}" / r.label) for r in outcome.results]
        if jobs == 2:
            assert sum("finished" in m for m in messages) == 2
            for result in outcome.results:
                log = tmp_path / "j2" / "logs" / f"{result.label}.log"
                assert log.read_text().startswith(f"training {result.label} -> ")
    assert runs[1] == runs[2]
    assert all(score["epochs"] == 2 for score in runs[2])


def test_a_failed_job_names_its_label_and_log(tiny_data: str, tmp_path: Path) -> None:  # noqa: F811
    good = Recipe.from_dict({}, [*TINY_RECIPE, "model.name=unet", "model.options.depth=2",
                                 "model.options.base_channels=4", "trainer.max_epochs=1",
                                 f"data.spec={tiny_data}"])
    bad = Recipe.from_dict(good.to_dict(), [f"data.spec=folder:{tmp_path / 'missing'}"])
    jobs = [TrainingJob("good", tmp_path / "good", good.to_dict()),
            TrainingJob("bad", tmp_path / "bad", bad.to_dict())]
    with pytest.raises(DataError, match=r"training bad failed: .*missing.*logs[/\\]bad\.log"):
        run_trainings(jobs, 2, tmp_path / "logs", progress=lambda _: None)
    assert "Traceback" in (tmp_path / "logs" / "bad.log").read_text()
    # The job already running when the other failed still finished its run.
    assert (tmp_path / "good" / "metrics.json").is_file()
