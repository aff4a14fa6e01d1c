"""OpenMP defaults: passive waiting and a thread budget, set before torch, the user's win."""

from __future__ import annotations

import os
import subprocess
import sys

from seglab import threads


def _run(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OMP_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_defaults_fill_only_what_the_user_left_unset():
    env = {"OMP_NUM_THREADS": "7"}
    result = threads.apply_defaults(env)
    assert env == {"OMP_NUM_THREADS": "7", "OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
    assert set(result.applied) == {"OMP_WAIT_POLICY", "KMP_BLOCKTIME"}
    assert result.threads == threads.thread_budget() >= 1


def test_import_seglab_sets_them_before_torch_starts():
    code = ("import seglab, os, torch; from seglab import threads; "
            "print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads(), "
            "threads.THREAD_DEFAULTS.threads, threads.THREAD_DEFAULTS.before_torch)")
    policy, torch_threads, budget, before = _run(code).split()
    assert policy == "PASSIVE" and torch_threads == budget and before == "True"


def test_user_settings_win_in_a_fresh_process():
    code = "import seglab, os, torch; print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads())"
    assert _run(code, OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="1").split() == ["ACTIVE", "1"]


def test_cgroup_quota_caps_the_budget(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads._cgroup_cpu_limit(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads._cgroup_cpu_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads._cgroup_cpu_limit(v1) is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    assert threads._cgroup_cpu_limit(v1) == 1


def test_hyperthread_siblings_count_once(tmp_path):
    for cpu, core in [(0, 0), (1, 0), (2, 1), (3, 1)]:
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text("0\n")
        (topology / "core_id").write_text(f"{core}\n")
    assert threads._physical_cores([0, 1, 2, 3], tmp_path) == 2
    assert threads._physical_cores([0, 2], tmp_path) == 2
    assert threads._physical_cores([0, 1], tmp_path) == 1
    assert threads._physical_cores([5], tmp_path) == 1  # no topology: logical CPUs
