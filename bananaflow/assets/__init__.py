"""Files bananaflow ships inside its package, and the one font every drawing uses.

Pillow's bundled default font covers ASCII only, so a prompt like "Café crème" or "Straße"
came out with boxes for the accented letters. A font must work after a plain ``pip install``
anywhere (no system fonts, no apt at run time), so a subset of DejaVu Sans (free licence, see
``fonts/LICENSE-DejaVu.txt``) lives here as package data. It covers Latin (incl. Vietnamese),
Greek, Cyrillic, combining marks and common punctuation in ~190 KB; CJK and other scripts are
out of scope and fall back to the font's missing-glyph shape.

Rebuilt from Debian's fonts-dejavu-core 2.37 with fontTools (a build step, not a dependency)::

    pyftsubset /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf \\
      --unicodes="U+0020-007E,U+00A0-024F,U+02B0-02FF,U+0300-036F,U+0370-03FF,U+0400-052F,\\
    U+1E00-1EFF,U+1F00-1FFF,U+2000-206F,U+20A0-20CF,U+2100-214F,U+2190-21FF,U+2212,U+2260,\\
    U+2264,U+2265,U+25A0-25FF,U+FFFD" --layout-features='*' \\
      --output-file=bananaflow/assets/fonts/DejaVuSans-subset.ttf
"""

from __future__ import annotations

import functools
import io
from importlib import resources

from PIL import ImageFont

FONT_FILE = "DejaVuSans-subset.ttf"


def font_bytes() -> bytes:
    """The TTF's bytes, read through importlib.resources so zipped installs work too."""
    return resources.files(__name__).joinpath("fonts", FONT_FILE).read_bytes()


@functools.lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans at ``size`` px; Pillow's default font only if FreeType or the file is missing.

    Cached per size: fonts are read-only after loading and drawing from several threads with
    one FreeTypeFont is safe, while loading costs a file read and a FreeType parse each time.
    """
    try:
        return ImageFont.truetype(io.BytesIO(font_bytes()), size=size)
    except (OSError, ImportError):  # no FreeType in this Pillow build, or a broken install
        try:
            return ImageFont.load_default(size=size)
        except (OSError, ImportError):
            return ImageFont.load_default()
