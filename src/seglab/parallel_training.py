"""Several trainings at once: one process per training, the CPU threads shared out.

A small model's training step on a CPU is many small kernels, and with two or more threads
every kernel ends with the threads waiting for each other (passive waiting makes that wait a
sleep and a wake-up). Two one-thread trainings side by side therefore finish sooner than the
same two trainings one after the other on two threads: ``seglab demo``'s three models train in
about half the wall time (benchmarks/RESULTS.md). Large models gain little; use one job there.

Each job runs ``seglab.engine.fit`` in a fresh (spawned) process with its output in a log file,
so progress bars do not interleave; the run folders are the same as in-process training.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seglab.config import Recipe
from seglab.engine import fit
from seglab.engine.run_result import FitResult
from seglab.errors import ConfigError, SeglabError


@dataclass(frozen=True)
class TrainingJob:
    """One training: its label (for messages and the log name), run folder and recipe."""

    label: str
    run_dir: Path
    recipe: dict[str, Any]  # Recipe.to_dict(): plain data, so it pickles to the worker
    resume: bool = False

    def start_line(self) -> str:
        """``training LABEL -> RUN_DIR`` (``resuming`` for a resumed run)."""
        return f"{'resuming' if self.resume else 'training'} {self.label} -> {self.run_dir}"


def _threads(count: int) -> str:
    return f"{count} CPU thread{'s' if count > 1 else ''}"


def check_jobs(jobs: int) -> int:
    """``jobs`` as a whole number >= 1, or a clear error."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be a whole number >= 1 (trainings at once), got {jobs!r}")
    return jobs


def threads_per_job(jobs: int, threads: int | None = None) -> int:
    """The CPU threads each of ``jobs`` side-by-side trainings gets (at least one)."""
    if threads is None:
        threads = torch.get_num_threads()
    return max(1, threads // jobs)


def run_trainings(
    trainings: Sequence[TrainingJob],
    jobs: int,
    log_dir: Path,
    progress: Callable[[str], None] = print,
) -> dict[str, FitResult]:
    """Train every job, ``jobs`` at a time (in this process when ``jobs`` is 1); returns each
    job's :class:`~seglab.engine.run_result.FitResult` by label.

    With several jobs each training's output goes to ``log_dir/<label>.log``. When a training
    fails the others still running are finished, none is started, and the first failure is
    raised again with its label and log named.
    """
    check_jobs(jobs)
    if jobs == 1 or len(trainings) <= 1:
        results = {}
        for job in trainings:
            progress(job.start_line())
            results[job.label] = fit(Recipe.from_dict(job.recipe), job.run_dir, resume=job.resume)
        return results
    workers = min(jobs, len(trainings))
    threads = threads_per_job(workers)
    log_dir.mkdir(parents=True, exist_ok=True)
    # spawn, not fork: a forked child would inherit this process's OpenMP and torch state.
    context = multiprocessing.get_context("spawn")
    results = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending = {}
        for job in trainings:
            log = log_dir / f"{job.label}.log"
            progress(f"{job.start_line()} ({workers} at once, {_threads(threads)} each; "
                     f"output in {log})")
            pending[pool.submit(_train_in_worker, job, threads, str(log))] = (job, log)
        failure = None
        for future in as_completed(pending):
            if future.cancelled():
                continue
            job, log = pending[future]
            if future.exception() is None:
                progress(f"finished {job.label}")
                results[job.label] = future.result()  # the worker's result, pickled back
            elif failure is None:
                failure = _labelled(future.exception(), job.label, log)
                for other in pending:
                    other.cancel()  # queued ones never start; running ones finish their run
    if failure is not None:
        raise failure
    return {job.label: results[job.label] for job in trainings}


def _labelled(exc: BaseException | None, label: str, log: Path) -> Exception:
    message = f"training {label} failed: {exc} (its output: {log})"
    if isinstance(exc, SeglabError):
        return type(exc)(message)
    return RuntimeError(message)


def _train_in_worker(job: TrainingJob, threads: int, log_path: str) -> FitResult:
    """Worker process: ``threads`` CPU threads, output to ``log_path``, then ``fit``."""
    with open(log_path, "w", buffering=1) as log:
        # File descriptors too, so output written below Python (warnings, Lightning's bars)
        # lands in the log.
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = sys.stderr = log
        torch.set_num_threads(threads)
        print(f"{job.start_line()} ({_threads(threads)}, process {os.getpid()})")
        try:
            return fit(Recipe.from_dict(job.recipe), job.run_dir, resume=job.resume)
        except BaseException:
            traceback.print_exc()
            raise
