"""Photo checks: what a phone uploads is judged by its bytes, never by the name or Content-Type it claims.

Only JPEG, PNG and WebP are kept, and only when their structure reads (a JPEG's frame header, a PNG's IHDR and
IEND, a WebP's RIFF size and VP8 header) with sane dimensions; anything else (HTML or SVG named .jpg, a truncated
file, a polyglot's tail) is refused. Nothing is decoded here, so a decompression bomb costs nothing."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

MAX_BYTES = 5 * 1024 * 1024  # a phone photo at the browser's default quality is 1-4 MB
MAX_SIDE = 12_000
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
    return Photo(kind, width, height, len(data), hashlib.sha256(data).hexdigest())
