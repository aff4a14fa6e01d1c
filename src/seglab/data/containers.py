"""Byte-level look at PNG, JPEG and WebP files before any decoder sees them.

``probe`` reads the structure in Python (it never raises: a problem is a reason string on the
result) and gives the stored size and the EXIF orientation, so that the pixel limit is
enforced before any allocation and the orientation is the same whichever decoder runs.

Which bytes may reach torchvision's native decoders was found by experiment
(``benchmarks/bench_fuzz_decode.py``, results in ``benchmarks/RESULTS.md``): its libpng
decoder dies with SIGSEGV whenever libpng reports an error while reading the pixel rows (a
bad deflate stream, a row filter byte above 4, an IDAT CRC error, too little data), and those
can only be found by inflating the whole image, which costs more than decoding it with
Pillow. So PNG is never ``native``: Pillow decodes it and raises instead of crashing. JPEG and
WebP never crashed the native decoders in thousands of mutated files; they are ``native``
after a structural walk (JPEG markers, segment lengths, frame header, scan data up to the end
marker; WebP RIFF chunks and frame headers).
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (colour type) -> (channels, allowed bit depths)
_PNG_COLOUR = {0: (1, (1, 2, 4, 8, 16)), 2: (3, (8, 16)), 3: (1, (1, 2, 4, 8)),
               4: (2, (8, 16)), 6: (4, (8, 16))}
_JPEG_SOF_NATIVE = {0xC0, 0xC1, 0xC2}  # baseline, extended, progressive Huffman
_JPEG_SOF_OTHER = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# The next marker after entropy-coded data: 0xFF followed by neither a stuffed 0x00, nor a
# restart marker, nor another fill 0xFF.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


@dataclass(frozen=True)
class Probe:
    """What the bytes of an image file say about themselves.

    ``format`` is ``"png"``, ``"jpeg"``, ``"webp"`` or ``""`` (another format: Pillow
    decides). ``width``/``height`` are the stored size (0 when unknown), ``orientation`` the
    EXIF orientation 1..8 (1 when absent), ``bit_depth`` the PNG sample depth (8 otherwise).
    ``problem`` is None when the structure is sound; ``native`` says whether torchvision's
    decoder may read the bytes (sound JPEG and WebP; never PNG, see the module notes).
    """

    format: str
    width: int = 0
    height: int = 0
    orientation: int = 1
    bit_depth: int = 8
    problem: str | None = None

    @property
    def native(self) -> bool:
        return self.format in ("jpeg", "webp") and self.problem is None


class _Bad(Exception):
    """A structural problem; its message becomes ``Probe.problem``."""


def sniff(data: bytes | bytearray | memoryview) -> str:
    """Format from the magic bytes: ``png``, ``jpeg``, ``webp`` or ``""``."""
    head = bytes(data[:12])
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return ""


def probe(data: bytes | bytearray, *, full: bool = True) -> Probe:
    """Size, orientation and soundness of ``data``; ``full=False`` reads headers only.

    A header-only probe (for sizes) stops at a JPEG's first scan, so its ``problem`` is None
    only in the sense that the headers are sound.
    """
    fmt = sniff(data)
    parser = {"png": _probe_png, "jpeg": _probe_jpeg, "webp": _probe_webp}.get(fmt)
    if parser is None:
        return Probe("")
    state: dict = {}
    try:
        parser(memoryview(data), state, full)
    except _Bad as exc:
        return Probe(fmt, state.get("w", 0), state.get("h", 0), state.get("orient", 1),
                     state.get("depth", 8), str(exc))
    except (struct.error, IndexError, ValueError, OverflowError) as exc:
        return Probe(fmt, state.get("w", 0), state.get("h", 0), state.get("orient", 1),
                     state.get("depth", 8), f"malformed {fmt.upper()} structure ({exc})")
    return Probe(fmt, state["w"], state["h"], state.get("orient", 1), state.get("depth", 8))


# -- PNG ------------------------------------------------------------------------------------


def png_chunks(data: bytes | bytearray | memoryview) -> list[tuple[int, int, bytes]]:
    """``(offset, length, type)`` of each whole chunk after the signature, in file order.

    Stops at the end of the data or at a chunk that runs past it (that one is left out).
    """
    out: list[tuple[int, int, bytes]] = []
    pos, size = 8, len(data)
    while pos + 12 <= size:
        length = struct.unpack_from(">I", data, pos)[0]
        if pos + 12 + length > size:
            break
        out.append((pos, length, bytes(data[pos + 4:pos + 8])))
        pos += 12 + length
    return out


def with_png_crcs_fixed(data: bytes) -> bytes:
    """``data`` with every whole chunk's CRC recomputed, so that libpng reads on into damaged
    chunk bodies instead of stopping at the CRC (the fuzz test's and benchmark's mutator)."""
    buf = bytearray(data)
    for offset, length, _ in png_chunks(buf):
        body = bytes(buf[offset + 4:offset + 8 + length])
        buf[offset + 8 + length:offset + 12 + length] = struct.pack(">I", zlib.crc32(body))
    return bytes(buf)


def _probe_png(data: memoryview, state: dict, full: bool) -> None:
    size = len(data)
    if size < 33:
        raise _Bad("truncated PNG (no complete IHDR chunk)")
    length, ctype = struct.unpack_from(">I4s", data, 8)
    if ctype != b"IHDR" or length != 13:
        raise _Bad("PNG does not start with a 13-byte IHDR chunk")
    w, h, depth, colour, comp, filt, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    state.update(w=w, h=h, depth=depth)
    if not (0 < w < 2**31 and 0 < h < 2**31):
        raise _Bad(f"PNG size {w}x{h} is invalid")
    if colour not in _PNG_COLOUR or depth not in _PNG_COLOUR[colour][1]:
        raise _Bad(f"PNG colour type {colour} with bit depth {depth} is invalid")
    if comp or filt or interlace > 1:
        raise _Bad("PNG compression, filter or interlace method is invalid")
    pos, idat, seen, palette, ended = 8, [], [], False, False
    while pos + 12 <= size:
        length, ctype = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if length >= 2**31 or end > size:
            raise _Bad(f"PNG chunk at byte {pos} runs past the end of the file (truncated)")
        if not ctype.isalpha() or not ctype.isascii():
            raise _Bad(f"PNG chunk at byte {pos} has an invalid type {ctype!r}")
        body = data[pos + 8:end - 4]
        if ctype == b"IDAT":
            if seen and seen[-1] != b"IDAT" and idat:
                raise _Bad("PNG IDAT chunks are not consecutive")
            idat.append(body)
        elif ctype == b"PLTE":
            if length % 3 or not 0 < length <= 768 or idat:
                raise _Bad("PNG PLTE chunk is invalid")
            palette = True
        elif ctype == b"eXIf" and length:
            state["orient"] = exif_orientation(bytes(body))
        elif ctype == b"IEND":
            ended = True
            break
        elif ctype[0:1].isupper() and ctype != b"IHDR":
            raise _Bad(f"PNG has an unknown critical chunk {ctype.decode()}")
        elif ctype == b"IHDR" and pos != 8:
            raise _Bad("PNG has a second IHDR chunk")
        seen.append(ctype)
        pos = end
    if not idat:
        raise _Bad("PNG has no image data (IDAT)")
    if colour == 3 and not palette:
        raise _Bad("palette PNG without a PLTE chunk")
    if full and not ended:
        raise _Bad("PNG has no IEND chunk (truncated)")


# -- JPEG -----------------------------------------------------------------------------------


def _probe_jpeg(data: memoryview, state: dict, full: bool) -> None:
    size, pos, frame, scans = len(data), 2, None, 0
    raw = data.obj if isinstance(data.obj, (bytes, bytearray)) else bytes(data)
    while True:
        if pos >= size:
            raise _Bad("JPEG ends without an end-of-image marker (truncated)")
        if data[pos] != 0xFF:
            raise _Bad(f"JPEG has stray bytes at {pos} where a marker should be")
        while pos < size and data[pos] == 0xFF:
            pos += 1
        if pos >= size:
            raise _Bad("JPEG ends inside a marker (truncated)")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            break
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker in (0x00, 0x01):
            raise _Bad(f"JPEG marker 0x{marker:02X} out of place at byte {pos - 1}")
        if pos + 2 > size:
            raise _Bad("JPEG segment header runs past the end of the file (truncated)")
        length = struct.unpack_from(">H", data, pos)[0]
        if length < 2 or pos + length > size:
            raise _Bad(f"JPEG segment 0x{marker:02X} at byte {pos - 2} has a bad length")
        seg = data[pos + 2:pos + length]
        if marker in _JPEG_SOF_NATIVE or marker in _JPEG_SOF_OTHER:
            if frame is not None:
                raise _Bad("JPEG has more than one frame header")
            frame = _jpeg_frame(seg, marker, state)
        elif marker == 0xC4:
            _jpeg_dht(seg)
        elif marker == 0xDB:
            _jpeg_dqt(seg)
        elif marker == 0xDD and length != 4:
            raise _Bad("JPEG restart interval segment has a bad length")
        elif marker == 0xE1 and bytes(seg[:6]) == b"Exif\x00\x00" and not scans \
                and "orient" not in state:
            state["orient"] = exif_orientation(bytes(seg[6:]))
        elif marker == 0xDA:
            if frame is None:
                raise _Bad("JPEG scan before its frame header")
            _jpeg_sos(seg, frame)
            scans += 1
            if not full:
                return
            found = _NEXT_MARKER.search(raw, pos + length)
            if found is None:
                raise _Bad("JPEG scan data runs to the end of the file (truncated)")
            pos = found.start()
            continue
        elif not (0xE0 <= marker <= 0xEF or marker == 0xFE):
            raise _Bad(f"JPEG marker 0x{marker:02X} is not supported by the native decoder")
        pos += length
    if frame is None or not scans:
        raise _Bad("JPEG has no frame header or no scan")


def _jpeg_frame(seg: memoryview, marker: int, state: dict) -> tuple[int, ...]:
    precision, h, w, count = struct.unpack_from(">BHHB", seg, 0)
    state.update(w=w, h=h)
    if len(seg) != 6 + 3 * count or count not in (1, 3):
        raise _Bad(f"JPEG frame header has {count} components or a bad length")
    if marker not in _JPEG_SOF_NATIVE or precision != 8:
        raise _Bad(f"JPEG coding 0x{marker:02X} with {precision}-bit samples is not native")
    if not (w and h):
        raise _Bad(f"JPEG size {w}x{h} is invalid")
    ids = []
    for i in range(count):
        cid, sampling, table = seg[6 + 3 * i], seg[7 + 3 * i], seg[8 + 3 * i]
        if not (1 <= sampling >> 4 <= 4 and 1 <= sampling & 15 <= 4) or table > 3:
            raise _Bad("JPEG frame header has invalid sampling factors or tables")
        ids.append(cid)
    return tuple(ids)


def _jpeg_dht(seg: memoryview) -> None:
    pos = 0
    while pos < len(seg):
        if seg[pos] >> 4 > 1 or seg[pos] & 15 > 3:
            raise _Bad("JPEG Huffman table has an invalid class or id")
        count = sum(seg[pos + 1:pos + 17])
        if len(seg[pos + 1:pos + 17]) != 16 or count > 256:
            raise _Bad("JPEG Huffman table is invalid")
        pos += 17 + count
    if pos != len(seg):
        raise _Bad("JPEG Huffman table segment has a bad length")


def _jpeg_dqt(seg: memoryview) -> None:
    pos = 0
    while pos < len(seg):
        if seg[pos] >> 4 > 1 or seg[pos] & 15 > 3:
            raise _Bad("JPEG quantisation table has an invalid precision or id")
        pos += 1 + 64 * (1 + (seg[pos] >> 4))
    if pos != len(seg):
        raise _Bad("JPEG quantisation table segment has a bad length")


def _jpeg_sos(seg: memoryview, frame: tuple[int, ...]) -> None:
    count = seg[0]
    if not 1 <= count <= len(frame) or len(seg) != 4 + 2 * count:
        raise _Bad("JPEG scan header is invalid")
    for i in range(count):
        if seg[1 + 2 * i] not in frame or seg[2 + 2 * i] >> 4 > 3 or seg[2 + 2 * i] & 15 > 3:
            raise _Bad("JPEG scan header names an unknown component or table")


# -- WebP -----------------------------------------------------------------------------------


def _probe_webp(data: memoryview, state: dict, full: bool) -> None:
    size = len(data)
    riff = struct.unpack_from("<I", data, 4)[0]
    if riff + 8 > size or riff < 12:
        raise _Bad("WebP RIFF size does not match the file (truncated)")
    pos, end, image, extended = 12, riff + 8, False, False
    while pos + 8 <= end:
        fourcc, length = struct.unpack_from("<4sI", data, pos)
        body = data[pos + 8:pos + 8 + length]
        if pos + 8 + length > end:
            raise _Bad(f"WebP chunk {fourcc!r} runs past the end of the file (truncated)")
        if fourcc == b"VP8X" and pos == 12:
            if length < 10:
                raise _Bad("WebP VP8X chunk is too short")
            extended = True
            if body[0] & 0x02:
                raise _Bad("animated WebP is not decoded natively")
            w = 1 + int.from_bytes(bytes(body[4:7]), "little")
            h = 1 + int.from_bytes(bytes(body[7:10]), "little")
            state.update(w=w, h=h)
        elif fourcc == b"VP8 " and not image:
            if length < 10 or bytes(body[3:6]) != b"\x9d\x01\x2a":
                raise _Bad("WebP VP8 frame header is invalid")
            w, h = (struct.unpack_from("<H", body, k)[0] & 0x3FFF for k in (6, 8))
            image = _webp_size(state, w, h, extended)
        elif fourcc == b"VP8L" and not image:
            if length < 5 or body[0] != 0x2F:
                raise _Bad("WebP VP8L header is invalid")
            bits = int.from_bytes(bytes(body[1:5]), "little")
            image = _webp_size(state, (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, extended)
        elif fourcc == b"EXIF" and length:
            body_bytes = bytes(body)
            if body_bytes.startswith(b"Exif\x00\x00"):
                body_bytes = body_bytes[6:]
            state["orient"] = exif_orientation(body_bytes)
        elif fourcc in (b"ANIM", b"ANMF"):
            raise _Bad("animated WebP is not decoded natively")
        pos += 8 + length + (length & 1)
    if not image:
        raise _Bad("WebP has no image chunk")


def _webp_size(state: dict, w: int, h: int, extended: bool) -> bool:
    if extended and (state.get("w"), state.get("h")) != (w, h):
        raise _Bad("WebP canvas size differs from its image size")
    if not (w and h):
        raise _Bad(f"WebP size {w}x{h} is invalid")
    state.update(w=w, h=h)
    return True


# -- EXIF -----------------------------------------------------------------------------------


def exif_orientation(tiff: bytes) -> int:
    """The Orientation tag (0x0112) of a TIFF-structured EXIF block; 1 when absent or bad."""
    try:
        return _orientation(tiff[6:] if tiff.startswith(b"Exif\x00\x00") else tiff)
    except (struct.error, IndexError):
        return 1


def _orientation(tiff: bytes) -> int:
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    offset = struct.unpack_from(order + "I", tiff, 4)[0]
    if offset + 2 > len(tiff):
        return 1
    count = struct.unpack_from(order + "H", tiff, offset)[0]
    for i in range(count):
        entry = offset + 2 + 12 * i
        if entry + 12 > len(tiff):
            return 1
        tag, kind = struct.unpack_from(order + "HH", tiff, entry)
        if tag == 0x0112:
            value = struct.unpack_from(order + "H", tiff, entry + 8)[0] if kind == 3 else 1
            return value if 1 <= value <= 8 else 1
    return 1
