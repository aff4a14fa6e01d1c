"""seglab.allocator: large freed blocks stay in the heap for reuse (glibc on Linux)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from seglab import allocator

GLIBC = allocator._why_not({}) == ""


@pytest.mark.parametrize("environ, reason", [
    ({"SEGLAB_MALLOC": "default"}, "SEGLAB_MALLOC=default"),
    ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "LD_PRELOAD chooses the allocator"),
    ({"LD_PRELOAD": "libtcmalloc_minimal.so"}, "LD_PRELOAD chooses the allocator"),
    ({"MALLOC_ARENA_MAX": "2"}, "tuned by MALLOC_ARENA_MAX"),
])
def test_a_user_choice_wins(environ, reason):
    if not GLIBC:
        pytest.skip("not glibc: the setting never applies here")
    assert reason in allocator._why_not(environ)


# A 64 MB block: glibc's default maps it with mmap, outside the [heap] mapping of
# /proc/self/maps; with the setting it comes from the heap, and after a free the next block of
# that size reuses the same pages.
_PROBE = """
import ctypes, sys
from seglab import allocator
if sys.argv[1] == "on":
    print(allocator.keep_freed_memory({}))
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
def mapping(address):
    for line in open("/proc/self/maps"):
        span, *rest = line.split()
        low, high = (int(v, 16) for v in span.split("-"))
        if low <= address < high:
            return rest[-1] if len(rest) == 5 else "anonymous"
first = libc.malloc(64 << 20)
where = mapping(first)
libc.free(ctypes.c_void_p(first))
second = libc.malloc(64 << 20)
print(where, first == second)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc on Linux only")
def test_large_blocks_come_from_the_heap_and_are_reused():
    def run(mode: str) -> list[str]:
        out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True,
                             text=True, check=True)
        return out.stdout.split("\n")

    assert run("off")[0].split()[0] == "anonymous"  # the default: a mapping of its own
    on = run("on")
    assert on[0] == "(True, '')"
    assert on[1].split() == ["[heap]", "True"]  # served by the heap, and reused after free


def test_it_applies_once_and_reports_why_not(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", False)
    applied, reason = allocator.keep_freed_memory({"SEGLAB_MALLOC": "default"})
    assert (applied, reason) == (False, "SEGLAB_MALLOC=default")
