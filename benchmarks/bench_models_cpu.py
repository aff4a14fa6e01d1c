"""The six torchvision segmentation models on CPU, eager fp32 vs bf16 autocast, side by side.

Prints the ``seglab bench`` table and method, then one JSON line (the full document). Models are
built untrained (weights=None): speed does not depend on the weights' values.

    python benchmarks/bench_models_cpu.py [--input 520x520] [--warmup 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from seglab.bench import bench_models
from seglab.cli.bench import print_report
from seglab.models.profile import parse_size

MODELS = (
    "lraspp_mobilenet_v3_large",
    "deeplabv3_mobilenet_v3_large",
    "fcn_resnet50",
    "deeplabv3_resnet50",
    "fcn_resnet101",
    "deeplabv3_resnet101",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default="520x520", help="input HxW")
    parser.add_argument("--backends", default="eager,bf16", help="comma-separated backends")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated models")
    args = parser.parse_args()
    start = time.perf_counter()
    doc = bench_models(
        args.models.split(","), parse_size(args.input), (1,), "cpu",
        args.backends.split(","), args.warmup, args.repeats, num_classes=21,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    doc["wall_seconds"] = round(time.perf_counter() - start, 1)
    print_report(doc)
    print(f"wall time {doc['wall_seconds']} s")
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
