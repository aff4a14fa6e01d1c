"""Raw mask values -> train ids, for index masks whose values are not ``0..K-1``.

Three remaps shared by the layouts:

- ``values=v0,v1,...`` (explicit): raw value ``v_i`` is class ``i``; the ignore index stays
  ignore unless listed; any other value is an error naming the file. ``values=0,255`` reads
  binary masks saved as 0/255.
- binary 0/255 detection (``folder``): masks holding exactly the values {0, 255} and no class
  table are read as ``values=0,255`` (0 -> background, 255 -> foreground), with a note.
- ``reduce_zero_label`` (mmsegmentation's, ADE20K): raw 0 ("other / unlabelled") -> ignore,
  raw ``k`` -> ``k - 1``, the ignore index stays ignore.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from seglab.data.classes import IGNORE_INDEX, ClassMap, TableRow, default_palette
from seglab.data.masks import INVALID, MaskDecoder
from seglab.errors import ConfigError, DataError

log = logging.getLogger(__name__)
BINARY_VALUES = (0, 255)
BINARY_NAMES = ("background", "foreground")


def parse_values(text: str | Sequence[int] | None, fmt: str) -> list[int] | None:
    """``"0,255"`` (or a list) -> ``[0, 255]``; distinct integers 0..255, at least two."""
    if text is None or text == "":
        return None
    # "0,255" from the command line; "[0, 255]" when a list went through a string option.
    parts = str(text).replace(" ", "").strip("[]").split(",") if isinstance(text, str) else text
    try:
        values = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise ConfigError(
            f"{fmt} option values={text!r}: expected raw mask values separated by commas,"
            " e.g. values=0,255"
        ) from None
    if len(values) < 2 or len(set(values)) != len(values):
        raise ConfigError(
            f"{fmt} option values={text!r}: give at least two distinct raw values (one per"
            " class, in class order), e.g. values=0,255"
        )
    bad = [v for v in values if not 0 <= v <= 255]
    if bad:
        raise ConfigError(f"{fmt} option values={text!r}: {bad[0]} is outside 0..255 (8-bit masks)")
    return values


def _classmap(rows: Sequence[TableRow], ignore_index: int) -> ClassMap:
    fallback = default_palette(len(rows))
    colors = tuple(
        r.color if r.color is not None else tuple(int(v) for v in fallback[i])
        for i, r in enumerate(rows)
    )
    return ClassMap(tuple(r.name for r in rows), colors, ignore_index)


def values_decoder(
    values: Sequence[int], rows: Sequence[TableRow] | None, ignore_index: int = IGNORE_INDEX,
    where: str = "values",
) -> MaskDecoder:
    """Raw ``values[i]`` -> class ``i``; ``rows`` name the classes (``class_i`` when None)."""
    if rows is None:
        names = BINARY_NAMES if list(values) == list(BINARY_VALUES) else None
        rows = [TableRow(names[i] if names else f"class_{i}", None) for i in range(len(values))]
    if len(rows) != len(values):
        raise ConfigError(
            f"{where}: {len(values)} raw values listed but the class table has {len(rows)}"
            " classes; give one value per class, in table order"
        )
    lut = np.full(256, INVALID, dtype=np.int64)
    if 0 <= ignore_index < 256:
        lut[ignore_index] = ignore_index  # raw ignore stays ignore unless listed as a class
    for train_id, raw in enumerate(values):
        lut[raw] = train_id
    mapping = ", ".join(f"{raw} -> {r.name}" for raw, r in zip(values, rows, strict=True))
    note = f"raw mask values remapped: {mapping}; other values are errors"
    return MaskDecoder("index", _classmap(rows, ignore_index), lut, notes=(note,))


def binary_note(where: str) -> str:
    """The note (and log line) of a detected 0/255 binary dataset."""
    text = (
        f"{where}: masks hold only the values 0 and 255: read as binary, 0 -> background,"
        " 255 -> foreground (2 classes); -o values=0,255 states this, a class table"
        " (classes.csv) keeps 255 as ignore instead"
    )
    log.warning(text)
    return text


def reduce_zero_decoder(
    rows: Sequence[TableRow], ignore_index: int = IGNORE_INDEX
) -> MaskDecoder:
    """mmseg's ``reduce_zero_label``: raw 0 -> ignore, raw ``k`` -> class ``k - 1`` (rows[k-1])."""
    if len(rows) > 254:
        raise DataError(f"{len(rows)} classes do not fit reduce_zero_label on 8-bit masks")
    lut = np.full(256, INVALID, dtype=np.int64)
    lut[0] = ignore_index
    lut[1 : len(rows) + 1] = np.arange(len(rows))
    if 0 <= ignore_index < 256:
        lut[ignore_index] = ignore_index
    note = (
        f"reduce_zero_label: raw 0 -> ignore, raw 1..{len(rows)} -> classes 0..{len(rows) - 1}"
    )
    return MaskDecoder("index", _classmap(rows, ignore_index), lut, notes=(note,))
