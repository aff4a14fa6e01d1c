"""Peak memory of the passes at one batch size: CUDA's allocator peak, or the CPU's RSS growth."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


def _read_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Hand freed heap memory back to the OS so it cannot hide the next allocations' growth."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc only; elsewhere the baseline is higher


class _RssPeak:
    """Peak resident-memory increase (MiB) over the value at ``start()``."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.method = "unavailable (no /proc/self/status)"
        self._baseline_kb: int | None = None
        self._peak_kb = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._use_hwm = False

    def start(self) -> None:
        _release_free_memory()
        self._baseline_kb = _read_status_kb("VmRSS")
        if self._baseline_kb is None:
            return
        self._peak_kb = self._baseline_kb
        try:
            # "5" resets the kernel's peak-RSS counter (VmHWM) to the current RSS.
            Path("/proc/self/clear_refs").write_text("5")
            self._use_hwm = _read_status_kb("VmHWM") is not None
        except OSError:
            self._use_hwm = False
        if self._use_hwm:
            self.method = "RSS increase, kernel peak counter (VmHWM reset via clear_refs)"
            return
        self.method = f"RSS increase, VmRSS sampled every {self.interval_s * 1000:g} ms"
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = _read_status_kb("VmRSS") or 0
            self._peak_kb = max(self._peak_kb, rss)
            self._stop.wait(self.interval_s)

    def stop(self) -> float | None:
        if self._baseline_kb is None:
            return None
        if self._use_hwm:
            self._peak_kb = max(self._peak_kb, _read_status_kb("VmHWM") or 0)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
        self._peak_kb = max(self._peak_kb, _read_status_kb("VmRSS") or 0)
        return max(0, self._peak_kb - self._baseline_kb) / 1024


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    """Yields a dict that holds ``peak_mb`` (MiB) and ``method`` once the block exits."""
    record: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        record["method"] = "torch.cuda.max_memory_allocated (weights included)"
        yield record
        torch.cuda.synchronize(device)
        record["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        return
    tracker = _RssPeak()
    tracker.start()
    try:
        yield record
    finally:
        record["peak_mb"] = tracker.stop()
        record["method"] = tracker.method
