"""``seglab predict`` over a folder: the default backend (auto) against plain torch, whole runs.

Each round runs the command twice in turn, once with ``--backend auto`` (which may compile the
model when the folder is large enough to pay for it, see ``seglab.predict.compiled``) and once
with ``--backend torch`` (eager, seglab's default precision), and times each whole process:
start-up, model load, any compile, decoding, every forward pass and writing the masks. The
model folders hold untrained weights at 11 classes (time does not depend on the weights).
Prints a table of median wall seconds, the ratio and what auto chose, then one JSON line.

    python benchmarks/bench_predict_default.py --models deeplabv3_resnet50 \\
        --images ../shared/data/camvid11/train ../shared/data/camvid11/val \\
        ../shared/data/camvid11/test [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def make_folder(name: str, root: Path) -> Path:
    import torch

    from seglab.artifacts.pretrained import save_pretrained
    from seglab.models import build_model

    torch.manual_seed(0)
    model = build_model(name, num_classes=11, weights=None, backbone_weights=None).eval()
    return Path(save_pretrained(model, root / name))


def run(folder: Path, images: list[str], backend: str, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = ["seglab", "predict", str(folder), *images, "--out", str(out), "--save", "mask",
               "--backend", backend, "--json"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    return {"wall_s": round(wall, 1), "images": summary["num_images"],
            "backend": summary["backend"], "reason": summary["backend_reason"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="deeplabv3_resnet50,lraspp_mobilenet_v3_large")
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in args.models.split(","):
            folder = make_folder(name, root)
            runs: dict[str, list[dict]] = {"auto": [], "torch": []}
            for _ in range(args.rounds):
                for backend in runs:
                    runs[backend].append(run(folder, args.images, backend, root / "out"))
                    print(f"{name} {backend}: {runs[backend][-1]}", flush=True)
            auto = statistics.median(r["wall_s"] for r in runs["auto"])
            plain = statistics.median(r["wall_s"] for r in runs["torch"])
            results.append({"model": name, "auto_s": auto, "torch_s": plain,
                            "speedup": round(plain / auto, 2), "runs": runs})
    print(f"\n{'model':28} {'auto s':>8} {'torch s':>8} {'torch/auto':>10}  auto chose")
    for row in results:
        chose = row["runs"]["auto"][-1]
        print(f"{row['model']:28} {row['auto_s']:8.1f} {row['torch_s']:8.1f} "
              f"{row['speedup']:10.2f}  {chose['backend']}: {chose['reason']}")
    print(json.dumps({"tool": "benchmarks/bench_predict_default.py", "rounds": args.rounds,
                      "images": args.images, "load_average_at_end": os.getloadavg(),
                      "results": results}))


if __name__ == "__main__":
    main()
