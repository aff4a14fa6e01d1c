"""``seglab demo``: the first thing to run after installing.

Generates a small synthetic dataset, trains three small, different architectures under one
recipe for a fixed number of epochs on the CPU, and writes the comparison report (about
two minutes on two idle cores). The models train side by side, one process and an equal share
of the CPU threads each: at the demo's tiny image size a training step is many small kernels,
which one thread runs with no waiting between threads. The epoch count, not a time budget,
ends each training: on a busy or slow machine the demo takes longer but reports the same
scores (it is seeded), where a time cap would cut the models short and report whatever they
reached. Re-running reuses the finished runs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from seglab.compare import CompareOutcome, Progress, compare
from seglab.data.synthetic import make_synthetic
from seglab.errors import ConfigError
from seglab.paths import RUNS_ROOT

# Three families with different speed/accuracy trade-offs, all small enough for a CPU.
DEMO_MODELS = (
    "lraspp_mobilenet_v3_large:label=lraspp_mobilenetv3",
    "pspnet_mobilenetv2:output_stride=16,head_channels=128,label=pspnet_mobilenetv2",
    "unet:base_channels=16,depth=3,label=unet_small",
)
DEMO_EPOCHS = 30


def demo_recipe_overrides(epochs: int) -> list[str]:
    """The one recipe shared by the demo's models (small images, AdamW, no crops), trained
    for exactly ``epochs`` epochs: no time budget and no early stopping."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"demo epochs must be a whole number >= 1, got {epochs!r}")
    return [
        "data.batch_size=8",
        "data.eval_batch_size=8",
        "data.num_workers=0",
        "augment.crop_size=null",
        # torchvision MobileNets ship BN momentum 0.01: too slow for a few dozen steps.
        "model.bn_momentum=0.1",
        "augment.scale_range=null",
        "optim.name=adamw",
        "optim.lr=0.003",
        "schedule.name=poly",
        "schedule.warmup_iters=10",
        f"trainer.max_epochs={epochs}",
        "trainer.max_minutes=null",  # a time cap would make the scores depend on the load
        "trainer.early_stop_patience=null",
        "trainer.checkpoint_every_n_steps=null",
        # At the demo's small image size bf16 autocast is the slower path on CPUs (fp32 trained
        # LR-ASPP 1.6x faster, benchmarks/RESULTS.md); on a GPU fp32 costs little here.
        "trainer.precision=fp32",
        "eval.num_panels=2",
    ]


def run_demo(
    out: str | Path = RUNS_ROOT / "demo", *, epochs: int | None = None, progress: Progress = print
) -> CompareOutcome:
    """Make the synthetic data under ``out/data``, compare the demo models, write the report.

    ``epochs`` (default :data:`DEMO_EPOCHS`) is the fixed training length of every model.
    """
    overrides = demo_recipe_overrides(DEMO_EPOCHS if epochs is None else epochs)
    out = Path(out)
    data_dir = out / "data"
    if not data_dir.is_dir():
        progress(f"writing a synthetic dataset to {data_dir}")
        make_synthetic(data_dir, n_train=64, n_val=16, n_test=16, size=(96, 96), num_classes=5)
    return compare(
        list(DEMO_MODELS),
        f"folder:{data_dir}",
        overrides=overrides,
        name=out.name,
        runs_root=out.parent,
        title="seglab demo: three architectures on synthetic shapes",
        command="seglab demo" + (f" --epochs {epochs}" if epochs is not None else ""),
        jobs=max(1, min(len(DEMO_MODELS), torch.get_num_threads())),
        progress=progress,
    )
