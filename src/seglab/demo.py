"""``seglab demo``: the first thing to run after installing.

Generates a small synthetic dataset, trains three small, different architectures under one
recipe for a few epochs on the CPU, and writes the comparison report (a few minutes on two
cores). Re-running reuses the finished runs.
"""

from __future__ import annotations

from pathlib import Path

from seglab.compare import CompareOutcome, Progress, compare

# Three families with different speed/accuracy trade-offs, all small enough for a CPU.
DEMO_MODELS = (
    "lraspp_mobilenet_v3_large:label=lraspp_mobilenetv3",
    "pspnet_mobilenetv2:output_stride=16,head_channels=128,label=pspnet_mobilenetv2",
    "unet:base_channels=16,depth=3,label=unet_small",
)
DEMO_EPOCHS = 30


def demo_recipe_overrides(epochs: int) -> list[str]:
    """The one recipe shared by the demo's models (small images, AdamW, no crops)."""
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
        "trainer.max_minutes=1.2",
        "trainer.early_stop_patience=null",
        "trainer.checkpoint_every_n_steps=null",
        "eval.num_panels=2",
    ]


def run_demo(
    out: str | Path = "runs/demo", *, epochs: int | None = None, progress: Progress = print
) -> CompareOutcome:
    """Make the synthetic data under ``out/data``, compare the demo models, write the report."""
    from seglab.data.synthetic import make_synthetic

    out = Path(out)
    data_dir = out / "data"
    if not data_dir.is_dir():
        progress(f"writing a synthetic dataset to {data_dir}")
        make_synthetic(data_dir, n_train=64, n_val=16, n_test=16, size=(96, 96), num_classes=5)
    return compare(
        list(DEMO_MODELS),
        f"folder:{data_dir}",
        overrides=demo_recipe_overrides(epochs or DEMO_EPOCHS),
        name=out.name,
        runs_root=out.parent,
        title="seglab demo: three architectures on synthetic shapes",
        command="seglab demo" + (f" --epochs {epochs}" if epochs else ""),
        progress=progress,
    )
