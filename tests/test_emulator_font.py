"""Text drawn on images renders accented, Greek and Cyrillic letters as letters, not boxes.

The check compares each letter's rendered glyph with the font's missing-glyph shape (what an
unassigned code point renders as): with Pillow's bundled default font, "á" *is* that shape.
"""

from __future__ import annotations

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageFont

from bananaflow import imaging
from bananaflow.assets import FONT_FILE, font, font_bytes
from bananaflow.emulator import imagegen

UNASSIGNED = "\u0378"  # no character is assigned here: every font draws its .notdef for it
LETTERS = "áéçñøßÆŒŁŽĞİđơ" + "ΩλΆ" + "ЖЯщЁ"


def _glyph(f: ImageFont.FreeTypeFont | ImageFont.ImageFont, ch: str) -> Image.Image:
    img = Image.new("L", (96, 96), 0)
    ImageDraw.Draw(img).text((16, 8), ch, font=f, fill=255)
    return img


def _same(a: Image.Image, b: Image.Image) -> bool:
    return ImageChops.difference(a, b).getbbox() is None


def test_the_packaged_font_is_dejavu_and_small() -> None:
    f = font(24)
    assert isinstance(f, ImageFont.FreeTypeFont)
    assert f.getname()[0] == "DejaVu Sans"
    assert FONT_FILE.endswith(".ttf") and 50_000 < len(font_bytes()) < 800_000


@pytest.mark.parametrize("ch", list(LETTERS))
def test_letters_are_not_the_missing_glyph_box(ch: str) -> None:
    f = font(48)
    box = _glyph(f, UNASSIGNED)
    glyph = _glyph(f, ch)
    assert glyph.getbbox() is not None  # something was drawn
    assert not _same(glyph, box)


def test_the_check_would_catch_pillows_default_font() -> None:
    """Pillow's own font draws "á" as its missing glyph: the test above is not vacuous."""
    default = ImageFont.load_default(size=48)
    assert _same(_glyph(default, "á"), _glyph(default, UNASSIGNED))


def test_emulator_and_contact_sheet_draw_with_the_packaged_font() -> None:
    for f in (imagegen._font(30), imaging._font(30)):
        assert isinstance(f, ImageFont.FreeTypeFont) and f.getname()[0] == "DejaVu Sans"


def test_prompt_drawn_on_an_emulated_image_keeps_its_accent() -> None:
    """Olá and "Ol" + missing glyph differ on the drawn image itself."""
    images = []
    for text in ("Olá", "Ol" + UNASSIGNED):
        img = Image.new("RGB", (512, 256), (40, 40, 40))
        imagegen._draw_prompt(img, text)
        images.append(img)
    assert ImageChops.difference(*images).getbbox() is not None
