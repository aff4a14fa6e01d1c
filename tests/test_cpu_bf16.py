"""Does this CPU compute bf16? The answer behind every ``precision: auto`` on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seglab import compare
from seglab.artifacts import device
from seglab.artifacts.device import autocast_dtype, cpu_bf16_native

ZEN3 = "flags\t\t: fpu vme sse sse2 avx f16c fma avx2 bmi2 sha_ni vaes vpclmulqdq\n"
SAPPHIRE_RAPIDS = "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile\n"
COOPER_LAKE = "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
SKYLAKE_SP = "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512dq avx512vl\n"
NEOVERSE_V1 = "Features\t: fp asimd evtstrm aes sha2 crc32 atomics sve bf16 i8mm\n"
NEOVERSE_N1 = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"


@pytest.fixture
def cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Pretend to be a CPU with these flags, whose torch may use everything it has."""

    def write(text: str | None, *, machine: str = "x86_64") -> None:
        path = tmp_path / "cpuinfo"
        if text is not None:
            path.write_text("processor\t: 0\n" + text + "\nprocessor\t: 1\n" + text)
        monkeypatch.setattr(device, "CPUINFO", path)
        monkeypatch.setattr(device.platform, "machine", lambda: machine)
        monkeypatch.setattr(device, "aten_cpu_capability", lambda: "AVX512")
        monkeypatch.setattr(device, "onednn_bf16_enabled", lambda: True)
        cpu_bf16_native.cache_clear()

    yield write
    cpu_bf16_native.cache_clear()


@pytest.mark.parametrize(("flags", "native"), [
    (ZEN3, False), (SKYLAKE_SP, False), (NEOVERSE_N1, False),
    (SAPPHIRE_RAPIDS, True), (COOPER_LAKE, True), (NEOVERSE_V1, True),
])
def test_bf16_hardware_is_read_from_the_cpu_flags(cpuinfo, flags: str, native: bool) -> None:
    cpuinfo(flags, machine="aarch64" if flags.startswith("Features") else "x86_64")
    assert cpu_bf16_native() is native
    assert (autocast_dtype("auto", "cpu") is torch.bfloat16) is native
    assert autocast_dtype("auto", "cpu") is (torch.bfloat16 if native else None)
    # an explicit choice is the user's, hardware or not
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16
    assert autocast_dtype("fp32", "cpu") is None


@pytest.mark.parametrize("onednn", [True, False])
def test_without_cpuinfo_onednn_decides(cpuinfo, monkeypatch: pytest.MonkeyPatch, onednn) -> None:
    cpuinfo(None, machine="arm64")  # macOS on Apple silicon: no /proc/cpuinfo
    monkeypatch.setattr(device, "onednn_bf16_enabled", lambda: onednn)
    assert cpu_bf16_native() is onednn


@pytest.mark.parametrize(("capability", "onednn", "native"), [
    ("AVX512", True, True),
    ("AVX2", True, False),  # ATEN_CPU_CAPABILITY=avx2: torch's own kernels emulate bf16
    ("AVX512", False, False),  # ONEDNN_MAX_CPU_ISA=AVX2: oneDNN's convolutions emulate it
    ("DEFAULT", False, False),
])
def test_capped_instruction_sets_count_as_an_older_cpu(
    cpuinfo, monkeypatch: pytest.MonkeyPatch, capability: str, onednn: bool, native: bool
) -> None:
    cpuinfo(SAPPHIRE_RAPIDS)
    monkeypatch.setattr(device, "aten_cpu_capability", lambda: capability)
    monkeypatch.setattr(device, "onednn_bf16_enabled", lambda: onednn)
    assert cpu_bf16_native() is native
    assert autocast_dtype("auto", "cpu") is (torch.bfloat16 if native else None)


def test_arm_bf16_does_not_depend_on_x86_vector_names(cpuinfo, monkeypatch) -> None:
    cpuinfo(NEOVERSE_V1, machine="aarch64")
    monkeypatch.setattr(device, "aten_cpu_capability", lambda: "SVE256")
    assert cpu_bf16_native() is True


@pytest.mark.parametrize("variable", ["ATEN_CPU_CAPABILITY=avx2", "ONEDNN_MAX_CPU_ISA=AVX2"])
def test_the_emulation_variables_really_turn_bf16_off(variable: str) -> None:
    """The README's way to emulate an AVX2 laptop must make seglab behave as on one."""
    name, value = variable.split("=")
    code = (
        "from seglab.artifacts.device import autocast_dtype, cpu_bf16_native;"
        "print(cpu_bf16_native(), autocast_dtype('auto', 'cpu'))"
    )
    env = {**os.environ, name: value}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "None"]


def test_the_report_times_the_default_inference_path(cpuinfo) -> None:
    cpuinfo(ZEN3)
    assert compare.latency_backend() == "eager"
    cpuinfo(SAPPHIRE_RAPIDS)
    assert compare.latency_backend() == "bf16"
