"""JPEG metadata edited in place: the APP segments are rewritten, the coded image is not touched.

Pillow can only change a JPEG's metadata by decoding and re-encoding it, which costs a 4K
decode + encode and a generation of quality loss. When Google already encoded the JPEG we
publish (Vertex ``imageOutputOptions``), the metadata policy of ``bananaflow.imaging`` is applied
here instead, on the byte stream: every segment up to the first SOS is either copied as is or
dropped, our XMP packet is inserted, and everything from SOS on (the entropy-coded data) is
copied byte for byte, so the decoded pixels are identical.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

SOI = b"\xff\xd8"
_SOS = 0xDA
_EOI = 0xD9
_APP0, _APP1, _APP2, _APP14, _COM = 0xE0, 0xE1, 0xE2, 0xEE, 0xFE
# Markers without a length field (TEM, RSTn, SOI, EOI).
_STANDALONE = {0x01, *range(0xD0, 0xD8), 0xD8, _EOI}
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_ICC_HEADER = b"ICC_PROFILE\x00"
_ADOBE_HEADER = b"Adobe"
_MAX_PAYLOAD = 0xFFFF - 2


@dataclass(frozen=True)
class Segment:
    """One marker segment before the scan: ``marker`` (the byte after 0xFF) and its payload."""

    marker: int
    payload: bytes

    def encode(self) -> bytes:
        return (
            bytes((0xFF, self.marker)) + (len(self.payload) + 2).to_bytes(2, "big") + self.payload
        )

    @property
    def is_xmp(self) -> bool:
        return self.marker == _APP1 and self.payload.startswith(XMP_HEADER)

    @property
    def kept_when_stripping(self) -> bool:
        """What describes how to show the pixels stays (JFIF, ICC colour, Adobe colour
        transform, and every non-APP marker: tables, frame); what describes the picture's
        origin or its camera goes (EXIF, XMP, IPTC/Photoshop, comments, other APPn)."""
        if self.marker == _APP0:
            return True
        if self.marker == _APP2:
            return self.payload.startswith(_ICC_HEADER)
        if self.marker == _APP14:
            return self.payload.startswith(_ADOBE_HEADER)
        return not (0xE0 <= self.marker <= 0xEF or self.marker == _COM)


def split(data: bytes) -> tuple[list[Segment], bytes]:
    """The segments before the first SOS, and the rest (SOS onwards) verbatim.

    Raises ``ValueError`` for anything that is not a well-formed JPEG header.
    """
    if not data.startswith(SOI):
        raise ValueError("not a JPEG (no SOI marker)")
    segments: list[Segment] = []
    i = 2
    while True:
        if i >= len(data) or data[i] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {i}")
        while i + 1 < len(data) and data[i + 1] == 0xFF:  # fill bytes before a marker
            i += 1
        if i + 1 >= len(data):
            raise ValueError("JPEG header ends before the image data")
        marker = data[i + 1]
        if marker == _SOS:
            return segments, data[i:]
        if marker in _STANDALONE:
            raise ValueError(f"unexpected marker 0xFF{marker:02X} before the image data")
        if i + 4 > len(data):
            raise ValueError("JPEG segment length cut off")
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2 or i + 2 + length > len(data):
            raise ValueError(f"JPEG segment 0xFF{marker:02X} at byte {i} has a bad length")
        segments.append(Segment(marker, data[i + 4 : i + 2 + length]))
        i += 2 + length


def xmp_packet(data: bytes) -> bytes | None:
    """The standard XMP packet of a JPEG (APP1), or None."""
    segments, _ = split(data)
    return next((s.payload[len(XMP_HEADER) :] for s in segments if s.is_xmp), None)


def edit(
    data: bytes,
    *,
    strip: bool,
    xmp: Callable[[bytes | None], bytes | None],
) -> bytes:
    """The JPEG with its metadata segments rewritten and its image data untouched.

    ``strip`` drops every segment that is not needed to show the pixels (see
    ``Segment.kept_when_stripping``). ``xmp`` receives the source's XMP packet (None when it
    has none or it is stripped) and returns the packet to write, or None for no XMP; the packet
    is written as one APP1 after JFIF (and EXIF), replacing the source's.
    """
    segments, rest = split(data)
    source = next((s.payload[len(XMP_HEADER) :] for s in segments if s.is_xmp), None)
    kept = [s for s in segments if not s.is_xmp and (not strip or s.kept_when_stripping)]
    packet = xmp(None if strip else source)
    if packet is not None:
        payload = XMP_HEADER + packet
        if len(payload) > _MAX_PAYLOAD:
            raise ValueError(f"XMP packet of {len(packet)} bytes does not fit one APP1 segment")
        # After JFIF (which must come first) and EXIF where kept, as writers conventionally do.
        at = 0
        while at < len(kept) and kept[at].marker in (_APP0, _APP1):
            at += 1
        kept.insert(at, Segment(_APP1, payload))
    return SOI + b"".join(s.encode() for s in kept) + rest
