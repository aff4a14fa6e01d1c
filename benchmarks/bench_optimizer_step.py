"""One optimiser step on the CPU: torch's per-tensor loop, foreach, and the fused kernel.

For each model (its real parameter list, random gradients) and optimiser, the three
implementations take turns for ``--rounds`` rounds of ``--steps`` steps each; the median ms
per step is printed with the ratio to the per-tensor loop (torch's CPU default). seglab's
``build_optimizer`` uses the fused kernel where torch has one (SGD, Adam, AdamW).

    python benchmarks/bench_optimizer_step.py [--threads 2] [--rounds 5] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import seglab  # noqa: F401  (its OpenMP defaults reach only child processes here)
from seglab.models.registry import build_model

MODELS = {
    "ddrnet23_slim": {"aux": True},
    "deeplabv3_resnet50": {"weights": None, "backbone_weights": None, "aux": True},
}
OPTIMISERS = {
    "adamw": (torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 1e-4}),
    "sgd": (torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9, "weight_decay": 1e-4}),
}
MODES = {"per-tensor": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.rounds} rounds")
    print("| model (params) | optimiser | per-tensor ms | foreach ms | fused ms | fused speed-up |")
    print("|---|---|---|---|---|---|")
    for name, options in MODELS.items():
        params = list(build_model(name, 11, **options).parameters())
        for param in params:
            param.grad = torch.randn_like(param)
        count = sum(p.numel() for p in params) / 1e6
        for opt_name, (cls, kwargs) in OPTIMISERS.items():
            optimisers = {mode: cls(params, **kwargs, **extra) for mode, extra in MODES.items()}
            for optimiser in optimisers.values():  # state allocated outside the timing
                optimiser.step()
            times: dict[str, list[float]] = {mode: [] for mode in MODES}
            for _ in range(args.rounds):
                for mode, optimiser in optimisers.items():
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        optimiser.step()
                    times[mode].append((time.perf_counter() - start) / args.steps * 1000)
            median = {mode: statistics.median(values) for mode, values in times.items()}
            print(f"| {name} ({count:.1f} M) | {opt_name} | {median['per-tensor']:.1f} | "
                  f"{median['foreach']:.1f} | {median['fused']:.1f} | "
                  f"{median['per-tensor'] / median['fused']:.2f}x |")


if __name__ == "__main__":
    main()
