"""Image decode time per file: torchvision's native decoder alone vs seglab's safe ``read_image``.

Side by side, interleaved rounds over the same real files (CamVid-11 480x360 PNG photos,
VOC/SUIM JPEGs), one thread:

- ``native``: ``torchvision.io.decode_image(read_file(p))`` (what ``read_image`` did before;
  it crashes on some corrupt PNGs);
- ``seglab``: ``seglab.data.dataset.read_image`` (structure check, then the native decoder);
- ``pillow``: Pillow decode + CHW tensor (the alternative: decode everything with Pillow);
- ``check``: ``containers.probe`` alone (the cost of the check).

    python benchmarks/bench_decode_speed.py --images 60 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seglab.data.containers import probe
from seglab.data.dataset import read_image
from seglab.paths import data_root


def native(path: Path) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    return decode_image(read_file(str(path)), mode=ImageReadMode.RGB, apply_exif_orientation=True)


def pillow(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def check(path: Path) -> None:
    probe(path.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    root = data_root()
    if root is None:
        sys.exit("real data not found: set SEGLAB_DATA")
    torch.set_num_threads(1)
    sets = {
        "CamVid-11 PNG 480x360": sorted((root / "camvid11" / "train").glob("*.png"))[:args.images],
        "VOC/SUIM JPEG": sorted(root.glob("*/*/*.jpg")),
    }
    funcs = {"native": native, "seglab": read_image, "pillow": pillow, "check": check}
    for name, files in sets.items():
        for f in files:  # warm the page cache and check the outputs agree
            assert torch.equal(native(f), read_image(f)), f
        times: dict[str, list[float]] = {k: [] for k in funcs}
        for _ in range(args.rounds):
            for key, func in funcs.items():
                start = time.perf_counter()
                for f in files:
                    func(f)
                times[key].append((time.perf_counter() - start) / len(files) * 1000)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{name}: {len(files)} files x {args.rounds} rounds, median ms per file")
        for key in funcs:
            print(f"  {key:7s} {med[key]:7.2f} ms  (min {min(times[key]):.2f})"
                  f"  {med[key] / med['native']:.2f}x native")


if __name__ == "__main__":
    main()
