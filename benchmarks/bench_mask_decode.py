"""Decode + convert the 960x720 CamSeq01 colour masks: vectorised lookup vs a per-colour loop.

Both paths read the PNG with Pillow and turn RGB into train ids for the 32-entry CamVid
table; the baseline compares the whole image against each table colour in turn (the common
hand-written approach), seglab packs RGB into one uint32 key and uses ``np.searchsorted``.
Prints a table and ends with one JSON line. Usage: python benchmarks/bench_mask_decode.py
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time

import numpy as np

from seglab.data.classes import read_class_table
from seglab.data.masks import color_decoder, naive_color_decode, read_mask_array
from seglab.paths import data_root


def _time(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main(repeats: int = 7) -> dict:
    root = data_root()
    if root is None or not (root / "camseq01-sample").is_dir():
        sys.exit("camseq01-sample not found: set SEGLAB_DATA to the shared data folder")
    folder = root / "camseq01-sample"
    rows = read_class_table(folder / "label_colors.txt")
    decoder = color_decoder(rows)
    colors = np.asarray([r.color for r in rows], np.uint8)
    train_ids = decoder.decode_array(colors[None])[0]  # train id of each table colour
    masks = sorted((folder / "labels").glob("*_L.png"))

    def vectorised():
        return [decoder.decode_file(p) for p in masks]

    def naive():
        return [naive_color_decode(read_mask_array(p), colors, train_ids) for p in masks]

    for a, b in zip(vectorised(), naive(), strict=True):  # same answer before timing
        assert np.array_equal(a, b)
    fast, slow = _time(vectorised, repeats), _time(naive, repeats)
    per_mask = {
        k: statistics.median(v) / len(masks) * 1000 for k, v in (("vec", fast), ("naive", slow))
    }
    result = {
        "benchmark": "mask_decode_camseq01",
        "masks": len(masks),
        "size": "960x720",
        "table_colors": len(rows),
        "repeats": repeats,
        "vectorised_ms_per_mask": round(per_mask["vec"], 2),
        "naive_ms_per_mask": round(per_mask["naive"], 2),
        "speedup": round(per_mask["naive"] / per_mask["vec"], 2),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cpus",
    }
    print(f"{'method':<28}{'ms / mask (median)':>20}")
    print(f"{'per-colour loop (baseline)':<28}{result['naive_ms_per_mask']:>20.2f}")
    print(f"{'uint32 key + searchsorted':<28}{result['vectorised_ms_per_mask']:>20.2f}")
    print(
        f"speedup: {result['speedup']}x  ({len(masks)} masks, {repeats} repeats, PNG read included)"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
