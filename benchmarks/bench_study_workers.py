"""Wall time of one 4-trial study run by 1 worker and by 2 workers on one PostgreSQL storage.

Each worker is a separate ``seglab study run`` process (what one machine runs), one OpenMP
thread each (a one-core "machine"); the time is from starting the workers until the last one
exits, start-up included. The study is a 4-point grid over a tiny U-Net on synthetic data;
every repeat uses a new study name. Without ``--storage`` a private PostgreSQL server is
started for the run (``tests/postgres_server.py``: needs the server binaries and psycopg).

    python benchmarks/bench_study_workers.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _spec(data: Path, name: str, epochs: int) -> dict:
    return {
        "name": name,
        "base": {
            "data": {"spec": f"folder:{data}", "batch_size": 4, "num_workers": 0},
            "model": {"name": "unet", "options": {"base_channels": 8, "depth": 2}},
            "augment": {"crop_size": [64, 64]},
            "trainer": {"max_epochs": epochs, "precision": "fp32", "channels_last": False,
                        "checkpoint_every_n_steps": None},
            "eval": {"num_panels": 0},
        },  # fmt: skip
        "space": {"optim.name": {"choice": ["sgd", "adam"]},
                  "optim.lr": {"choice": [0.01, 0.03]}},  # fmt: skip
        "grid": True,
    }


def _run(workers: int, spec: Path, storage: str, out: Path) -> tuple[float, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "seglab", "study", "run", str(spec), "--storage", storage,
               "--json"]  # fmt: skip
    started = time.perf_counter()
    procs = [subprocess.Popen([*command, "--out", str(out / f"worker{i}")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for i in range(workers)]  # fmt: skip
    docs = [json.loads(p.communicate()[0]) for p in procs]
    seconds = time.perf_counter() - started
    if any(p.returncode for p in procs) or max(d["finished"] for d in docs) != 4:
        raise SystemExit(f"a worker failed: {[p.returncode for p in procs]}")
    # The trials' own time (training + scoring), summed: the rest is start-up and waiting.
    last = max(docs, key=lambda d: d["updated"])
    trial_s = sum(t.get("time_s") or 0 for t in last["trials"] if t["state"] == "COMPLETE")
    return seconds, trial_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", help="a PostgreSQL URL (default: a private server)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()

    from seglab.data.synthetic import make_synthetic

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-study-")))
        storage, version = args.storage, None
        if storage is None:
            sys.path.insert(0, str(ROOT / "tests"))
            from postgres_server import find_bin_dir, postgres_server

            bin_dir = find_bin_dir()
            if bin_dir is None:
                raise SystemExit("no PostgreSQL server binaries: pass --storage URL")
            server = stack.enter_context(postgres_server(bin_dir))
            storage, version = server.url, server.version
        data = make_synthetic(tmp / "data", n_train=16, n_val=4, n_test=4, size=(64, 64),
                              num_classes=3)  # fmt: skip
        times: dict[int, list[float]] = {1: [], 2: []}
        trial_times: dict[int, list[float]] = {1: [], 2: []}
        for repeat in range(args.repeats):
            for workers in (1, 2):  # interleaved: the machine's load drifts alike for both
                name = f"bench_w{workers}_r{repeat}"
                spec = tmp / f"{name}.yaml"
                spec.write_text(yaml.safe_dump(_spec(data, name, args.epochs)))
                wall, trial_s = _run(workers, spec, storage, tmp / name)
                times[workers].append(wall)
                trial_times[workers].append(trial_s)
                print(f"repeat {repeat}: {workers} worker(s) {wall:.1f} s (trials' own time "
                      f"summed: {trial_s:.1f} s)", flush=True)  # fmt: skip
        one, two = (statistics.median(times[w]) for w in (1, 2))
        print(f"\nPostgreSQL: {version or storage}")
        print(f"{'workers':>8} {'median s':>9}  runs")
        for workers in (1, 2):
            runs = ", ".join(f"{t:.1f}" for t in times[workers])
            print(f"{workers:>8} {statistics.median(times[workers]):>9.1f}  {runs}")
        print(f"speed-up with 2 workers: {one / two:.2f}x")
        print(json.dumps({"bench": "study_workers", "trials": 4, "epochs": args.epochs,
                          "server": version, "one_worker_s": times[1],
                          "two_workers_s": times[2], "speedup": round(one / two, 3),
                          "trial_s_summed": trial_times}))


if __name__ == "__main__":
    main()
