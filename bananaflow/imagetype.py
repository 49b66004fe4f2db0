"""The one image sniffer: type, size and completeness read from a few header and trailer bytes.

Answers from Google arrive at several images a second and a 4K master is tens of megabytes, so
nothing here decodes pixels or even opens Pillow: the type comes from the magic bytes (the
declared ``mimeType`` is sometimes wrong), width and height from the header (PNG ``IHDR``, JPEG
``SOFn``, WebP ``VP8``/``VP8L``/``VP8X``, GIF screen descriptor, HEIF/AVIF ``ispe``), and
completeness from where the format says the file ends (PNG ``IEND``, JPEG ``EOI``, the WebP RIFF
length, the GIF trailer, the ISO-BMFF box sizes). A truncated upload or a proxy that dropped the
tail of a body leaves a file whose header still reads fine; only the end tells.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "EXTENSIONS",
    "ImageType",
    "identify",
    "image_size",
    "is_complete",
    "sniff_mime",
]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"

# ISO-BMFF major brands (``ftyp``) of the still-image formats we accept.
_BMFF_BRANDS: dict[bytes, str] = {
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"hevc": "image/heic",
    b"hevx": "image/heic",
    b"heim": "image/heic",
    b"heis": "image/heic",
    b"mif1": "image/heif",
    b"msf1": "image/heif",
    b"avif": "image/avif",
    b"avis": "image/avif",
}
_BMFF_TYPES = frozenset(_BMFF_BRANDS.values())

EXTENSIONS: dict[str, str] = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/heic": "heic",
    "image/heif": "heif",
    "image/avif": "avif",
}

# JPEG markers that start a frame and so carry the image size: SOF0-15 minus DHT, JPG, DAC.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers with no length field after them.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
_JPEG_SOS = 0xDA


@dataclass(frozen=True)
class ImageType:
    """What the bytes are; field names match ``imaging.ImageInfo`` so either can stand in."""

    mime_type: str
    ext: str
    width: int
    height: int


def sniff_mime(data: bytes) -> str | None:
    """The real image type from magic bytes; None when the bytes are not a known image."""
    if data.startswith(_PNG_MAGIC):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return _BMFF_BRANDS.get(data[8:12])
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the marker segments up to the first frame header; stop at scan data."""
    i, end = 2, len(data)
    while i + 4 <= end:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        if marker == _JPEG_SOS:
            return None
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _JPEG_SOF:
            if i + 9 > end:
                return None
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if length < 2:
            return None
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


def _gif_size(data: bytes) -> tuple[int, int] | None:
    return struct.unpack("<HH", data[6:10]) if len(data) >= 10 else None


def _bmff_size(data: bytes) -> tuple[int, int] | None:
    """Pillow cannot read HEIF without a plugin; the ``ispe`` box holds width and height."""
    idx = data.find(b"ispe")
    if idx < 0 or len(data) < idx + 16:
        return None
    return struct.unpack(">II", data[idx + 8 : idx + 16])


_SIZE_READERS = {
    "image/png": _png_size,
    "image/jpeg": _jpeg_size,
    "image/webp": _webp_size,
    "image/gif": _gif_size,
}


def image_size(data: bytes, mime_type: str | None = None) -> tuple[int, int] | None:
    """Width and height from the header alone; None when the header is unreadable or zero."""
    mime_type = mime_type or sniff_mime(data)
    if mime_type is None:
        return None
    reader = _bmff_size if mime_type in _BMFF_TYPES else _SIZE_READERS.get(mime_type)
    size = reader(data) if reader else None
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return size


def _bmff_complete(data: bytes) -> bool:
    """Top-level boxes must tile the file exactly; a cut file ends inside its last box."""
    i, end = 0, len(data)
    while i < end:
        if i + 8 > end:
            return False
        (size,) = struct.unpack(">I", data[i : i + 4])
        if size == 0:  # the box runs to the end of the file
            return True
        if size == 1:
            if i + 16 > end:
                return False
            (size,) = struct.unpack(">Q", data[i + 8 : i + 16])
        if size < 8:
            return False
        i += size
    return i == end


def is_complete(data: bytes, mime_type: str | None = None) -> bool:
    """Whether the file ends where its format says it ends (cheap: trailer bytes only).

    JPEG may carry zero padding after ``EOI`` (some encoders pad to a block size), so zeros are
    ignored there; WebP must match its RIFF length exactly, because RIFF already counts padding.
    """
    mime_type = mime_type or sniff_mime(data)
    if mime_type == "image/png":
        return data.endswith(_PNG_IEND)
    if mime_type == "image/jpeg":
        return data.rstrip(b"\x00").endswith(b"\xff\xd9")
    if mime_type == "image/webp":
        return len(data) >= 8 and struct.unpack("<I", data[4:8])[0] + 8 == len(data)
    if mime_type == "image/gif":
        return data.endswith(b"\x3b")
    if mime_type in _BMFF_TYPES:
        return _bmff_complete(data)
    return False


def identify(data: bytes) -> ImageType:
    """Type, extension and size of a whole image file, for code that stores or names it.

    Raises ``ValueError`` (one type for every kind of garbage, like ``imaging.sniff``) when the
    bytes are not a known image, the header is unreadable, or the file is cut short.
    """
    mime_type = sniff_mime(data)
    if mime_type is None:
        raise ValueError(f"not a known image type ({len(data)} bytes)")
    size = image_size(data, mime_type)
    if size is None:
        raise ValueError(f"cannot read the {mime_type} header ({len(data)} bytes)")
    if not is_complete(data, mime_type):
        raise ValueError(f"the {mime_type} image is cut short ({len(data)} bytes)")
    return ImageType(mime_type, EXTENSIONS[mime_type], size[0], size[1])
