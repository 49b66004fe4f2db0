"""The image sniffer: type, size and completeness from headers and trailers, never from pixels.

Every image here is written by Pillow (or assembled box by box for HEIF, which Pillow cannot
write), so the expected sizes come from an independent encoder.
"""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from bananaflow import imagetype

FORMATS = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
    "AVIF": ("image/avif", "avif"),
}


def encode(fmt: str, size: tuple[int, int] = (123, 45), mode: str = "RGB", **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, "red").save(buf, fmt, **kw)
    return buf.getvalue()


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def heic(width: int, height: int) -> bytes:
    """The boxes a reader needs: ``ftyp``, ``meta`` holding ``ispe``, then ``mdat``."""
    ispe = box(b"ispe", b"\0\0\0\0" + struct.pack(">II", width, height))
    return box(b"ftyp", b"heic\0\0\0\0mif1heic") + box(b"meta", ispe) + box(b"mdat", b"\x01" * 64)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_identify_reads_type_extension_and_size_from_the_header(fmt: str) -> None:
    info = imagetype.identify(encode(fmt))
    assert (info.mime_type, info.ext) == FORMATS[fmt]
    assert (info.width, info.height) == (123, 45)


@pytest.mark.parametrize(
    ("kw", "mode"),
    [({"lossless": True}, "RGB"), ({"exif": b"Exif\0\0" + b"\0" * 8}, "RGB"), ({}, "RGBA")],
    ids=["VP8L", "VP8X", "VP8-alpha"],
)
def test_every_webp_flavour_gives_its_size(kw: dict[str, object], mode: str) -> None:
    data = encode("WEBP", (321, 77), mode, **kw)
    assert imagetype.image_size(data) == (321, 77)
    assert imagetype.is_complete(data)


def test_progressive_jpeg_with_metadata_segments_before_the_frame() -> None:
    data = encode("JPEG", (640, 360), progressive=True, exif=b"Exif\0\0" + b"\0" * 200)
    assert imagetype.image_size(data) == (640, 360)


def test_heif_size_comes_from_the_ispe_box() -> None:
    data = heic(4096, 2304)
    assert imagetype.sniff_mime(data) == "image/heic"
    assert imagetype.identify(data) == imagetype.ImageType("image/heic", "heic", 4096, 2304)


@pytest.mark.parametrize("fmt", [*FORMATS, "HEIC"])
def test_a_file_cut_short_is_incomplete(fmt: str) -> None:
    data = heic(64, 64) if fmt == "HEIC" else encode(fmt, (300, 200))
    assert imagetype.is_complete(data)
    half = data[: len(data) // 2]
    assert imagetype.sniff_mime(half) == imagetype.sniff_mime(data)  # the header still reads
    assert not imagetype.is_complete(half)
    with pytest.raises(ValueError):
        imagetype.identify(half)


def test_jpeg_zero_padding_after_the_end_marker_is_fine() -> None:
    assert imagetype.is_complete(encode("JPEG") + b"\0" * 16)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 5, b"\xff\xd8\xff\xda\0\0"],
)
def test_garbage_is_one_value_error(garbage: bytes) -> None:
    with pytest.raises(ValueError):
        imagetype.identify(garbage)
