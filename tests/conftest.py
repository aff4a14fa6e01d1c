"""Shared fixtures: the real-data root (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from seglab.paths import data_root

# Two cores on CI: keep torch from oversubscribing them across pytest workers.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data (or $SEGLAB_DATA); skips the test when it is absent."""
    root = data_root()
    if root is None:
        pytest.skip("real data not found: set SEGLAB_DATA or place ../shared/data beside the repo")
    return root
