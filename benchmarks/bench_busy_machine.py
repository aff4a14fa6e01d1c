"""A training step on a busy machine: OpenMP spin-waiting vs passive waiting vs one thread.

Each measurement is a fresh process (OpenMP reads its settings when torch loads it), timing
an LR-ASPP-MobileNetV3 training step as seglab runs it by default (bf16 autocast,
channels_last, SGD, cross-entropy) on random 320x320 crops, batch 8. Modes:

- ``spin``: torch imported before seglab, so OpenMP keeps its own default (spin, then sleep);
- ``passive``: ``import seglab`` first, its defaults (``OMP_WAIT_POLICY=PASSIVE``, threads =
  physical cores);
- ``passive-1``: the same with the user's ``OMP_NUM_THREADS=1``;
- ``spin-10k``, ``spin-100k``: OpenMP's defaults with a bounded spin (GNU libgomp's
  ``GOMP_SPINCOUNT``; its default is 300000 spins, passive waiting is 0).

Each mode runs idle and with one busy process pinned to CPU 0 (``taskset -c 0 python -c
'while True: pass'``), in interleaved repeats; the table gives median img/s and the loaded /
idle ratio. Ends with one JSON line.

    python benchmarks/bench_busy_machine.py [--repeats 3] [--steps 6] [--warmup 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

# Environment each mode's process starts with (none of the OpenMP variables otherwise).
MODES: dict[str, dict[str, str]] = {
    "spin": {},
    "passive": {},
    "passive-1": {"OMP_NUM_THREADS": "1"},
    "spin-10k": {"GOMP_SPINCOUNT": "10000"},
    "spin-100k": {"GOMP_SPINCOUNT": "100000"},
}
OMP_VARS = ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")


def worker(mode: str, steps: int, warmup: int, batch: int, crop: int) -> None:
    """Child process: time ``steps`` training steps after ``warmup``; print img/s as JSON."""
    if not mode.startswith("spin"):
        import seglab  # noqa: F401  (its thread defaults, set before torch loads OpenMP)
    # In "spin" mode torch loads first, so OpenMP starts with its own defaults.
    policy = os.environ.get("OMP_WAIT_POLICY", "(OpenMP default)")
    import torch
    import torch.nn.functional as F

    from seglab.models import build_model

    torch.manual_seed(0)
    model = build_model("lraspp_mobilenet_v3_large", 11).to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, crop, crop).to(memory_format=torch.channels_last)
    y = torch.randint(0, 11, (batch, crop, crop))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)["out"]
        F.cross_entropy(out.float(), y, ignore_index=255).backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    print(json.dumps({"mode": mode, "img_s": steps * batch / seconds,
                      "threads": torch.get_num_threads(),
                      "wait_policy": policy}))


def _measure(mode: str, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARS}
    env.update(MODES[mode])
    cmd = [sys.executable, __file__, "--worker", mode, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch", str(args.batch), "--crop", str(args.crop)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _start_load() -> subprocess.Popen:
    if shutil.which("taskset") is None:
        raise SystemExit("taskset (util-linux) is needed to pin the busy process to one core")
    return subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=320)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes")
    parser.add_argument("--worker", choices=sorted(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.warmup, args.batch, args.crop)
        return
    modes = args.modes.split(",")
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown modes {sorted(unknown)}; choose from {sorted(MODES)}")
    start = time.perf_counter()
    runs: dict[str, dict[str, list[float]]] = {m: {"idle": [], "loaded": []} for m in modes}
    threads: dict[str, int] = {}
    for repeat in range(args.repeats):
        for load in ("idle", "loaded"):
            busy = _start_load() if load == "loaded" else None
            try:
                for mode in modes:
                    row = _measure(mode, args)
                    runs[mode][load].append(row["img_s"])
                    threads[mode] = row["threads"]
                    print(f"repeat {repeat + 1} {load:6s} {mode:10s} {row['img_s']:.2f} img/s",
                          file=sys.stderr, flush=True)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    print(f"{'mode':10s} {'threads':>7s} {'idle img/s':>10s} {'loaded':>8s} {'kept':>6s}")
    summary = {}
    for mode in modes:
        idle, loaded = (statistics.median(runs[mode][k]) for k in ("idle", "loaded"))
        summary[mode] = {"threads": threads[mode], "idle_img_s": round(idle, 2),
                         "loaded_img_s": round(loaded, 2), "kept": round(loaded / idle, 3),
                         "runs": {k: [round(v, 2) for v in vs] for k, vs in runs[mode].items()}}
        print(f"{mode:10s} {threads[mode]:7d} {idle:10.2f} {loaded:8.2f} {loaded / idle:6.1%}")
    base = summary.get("spin")
    if base:
        for row in summary.values():
            row["loaded_vs_spin"] = round(row["loaded_img_s"] / base["loaded_img_s"], 3)
            row["idle_vs_spin"] = round(row["idle_img_s"] / base["idle_img_s"], 3)
    wall = round(time.perf_counter() - start, 1)
    print(f"wall time {wall} s; load average before the end {os.getloadavg()[0]:.2f}")
    print(json.dumps({"benchmark": "busy_machine", "model": "lraspp_mobilenet_v3_large",
                      "batch": args.batch, "crop": args.crop, "steps": args.steps,
                      "repeats": args.repeats, "cpus": os.cpu_count(), "modes": summary,
                      "wall_seconds": wall}))


if __name__ == "__main__":
    main()
