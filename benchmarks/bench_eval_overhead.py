"""What per-image counts and boundary metrics cost in ``seglab eval``, side by side.

Three variants score the same model on the same split, each in a fresh process, interleaved
(base, per-image, per-image+boundary, base, ...):

- ``base``: seglab at ``--base-ref`` (a commit before per-image counts), extracted with
  ``git archive`` into a temporary folder;
- ``per-image``: this tree, ``evaluate(..., boundary=False)`` (per-image counts, per-image
  table, bootstrap intervals);
- ``per-image+boundary``: this tree with Boundary IoU and BF (the default).

It reports the median scoring-loop time (``eval_time_s`` of the metrics document) and the
median wall time of the whole ``evaluate`` call, with ratios to ``base``; the mIoU of every
variant must agree. Ends with one JSON line.

    python benchmarks/bench_eval_overhead.py MODEL --data camvid:$SEGLAB_DATA/camvid11 \
        [--split test] [--repeats 3] [--base-ref c59da72]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
from seglab.engine import evaluate
model, data, split, kwargs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
started = time.perf_counter()
doc = evaluate(model, data, split, num_panels=0, **kwargs)
wall = time.perf_counter() - started
print(json.dumps({"wall_s": wall, "eval_time_s": doc["eval_time_s"], "miou": doc["miou"]}))
"""


def run_variant(src: Path, model: str, data: str, split: str, kwargs: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", CHILD, model, data, split, json.dumps(kwargs)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base-ref", default="c59da72")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.base_ref, "src"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        variants = {
            "base": (Path(tmp) / "src", {}),
            "per-image": (ROOT / "src", {"boundary": False}),
            "per-image+boundary": (ROOT / "src", {"boundary": True}),
        }
        times: dict[str, list[dict]] = {name: [] for name in variants}
        for repeat in range(args.repeats):
            for name, (src, kwargs) in variants.items():
                result = run_variant(src, args.model, args.data, args.split, kwargs)
                times[name].append(result)
                print(f"repeat {repeat + 1} {name:20s} loop {result['eval_time_s']:7.2f} s  "
                      f"wall {result['wall_s']:7.2f} s  mIoU {100 * result['miou']:.2f}",
                      flush=True)

    mious = {round(r["miou"], 12) for rs in times.values() for r in rs}
    summary = {}
    base_loop = statistics.median(r["eval_time_s"] for r in times["base"])
    base_wall = statistics.median(r["wall_s"] for r in times["base"])
    print(f"\n{'variant':20s} {'loop s':>8s} {'ratio':>6s} {'wall s':>8s} {'ratio':>6s}")
    for name, rs in times.items():
        loop = statistics.median(r["eval_time_s"] for r in rs)
        wall = statistics.median(r["wall_s"] for r in rs)
        summary[name] = {"loop_s": loop, "loop_ratio": loop / base_loop, "wall_s": wall,
                         "wall_ratio": wall / base_wall, "runs": rs}
        print(f"{name:20s} {loop:8.2f} {loop / base_loop:6.3f} {wall:8.2f} "
              f"{wall / base_wall:6.3f}")
    print(json.dumps({"model": args.model, "data": args.data, "split": args.split,
                      "repeats": args.repeats, "miou_identical": len(mious) == 1,
                      "variants": summary}))


if __name__ == "__main__":
    main()
