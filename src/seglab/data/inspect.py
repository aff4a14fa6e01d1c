"""What a dataset holds (``inspect_source``) and whether every pair is sound (``check_source``).

The library side of ``seglab data inspect|check``: both return plain JSON-safe dicts and
report long work through an optional ``progress(task, done, total)`` callback, so they run
the same from Python, a notebook or the CLI (which only prints the documents).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seglab.data.dataset import image_size
from seglab.data.decode import ORIENTATION_NAMES, file_orientation
from seglab.data.formats import open_source
from seglab.data.overlap import split_overlaps
from seglab.data.stats import (
    IgnoreTally,
    band_note,
    band_statistics,
    class_weights,
    compute_pixel_stats,
    ignore_share_warning,
)
from seglab.errors import SeglabError

# progress(task, done, total): e.g. ("checking train", 12, 367) after the 12th pair.
Progress = Callable[[str, int, int], None]


def inspect_source(
    spec: str,
    split: str = "train",
    weights: str | None = None,
    weight_params: dict[str, float] | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Pairs per split, image sizes, classes with pixel shares and, optionally, class weights.

    Args:
        spec: dataset spec ``"<format>:<path>"`` (see ``seglab.data.formats.open_source``).
        split: the split whose masks are counted.
        weights: a ``seglab.data.stats`` class-weight strategy (``enet``, ``inverse``...);
            adds ``"weights"`` and a ``"weight"`` per class.
        weight_params: the strategy's parameters, e.g. ``{"X": 50}``.
        progress: called once per counted mask as ``progress("counting <split>", done, total)``.
        **options: format options (``keep_void=True``, ``classes=19``...).

    Raises ``SeglabError`` subclasses for a bad spec, layout or strategy.
    """
    source = open_source(spec, **options)
    cm = source.classmap
    sizes = Counter(image_size(img) for pairs in source.splits.values() for img, _ in pairs)
    doc: dict[str, Any] = {
        "spec": spec,
        "format": source.format,
        "root": str(source.root),
        "layout": source.layout,
        "mask_encoding": source.decoder.describe(),
        "notes": source.notes,
        "splits": {name: len(pairs) for name, pairs in source.splits.items()},
        "image_sizes": [{"height": h, "width": w, "count": n} for (h, w), n in sizes.most_common()],
        "num_classes": cm.num_classes,
        "ignore_index": cm.ignore_index,
        "split": split,
    }
    dataset = source.dataset(split)
    stats = compute_pixel_stats(dataset, _per_index(progress, f"counting {split}", len(dataset)))
    shares = stats.shares()
    total_pixels = max(stats.total_pixels, 1)
    doc["ignore_share"] = stats.ignore_pixels / total_pixels
    warning = ignore_share_warning(stats.ignore_pixels, stats.total_pixels, f"{spec} {split}")
    doc["warnings"] = [warning] if warning else []
    doc["bands"] = band_statistics(dataset)  # per-band mean/std for the recipe's data.mean/std
    doc["notes"] = [*source.notes, *doc["warnings"], band_note(doc["bands"])]
    doc["classes"] = [
        {
            "id": i,
            "name": name,
            "color": list(cm.colors[i]),
            "pixels": int(stats.counts[i]),
            "share": float(shares[i]),
            "share_all": float(stats.counts[i] / total_pixels),
            "images": int(stats.images_with_class[i]),
        }
        for i, name in enumerate(cm.names)
    ]
    if weights:
        w = class_weights(stats, weights, names=cm.names, **(weight_params or {}))
        doc["weights"] = {
            "strategy": weights,
            "params": weight_params or {},
            "values": [round(float(v), 6) for v in w],
        }
        for row, value in zip(doc["classes"], doc["weights"]["values"], strict=True):
            row["weight"] = value
    return doc


def check_source(spec: str, progress: Progress | None = None, **options: Any) -> dict[str, Any]:
    """Validate every pair of every split; all problems listed, none raised.

    Each pair is fully decoded (catches truncated files), its mask ids/colours checked against
    the class table, and image and mask sizes compared. Layout problems (an image without a
    mask...), images of different band counts and an image file in two splits are listed
    with ``split`` None; the same bytes in two splits or a repeat within one are warnings.
    ``progress("checking <split>", done, total)`` is called after each pair.
    Only a bad spec or an unreadable layout raises.
    """
    source = open_source(spec, strict=False, **options)
    problems = [{"split": None, "file": None, "problem": p} for p in source.problems]
    checked = 0
    warnings: list[str] = []
    bands: dict[int, list[str]] = {}  # band count -> images: one model input needs one count
    for split in source.splits:
        dataset = source.dataset(split)
        tally = IgnoreTally(source.classmap.ignore_index)
        for i in range(len(dataset)):
            try:
                image, mask = dataset.load_pair(i)
                tally.add(mask)
                bands.setdefault(int(image.shape[0]), []).append(str(dataset.pairs[i][0]))
            except SeglabError as exc:
                problems.append(
                    {"split": split, "file": str(dataset.pairs[i][0]), "problem": str(exc)}
                )
            note = _orientation_note(*dataset.pairs[i])
            if note:
                warnings.append(f"[{split}] {note}")
            checked += 1
            if progress is not None:
                progress(f"checking {split}", i + 1, len(dataset))
        warnings += tally.warnings(f"{spec} {split}")
    if len(bands) > 1:
        counts = ", ".join(f"{n} bands: {len(files)} images (e.g. {files[0]})"
                           for n, files in sorted(bands.items()))
        problems.append({"split": None, "file": None,
                         "problem": f"images have different band counts ({counts})"})
    overlaps, repeats = split_overlaps(source.splits)
    problems += [{"split": None, "file": None, "problem": p} for p in overlaps]
    warnings += repeats
    return {
        "spec": spec,
        "layout": source.layout,
        "pairs_checked": checked,
        "splits": {k: len(v) for k, v in source.splits.items()},
        "ok": not problems,
        "problems": problems,
        "warnings": warnings,
    }


def _orientation_note(image: Path, mask: Path) -> str | None:
    """Say so when a pair carries an EXIF orientation: the loaders apply it to each file.

    A mask drawn on the stored (unrotated) pixels then no longer lines up with its image;
    when the rotation changes the shape that shows as a size mismatch, but a flip, or a
    rotation of a square image, can only be caught by a person looking at the pair.
    """
    try:
        orient = [file_orientation(path, what) for path, what in
                  ((image, "image"), (mask, "mask"))]
    except SeglabError:
        return None  # unreadable: already a problem of this pair
    if orient == [1, 1]:
        return None
    said = [f"{path} has EXIF orientation {o} ({ORIENTATION_NAMES[o]})" if o != 1
            else f"{path} has none" for path, o in zip((image, mask), orient, strict=True)]
    return ("; ".join(said) + ": each file is loaded with its own orientation applied (as"
            " displayed); make sure the mask was drawn on the image as displayed")


def _per_index(progress: Progress | None, task: str, total: int) -> Callable[[int], None] | None:
    """Adapt ``progress`` to the ``f(index)`` callback of ``compute_pixel_stats``."""
    if progress is None:
        return None

    def tick(index: int) -> None:
        progress(task, index + 1, total)

    return tick
