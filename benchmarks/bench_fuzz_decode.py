"""Mutated real PNG/JPEG/WebP files: crashes of torchvision's native decoder vs seglab's readers.

Each mutated file is decoded twice, each time in a forked child so that a crash (SIGSEGV...)
is counted instead of ending the run:

- before: ``torchvision.io.decode_image`` straight on the bytes (what ``read_image`` did);
- after: every public seglab reader (``read_image``, ``read_mask_array``, ``image_size``,
  predict's ``read_input_image``); a reader may succeed or raise ``DataError``, anything else
  (another exception, a signal) is counted against it.

Sources are real files from ``$SEGLAB_DATA`` (CamVid-11 images and masks, VOC palette masks,
VOC/SUIM JPEGs) plus WebP files made from them (with an EXIF orientation). Mutations: bit
flips, byte overwrites, "interesting" 32-bit values, insertions/deletions, truncation, PNG
IHDR field edits and chunk drops/duplicates, most PNG ones with their CRCs fixed up so the
damage reaches the pixel data.

    python benchmarks/bench_fuzz_decode.py --count 2000 --seed 0 --json fuzz.json
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import random
import struct
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from seglab.data.containers import png_chunks, with_png_crcs_fixed
from seglab.data.dataset import image_size, read_image
from seglab.data.masks import read_mask_array
from seglab.errors import DataError
from seglab.paths import data_root
from seglab.predict.files import read_input_image

INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF)


def sources(root: Path) -> list[tuple[str, bytes]]:
    """(suffix, bytes) of the real files to mutate, plus WebP made from some of them."""
    picks = (sorted((root / "camvid11" / "train").glob("*.png"))[:12]
             + sorted((root / "camvid11" / "trainannot").glob("*.png"))[:6]
             + sorted((root / "voc-samples").glob("*/*.png"))
             + sorted(root.glob("*/*/*.jpg")))
    out = [(p.suffix.lower(), p.read_bytes()) for p in picks]
    for i, path in enumerate(sorted(root.glob("*/*/*.jpg"))[:4]):
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        exif = rgb.getexif()
        exif[0x0112] = (1, 6, 3, 8)[i]
        buf = io.BytesIO()
        rgb.save(buf, "WEBP", quality=80, lossless=bool(i % 2), exif=exif)
        out.append((".webp", buf.getvalue()))
    return out


def mutate(rng: random.Random, suffix: str, data: bytes) -> tuple[str, bytes]:
    """One random mutation of ``data``; returns (its name, the bytes)."""
    kinds = ["flip", "flip_head", "overwrite", "interesting", "insdel", "truncate"]
    if suffix == ".png":
        kinds += ["ihdr", "ihdr", "chunks"]
    kind = rng.choice(kinds)
    buf = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == "flip_head":
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(min(len(buf), 256))
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == "overwrite":
        i, n = rng.randrange(len(buf)), rng.randint(1, 16)
        buf[i:i + n] = bytes(rng.randrange(256) for _ in range(n))
    elif kind == "interesting":
        i = rng.randrange(len(buf) - 4)
        buf[i:i + 4] = struct.pack(">I", rng.choice(INTERESTING))
    elif kind == "insdel":
        i = rng.randrange(len(buf))
        if rng.random() < 0.5:
            del buf[i:i + rng.randint(1, 64)]
        else:
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == "truncate":
        del buf[rng.randrange(1, len(buf)):]
    elif kind == "ihdr":
        field = rng.choice(["width", "height", "depth", "colour", "method"])
        if field in ("width", "height"):
            offset = 16 if field == "width" else 20
            value = rng.choice((0, 1, 7, 479, 481, 4096, 65535, 0x7FFFFFFF, 1 << 31))
            buf[offset:offset + 4] = struct.pack(">I", value)
        else:
            offset = {"depth": 24, "colour": 25, "method": rng.choice((26, 27, 28))}[field]
            buf[offset] = rng.choice((0, 1, 2, 3, 4, 6, 8, 16, 255))
    else:  # drop or duplicate one chunk
        chunks = png_chunks(buf)
        offset, length, _ = rng.choice(chunks)
        piece = bytes(buf[offset:offset + 12 + length])
        if rng.random() < 0.5:
            del buf[offset:offset + 12 + length]
        else:
            buf[offset:offset] = piece
    out = bytes(buf)
    if suffix == ".png" and kind not in ("truncate",) and rng.random() < 0.7:
        out = with_png_crcs_fixed(out)
    return kind, out


def in_child(func, path: str, report: bool = False) -> str:
    """Run ``func(path)`` in a forked child: 'ok', 'DataError', 'raw' or 'signal:<n>'.

    ``report`` prints a raw exception (for seglab's readers, where it would be a bug)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)  # libpng/libjpeg warnings
            func(path)
        except DataError:
            code = 1
        except BaseException as exc:  # noqa: BLE001 - reported as a raw failure
            if report:
                os.write(1, f"{type(exc).__name__}: {exc}\n".encode()[:300])
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"signal:{os.WTERMSIG(status)}"
    return {0: "ok", 1: "DataError"}.get(os.WEXITSTATUS(status), "raw")


def torchvision_native(path: str) -> None:
    from torchvision.io import ImageReadMode, decode_image, read_file

    decode_image(read_file(path), mode=ImageReadMode.RGB, apply_exif_orientation=True)


def seglab_readers(path: str) -> None:
    """Every public reader; the first DataError ends the child like the readers would."""
    failures = 0
    for reader in (read_image, read_mask_array, image_size, read_input_image):
        try:
            reader(path)
        except DataError:
            failures += 1
    if failures:
        raise DataError(f"{failures} reader(s) refused {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    root = data_root()
    if root is None:
        sys.exit("real data not found: set SEGLAB_DATA")
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    srcs = sources(root)
    before: collections.Counter = collections.Counter()
    after: collections.Counter = collections.Counter()
    crashes_by_kind: collections.Counter = collections.Counter()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.count):
            suffix, data = rng.choice(srcs)
            kind, mutated = mutate(rng, suffix, data)
            path = os.path.join(tmp, f"m{i}{suffix}")
            with open(path, "wb") as fh:
                fh.write(mutated)
            b, a = in_child(torchvision_native, path), in_child(seglab_readers, path, True)
            before[(suffix, b)] += 1
            after[(suffix, a)] += 1
            if b.startswith("signal"):
                crashes_by_kind[(suffix, kind)] += 1
            if a not in ("ok", "DataError"):
                keep = Path(f"fuzz_failure_{i}{suffix}")
                keep.write_bytes(mutated)
                print(f"seglab readers: {a} on {keep}", flush=True)
            os.remove(path)
    seconds = time.perf_counter() - started

    def crashes(counter: collections.Counter) -> int:
        return sum(v for (_, r), v in counter.items() if r.startswith("signal"))

    doc = {
        "files": args.count, "seed": args.seed, "seconds": round(seconds, 1),
        "before_crashes": crashes(before), "after_crashes": crashes(after),
        "after_raw_errors": sum(v for (_, r), v in after.items() if r == "raw"),
        "before": {f"{s} {r}": v for (s, r), v in sorted(before.items())},
        "after": {f"{s} {r}": v for (s, r), v in sorted(after.items())},
        "before_crashes_by_mutation": {f"{s} {k}": v for (s, k), v in
                                       sorted(crashes_by_kind.items())},
    }
    print(json.dumps(doc, indent=1))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
