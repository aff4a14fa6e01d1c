"""Mask decoding: a mask file -> ``int64 [H,W]`` train ids (or the ignore index).

Three encodings, all decoded with whole-array numpy operations (no per-pixel Python):

- ``index``: 8-bit grey or palette PNG whose pixel values are raw class ids (VOC palette PNGs
  store the id as the palette index). A 256-entry table maps raw id -> train id / ignore.
- ``color``: RGB colour-coded masks. Each pixel's colour is packed into one ``uint32`` key and
  looked up in the sorted table of known colours with ``np.searchsorted``.
- ``bits``: SUIM, whose colours are 3-bit codes (each channel 0 or 255). Channels are
  thresholded at 128 (``>= 128`` -> 1) so JPEG-like noise does not create unknown colours.

Invalid values (an unknown colour, an id that is neither a class nor the ignore index) raise a
``DataError`` naming the file, the value and how many pixels carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from seglab.data.classes import IGNORE_INDEX, ClassMap, TableRow, default_palette, is_void
from seglab.data.containers import probe
from seglab.data.decode import check_pixels, pillow_image, read_bytes
from seglab.errors import DataError

MaskKind = Literal["index", "color", "bits"]
INVALID = -1
SUIM_THRESHOLD = 128


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """``uint8 [..., 3]`` -> ``uint32 [...]`` key ``r << 16 | g << 8 | b``."""
    rgb = rgb.astype(np.uint32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _unpack_key(key: int) -> tuple[int, int, int]:
    return (int(key) >> 16 & 255, int(key) >> 8 & 255, int(key) & 255)


def _png_grey_bits(data: bytes | bytearray) -> int | None:
    """The bit depth of a greyscale PNG (from its IHDR chunk); None for anything else."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR" or len(data) < 26:
        return None
    return data[24] if data[25] == 0 else None  # colour type 0: greyscale


def read_mask_array(path: str | Path) -> np.ndarray:
    """Read a mask file as stored: ``uint8 [H,W]`` (grey / palette index) or ``[H,W,3]``.

    Decoded through Pillow (palette indices are the class ids) with the checks of
    ``seglab.data.decode``: the pixel limit from the header, the EXIF orientation applied as
    for images, every failure a ``DataError`` naming the file. RGBA masks drop alpha; 16-bit
    and float masks are rejected (seglab reads 8-bit ids).
    """
    path = Path(path)
    data = read_bytes(path, "mask")
    info = probe(data, full=False)
    if info.width and info.height:
        check_pixels(path, info.width, info.height, "mask")
    with pillow_image(data, path, "mask", info) as im:
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            raise DataError(
                f"{path}: {mode} mask ({'16-bit' if mode.startswith('I;16') else '32-bit'}"
                " values): seglab reads 8-bit class-index (L/P) or RGB masks; save the mask"
                " as 8-bit PNG (ids 0..254, 255 = ignore)"
            )
        try:
            if mode in ("L", "P"):
                raw = np.asarray(im, dtype=np.uint8)
                bits = _png_grey_bits(data)
                # Pillow scales 2/4-bit grey PNGs to 0..255 (ids 1, 2 -> 85, 170): undo it.
                return raw // (255 // (2**bits - 1)) if mode == "L" and bits in (2, 4) else raw
            if mode == "1":
                return np.asarray(im.convert("L"), dtype=np.uint8) // 255
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
        except MemoryError:
            raise DataError(
                f"{path}: not enough memory to decode this {im.width}x{im.height} mask"
            ) from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot decode mask ({exc})") from None


def _format_counts(values: np.ndarray, counts: np.ndarray, fmt) -> str:
    order = np.argsort(-counts)[:8]
    parts = [f"{fmt(values[i])} ({int(counts[i])} px)" for i in order]
    more = f" and {len(values) - 8} more" if len(values) > 8 else ""
    return ", ".join(parts) + more


@dataclass(frozen=True)
class MaskDecoder:
    """Turns a mask file into train ids for one ``ClassMap``.

    ``lut`` maps a raw id (``index``/``bits``: pixel value or 3-bit code; ``color``: row of
    ``color_keys``) to a train id, the ignore index, or ``INVALID``.
    """

    kind: MaskKind
    classmap: ClassMap
    lut: np.ndarray
    color_keys: np.ndarray | None = None  # sorted uint32 keys (kind == "color")
    notes: tuple[str, ...] = field(default=())

    def decode_file(self, path: str | Path) -> np.ndarray:
        """Read and decode ``path`` -> ``int64 [H,W]``."""
        return self.decode_array(read_mask_array(path), path)

    def decode_array(self, raw: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
        """Decode an array as returned by ``read_mask_array``."""
        if self.kind == "index":
            return self._decode_index(self._as_index(raw, path), path)
        if raw.ndim != 3:
            raise DataError(
                f"{path}: expected an RGB colour mask for this dataset, got a single-channel"
                " mask (set mask=index if its values are class ids)"
            )
        if self.kind == "bits":
            bits = (raw >= SUIM_THRESHOLD).astype(np.uint8)
            code = (bits[..., 0] << 2) | (bits[..., 1] << 1) | bits[..., 2]
            return self.lut[code]
        return self._decode_color(raw, path)

    def _as_index(self, raw: np.ndarray, path: str | Path) -> np.ndarray:
        if raw.ndim == 2:
            return raw
        # Grey ids saved as RGB (r == g == b) are still index masks.
        if np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 0], raw[..., 2]):
            return raw[..., 0]
        raise DataError(
            f"{path}: RGB colour mask, but this dataset uses class-index masks (give a class"
            " table with colours, e.g. classes.csv name,r,g,b, or set mask=color)"
        )

    def _decode_index(self, raw: np.ndarray, path: str | Path) -> np.ndarray:
        out = self.lut[raw]
        if (out == INVALID).any():
            values, counts = np.unique(raw[out == INVALID], return_counts=True)
            raise DataError(
                f"{path}: class id(s) outside 0..{self.classmap.num_classes - 1} and not the"
                f" ignore index {self.classmap.ignore_index}: "
                + _format_counts(values, counts, lambda v: str(int(v)))
            )
        return out

    def _decode_color(self, raw: np.ndarray, path: str | Path) -> np.ndarray:
        assert self.color_keys is not None
        keys = pack_rgb(raw)
        rows = np.searchsorted(self.color_keys, keys)
        rows_clipped = np.minimum(rows, len(self.color_keys) - 1)
        known = self.color_keys[rows_clipped] == keys
        if not known.all():
            values, counts = np.unique(keys[~known], return_counts=True)
            raise DataError(
                f"{path}: colour(s) not in the class table: "
                + _format_counts(values, counts, lambda v: "RGB" + str(_unpack_key(v)))
            )
        return self.lut[rows_clipped]

    def describe(self) -> str:
        return {
            "index": "class-index masks",
            "color": "RGB colour-coded masks",
            "bits": "RGB bit-colour masks, channels thresholded at 128",
        }[self.kind]


def split_void(
    rows: list[TableRow], keep_void: bool
) -> tuple[list[TableRow], list[int | None], list[str]]:
    """Train id for each table row: void rows -> ``None`` (ignore) unless ``keep_void``."""
    kept: list[TableRow] = []
    train_ids: list[int | None] = []
    voids: list[str] = []
    for row in rows:
        if is_void(row.name) and not keep_void:
            train_ids.append(None)
            voids.append(row.name)
        else:
            train_ids.append(len(kept))
            kept.append(row)
    return kept, train_ids, voids


def _colors_for(rows: list[TableRow]) -> tuple:
    fallback = default_palette(len(rows))
    return tuple(
        row.color if row.color is not None else tuple(int(v) for v in fallback[i])
        for i, row in enumerate(rows)
    )


def void_note(total: int, voids: list[str], trained: int, keep_void: bool) -> str:
    """Plain words, e.g. '32 classes in table, Void -> ignore, 31 trained'."""
    if voids:
        return f"{total} classes in table, {', '.join(voids)} -> ignore, {trained} trained"
    if keep_void:
        return f"{total} classes in table, void kept as a class (keep_void=true), {trained} trained"
    return f"{total} classes in table, {trained} trained"


def index_decoder(
    rows: list[TableRow],
    *,
    keep_void: bool = False,
    ignore_index: int = IGNORE_INDEX,
    extra_ignore: tuple[int, ...] = (),
) -> MaskDecoder:
    """Decoder for index masks where pixel value i is table row i."""
    if len(rows) > 255:
        raise DataError(f"{len(rows)} classes do not fit 8-bit index masks (at most 255)")
    kept, train_ids, voids = split_void(rows, keep_void)
    classmap = ClassMap(tuple(r.name for r in kept), _colors_for(kept), ignore_index)
    lut = np.full(256, INVALID, dtype=np.int64)
    for raw_id, train_id in enumerate(train_ids):
        lut[raw_id] = ignore_index if train_id is None else train_id
    for value in (*extra_ignore, ignore_index):
        if 0 <= value < 256:
            lut[value] = ignore_index
    note = void_note(len(rows), voids, len(kept), keep_void and any(is_void(r.name) for r in rows))
    return MaskDecoder("index", classmap, lut, notes=(note,))


def color_decoder(
    rows: list[TableRow], *, keep_void: bool = False, ignore_index: int = IGNORE_INDEX
) -> MaskDecoder:
    """Decoder for RGB masks coloured by the table's colours."""
    if any(r.color is None for r in rows):
        raise DataError("colour masks need a class table with colours (name,r,g,b)")
    kept, train_ids, voids = split_void(rows, keep_void)
    classmap = ClassMap(tuple(r.name for r in kept), tuple(r.color for r in kept), ignore_index)
    keys = pack_rgb(np.asarray([r.color for r in rows], dtype=np.uint8))
    order = np.argsort(keys)
    lut = np.asarray(
        [ignore_index if train_ids[i] is None else train_ids[i] for i in order], dtype=np.int64
    )
    note = void_note(len(rows), voids, len(kept), keep_void and any(is_void(r.name) for r in rows))
    return MaskDecoder("color", classmap, lut, color_keys=keys[order], notes=(note,))


def naive_color_decode(raw: np.ndarray, colors: np.ndarray, train_ids: np.ndarray) -> np.ndarray:
    """Baseline for the benchmark: one full-image comparison per table colour."""
    out = np.full(raw.shape[:2], INVALID, dtype=np.int64)
    for color, train_id in zip(colors, train_ids, strict=True):
        out[np.all(raw == color, axis=-1)] = train_id
    return out
