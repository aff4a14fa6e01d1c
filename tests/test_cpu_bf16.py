"""Does this CPU compute bf16? The answer behind every ``precision: auto`` on a CPU."""

from __future__ import annotations

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
    def write(text: str | None) -> None:
        path = tmp_path / "cpuinfo"
        if text is not None:
            path.write_text("processor\t: 0\n" + text + "\nprocessor\t: 1\n" + text)
        monkeypatch.setattr(device, "CPUINFO", path)
        cpu_bf16_native.cache_clear()

    yield write
    cpu_bf16_native.cache_clear()


@pytest.mark.parametrize(("flags", "native"), [
    (ZEN3, False), (SKYLAKE_SP, False), (NEOVERSE_N1, False),
    (SAPPHIRE_RAPIDS, True), (COOPER_LAKE, True), (NEOVERSE_V1, True),
])
def test_bf16_hardware_is_read_from_the_cpu_flags(cpuinfo, flags: str, native: bool) -> None:
    cpuinfo(flags)
    assert cpu_bf16_native() is native
    assert (autocast_dtype("auto", "cpu") is torch.bfloat16) is native
    assert autocast_dtype("auto", "cpu") is (torch.bfloat16 if native else None)
    # an explicit choice is the user's, hardware or not
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16
    assert autocast_dtype("fp32", "cpu") is None


def test_without_cpuinfo_onednn_decides(cpuinfo) -> None:
    cpuinfo(None)
    assert cpu_bf16_native() is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_the_report_times_the_default_inference_path(cpuinfo) -> None:
    cpuinfo(ZEN3)
    assert compare.latency_backend() == "eager"
    cpuinfo(SAPPHIRE_RAPIDS)
    assert compare.latency_backend() == "bf16"
