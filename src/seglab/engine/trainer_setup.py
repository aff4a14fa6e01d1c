"""The Lightning ``Trainer`` a recipe asks for: accelerator, devices, strategy, precision.

Every choice of device, process layout and mixed precision for training is made here, once
(the autocast dtype itself comes from :func:`seglab.artifacts.device.autocast_dtype`, the
choice evaluation, prediction and the bench share).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy

from seglab.artifacts.device import accelerator_device, autocast_dtype
from seglab.config import Recipe
from seglab.engine.distributed import sync_batchnorm_plugin
from seglab.engine.loggers import build_loggers, tracking_callbacks
from seglab.engine.run_start import EpochBar, stdout_is_terminal
from seglab.errors import ConfigError
from seglab.yaml_limits import short_text

_LIGHTNING_PRECISION = {None: "32-true", torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed"}
_DDP_STRATEGIES = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")


def trains_on_gpu(accelerator: str) -> bool:
    """Whether ``trainer.accelerator`` trains on a GPU (``auto``: when CUDA is available); other
    Lightning accelerator names (``mps``, ``tpu``) are left to Lightning."""
    known = str(accelerator).strip().lower() in ("auto", "cpu", "gpu", "cuda")
    return known and accelerator_device(accelerator) == "cuda"


def lightning_precision(precision: str, accelerator: str) -> str:
    """Lightning's precision for the recipe's: the AMP choice of
    :func:`seglab.artifacts.device.autocast_dtype` (``auto`` = bf16 where supported, else
    fp16, which Lightning's ``16-mixed`` pairs with a gradient scaler).

    Raises:
        ConfigError: fp16 on a CPU (no gradient scaling there: use bf16 or fp32).
    """
    on_gpu = trains_on_gpu(accelerator)
    if precision == "fp16" and not on_gpu:
        raise ConfigError("trainer.precision=fp16 needs a GPU; on CPU use bf16 (or fp32)")
    device = torch.device("cuda" if on_gpu and torch.cuda.is_available() else "cpu")
    if on_gpu and not torch.cuda.is_available() and precision == "auto":
        return "16-mixed"  # Lightning will refuse the missing GPU with its own message
    return _LIGHTNING_PRECISION[autocast_dtype(precision, device)]


def process_count(devices: int | str, num_nodes: int = 1) -> int | None:
    """Processes a run starts: ``devices`` per node times ``num_nodes`` (None: ``auto``/-1)."""
    if isinstance(devices, int):
        per_node = None if devices == -1 else devices
    else:
        text = str(devices).strip()
        if text in ("auto", "-1"):
            per_node = None
        elif text.lstrip("-").isdigit():
            per_node = int(text)
        else:  # a list of device ids, "0,1" or "[0, 1]"
            ids = [p for p in text.strip("[]").split(",") if p.strip()]
            per_node = len(ids)
    if per_node is not None and per_node < 1:
        raise ConfigError(f"trainer.devices={devices!r}: use a positive count, a list or auto")
    return None if per_node is None else per_node * num_nodes


def lightning_strategy(recipe: Recipe) -> Any:
    """The strategy for ``trainer.strategy``: ``auto`` is DDP once several processes run.

    DDP's backend is Gloo on CPU and NCCL on GPUs. FSDP shards the model over GPUs; on CPU it
    is refused (use ddp). Other Lightning strategy names pass through unchanged.

    Raises:
        ConfigError: FSDP on CPU, or sync_batchnorm across CPU processes.
    """
    cfg = recipe.trainer
    on_gpu = trains_on_gpu(cfg.accelerator)
    processes = process_count(cfg.devices, cfg.num_nodes)
    name = cfg.strategy
    if name.startswith("fsdp") and not on_gpu:
        raise ConfigError(
            f"trainer.strategy={name} shards the model over GPUs; on CPU use ddp "
            "(or trainer.accelerator=gpu)"
        )
    if cfg.sync_batchnorm and not on_gpu and (processes or 1) > 1:  # CPU "auto" = 1 device
        raise ConfigError(
            "trainer.sync_batchnorm needs GPUs: torch's SyncBatchNorm runs on CUDA only; "
            "leave it off for CPU processes"
        )
    if name == "auto" and processes is not None and processes > 1:
        name = "ddp"
    if name in _DDP_STRATEGIES and (processes is None or processes > 1):
        start = {"ddp": "popen", "ddp_spawn": "spawn"}.get(name, "fork")
        return DDPStrategy(
            start_method=start, process_group_backend="nccl" if on_gpu else "gloo"
        )
    return name


def build_trainer(
    recipe: Recipe, run_dir: Path, callbacks: list[Any], has_val: bool,
    plugins: list[Any] | None = None,
) -> Any:
    """The Lightning ``Trainer`` for a recipe: devices, precision, loop limits, callbacks
    (``plugins``: Lightning plugins, such as the checkpoint I/O)."""
    cfg = recipe.trainer
    on_gpu = trains_on_gpu(cfg.accelerator)
    sync = bool(cfg.sync_batchnorm)
    try:
        return _trainer(L, recipe, run_dir, callbacks, has_val, plugins, on_gpu, sync)
    except (ValueError, TypeError, RuntimeError, KeyError) as exc:
        # Lightning's MisconfigurationException is a ValueError: an unknown strategy or
        # accelerator, more devices than exist. Said in the recipe's terms, not a traceback.
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"trainer settings refused (trainer.accelerator={cfg.accelerator!r}, "
            f"trainer.devices={cfg.devices!r}, trainer.num_nodes={cfg.num_nodes}, "
            f"trainer.strategy={cfg.strategy!r}): {short_text(first, 300)}"
        ) from None


def _trainer(L: Any, recipe: Recipe, run_dir: Path, callbacks: list[Any], has_val: bool,
             plugins: list[Any] | None, on_gpu: bool, sync: bool) -> Any:
    cfg = recipe.trainer
    return L.Trainer(
        default_root_dir=str(run_dir),
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=lightning_strategy(recipe),
        sync_batchnorm=sync,
        plugins=[*(plugins or []), *([sync_batchnorm_plugin()] if sync else [])] or None,
        precision=lightning_precision(cfg.precision, cfg.accelerator),
        gradient_clip_val=cfg.grad_clip,
        deterministic=("warn" if on_gpu else True) if cfg.deterministic else False,
        callbacks=[*callbacks, *tracking_callbacks(recipe, run_dir),  # curves.png, loggers
                   *([EpochBar()] if cfg.progress and stdout_is_terminal() else [])],
        logger=build_loggers(recipe, run_dir),  # trainer.loggers; history.csv is always written
        # A bar only on a terminal (elsewhere seglab.engine.run_start prints a line per epoch);
        # no model summary: its FLOPs column reads 0 (run_start prints the parameter count).
        enable_progress_bar=cfg.progress and stdout_is_terminal(),
        enable_model_summary=False,
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
