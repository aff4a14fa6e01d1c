"""Test helper: log every file a non-zero-rank process writes under a folder.

Loaded through PYTHONPATH by tests/test_distributed.py and tests/test_multinode.py. In a
process whose LOCAL_RANK (set by Lightning's DDP launcher) or global RANK (set by torchrun: on
the second machine LOCAL_RANK is 0 again) is not 0, writes under $SEGLAB_TEST_AUDIT_ROOT are
appended to $SEGLAB_TEST_AUDIT: files opened for writing, os.open with write flags,
os.replace/os.rename targets. Writes made in C++ or Rust (torch.save(path), safetensors)
are not seen.
"""

import builtins
import io
import os

_AUDIT = os.environ.get("SEGLAB_TEST_AUDIT")
_ROOT = os.environ.get("SEGLAB_TEST_AUDIT_ROOT")

_RANKS = (os.environ.get("LOCAL_RANK", "0"), os.environ.get("RANK", "0"))

if _AUDIT and _ROOT and _RANKS != ("0", "0"):
    _open, _os_open, _replace, _rename = builtins.open, os.open, os.replace, os.rename
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _log(path):
        if isinstance(path, int):
            return
        full = os.path.abspath(os.fsdecode(os.fspath(path)))
        if full.startswith(_ROOT):
            with _open(_AUDIT, "a") as handle:
                handle.write(f"{'/'.join(_RANKS)} {full}\n")

    def _audited_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            _log(file)
        return _open(file, mode, *args, **kwargs)

    def _audited_os_open(path, flags, *args, **kwargs):
        if flags & _WRITE_FLAGS:
            _log(path)
        return _os_open(path, flags, *args, **kwargs)

    def _audited_replace(src, dst, *args, **kwargs):
        _log(dst)
        return _replace(src, dst, *args, **kwargs)

    def _audited_rename(src, dst, *args, **kwargs):
        _log(dst)
        return _rename(src, dst, *args, **kwargs)

    builtins.open = io.open = _audited_open
    os.open, os.replace, os.rename = _audited_os_open, _audited_replace, _audited_rename
