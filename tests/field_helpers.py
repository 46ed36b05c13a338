"""Small real images for the field tests, built byte by byte (no imaging library needed)."""

from __future__ import annotations

import struct
import zlib


def png(width: int = 2, height: int = 2) -> bytes:
    """A valid RGB PNG of this size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\x80\x20\x20" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def jpeg(width: int = 4, height: int = 3) -> bytes:
    """A JPEG's structure as a phone writes it: SOI, APP0 (JFIF), a baseline frame header, a scan, EOI."""
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"
    sos = b"\x01\x01\x00\x00\x3f\x00"
    return (
        b"\xff\xd8"
        + b"\xff\xe0"
        + struct.pack(">H", len(app0) + 2)
        + app0
        + b"\xff\xc0"
        + struct.pack(">H", len(sof) + 2)
        + sof
        + b"\xff\xda"
        + struct.pack(">H", len(sos) + 2)
        + sos
        + b"\x12\x34\x56\x78" * 16
        + b"\xff\xd9"
    )


# What a phone writes beside the picture: an EXIF block with the camera, the time, the orientation and the GPS
# position of where it was taken (a resident's home), as a big-endian TIFF structure.
SECRET_PLACE = b"GPS 30.6586N 104.0648E home of resident"


def exif(orientation: int = 6) -> bytes:
    """An APP1 Exif payload: IFD0 with Orientation and a GPS IFD pointer, and the GPS block's text."""
    entries = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">HHII", 0x8825, 4, 1, 38)
    ifd0 = struct.pack(">H", 2) + entries + struct.pack(">I", 0)
    return b"Exif\x00\x00" + b"MM\x00\x2a" + struct.pack(">I", 8) + ifd0 + SECRET_PLACE


def jpeg_with_exif(width: int = 4, height: int = 3, orientation: int = 6) -> bytes:
    """A phone's JPEG: APP1 Exif (with GPS) and an XMP block and a comment before the frame, a tail after EOI."""
    plain = jpeg(width, height)
    app1 = exif(orientation)
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta>" + SECRET_PLACE + b"</x:xmpmeta>"
    extra = (
        b"\xff\xe1"
        + struct.pack(">H", len(app1) + 2)
        + app1
        + b"\xff\xe1"
        + struct.pack(">H", len(xmp) + 2)
        + xmp
        + b"\xff\xfe"
        + struct.pack(">H", len(SECRET_PLACE) + 2)
        + SECRET_PLACE
    )
    app0_end = 2 + 2 + 16
    return plain[:app0_end] + extra + plain[app0_end:] + SECRET_PLACE


def png_with_text(width: int = 2, height: int = 2) -> bytes:
    """A PNG with tEXt and eXIf chunks carrying the place it was taken."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    plain = png(width, height)
    meta = chunk(b"tEXt", b"Location\x00" + SECRET_PLACE) + chunk(b"eXIf", exif()[6:])
    return plain[:33] + meta + plain[33:]


def webp_with_exif(width: int = 2, height: int = 2) -> bytes:
    """An extended WebP (VP8X with the EXIF and XMP flags) whose EXIF and XMP chunks carry the place."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return kind + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")

    vp8x = bytes([0x08 | 0x04, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    bits = (width - 1) | ((height - 1) << 14)
    vp8l = b"\x2f" + bits.to_bytes(4, "little") + b"\x00" * 5
    body = chunk(b"VP8X", vp8x) + chunk(b"VP8L", vp8l) + chunk(b"EXIF", exif()[6:]) + chunk(b"XMP ", SECRET_PLACE)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body
