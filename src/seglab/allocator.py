"""Keep freed tensor memory for reuse instead of handing it back to the OS (glibc on Linux).

torch allocates CPU tensors with ``malloc``. glibc serves every block above its mmap threshold
(at most 32 MB) with a fresh ``mmap`` and unmaps it on free, so a training step that allocates
a 50 MB activation touches new pages every time: the kernel zero-fills each 4 KB page on its
first write. DeepLabV3-R50 at batch 8, 320x320, allocates hundreds of such blocks a step. With
``M_MMAP_MAX = 0`` and a high ``M_TRIM_THRESHOLD`` the blocks come from the heap and stay there
for the next step: on the 2-core Xeon a seglab training step ran 1.35x faster for DeepLabV3-R50
and 1.11x for LR-ASPP, for 10-20% more resident memory (``benchmarks/RESULTS.md``).

The setting is process-wide, so seglab applies it where it runs a training (``train_one``),
not on import. A user who chose an allocator (``LD_PRELOAD`` of
jemalloc or tcmalloc, or any ``MALLOC_*`` tuning variable) keeps it; ``SEGLAB_MALLOC=default``
turns the setting off.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Mapping

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)
TRIM_THRESHOLD = 1 << 30  # give memory back only when 1 GB lies free at the heap's top
OPT_OUT = "SEGLAB_MALLOC"

_applied = False  # set once mallopt took the setting: it lasts the process


def keep_freed_memory(environ: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """Make glibc keep freed large blocks for reuse, once per process.

    Returns ``(applied, reason)``: whether the setting is in force and, when not, why.
    """
    global _applied
    if _applied:
        return True, ""
    reason = _why_not(os.environ if environ is None else environ)
    if reason:
        return False, reason
    try:
        libc = ctypes.CDLL("libc.so.6")
        _applied = (libc.mallopt(M_MMAP_MAX, 0) == 1
                    and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    except (OSError, AttributeError) as exc:
        return False, f"mallopt unavailable ({exc})"
    return _applied, "" if _applied else "mallopt refused the setting"


def _why_not(environ: Mapping[str, str]) -> str:
    if environ.get(OPT_OUT, "").lower() == "default":
        return f"{OPT_OUT}=default"
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return "not glibc"
    preload = environ.get("LD_PRELOAD", "")
    if "malloc" in preload:  # jemalloc, tcmalloc, mimalloc
        return f"LD_PRELOAD chooses the allocator ({preload})"
    tuned = sorted(name for name in environ if name.startswith("MALLOC_"))
    if tuned:
        return f"the allocator is tuned by {', '.join(tuned)}"
    return ""
