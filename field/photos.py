"""Photo checks: what a phone uploads is judged by its bytes, never by the name or Content-Type it claims.

Only JPEG, PNG and WebP are kept, and only when their structure reads (a JPEG's frame header, a PNG's IHDR and
IEND, a WebP's RIFF size and VP8 header) with sane dimensions; anything else (HTML or SVG named .jpg, a truncated
file, a polyglot's tail) is refused. Nothing is decoded here, so a decompression bomb costs nothing.

What is kept is the picture alone: a phone writes where and when it was taken (EXIF GPS, XMP, comments, PNG text
chunks) beside it, and a resident's photo would tell every worker who opens it where the resident lives. Those
blocks are dropped (a JPEG keeps only its orientation, so it is still shown upright), and so is anything after the
image's end (a polyglot's tail, a phone's appended depth map with its own EXIF)."""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass

MAX_BYTES = 5 * 1024 * 1024  # a phone photo at the browser's default quality is 1-4 MB
MAX_SIDE = 12_000
# Nothing is decoded here, but every photo is decoded on a worker's phone to be shown (4 bytes a pixel): a PNG of
# one colour packs 12,000 × 12,000 pixels into a few hundred kB. A phone's full-resolution 48 MP photo still fits.
MAX_PIXELS = 50_000_000
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class PhotoError(ValueError):
    """The upload is not a photo we keep (the message says why)."""


@dataclass(frozen=True, slots=True)
class Photo:
    content_type: str
    width: int
    height: int
    size: int
    sha256: str
    data: bytes  # what is stored and served: the picture without its metadata


# JPEG segments kept: JFIF / JFXX (APP0), the ICC colour profile (APP2), Adobe's colour transform (APP14), and
# every non-APP segment the decoder needs. EXIF (APP1) is rewritten to its orientation alone.
_JPEG_KEEP_APP = {0xE0, 0xEE}
_PNG_KEEP = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"pHYs"}
_PNG_KEEP |= {b"bKGD", b"acTL", b"fcTL", b"fdAT"}
_WEBP_DROP = {b"EXIF", b"XMP "}
_ORIENTATION = 0x0112


def _orientation(app1: bytes) -> int | None:
    """The Orientation tag of an EXIF block's first IFD, if it reads."""
    tiff = app1[6:]
    if not app1.startswith(b"Exif\x00\x00") or len(tiff) < 8 or tiff[:2] not in (b"MM", b"II"):
        return None
    order = ">" if tiff[:2] == b"MM" else "<"
    (offset,) = struct.unpack(order + "I", tiff[4:8])
    if offset + 2 > len(tiff):
        return None
    (count,) = struct.unpack(order + "H", tiff[offset : offset + 2])
    for n in range(min(count, 256)):
        entry = tiff[offset + 2 + 12 * n : offset + 14 + 12 * n]
        if len(entry) < 12:
            return None
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag == _ORIENTATION and kind == 3:
            value = int(struct.unpack(order + "H", entry[8:10])[0])
            return value if 1 <= value <= 8 else None
    return None


def _orientation_app1(value: int) -> bytes:
    """An APP1 segment holding an EXIF block with the orientation and nothing else."""
    ifd = struct.pack(">HHHIHH", 1, _ORIENTATION, 3, 1, value, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00MM\x00\x2a" + struct.pack(">I", 8) + ifd
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


# In entropy-coded data a 0xFF byte is followed by 0x00 (stuffing), a restart marker or more 0xFF fill; anything else
# is a marker (EOI, or a segment between the scans of a progressive JPEG). Searched in C: no Python loop per byte.
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg_end(data: bytes, pos: int) -> int:
    """Where the image ends (just after EOI), reading entropy-coded data and the segments between scans."""
    while (found := _MARKER.search(data, pos)) is not None:
        pos = found.start()
        if data[pos + 1] == 0xD9:
            return pos + 2
        if pos + 4 > len(data):
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length
    raise PhotoError("a truncated JPEG (no end-of-image marker)")


def _strip_jpeg(data: bytes) -> bytes:
    out, pos, orientation = [b"\xff\xd8"], 2, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise PhotoError("a JPEG whose segments do not read (damaged or not a JPEG)")
        marker = data[pos + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:
            pos += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segment = data[pos : pos + 2 + length]
        if marker == 0xDA:
            out.append(data[pos : _jpeg_end(data, pos + 2 + length)])
            break
        # APPn and comments are free-form blocks: dropped, but for JFIF, Adobe's and an ICC colour profile
        free_form = 0xE0 <= marker <= 0xEF or marker == 0xFE
        icc = marker == 0xE2 and segment[4:16] == b"ICC_PROFILE\x00"
        if marker == 0xE1 and orientation is None:
            orientation = _orientation(segment[4:])
        elif not free_form or marker in _JPEG_KEEP_APP or icc:
            out.append(segment)
        pos += 2 + length
    else:
        raise PhotoError("a JPEG without image data (no scan)")
    if orientation is not None:  # after JFIF's APP0, which must come first when present
        out.insert(2 if out[1][1] == 0xE0 else 1, _orientation_app1(orientation))
    return b"".join(out)


def _strip_png(data: bytes) -> bytes:
    out, pos = [data[:8]], 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind in _PNG_KEEP:
            out.append(data[pos : pos + 12 + length])
        pos += 12 + length
        if kind == b"IEND":
            break
    return b"".join(out)


def _strip_webp(data: bytes) -> bytes:
    out, pos = [], 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        (length,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        chunk = data[pos : pos + 8 + length + (length & 1)]
        if kind == b"VP8X":  # the flags no longer promise EXIF (bit 3) or XMP (bit 2)
            chunk = chunk[:8] + bytes([chunk[8] & ~0x0C]) + chunk[9:]
        if kind not in _WEBP_DROP:
            out.append(chunk)
        pos += 8 + length + (length & 1)
    body = b"".join(out)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def _jpeg(data: bytes) -> tuple[int, int]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise PhotoError("a JPEG whose segments do not read (damaged or not a JPEG)")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            raise PhotoError("a JPEG segment with a bad length")
        if marker in _SOF:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            if b"\xff\xd9" not in data[-4096:]:
                raise PhotoError("a truncated JPEG (no end-of-image marker)")
            return width, height
        if marker == 0xDA:  # scan data before any frame header
            break
        pos += 2 + length
    raise PhotoError("a JPEG without a frame header (damaged or not a JPEG)")


def _png(data: bytes) -> tuple[int, int]:
    if len(data) < 45 or data[12:16] != b"IHDR" or struct.unpack(">I", data[8:12])[0] != 13:
        raise PhotoError("a PNG without its IHDR header")
    if data[-8:-4] != b"IEND":
        raise PhotoError("a truncated PNG (no IEND at the end)")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _webp(data: bytes) -> tuple[int, int]:
    if len(data) < 30 or struct.unpack("<I", data[4:8])[0] + 8 != len(data):
        raise PhotoError("a WebP whose RIFF size does not match the file")
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
    elif chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = (v & 0x3FFF for v in struct.unpack("<HH", data[26:30]))
    else:
        raise PhotoError("a WebP without a VP8 image")
    return width, height


def inspect_photo(data: bytes) -> Photo:
    """Sniff and check an uploaded photo; PhotoError says what is wrong with it."""
    if not data:
        raise PhotoError("the photo is empty")
    if len(data) > MAX_BYTES:
        raise PhotoError(f"the photo is {len(data)} bytes; at most {MAX_BYTES} (5 MiB) are kept")
    if data.startswith(b"\xff\xd8\xff"):
        kind, (width, height) = "image/jpeg", _jpeg(data)
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        kind, (width, height) = "image/png", _png(data)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind, (width, height) = "image/webp", _webp(data)
    else:
        raise PhotoError("not a JPEG, PNG or WebP photo (judged by its content, not its name or declared type)")
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise PhotoError(f"a photo of {width}×{height} pixels; each side must be 1..{MAX_SIDE}")
    if width * height > MAX_PIXELS:
        raise PhotoError(f"a photo of {width}×{height} pixels; at most {MAX_PIXELS // 1_000_000} million pixels")
    strip = {"image/jpeg": _strip_jpeg, "image/png": _strip_png, "image/webp": _strip_webp}[kind]
    kept = strip(data)
    return Photo(kind, width, height, len(kept), hashlib.sha256(kept).hexdigest(), kept)
