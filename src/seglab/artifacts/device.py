"""The one device resolution and the one mixed-precision choice every caller uses.

Training (:mod:`seglab.engine.trainer_setup`), evaluation, prediction, the bench and export
parity all resolve a device name with :func:`resolve_device` and pick the autocast dtype with
:func:`autocast_dtype`, so ``cpu``, ``cuda``, ``cuda:1`` and ``auto`` mean the same everywhere
and ``precision=auto`` is decided in exactly one place: bfloat16 wherever it is supported (every
CPU, Ampere or newer GPUs), else float16 (older GPUs; training then uses a gradient scaler).
"""

from __future__ import annotations

import torch

from seglab.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other names are checked, not trusted.

    ``"gpu"`` is read as ``"cuda"``; ``"cuda:N"`` must name a GPU that exists.

    Raises:
        ConfigError: an unknown device name, CUDA asked for where there is none, or a GPU index
            beyond the GPUs present.
    """
    name = str(device).strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "gpu" or name.startswith("gpu:"):
        name = "cuda" + name[3:]
    try:
        resolved = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available here")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ConfigError(
                f"device {device!r} requested but this machine has {count} GPU(s): "
                f"use cuda:0..cuda:{count - 1}"
            )
    elif resolved.type not in ("cpu", "mps"):
        raise ConfigError(f"unsupported device {device!r}: use cpu, cuda, cuda:N or auto")
    return resolved


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 autocast runs natively on ``device`` (always on CPU)."""
    if device.type == "cuda":
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # older torch without the keyword
            return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu"


def autocast_dtype(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: no autocast, float32).

    ``auto`` is bfloat16 where supported, else float16 on a GPU. (Training refuses ``fp16``
    on a CPU, see :func:`seglab.engine.trainer_setup.lightning_precision`; inference allows it.)

    Raises:
        ConfigError: an unknown precision or device.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    device = device if isinstance(device, torch.device) else resolve_device(device)
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cpu" or bf16_supported(device):
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else None


def precision_name(dtype: torch.dtype | None) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for an autocast dtype (what reports print)."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
