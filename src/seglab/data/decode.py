"""Decoding untrusted image and mask files without letting a bad file kill the process.

One path for every reader (training, ``seglab data check``, ``seglab predict``):

1. read the bytes (a missing, unreadable or empty file is a ``DataError``);
2. ``containers.probe`` reads the header: format, size, EXIF orientation;
3. the pixel limit (``max_pixels``) is enforced from the header, before any allocation;
4. JPEG and WebP whose structure is sound go to torchvision's native decoder (fast); PNG
   (whose native decoder crashes on damaged pixel data, see ``containers``), every other
   format, and anything the native decoder refuses go to Pillow, which raises instead;
5. 16-bit samples become 8-bit (the high byte, as Pillow does for colour PNGs), and the EXIF
   orientation is applied the same way to images and masks, whichever decoder ran.

Every failure is a ``DataError`` that names the file; running out of memory names its size.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg, decode_webp

from seglab.data.containers import Probe, probe
from seglab.errors import DataError

ENV_MAX_PIXELS = "SEGLAB_MAX_IMAGE_PIXELS"
# Pillow's own default (1 GiB of 24-bit pixels / 4): a larger file is refused by both alike.
DEFAULT_MAX_PIXELS = 89_478_485
_override: list[int | None] = []
# Pillow's transpose for each EXIF orientation (the table ImageOps.exif_transpose uses).
_PIL_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}
ORIENTATION_NAMES = {
    1: "none", 2: "mirrored", 3: "rotated 180", 4: "flipped vertically",
    5: "transposed", 6: "rotated 90 clockwise", 7: "transversed",
    8: "rotated 90 counter-clockwise",
}


def max_pixels() -> int | None:
    """The largest width x height seglab decodes; None when unlimited.

    ``set_max_pixels`` wins, then the ``SEGLAB_MAX_IMAGE_PIXELS`` environment variable (a
    number, or ``0``/``none`` for no limit), then ``DEFAULT_MAX_PIXELS`` (Pillow's default).
    """
    if _override:
        return _override[-1]
    text = os.environ.get(ENV_MAX_PIXELS, "").strip().lower().replace("_", "")
    if not text:
        return DEFAULT_MAX_PIXELS
    if text in ("0", "none", "off"):
        return None
    try:
        value = int(float(text))
    except ValueError:
        raise DataError(
            f"{ENV_MAX_PIXELS}={os.environ[ENV_MAX_PIXELS]!r} is not a pixel count"
            " (a number such as 200000000, or 0 for no limit)"
        ) from None
    return value if value > 0 else None


def set_max_pixels(limit: int | None) -> None:
    """Set the pixel limit for this process (None: no limit); Pillow's follows it."""
    if limit is not None and limit <= 0:
        raise DataError(f"pixel limit must be a positive count or None, got {limit}")
    _override[:] = [limit]


def check_pixels(path: Path, width: int, height: int, what: str = "image") -> None:
    """``DataError`` naming the file when ``width x height`` is above ``max_pixels()``."""
    limit = max_pixels()
    if limit is not None and width * height > limit:
        raise DataError(
            f"{path}: {what} is {width}x{height} = {width * height:,} pixels, above seglab's"
            f" limit of {limit:,} (a guard against decompression bombs); set"
            f" {ENV_MAX_PIXELS} to a larger count (or 0 for no limit) to read it"
        )


def read_bytes(path: str | Path, what: str = "image") -> bytearray:
    """The whole file, writable (torch reads it without a copy); errors name the file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            buf = bytearray(size)
            got = fh.readinto(buf)
    except FileNotFoundError:
        raise DataError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{what} path is a folder, not a file: {path}") from None
    except MemoryError:
        raise DataError(f"{path}: not enough memory to read this {what} file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} file ({exc.strerror or exc})") from None
    if got == 0:
        raise DataError(f"{path}: {what} file is empty (0 bytes)")
    return buf if got == size else buf[:got]


def file_orientation(path: str | Path, what: str = "image") -> int:
    """The EXIF orientation 1..8 the readers apply to this file (1: none or unreadable)."""
    path = Path(path)
    data = read_bytes(path, what)
    info = probe(data, full=False)
    if info.format:
        return info.orientation
    try:
        with Image.open(io.BytesIO(data)) as im:
            return _pillow_orientation(im)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, struct.error,
            Image.DecompressionBombError):
        return 1


def image_file_size(path: str | Path, what: str = "image") -> tuple[int, int]:
    """(height, width) as decoded (EXIF orientation applied), from the header only."""
    path = Path(path)
    data = read_bytes(path, what)
    info = probe(data, full=False)
    width, height, orientation = info.width, info.height, info.orientation
    if not (info.format and width and height):
        try:
            with Image.open(io.BytesIO(data)) as im:
                (width, height), orientation = im.size, _pillow_orientation(im)
        except Image.DecompressionBombError as exc:
            raise DataError(f"{path}: {what} is too large to decode ({exc})") from None
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError, struct.error) as exc:
            raise DataError(f"{path}: cannot read {what} header ({exc})") from None
    check_pixels(path, width, height, what)
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def read_image_file(path: str | Path) -> torch.Tensor:
    """Decode an image file to ``uint8 [3,H,W]`` RGB with its EXIF orientation applied."""
    path = Path(path)
    data = read_bytes(path)
    header = info = probe(data, full=False)
    if info.width and info.height:
        check_pixels(path, info.width, info.height)
    try:
        if info.native:
            info = probe(data)  # the full check, now that the size is known to be allowed
        image = _native(data, info, path) if info.native else None
        if image is None:
            # The header probe gives the orientation, so it never depends on the decoder.
            with pillow_image(data, path, "image", header) as im:
                image = _pil_to_chw(im, path)
        elif info.orientation != 1:
            image = orient_tensor(image, info.orientation)
    except MemoryError:
        raise _out_of_memory(path, info.width, info.height, "image") from None
    return image


def _native(data: bytearray, info: Probe, path: Path) -> torch.Tensor | None:
    """torchvision's decoder on JPEG/WebP bytes ``probe`` passed; None: Pillow decides."""
    tensor = torch.frombuffer(data, dtype=torch.uint8)
    try:
        if info.format == "jpeg":
            out = decode_jpeg(tensor, ImageReadMode.RGB, apply_exif_orientation=False)
        else:
            out = decode_webp(tensor, ImageReadMode.RGB)
    except MemoryError:
        raise _out_of_memory(path, info.width, info.height, "image") from None
    except RuntimeError as exc:
        if _is_oom(exc):
            raise _out_of_memory(path, info.width, info.height, "image") from None
        return None  # a variant the native decoder refuses: Pillow reads it or names why
    if out.dtype != torch.uint8 or out.ndim != 3 or out.shape[0] != 3:
        return None
    return out


@contextmanager
def pillow_image(
    data: bytes | bytearray, path: Path, what: str, info: Probe | None = None
) -> Iterator[Image.Image]:
    """Open ``data`` with Pillow, fully decoded and oriented; errors become ``DataError``.

    The size is checked against the pixel limit before the pixels are decoded.
    """
    info = info if info is not None else probe(data, full=False)
    limit, pillow_limit = max_pixels(), Image.MAX_IMAGE_PIXELS
    # Pillow refuses above twice its own limit: raise it so that seglab's limit counts.
    if pillow_limit is not None and (limit is None or limit > pillow_limit):
        Image.MAX_IMAGE_PIXELS = limit
    width = height = 0
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            check_pixels(path, width, height, what)
            im.load()
            orientation = info.orientation if info.format else _pillow_orientation(im)
            yield im.transpose(_PIL_ORIENT[orientation]) if orientation in _PIL_ORIENT else im
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: {what} is too large to decode ({exc})") from None
    except MemoryError:
        raise _out_of_memory(path, width, height, what) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, EOFError,
            IndexError, KeyError, struct.error, ZeroDivisionError) as exc:
        kind = "not an image file Pillow can identify" if isinstance(
            exc, UnidentifiedImageError) else f"{type(exc).__name__}: {exc}"
        raise DataError(f"{path}: cannot decode {what} ({kind})") from None


def _pillow_orientation(im: Image.Image) -> int:
    """EXIF orientation of a format ``probe`` does not parse (TIFF, ...); 1 when unreadable."""
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - malformed EXIF: read the pixels as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _pil_to_chw(im: Image.Image, path: Path) -> torch.Tensor:
    """An opened Pillow image -> ``uint8 [3,H,W]``: 16-bit keeps its high byte."""
    mode = im.mode
    try:
        if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            arr = np.asarray(im)
            if mode == "I" and (arr.min(initial=0) < 0 or arr.max(initial=0) > 65535):
                raise DataError(
                    f"{path}: 32-bit integer image with values outside 0..65535: seglab reads"
                    " 8- and 16-bit images; save it as 8-bit RGB"
                )
            grey = (arr.astype(np.uint32) >> 8).astype(np.uint8)
            arr = np.repeat(grey[..., None], 3, axis=2)
        elif mode == "F":
            raise DataError(
                f"{path}: 32-bit float image: seglab reads 8- and 16-bit images; save it as"
                " 8-bit RGB"
            )
        else:
            arr = np.asarray(im if mode == "RGB" else im.convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    except MemoryError:
        raise _out_of_memory(path, im.width, im.height, "image") from None


def orient_tensor(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation to a ``[C,H,W]`` tensor exactly as Pillow's table does."""
    h, w = -2, -1
    if orientation == 2:
        image = image.flip(w)
    elif orientation == 3:
        image = image.flip(h, w)
    elif orientation == 4:
        image = image.flip(h)
    elif orientation == 5:
        image = image.transpose(h, w)
    elif orientation == 6:
        image = image.transpose(h, w).flip(w)
    elif orientation == 7:
        image = image.transpose(h, w).flip(h, w)
    elif orientation == 8:
        image = image.transpose(h, w).flip(h)
    return image.contiguous()


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "can't allocate memory" in text or "out of memory" in text or "bad_alloc" in text


def _out_of_memory(path: Path, width: int, height: int, what: str) -> DataError:
    size = f" {width}x{height}" if width and height else ""
    need = f" (about {width * height * 3 / 2**20:,.0f} MiB as 8-bit RGB)" if size else ""
    return DataError(f"{path}: not enough memory to decode this{size} {what}{need}")
