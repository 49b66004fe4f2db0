"""Decode, resize and encode images with Pillow: the web derivative, thumbnails, local upscale.

The master is decoded exactly once per derivative; every trial encode of a byte-budget search
reuses the same pixels, because for a 4K PNG master the decode costs as much as a fast encode.
A budget search probes with the codec's *fast* settings (JPEG without Huffman optimisation,
WebP method 0, AVIF speed 10) and then runs ONE encode with the good settings at the quality it
found; the good settings are nearly always smaller, so that single expensive encode fits.

Metadata policy (why): a derivative goes to the public web, so it never inherits the source's
EXIF (camera, GPS, serials) unless ``strip_metadata`` is off; it always keeps the ICC profile
(dropping it changes colours, it says nothing about anyone) and, with ``digital_source_type``,
states in XMP that it was made by a trained algorithm (IPTC ``trainedAlgorithmicMedia``), which
is what search engines and platforms read to label AI images.
"""

from __future__ import annotations

import io
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageDraw, ImageFont, ImageOps, PngImagePlugin
from pydantic import BaseModel, Field

from bananaflow import jpegmeta
from bananaflow.config import CompressSettings
from bananaflow.errors import InputError
from bananaflow.imagetype import identify

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
IPTC_EXT_NS = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"

# Our format names -> Pillow's, the MIME type and the file extension we name objects with.
_PIL_FORMAT = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF", "png": "PNG"}


# Probe settings are picked for speed (about 1/2..1/6 of the good encode at 4K); the final encode
# uses the codecs' defaults (WebP method 4, AVIF speed 6) plus JPEG Huffman optimisation, which
# is lossless, 5-10 % smaller, and costs far less than progressive mode.
_FAST: dict[str, dict[str, object]] = {
    "jpeg": {"optimize": False},
    "webp": {"method": 0},
    "avif": {"speed": 10},
    "png": {},
}
_GOOD: dict[str, dict[str, object]] = {
    "jpeg": {"optimize": True},
    "webp": {"method": 4},
    "avif": {"speed": 6},
    "png": {},
}
# JPEG APP1 holds at most 65533 bytes; a bigger source XMP packet cannot be carried there.
_JPEG_XMP_MAX = 65533 - 29
_ORIENTATION_TAG = 0x0112


class Encoded(BaseModel):
    """One encoded image plus the facts read back from it (dims, format, quality used).

    ``method`` says how: ``encode`` (decoded and encoded here) or ``passthrough`` (the master's
    own coded image, only its metadata segments rewritten).
    """

    data: bytes = Field(repr=False)
    mime_type: str
    ext: str
    width: int
    height: int
    quality: int | None = None
    method: Literal["encode", "passthrough"] = "encode"


# --------------------------------------------------------------------------- metadata


def digital_source_xmp() -> bytes:
    """A minimal XMP packet stating IPTC DigitalSourceType = trainedAlgorithmicMedia."""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        f' <rdf:RDF xmlns:rdf="{RDF_NS}">\n'
        f'  <rdf:Description rdf:about="" xmlns:Iptc4xmpExt="{IPTC_EXT_NS}">\n'
        f"   <Iptc4xmpExt:DigitalSourceType>{TRAINED_ALGORITHMIC_MEDIA}"
        "</Iptc4xmpExt:DigitalSourceType>\n"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode()


def _xmp_source_type(xmp: bytes | str) -> str | None:
    """DigitalSourceType from an XMP packet, as an attribute, element text or rdf:resource."""
    text = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else xmp
    text = text.lstrip("\ufeff\x00 \r\n\t")
    key = f"{{{IPTC_EXT_NS}}}DigitalSourceType"
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        # Truncated or oddly wrapped packets still carry the value in plain text.
        m = re.search(r"DigitalSourceType(?:>|=\")\s*([^<\"\s]+)", text)
        return m.group(1) if m else None
    for el in root.iter():
        if key in el.attrib:
            return el.attrib[key].strip()
        if el.tag == key:
            value = (el.text or "").strip() or el.attrib.get(f"{{{RDF_NS}}}resource", "")
            return value.strip() or None
    return None


def _merge_source_type(source_xmp: bytes) -> bytes:
    """Keep the provider's XMP and add our statement, unless it already states a source type."""
    if _xmp_source_type(source_xmp):
        return source_xmp
    text = source_xmp.decode("utf-8", "replace")
    close = text.rfind("</rdf:RDF>")
    if close < 0:
        return digital_source_xmp()
    extra = (
        f'<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="{IPTC_EXT_NS}">'
        f"<Iptc4xmpExt:DigitalSourceType>{TRAINED_ALGORITHMIC_MEDIA}"
        "</Iptc4xmpExt:DigitalSourceType></rdf:Description>"
    )
    return (text[:close] + extra + text[close:]).encode()


def read_digital_source_type(data: bytes) -> str | None:
    """The IPTC DigitalSourceType an encoded image declares in its XMP, or None."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    except Exception as e:
        raise ValueError(f"not a readable image: {e}") from None
    return _xmp_source_type(xmp) if xmp else None


@dataclass(frozen=True)
class _Meta:
    """What metadata an output carries; decided once, applied to every trial encode."""

    icc: bytes | None
    xmp: bytes | None
    exif: bytes | None

    def save_kwargs(self, fmt: str) -> dict[str, object]:
        kw: dict[str, object] = {}
        if self.icc:
            kw["icc_profile"] = self.icc
        if self.exif:
            kw["exif"] = self.exif
        if self.xmp:
            if fmt == "png":
                info = PngImagePlugin.PngInfo()
                info.add_itxt("XML:com.adobe.xmp", self.xmp.decode("utf-8", "replace"))
                kw["pnginfo"] = info
            elif fmt != "jpeg" or len(self.xmp) <= _JPEG_XMP_MAX:
                kw["xmp"] = self.xmp
        return kw


def _source_xmp(im: Image.Image) -> bytes | None:
    xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    if isinstance(xmp, str):
        return xmp.encode()
    return xmp or None


def _plan_metadata(im: Image.Image, settings: CompressSettings, exif: Image.Exif) -> _Meta:
    """Decide the output metadata from the source and the policy (see the module docstring)."""
    icc = im.info.get("icc_profile") or None
    source_xmp = None if settings.strip_metadata else _source_xmp(im)
    if settings.digital_source_type:
        xmp = _merge_source_type(source_xmp) if source_xmp else digital_source_xmp()
    else:
        xmp = source_xmp
    kept_exif = None
    if not settings.strip_metadata and len(exif):
        exif.pop(_ORIENTATION_TAG, None)  # pixels are already upright
        kept_exif = exif.tobytes() if len(exif) else None
    return _Meta(icc=icc, xmp=xmp, exif=kept_exif)


# --------------------------------------------------------------------------- pixels


def _decode(data: bytes) -> tuple[Image.Image, Image.Exif]:
    """Full-quality decode (no draft/shrink-on-load), upright, in a mode every codec takes.

    Palette and exotic modes become RGB(A) here, once, so later resizes and encodes never
    depend on ``info["transparency"]`` (which ``_prepare`` clears).
    """
    return _load(_opened(data), len(data))


def _opened(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except Exception as e:
        raise InputError(
            "image",
            f"cannot decode {len(data)} bytes as an image: {e}",
            fix="check that the master is a complete image file",
        ) from None


def _load(im: Image.Image, n_bytes: int) -> tuple[Image.Image, Image.Exif]:
    """Decode an opened image (at the scale ``draft`` chose, if any) as ``_decode`` does."""
    try:
        im.load()
    except Exception as e:
        raise InputError(
            "image",
            f"cannot decode {n_bytes} bytes as an image: {e}",
            fix="check that the master is a complete image file",
        ) from None
    info = dict(im.info)
    exif = im.getexif()
    if im.mode not in ("RGB", "RGBA", "L", "LA"):
        im = im.convert("RGBA" if im.has_transparency_data else "RGB")
    if exif.get(_ORIENTATION_TAG, 1) != 1:
        im = ImageOps.exif_transpose(im)
    im.info = info
    return im, exif


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA")


def _flatten(im: Image.Image) -> Image.Image:
    """Alpha over white: JPEG has no alpha and the hidden colour under it is often garbage."""
    rgba = im.convert("RGBA")
    bg = Image.new("RGB", im.size, (255, 255, 255))
    bg.paste(rgba, mask=rgba.getchannel("A"))
    return bg


def _prepare(im: Image.Image, fmt: str) -> Image.Image:
    """Convert to a mode the target codec stores natively and forget the source's info dict.

    ``im`` is always our own decoded image, so clearing its ``info`` in place is safe and avoids
    copying tens of MB. Pillow plugins fall back to ``im.info`` for EXIF/ICC/XMP; with it empty,
    only what ``_Meta`` passes explicitly is written.
    """
    if fmt == "jpeg":
        out = _flatten(im) if _has_alpha(im) else im
    elif fmt in ("webp", "avif"):
        want = "RGBA" if _has_alpha(im) else "RGB"
        out = im if im.mode == want else im.convert(want)
    else:
        out = im
    out.info = {}
    return out


# --------------------------------------------------------------------------- encoding


def _save(im: Image.Image, fmt: str, quality: int | None, meta: _Meta, *, fast: bool) -> bytes:
    kw: dict[str, object] = dict((_FAST if fast else _GOOD)[fmt])
    if fmt != "png" and quality is not None:
        kw["quality"] = quality
    kw.update(meta.save_kwargs(fmt))
    buf = io.BytesIO()
    im.save(buf, _PIL_FORMAT[fmt], **kw)
    return buf.getvalue()


def _highest_fitting(size_at: Callable[[int], int], hi: int, target: int) -> int | None:
    """Largest q in [1, hi] whose fast size fits target (size grows with q), else None."""
    if size_at(hi) <= target:
        return hi
    lo, hi, best = 1, hi - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if size_at(mid) <= target:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def _over_budget(fmt: str, size: int, budget: int, quality: int | None) -> InputError:
    if fmt == "png":
        problem = f"png is lossless and the image needs {size} bytes, over the {budget}-byte budget"
        fix = "use jpeg, webp or avif for a byte budget, or raise compress.max_bytes"
    else:
        problem = (
            f"even quality {quality} gives {size} bytes as {fmt}, over the {budget}-byte budget"
        )
        fix = "raise compress.max_bytes, use a more compact format (avif, webp) or a smaller size"
    return InputError("compress.max_bytes", problem, fix=fix)


def _fit_budget(
    im: Image.Image, fmt: str, settings: CompressSettings, meta: _Meta
) -> tuple[bytes, int]:
    """Highest quality <= settings.quality whose good encode fits settings.max_bytes.

    Bisects with fast probes (cached), then encodes once with the good settings. If that one
    misses (rare: e.g. WebP method 4 can be larger than method 0 on pure noise), the budget for
    the probes is shrunk by the observed good/fast ratio and the search repeats below q.
    """
    budget = settings.max_bytes or 0
    sizes: dict[int, int] = {}

    def size_at(q: int) -> int:
        if q not in sizes:
            sizes[q] = len(_save(im, fmt, q, meta, fast=True))
        return sizes[q]

    hi, target, last = settings.quality, budget, None
    while hi >= 1:
        q = _highest_fitting(size_at, hi, target)
        if q is None:
            q = 1  # the fast codec cannot fit; the good one at q=1 is the last chance
        data = _save(im, fmt, q, meta, fast=False)
        if len(data) <= budget:
            return data, q
        last = len(data)
        if q == 1:
            break
        target = min(target - 1, int(budget * size_at(q) / len(data)))
        hi = q - 1
    raise _over_budget(fmt, last or 0, budget, 1)


def _encode(im: Image.Image, settings: CompressSettings, meta: _Meta) -> Encoded:
    fmt = settings.format
    work = _prepare(im, fmt)
    quality: int | None = None if fmt == "png" else settings.quality
    if settings.max_bytes and fmt != "png":
        data, quality = _fit_budget(work, fmt, settings, meta)
    else:
        data = _save(work, fmt, quality, meta, fast=False)
        if settings.max_bytes and len(data) > settings.max_bytes:
            raise _over_budget(fmt, len(data), settings.max_bytes, quality)
    info = identify(data)
    return Encoded(
        data=data,
        mime_type=info.mime_type,
        ext=info.ext,
        width=info.width,
        height=info.height,
        quality=quality,
    )


def _check_side(longest_side: int) -> None:
    if longest_side < 1:
        raise InputError(
            "compress.thumbnails",
            f"longest side must be >= 1 px, got {longest_side}",
            fix="list positive pixel sizes, e.g. [256, 1024]",
        )


def _shrink(im: Image.Image, longest_side: int) -> Image.Image:
    """Fit within longest_side; never enlarges (a thumbnail bigger than its source is waste)."""
    if max(im.size) <= longest_side:
        return im
    scale = longest_side / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def compress(data: bytes, settings: CompressSettings) -> Encoded:
    """The web derivative of a master: one decode, then one (or a budget search of) encode(s)."""
    im, exif = _decode(data)
    return _encode(im, settings, _plan_metadata(im, settings, exif))


def make_thumbnail(data: bytes, longest_side: int, settings: CompressSettings) -> Encoded:
    """A smaller copy in the derivative's format; an image already small enough keeps its size."""
    _check_side(longest_side)
    im, exif = _decode(data)
    meta = _plan_metadata(im, settings, exif)
    return _encode(_shrink(im, longest_side), settings, meta)


def derivatives(data: bytes, settings: CompressSettings) -> tuple[Encoded, list[Encoded]]:
    """``compress`` plus one thumbnail per ``settings.thumbnails`` from a single decode.

    Same results as calling ``compress`` and ``make_thumbnail`` separately, minus N-1 decodes
    of the master (about 0.3 s each for a 4K PNG).
    """
    for side in settings.thumbnails:
        _check_side(side)
    main = passthrough(data, settings)
    if main is not None:
        return main, [_reduced_thumbnail(data, side, settings) for side in settings.thumbnails]
    im, exif = _decode(data)
    meta = _plan_metadata(im, settings, exif)
    main = _encode(im, settings, meta)  # _prepare only clears im.info; pixels stay as decoded
    return main, [_encode(_shrink(im, side), settings, meta) for side in settings.thumbnails]


# --------------------------------------------------------------------------- passthrough

# ITU-T T.81 Annex K luminance table (natural order): what IJG-style encoders scale by quality.
_STD_LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
# A provider's quality need not map exactly onto IJG's scale: this close counts as the target.
_QUALITY_SLACK = 2


def _ijg_table(quality: int) -> list[int]:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [min(255, max(1, (v * scale + 50) // 100)) for v in _STD_LUMINANCE]


def jpeg_quality(luminance: list[int]) -> int:
    """The IJG quality (1-100) whose luminance table is closest to ``luminance``."""
    return min(
        range(1, 101),
        key=lambda q: sum(abs(a - b) for a, b in zip(_ijg_table(q), luminance, strict=True)),
    )


def passthrough(data: bytes, settings: CompressSettings) -> Encoded | None:
    """The master itself as the derivative, when re-encoding it could only lose.

    That is: JPEG is wanted and the master is a baseline/progressive RGB or grey JPEG at (about)
    the target quality or below, upright, within the byte budget. Its metadata then gets the
    same policy as an encode (strip, ICC kept, IPTC digital source type) by rewriting the APP
    segments (``jpegmeta``); the coded image is copied, so the pixels are the master's. None
    when any condition fails: the caller decodes and encodes as usual.
    """
    if settings.format != "jpeg" or not data.startswith(jpegmeta.SOI):
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:  # header only: no pixels decoded
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                return None
            tables = getattr(im, "quantization", None) or {}
            upright = im.getexif().get(_ORIENTATION_TAG, 1) == 1
    except Exception:
        return None
    if 0 not in tables or len(tables[0]) != 64 or not (upright or not settings.strip_metadata):
        return None
    quality = jpeg_quality(list(tables[0]))
    if quality > settings.quality + _QUALITY_SLACK:
        return None

    def xmp(source: bytes | None) -> bytes | None:
        if settings.digital_source_type:
            return _merge_source_type(source) if source else digital_source_xmp()
        return source

    try:
        out = jpegmeta.edit(data, strip=settings.strip_metadata, xmp=xmp)
        info = identify(out)  # also proves the master was complete
    except ValueError:
        return None
    if settings.max_bytes and len(out) > settings.max_bytes:
        return None
    return Encoded(
        data=out,
        mime_type=info.mime_type,
        ext=info.ext,
        width=info.width,
        height=info.height,
        quality=quality,
        method="passthrough",
    )


def _reduced_thumbnail(data: bytes, longest_side: int, settings: CompressSettings) -> Encoded:
    """A thumbnail of a JPEG master decoded at a reduced DCT scale (at least twice the
    thumbnail): a 4K master's thumbnails without its full decode."""
    opened = _opened(data)
    opened.draft("RGB", (2 * longest_side, 2 * longest_side))
    im, exif = _load(opened, len(data))
    meta = _plan_metadata(im, settings, exif)
    return _encode(_shrink(im, longest_side), settings, meta)


# The biggest image a local upscale may produce: Pillow refuses to open anything over twice
# this (decompression-bomb guard), so a bigger master could never be compressed afterwards.
MAX_UPSCALE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def upscale_local(data: bytes, factor: int) -> Encoded:
    """Lanczos x factor, saved as PNG: lossless, because the result becomes the new master."""
    if not isinstance(factor, int) or factor < 2:
        raise InputError(
            "upscale.factor", f"must be an integer >= 2, got {factor!r}", fix="use 2 or 4"
        )
    try:
        head = identify(data)
    except ValueError as e:
        raise InputError("image", str(e), fix="check that the master is a complete image") from None
    size = (head.width * factor, head.height * factor)
    if size[0] * size[1] > MAX_UPSCALE_PIXELS:
        raise InputError(
            "upscale.factor",
            f"x{factor} of {head.width}x{head.height} gives {size[0]}x{size[1]}, "
            f"over the {MAX_UPSCALE_PIXELS} pixel limit",
            fix="use a smaller factor or a smaller image_size",
        )
    im, _exif = _decode(data)
    keep = {k: im.info[k] for k in ("icc_profile", "xmp") if im.info.get(k)}
    size = (im.width * factor, im.height * factor)  # upright dims (EXIF rotation applied)
    big = im.resize(size, Image.Resampling.LANCZOS)
    pnginfo = PngImagePlugin.PngInfo()
    if keep.get("xmp"):
        xmp = keep["xmp"]
        pnginfo.add_itxt(
            "XML:com.adobe.xmp", xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else xmp
        )
    buf = io.BytesIO()
    big.info = {}
    big.save(buf, "PNG", pnginfo=pnginfo, icc_profile=keep.get("icc_profile"))
    out = buf.getvalue()
    return Encoded(data=out, mime_type="image/png", ext="png", width=size[0], height=size[1])


# --------------------------------------------------------------------------- contact sheet


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The packaged DejaVu Sans: labels are prompts, and Pillow's default font draws boxes
    for every non-ASCII letter ("Café", "Straße"). Falls back to Pillow's font by itself."""
    from bananaflow.assets import font  # local: only the contact sheet needs it

    return font(size)


def _fit_label(draw: ImageDraw.ImageDraw, text: str, font: object, width: int) -> str:
    """Shorten with an ellipsis until the label fits the cell (labels are prompts, often long)."""
    text = " ".join(text.split())
    if draw.textlength(text, font=font) <= width:  # type: ignore[arg-type]
        return text
    while text and draw.textlength(text + "…", font=font) > width:  # type: ignore[arg-type]
        text = text[:-1]
    return text + "…"


def _cell_image(data: bytes, box: tuple[int, int]) -> Image.Image | None:
    try:
        im = Image.open(io.BytesIO(data))
        im.draft("RGB", box)  # a summary: JPEG DCT scaling is fine here
        im = ImageOps.exif_transpose(im)
        im.thumbnail(box, Image.Resampling.LANCZOS)
        return _flatten(im) if _has_alpha(im) else im.convert("RGB")
    except Exception:
        return None  # one broken image must not hide the rest of the run


def _label_height(cell: int) -> int:
    return max(12, cell // 10)


def _pad(cell: int) -> int:
    return max(2, cell // 64)


def _cell_box(cell: int) -> tuple[int, int]:
    """The room for the image in a cell: the cell less its padding and its label."""
    return cell - 2 * _pad(cell), cell - _label_height(cell) - 2 * _pad(cell)


def sheet_cell(data: bytes, cell: int) -> bytes | None:
    """An image already shrunk to its place on a sheet of ``cell`` px cells, as a small JPEG
    (about 15 KB, not 166 KB of pixels), or None if it cannot be read. ``contact_sheet`` takes
    it like any image and only decodes it."""
    im = _cell_image(data, _cell_box(cell))
    if im is None:
        return None
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def contact_sheet(
    images: Sequence[bytes | Image.Image],
    labels: Sequence[str],
    *,
    columns: int = 4,
    cell: int = 256,
) -> bytes:
    """A JPEG grid (cell x cell per image, label under it): a run's summary at a glance.

    The sheet is exactly min(columns, n) * cell wide and ceil(n / columns) * cell high. An
    ``Image`` in ``images`` is a finished cell cut from an earlier sheet (``cut_cells``),
    pasted as it is with its label. The others are decoded on every core (Pillow lets go of the
    GIL while it decodes and resizes).
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if not images:
        raise ValueError("contact sheet needs at least one image")
    if columns < 1 or cell < 32:
        raise ValueError("columns must be >= 1 and cell >= 32")
    cols = min(columns, len(images))
    rows = math.ceil(len(images) / cols)
    label_h, pad = _label_height(cell), _pad(cell)
    sheet = Image.new("RGB", (cols * cell, rows * cell), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    font = _font(label_h - 2)
    box = _cell_box(cell)

    def thumb(item: bytes | Image.Image) -> Image.Image | None:
        return item if isinstance(item, Image.Image) else _cell_image(item, box)

    with ThreadPoolExecutor(min(len(images), os.cpu_count() or 1)) as pool:
        thumbs = list(pool.map(thumb, images))
    for i, (item, im, label) in enumerate(zip(images, thumbs, labels, strict=True)):
        x0, y0 = (i % cols) * cell, (i // cols) * cell
        if isinstance(item, Image.Image):
            sheet.paste(item, (x0, y0))
            continue
        if im is None:
            draw.rectangle(
                (x0 + pad, y0 + pad, x0 + pad + box[0], y0 + pad + box[1]), fill=(90, 0, 0)
            )
            label = f"[unreadable] {label}"
        else:
            sheet.paste(
                im, (x0 + pad + (box[0] - im.width) // 2, y0 + pad + (box[1] - im.height) // 2)
            )
        text = _fit_label(draw, label, font, cell - 2 * pad)
        draw.text((x0 + pad, y0 + cell - label_h - pad // 2), text, fill=(235, 235, 235), font=font)
    buf = io.BytesIO()
    sheet.save(buf, "JPEG", quality=85, optimize=True)
    return buf.getvalue()


def cut_cells(
    sheet: bytes, cell: int, columns: int, wanted: Sequence[int]
) -> dict[int, Image.Image]:
    """Cells ``wanted`` (positions, row by row) of a sheet ``contact_sheet`` drew; one decode."""
    with Image.open(io.BytesIO(sheet)) as im:
        im = im.convert("RGB")
    out: dict[int, Image.Image] = {}
    for i in wanted:
        x0, y0 = (i % columns) * cell, (i // columns) * cell
        if x0 + cell <= im.width and y0 + cell <= im.height:
            out[i] = im.crop((x0, y0, x0 + cell, y0 + cell))
    return out
