"""The Lightning ``Trainer`` a recipe asks for: accelerator, devices, precision, loop limits.

Every choice of device and mixed precision for training is made here, once.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from seglab.config import Recipe
from seglab.errors import ConfigError


def lightning_precision(precision: str, accelerator: str) -> str:
    """Map the recipe's precision to Lightning's: ``auto`` = bf16 autocast, fp16 on old GPUs."""
    on_gpu = accelerator in ("gpu", "cuda") or (
        accelerator == "auto" and torch.cuda.is_available()
    )
    if precision == "fp32":
        return "32-true"
    if precision == "bf16":
        return "bf16-mixed"
    if precision == "fp16":
        if not on_gpu:
            raise ConfigError("trainer.precision=fp16 needs a GPU; on CPU use bf16 (or fp32)")
        return "16-mixed"
    if on_gpu and not torch.cuda.is_bf16_supported():
        return "16-mixed"
    return "bf16-mixed"


def build_trainer(recipe: Recipe, run_dir: Path, callbacks: list[Any], has_val: bool) -> Any:
    """The Lightning ``Trainer`` for a recipe: devices, precision, loop limits, callbacks."""
    import lightning as L

    cfg = recipe.trainer
    on_gpu = cfg.accelerator in ("gpu", "cuda") or (
        cfg.accelerator == "auto" and torch.cuda.is_available()
    )
    return L.Trainer(
        default_root_dir=str(run_dir),
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        precision=lightning_precision(cfg.precision, cfg.accelerator),
        gradient_clip_val=cfg.grad_clip,
        deterministic=("warn" if on_gpu else True) if cfg.deterministic else False,
        callbacks=callbacks,
        logger=False,  # history.csv is the log
        enable_progress_bar=cfg.progress,
        enable_model_summary=cfg.progress,
        check_val_every_n_epoch=cfg.val_every,
        log_every_n_steps=cfg.log_every_n_steps,
        num_sanity_val_steps=0,
        limit_train_batches=cfg.limit_train_batches,
        limit_val_batches=1.0 if has_val else 0,
    )


def quiet_lightning() -> None:
    """Silence Lightning's tips and the warnings seglab triggers on purpose."""
    # Lightning's tips (litlogger, num_workers, ...) drown the progress output on CPU runs.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LitLogger.*")
    # Frozen BatchNorm layers are in eval mode on purpose (seglab.models.freeze).
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
    # Resuming mid-epoch is intended: the rest of the epoch comes from a freshly shuffled
    # loader, so every epoch still sees its full number of batches.
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
