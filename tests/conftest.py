"""Shared fixtures: the real-data root (skipped with a reason when absent)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Under pytest-xdist (`-n N`) every worker process gets one OpenMP thread, set before torch
# loads its runtime (the subprocesses tests start inherit it): N workers on N cores instead
# of N x cores threads fighting over them. A single process keeps seglab's own defaults.
XDIST_WORKER = bool(os.environ.get("PYTEST_XDIST_WORKER"))
if XDIST_WORKER:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# torch.compile's kernels go to a cache of this test process's own: the machine-wide
# /tmp/torchinductor_<user> is shared with every other process (other test runs, runs under
# ATEN_CPU_CAPABILITY emulation), and a kernel another process left there half-written
# aborted a worker (seen 2026-12-06 with several concurrent runs).
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="seglab-inductor-"))
# The tests assert which layers seglab swaps for its CPU speed-ups: a switch left off in the
# shell would fail them (the switch's own tests set it).
os.environ.pop("SEGLAB_CPU_SPEEDUPS", None)

import pytest  # noqa: E402
import torch  # noqa: E402

from seglab.paths import data_root  # noqa: E402

if XDIST_WORKER:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
else:  # two cores on CI
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data (or $SEGLAB_DATA); skips the test when it is absent."""
    root = data_root()
    if root is None:
        pytest.skip("real data not found: set SEGLAB_DATA or place ../shared/data beside the repo")
    return root


_REPORT_LINES = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def report_line(request: pytest.FixtureRequest):
    """``report_line(text)`` adds a line to the summary at the end of the run (shown without
    ``-s``): what a test measured or started, such as a server's version."""
    return request.config.stash.setdefault(_REPORT_LINES, []).append


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    lines = config.stash.get(_REPORT_LINES, [])
    if lines:
        terminalreporter.section("seglab: what the tests started and measured")
        for line in lines:
            terminalreporter.write_line(line)
