"""Fuzz: mutated real PNG/JPEG bytes through every public reader, in a worker process.

A worker subprocess runs the readers (``read_image``, ``read_mask_array``, a mask decoder's
``decode_file``, ``image_size``, predict's ``read_input_image``) on each mutated file, so a
crash in a native decoder shows up as a failed example, not as a dead pytest. Each reader
must either decode or raise ``DataError`` naming the file. Hypothesis runs derandomized
with a bounded number of examples (well under a minute); ``benchmarks/bench_fuzz_decode.py``
is the long run.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from seglab.data.containers import with_png_crcs_fixed
from seglab.paths import data_root

WORKER = textwrap.dedent("""
    import json, os, struct, sys, tempfile
    from seglab.data.classes import TableRow
    from seglab.data.dataset import image_size, read_image
    from seglab.data.masks import index_decoder, read_mask_array
    from seglab.errors import DataError
    from seglab.predict.files import read_input_image

    decoder = index_decoder([TableRow(str(i), None) for i in range(12)])

    def native(path):  # the unguarded decoder, to prove that a crash is seen
        from torchvision.io import decode_image, read_file
        return decode_image(read_file(path))

    readers = {"read_image": read_image, "read_mask_array": read_mask_array,
               "decode_file": decoder.decode_file, "image_size": image_size,
               "read_input_image": read_input_image}
    folder = tempfile.mkdtemp()
    stdin, stdout = sys.stdin.buffer, sys.stdout
    while True:
        head = stdin.read(12)
        if len(head) < 12:
            break
        size, suffix = struct.unpack(">I8s", head)
        path = os.path.join(folder, "fuzzed" + suffix.rstrip(b"\\0").decode())
        with open(path, "wb") as fh:
            fh.write(stdin.read(size))
        use = {"native": native} if suffix.startswith(b".native") else readers
        out = {}
        for name, reader in use.items():
            try:
                reader(path)
                out[name] = "ok"
            except DataError as exc:
                out[name] = "DataError: " + str(exc)
            except Exception as exc:
                out[name] = "raw " + type(exc).__name__ + ": " + str(exc)
        os.remove(path)
        stdout.write(json.dumps(out) + "\\n")
        stdout.flush()
""")


class Worker:
    """The reader process; restarted after a crash so later examples still run."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def decode(self, suffix: str, data: bytes) -> dict[str, str] | int:
        """Reader outcomes, or the worker's exit status when it died on this input."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        try:
            self.proc.stdin.write(struct.pack(">I8s", len(data), suffix.encode()) + data)
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = b""
        if not line:
            status = self.proc.wait(timeout=60)
            self.proc = None
            return status
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


def _generated() -> list[tuple[str, bytes]]:
    """Stand-ins when the real data is absent: a photo-like PNG, a JPEG, an index mask."""
    y, x = np.mgrid[0:72, 0:96]
    photo = np.stack([x * 2, y * 3, (x * y) % 256], -1).astype(np.uint8)
    out = []
    for fmt, arr in (("PNG", photo), ("JPEG", photo), ("PNG", (x // 10 % 12).astype(np.uint8))):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, fmt)
        out.append((".png" if fmt == "PNG" else ".jpg", buf.getvalue()))
    return out


def _sources() -> list[tuple[str, bytes]]:
    root = data_root()
    if root is None:
        return _generated()
    tiny = root / "camvid32-tiny"
    picks = (sorted(tiny.glob("**/*.png"))[:2] + sorted(tiny.glob("**/*_P.png"))[:2]
             + sorted((root / "voc-samples").glob("*/*.png"))[:1]
             + sorted((root / "voc-samples").glob("*/*.jpg"))[:1]
             + sorted((root / "suim-samples").glob("images/*.jpg"))[:1])
    return [(p.suffix.lower(), p.read_bytes()) for p in picks] or _generated()


SOURCES = _sources()


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    suffix, data = draw(st.sampled_from(SOURCES))
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "int32", "insert", "delete"]))
        # Early bytes (headers) are where most structure lives: favour them half the time.
        limit = min(len(buf), 300) if draw(st.booleans()) else len(buf)
        pos = draw(st.integers(0, max(limit - 5, 0)))
        if op == "flip":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            buf[pos] = draw(st.integers(0, 255))
        elif op == "int32":
            value = draw(st.sampled_from([0, 1, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
            buf[pos:pos + 4] = struct.pack(">I", value)
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del buf[pos:pos + draw(st.integers(1, 32))]
    if draw(st.integers(0, 3)) == 0:
        del buf[draw(st.integers(1, len(buf))):]
    out = bytes(buf)
    if suffix == ".png" and draw(st.booleans()):
        out = with_png_crcs_fixed(out)  # so that the damage reaches libpng's row decoding
    return suffix, out


def test_the_harness_sees_a_crash(worker):
    """Mutated bytes that kill torchvision's decoder kill the worker: the test would notice."""
    rng = np.random.default_rng(0)
    rows = [bytes([5 if y == 20 else 0]) + rng.integers(0, 256, 192, np.uint8).tobytes()
            for y in range(48)]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 48, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
    status = worker.decode(".native", png)
    assert isinstance(status, int) and status != 0, status
    outcome = worker.decode(".png", png)  # a fresh worker; seglab's readers survive it
    assert isinstance(outcome, dict) and outcome["read_image"].startswith("DataError: ")


@settings(max_examples=150, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(case=mutated())
def test_mutated_files_never_crash_a_reader(worker, case):
    suffix, data = case
    outcome = worker.decode(suffix, data)
    assert isinstance(outcome, dict), f"a reader killed the process (status {outcome})"
    for reader, result in outcome.items():
        assert result == "ok" or result.startswith("DataError: "), (reader, result)
        if result != "ok":
            assert f"fuzzed{suffix}" in result, (reader, result)
