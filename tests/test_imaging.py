"""Imaging against real Pillow encodes: formats, byte budgets, metadata policy, derivatives."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageCms, ImageDraw, ImageFont

from bananaflow import imagetype, imaging
from bananaflow.config import CompressSettings
from bananaflow.errors import InputError
from bananaflow.imaging import TRAINED_ALGORITHMIC_MEDIA

FORMATS = ["jpeg", "webp", "avif", "png"]
MIME = {"jpeg": "image/jpeg", "webp": "image/webp", "avif": "image/avif", "png": "image/png"}
EXT = {"jpeg": "jpg", "webp": "webp", "avif": "avif", "png": "png"}
PIL_NAME = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF", "png": "PNG"}
GPS_IFD = 0x8825


def make_image(width: int, height: int, *, grain: float = 0.15) -> Image.Image:
    """A generated-looking test picture: colour gradients, soft blobs, film grain and text."""
    g = Image.linear_gradient("L").resize((width, height))
    base = Image.merge(
        "RGB", (g, g.transpose(Image.Transpose.ROTATE_90).resize((width, height)), g)
    )
    blobs = Image.effect_noise((max(2, width // 16), max(2, height // 16)), 80)
    base = Image.blend(
        base, blobs.resize((width, height), Image.Resampling.BICUBIC).convert("RGB"), 0.35
    )
    im = Image.blend(base, Image.effect_noise((width, height), 30).convert("RGB"), grain)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=max(10, height // 20))
    for i in range(4):
        draw.text(
            (width // 20, i * height // 4 + 4), f"bananaflow {i}", fill=(250, 240, 20), font=font
        )
    return im


def encode(im: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def master() -> bytes:
    return encode(make_image(640, 400))


@pytest.fixture(scope="module")
def noisy_2k() -> Image.Image:
    return make_image(2048, 2048, grain=0.3)


def settings(fmt: str = "webp", **kw: object) -> CompressSettings:
    return CompressSettings(format=fmt, **kw)  # type: ignore[arg-type]


def opened(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


# --------------------------------------------------------------------------- sniff


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "AVIF"])
def test_sniff_reads_type_and_size_from_the_bytes(fmt: str) -> None:
    data = encode(Image.new("RGB", (123, 45), "red"), fmt)
    info = imagetype.identify(data)
    assert (info.width, info.height) == (123, 45)
    assert info.mime_type == Image.MIME[fmt]
    assert info.ext == {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "AVIF": "avif"}[fmt]


@pytest.mark.parametrize("garbage", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 5])
def test_sniff_rejects_garbage(garbage: bytes) -> None:
    with pytest.raises(ValueError):
        imagetype.identify(garbage)


# --------------------------------------------------------------------------- compress


@pytest.mark.parametrize("fmt", FORMATS)
def test_compress_round_trips_each_format(master: bytes, fmt: str) -> None:
    out = imaging.compress(master, settings(fmt, quality=70))
    assert (out.mime_type, out.ext, out.width, out.height) == (MIME[fmt], EXT[fmt], 640, 400)
    assert out.quality == (None if fmt == "png" else 70)
    im = opened(out.data)
    assert im.format == PIL_NAME[fmt]
    assert im.size == (640, 400)


def test_compress_decodes_the_master_once_even_when_bisecting(
    master: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    opens_of_master = 0
    real_open = Image.open

    def spy(fp, *a, **kw):  # type: ignore[no-untyped-def]
        nonlocal opens_of_master
        if isinstance(fp, io.BytesIO) and fp.getvalue() == master:
            opens_of_master += 1
        return real_open(fp, *a, **kw)

    monkeypatch.setattr(Image, "open", spy)
    out = imaging.compress(master, settings("jpeg", quality=90, max_bytes=15_000))
    assert out.quality is not None and out.quality < 90
    assert opens_of_master == 1


def test_rgba_becomes_rgb_over_white_for_jpeg() -> None:
    im = Image.new("RGBA", (64, 32), (255, 0, 0, 255))
    im.paste((0, 0, 0, 0), (0, 0, 32, 32))  # left half fully transparent black
    out = imaging.compress(encode(im), settings("jpeg", quality=95))
    got = opened(out.data)
    assert got.mode == "RGB"
    assert all(c > 240 for c in got.getpixel((8, 16)))  # white, not the hidden black
    assert got.getpixel((56, 16))[0] > 200


@pytest.mark.parametrize("fmt", ["webp", "avif", "png"])
def test_alpha_is_kept_where_the_format_has_it(fmt: str) -> None:
    im = Image.new("RGBA", (40, 40), (0, 128, 255, 128))
    out = imaging.compress(encode(im), settings(fmt, quality=90))
    assert opened(out.data).mode == "RGBA"


def test_byte_budget_is_met_and_the_final_encode_is_optimized(noisy_2k: Image.Image) -> None:
    q85 = len(encode(noisy_2k, "JPEG", quality=85))
    budget = int(q85 * 0.55)
    s = settings("jpeg", quality=85, max_bytes=budget, digital_source_type=False)
    out = imaging.compress(encode(noisy_2k), s)
    assert len(out.data) <= budget
    assert out.quality is not None and out.quality < 85
    # The one final encode used Huffman optimisation: byte-identical to Pillow's optimize=True.
    assert out.data == encode(noisy_2k, "JPEG", quality=out.quality, optimize=True)
    assert len(out.data) < len(encode(noisy_2k, "JPEG", quality=out.quality))
    # And it is the best quality that fits, as judged by the fast probes.
    assert len(encode(noisy_2k, "JPEG", quality=out.quality + 1)) > budget


@pytest.mark.parametrize("fmt", ["webp", "avif"])
def test_byte_budget_for_webp_and_avif(noisy_2k: Image.Image, fmt: str) -> None:
    src = noisy_2k.resize((768, 768))
    q80 = len(encode(src, PIL_NAME[fmt], quality=80))
    budget = int(q80 * 0.6)
    out = imaging.compress(encode(src), settings(fmt, quality=80, max_bytes=budget))
    assert len(out.data) <= budget
    assert out.quality is not None and out.quality < 80
    assert imaging.read_digital_source_type(out.data) == TRAINED_ALGORITHMIC_MEDIA


def test_quality_is_kept_when_it_already_fits(master: bytes) -> None:
    out = imaging.compress(master, settings("jpeg", quality=60, max_bytes=10_000_000))
    assert out.quality == 60


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png"])
def test_impossible_budget_is_an_input_error(noisy_2k: Image.Image, fmt: str) -> None:
    with pytest.raises(InputError) as err:
        imaging.compress(encode(noisy_2k.resize((512, 512))), settings(fmt, max_bytes=200))
    assert err.value.field == "compress.max_bytes"
    assert err.value.fix


# --------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("fmt", FORMATS)
def test_digital_source_type_is_written(master: bytes, fmt: str) -> None:
    out = imaging.compress(master, settings(fmt, quality=60))
    assert imaging.read_digital_source_type(out.data) == TRAINED_ALGORITHMIC_MEDIA
    assert b"Iptc4xmpExt:DigitalSourceType" in out.data
    assert TRAINED_ALGORITHMIC_MEDIA.encode() in out.data


@pytest.mark.parametrize("fmt", FORMATS)
def test_digital_source_type_can_be_turned_off(master: bytes, fmt: str) -> None:
    out = imaging.compress(master, settings(fmt, quality=60, digital_source_type=False))
    assert imaging.read_digital_source_type(out.data) is None
    assert b"trainedAlgorithmicMedia" not in out.data


def camera_jpeg(orientation: int = 1) -> bytes:
    """A JPEG as a phone would write it: camera make/model, GPS position, an sRGB profile."""
    exif = Image.Exif()
    exif[0x010F] = "AcmeCam"  # Make
    exif[0x0110] = "Model-9000"  # Model
    exif[0x0112] = orientation
    gps = exif.get_ifd(GPS_IFD)
    gps[1], gps[2] = "N", (48.0, 51.0, 29.0)
    gps[3], gps[4] = "E", (2.0, 17.0, 40.0)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return encode(make_image(300, 200), "JPEG", quality=90, exif=exif, icc_profile=icc)


@pytest.mark.parametrize("fmt", FORMATS)
def test_camera_and_gps_exif_never_reach_the_derivative(fmt: str) -> None:
    src = camera_jpeg()
    assert opened(src).getexif().get_ifd(GPS_IFD)  # the source really has GPS
    out = imaging.compress(src, settings(fmt, quality=80))
    got = opened(out.data)
    assert not got.getexif().get_ifd(GPS_IFD)
    assert len(got.getexif()) == 0
    assert b"AcmeCam" not in out.data and b"Model-9000" not in out.data
    # Colour management is not personal data: the ICC profile stays.
    assert got.info.get("icc_profile") == opened(src).info["icc_profile"]


def test_exif_orientation_is_applied_to_the_pixels() -> None:
    out = imaging.compress(camera_jpeg(orientation=6), settings("webp", quality=70))
    assert (out.width, out.height) == (200, 300)


def test_strip_metadata_off_keeps_source_exif_and_merges_xmp() -> None:
    im = make_image(120, 80)
    exif = Image.Exif()
    exif[0x010F] = "AcmeCam"
    provider_xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        b"<dc:creator>provider</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    src = encode(im, "JPEG", quality=90, exif=exif, xmp=provider_xmp)
    out = imaging.compress(src, settings("jpeg", quality=80, strip_metadata=False))
    got = opened(out.data)
    assert got.getexif()[0x010F] == "AcmeCam"
    assert b"<dc:creator>provider</dc:creator>" in out.data
    assert imaging.read_digital_source_type(out.data) == TRAINED_ALGORITHMIC_MEDIA


# --------------------------------------------------------------------------- derivatives


@pytest.mark.parametrize(
    ("size", "longest", "expected"),
    [
        ((640, 400), 160, (160, 100)),
        ((400, 640), 160, (100, 160)),
        ((640, 400), 2000, (640, 400)),  # never upscales
    ],
)
def test_thumbnail_longest_side(
    size: tuple[int, int], longest: int, expected: tuple[int, int]
) -> None:
    thumb = imaging.make_thumbnail(encode(make_image(*size)), longest, settings("avif", quality=50))
    assert (thumb.width, thumb.height) == expected
    assert thumb.mime_type == "image/avif"
    assert opened(thumb.data).size == expected
    assert imaging.read_digital_source_type(thumb.data) == TRAINED_ALGORITHMIC_MEDIA


@pytest.mark.parametrize("fmt", FORMATS)
def test_derivatives_match_separate_calls_from_one_decode(master: bytes, fmt: str) -> None:
    s = settings(fmt, quality=70, thumbnails=[100, 320, 4000])
    main, thumbs = imaging.derivatives(master, s)
    assert main.data == imaging.compress(master, s).data
    assert [t.data for t in thumbs] == [
        imaging.make_thumbnail(master, n, s).data for n in s.thumbnails
    ]
    assert [max(t.width, t.height) for t in thumbs] == [100, 320, 640]


def test_palette_png_with_transparency_keeps_its_alpha() -> None:
    im = Image.new("P", (50, 50), 1)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.paste(0, (0, 0, 25, 50))
    src = encode(im, transparency=0)
    out = imaging.compress(src, settings("webp", quality=90))
    got = opened(out.data)
    assert got.mode == "RGBA" and got.getpixel((5, 5))[3] == 0 and got.getpixel((40, 5))[3] == 255


def test_thumbnail_size_must_be_positive(master: bytes) -> None:
    with pytest.raises(InputError):
        imaging.make_thumbnail(master, 0, settings())


def test_upscale_local_doubles_and_stays_lossless(master: bytes) -> None:
    out = imaging.upscale_local(master, 2)
    assert (out.width, out.height, out.mime_type, out.ext) == (1280, 800, "image/png", "png")
    im = opened(out.data)
    assert im.format == "PNG" and im.size == (1280, 800)
    # A x2 Lanczos keeps the picture: shrinking it back is close to the original.
    back = im.resize((640, 400), Image.Resampling.LANCZOS).convert("L")
    orig = opened(master).convert("L")
    diff = sum(abs(a - b) for a, b in zip(back.getdata(), orig.getdata(), strict=True))
    assert diff / (640 * 400) < 12


@pytest.mark.parametrize("factor", [0, 1])
def test_upscale_local_rejects_useless_factors(master: bytes, factor: int) -> None:
    with pytest.raises(InputError) as err:
        imaging.upscale_local(master, factor)
    assert err.value.field == "upscale.factor"


def test_contact_sheet_is_a_jpeg_grid(master: bytes) -> None:
    images = [master, encode(make_image(100, 300), "JPEG"), b"broken", master, master]
    labels = ["a very long prompt " * 10, "portrait", "broken one", "four", "five"]
    sheet = imaging.contact_sheet(images, labels, columns=3, cell=128)
    im = opened(sheet)
    assert im.format == "JPEG"
    assert im.size == (3 * 128, 2 * 128)


def test_contact_sheet_needs_one_label_per_image(master: bytes) -> None:
    with pytest.raises(ValueError):
        imaging.contact_sheet([master, master], ["only one"])
