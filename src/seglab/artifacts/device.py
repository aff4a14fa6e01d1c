"""The one device resolution and the one mixed-precision choice every caller uses.

Training (:mod:`seglab.engine.run_plan`), evaluation, prediction, the bench and export
parity all resolve a device name with :func:`resolve_device` (a trainer's accelerator name
with :func:`accelerator_device`) and pick the autocast dtype with
:func:`autocast_dtype`, so ``cpu``, ``cuda``, ``cuda:1`` and ``auto`` mean the same everywhere
and ``precision=auto`` is decided in exactly one place: bfloat16 wherever the hardware computes
it (CPUs with AMX-BF16, AVX-512 BF16 or Arm BF16; Ampere or newer GPUs), else float16 on older
GPUs (training then uses a gradient scaler) and float32 on other CPUs. Without bf16 hardware
oneDNN emulates bf16: on an AVX2 CPU (AMD EPYC, Zen 3) LR-ASPP inference at 360x480 took 1930 ms
in bf16 against 83 ms in fp32, FCN-ResNet50 11.1 s against 1.6 s (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

from seglab.config import PRECISIONS as PRECISIONS  # the recipe's names, re-exported here
from seglab.errors import ConfigError


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


def accelerator_device(accelerator: str) -> str:
    """The device type, ``cpu`` or ``cuda``, that a Lightning ``trainer.accelerator`` runs on.

    ``gpu``/``cuda`` -> ``cuda`` (not checked here: the trainer or :func:`resolve_device`
    says when there is none), ``auto`` -> what :func:`resolve_device` picks.

    Raises:
        ConfigError: any other accelerator name.
    """
    name = str(accelerator).strip().lower()
    if name in ("gpu", "cuda"):
        return "cuda"
    if name == "cpu":
        return "cpu"
    if name == "auto":
        return resolve_device("auto").type
    raise ConfigError(f"unknown accelerator {accelerator!r}: use cpu, gpu or auto")


CPUINFO = Path("/proc/cpuinfo")
# /proc/cpuinfo flags of CPUs that compute bf16 in hardware: Intel AMX and AVX-512 BF16 (Sapphire
# Rapids, Cooper Lake, AMD Zen 4 and later), Arm's BF16 extension ("Features: ... bf16").
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16", "bf16"})
X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


def _cpu_flags_say_bf16() -> bool | None:
    """Whether ``/proc/cpuinfo`` lists a bf16 flag; None where the file does not exist."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features") and BF16_CPU_FLAGS & set(value.split()):
            return True
    return False


def aten_cpu_capability() -> str:
    """The vector ISA torch's own kernels run with (honours ``ATEN_CPU_CAPABILITY``)."""
    return str(torch.backends.cpu.get_cpu_capability())


def onednn_bf16_enabled() -> bool:
    """Whether oneDNN may use its bf16 kernels (honours ``ONEDNN_MAX_CPU_ISA``)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@functools.lru_cache(maxsize=1)
def cpu_bf16_native() -> bool:
    """Whether the CPU kernels torch will run compute bfloat16 in hardware (module docstring).

    The CPU must list a bf16 flag in ``/proc/cpuinfo`` (where that file does not exist, macOS and
    Windows, oneDNN's own check decides) *and* torch must be allowed to use it: an x86 CPU whose
    ATen kernels are capped below AVX-512 (``ATEN_CPU_CAPABILITY=avx2``) or whose oneDNN is capped
    below its bf16 ISA (``ONEDNN_MAX_CPU_ISA=AVX2``) emulates bf16, so it counts as an AVX2 CPU.
    That makes the documented emulation of an older CPU faithful.
    """
    flags = _cpu_flags_say_bf16()
    if flags is False or not onednn_bf16_enabled():
        return False
    if platform.machine().lower() in X86_MACHINES:
        return aten_cpu_capability().upper().startswith("AVX512")
    return True


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 autocast runs natively (not emulated) on ``device``."""
    if device.type == "cuda":
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # older torch without the keyword
            return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and cpu_bf16_native()


def autocast_dtype(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: no autocast, float32).

    ``auto`` is bfloat16 where the hardware computes it, else float16 on a GPU and float32 on a
    CPU. (Training refuses ``fp16`` on a CPU, see
    :func:`seglab.engine.trainer_setup.lightning_precision`; inference allows it.)

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
    if bf16_supported(device):
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else None
