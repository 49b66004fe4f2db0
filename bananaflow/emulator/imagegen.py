"""Real images for the emulator: deterministic, the right size, and the right *file* size.

Downstream steps (compress, byte budgets, upload, the compare flow) behave differently on a 300 KB
JPEG and a 20 MB PNG, so a flat colour square would hide bugs. Each image is a seeded scene
(gradients, shapes), the prompt drawn on it, and film grain whose strength is the backend
profile's ``detail``; grain is what makes files as large as the measured ones. Everything is
seeded from the prompt (and ``generationConfig.seed`` when sent), so the same request gives
byte-identical bytes in any process. What a test needs to *see* is drawn on the image: the
prompt (any script the packaged font covers), the seed, and a thumbnail strip of the reference
images the request carried.

Pillow only (no numpy). Rendering is CPU work: callers run it in a worker thread, a semaphore
keeps at most one render per core, and an LRU keeps recent results so repeats cost nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
import textwrap
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import anyio.to_thread
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont, PngImagePlugin

from bananaflow.assets import font as packaged_font

ImageFormat = Literal["png", "jpeg"]
MIME = {"png": "image/png", "jpeg": "image/jpeg"}
FORMAT_OF_MIME = {v: k for k, v in MIME.items()}

# Grain is drawn on a grid of at most this many pixels per side and smoothly upsampled, as the
# model itself renders at ~1K and upsamples: this is what keeps 4K files ~5-8x (not 16x) 1K ones.
_GRAIN_GRID = 1024
# JPEG's quantiser discards much of fine grain's energy, so the JPEG path draws grain ~2.5x as
# strong to land on the measured sizes (AI Studio JPEG 1K ~0.4 MB, 4K ~3 MB; Vertex PNG 1K ~2.3 MB,
# 4K ~18 MB).
_GRAIN_LEVELS_PER_DETAIL = {"png": 1.28, "jpeg": 3.2}
_CACHE_MAX_BYTES = 512 * 1024 * 1024
_render_slots = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))


@dataclass(frozen=True)
class ImageSpec:
    """Everything that determines the bytes; equal specs give equal bytes."""

    prompt: str
    width: int
    height: int
    fmt: ImageFormat
    quality: int = 90
    detail: float = 8.0
    reference_digest: str = ""
    label: str = "emulator"
    # generationConfig.seed: None renders from the request alone (see ``_seed``).
    seed: int | None = None
    reference_count: int = 0
    # The user turn this answers (k of a k-turn conversation): an edit step shows its turn.
    turn: int = 1
    # An interim "thought" image: a small composition draft drawn before the final one.
    draft: bool = False

    @property
    def mime(self) -> str:
        return MIME[self.fmt]


def _seed(spec: ImageSpec) -> int:
    """The scene's RNG seed. Without ``generationConfig.seed`` it is the request's content, so
    repeats are byte-identical (the render cache and the tests rely on that; Google itself
    randomises, reference §1.5); with one, each seed is its own reproducible picture."""
    text = f"{spec.prompt}\x00{spec.reference_digest}"
    if spec.seed is not None:
        text += f"\x00seed={spec.seed}"
    if spec.turn > 1:
        text += f"\x00turn={spec.turn}"
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return packaged_font(size)


def _seed_colour(seed: int) -> tuple[int, int, int]:
    """A saturated colour per seed, so two seeds differ at a glance, not only in the noise."""
    digest = hashlib.sha256(f"seed:{seed}".encode()).digest()
    hue = digest[0] / 255
    h6 = hue * 6
    i, frac = int(h6) % 6, h6 - int(h6)
    hi, lo, up, down = 230, 40, round(40 + 190 * frac), round(230 - 190 * frac)
    return [(hi, up, lo), (down, hi, lo), (lo, hi, up), (lo, down, hi), (up, lo, hi),
            (hi, lo, down)][i]


def _colour(rnd: random.Random) -> tuple[int, int, int]:
    return (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))


def _scene(spec: ImageSpec, rnd: random.Random) -> Image.Image:
    """Gradients and soft shapes: smooth regions and edges, like a photo's low frequencies."""
    w, h = spec.width, spec.height
    small = (max(1, w // 4), max(1, h // 4))  # draw at 1/4 scale, upsample: cheap at 4K

    def gradient(angle: float) -> Image.Image:
        return Image.linear_gradient("L").rotate(angle, resample=Image.Resampling.BILINEAR)

    channels = (
        gradient(rnd.uniform(0, 360)),
        Image.radial_gradient("L"),
        gradient(rnd.uniform(0, 360)),
    )
    base = Image.merge("RGB", [c.resize(small, Image.Resampling.BILINEAR) for c in channels])
    base = Image.blend(base, Image.new("RGB", small, _colour(rnd)), 0.5)
    draw = ImageDraw.Draw(base)
    sw, sh = small
    if spec.seed is not None:
        # Seeded: the seed's own colour dominates the background, in diagonal bands whose
        # spacing also comes from the seed.
        tint = _seed_colour(spec.seed)
        base = Image.blend(base, Image.new("RGB", small, tint), 0.55)
        draw = ImageDraw.Draw(base)
        step = max(4, min(sw, sh) // (4 + spec.seed % 5))
        dark = tuple(c // 2 for c in tint)
        for x in range(-sh, sw, 2 * step):
            draw.polygon([(x, 0), (x + step, 0), (x + step + sh, sh), (x + sh, sh)], fill=dark)
    for _ in range(14):
        x, y = rnd.randrange(sw), rnd.randrange(sh)
        r = rnd.randrange(max(2, min(sw, sh) // 20), max(3, min(sw, sh) // 4))
        if rnd.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=_colour(rnd))
        else:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=_colour(rnd))
    base = base.filter(ImageFilter.GaussianBlur(radius=max(1.0, sw / 300)))
    return base.resize((w, h), Image.Resampling.BICUBIC)


def _draw_prompt(img: Image.Image, prompt: str) -> None:
    w, h = img.size
    size = max(12, min(w, h) // 18)
    font = _font(size)
    chars = max(10, int(w / (size * 0.55)) - 4)
    lines = textwrap.wrap(prompt or "(no prompt)", chars)
    if len(lines) > 6:
        lines = [*lines[:5], lines[5][: chars - 1] + "…"]
    ImageDraw.Draw(img).multiline_text(
        (w // 24, h // 24),
        "\n".join(lines),
        font=font,
        fill=(255, 255, 255),
        stroke_width=max(1, size // 14),
        stroke_fill=(0, 0, 0),
        spacing=size // 4,
    )


def _thumbnail(data: bytes, box: int) -> Image.Image:
    """A reference image shrunk into a ``box`` square, or a crossed-out tile when unreadable
    (tests send placeholder bytes; a ``gs://`` file without ``emulator.batch.gcs_endpoint``)."""
    tile = Image.new("RGB", (box, box), (60, 60, 60))
    try:
        with Image.open(io.BytesIO(data)) as src:
            src.draft("RGB", (box, box))
            img = src.convert("RGB")
            img.thumbnail((box, box), Image.Resampling.BILINEAR)
            tile.paste(img, ((box - img.width) // 2, (box - img.height) // 2))
    except Exception:
        draw = ImageDraw.Draw(tile)
        draw.line((0, 0, box - 1, box - 1), fill=(200, 200, 200), width=max(1, box // 24))
        draw.line((0, box - 1, box - 1, 0), fill=(200, 200, 200), width=max(1, box // 24))
    return tile


def _draw_badges(img: Image.Image, spec: ImageSpec, references: tuple[bytes, ...]) -> None:
    """Bottom-left: "refs: N" over a strip of reference thumbnails, the seed, "draft"."""
    w, h = img.size
    size = max(10, min(w, h) // 28)
    margin = max(4, min(w, h) // 48)
    words = []
    if spec.draft:
        words.append("draft")
    if spec.turn > 1:
        words.append(f"turn {spec.turn} of {spec.turn}")
    if spec.reference_count:
        words.append(f"refs: {spec.reference_count}")
    if spec.seed is not None:
        words.append(f"seed: {spec.seed}")
    y = h - margin
    draw = ImageDraw.Draw(img)
    if spec.reference_count:
        box = max(12, min(w, h) // 10)
        y -= box
        fits = max(1, (w - 2 * margin) // (box + margin))
        for i, data in enumerate(references[:fits]):
            x = margin + i * (box + margin)
            img.paste(_thumbnail(data, box), (x, y))
            draw.rectangle((x - 1, y - 1, x + box, y + box), outline=(255, 255, 255))
        y -= margin
    if words:
        font = _font(size)
        draw.text(
            (margin, y),
            "  ".join(words),
            font=font,
            fill=(255, 255, 255),
            anchor="ls",
            stroke_width=max(1, size // 10),
            stroke_fill=(0, 0, 0),
        )


def _grain(spec: ImageSpec, rnd: random.Random) -> Image.Image | None:
    levels = spec.detail * _GRAIN_LEVELS_PER_DETAIL[spec.fmt]
    if levels <= 0:
        return None
    w, h = spec.width, spec.height
    scale = min(1.0, _GRAIN_GRID / max(w, h))
    gw, gh = max(1, round(w * scale)), max(1, round(h * scale))
    gain = levels / 128.0
    lut = [max(0, min(255, round(128 + (v - 128) * gain))) for v in range(256)]
    channels = []
    for _ in range(3):
        noise = Image.frombytes("L", (gw, gh), rnd.randbytes(gw * gh)).point(lut)
        if (gw, gh) != (w, h):
            noise = noise.resize((w, h), Image.Resampling.BILINEAR)
        channels.append(noise)
    return Image.merge("RGB", channels)


def _encode(img: Image.Image, spec: ImageSpec) -> bytes:
    """Encode with provenance metadata, as Google's outputs carry it (compress must strip it)."""
    note = (
        f"Generated by the bananaflow emulator ({spec.label}); "
        f"prompt sha256 {hashlib.sha256(spec.prompt.encode()).hexdigest()}"
    )
    buf = io.BytesIO()
    if spec.fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", "bananaflow-emulator")
        info.add_text("Comment", note)
        img.save(buf, "PNG", compress_level=1, pnginfo=info)
    else:
        exif = Image.Exif()
        exif[0x0131] = "bananaflow-emulator"  # Software
        exif[0x010E] = note  # ImageDescription
        img.save(buf, "JPEG", quality=spec.quality, exif=exif.tobytes(), comment=note.encode())
    return buf.getvalue()


def render(spec: ImageSpec, references: tuple[bytes, ...] = ()) -> bytes:
    """Render synchronously (call from a worker thread); deterministic for a given spec.

    ``references`` are the request's input images, drawn as thumbnails. They are passed beside
    the spec, not in it, so cached specs don't pin megabytes of input; the spec's
    ``reference_digest`` already makes equal specs mean equal references.
    """
    with _render_slots:
        rnd = random.Random(_seed(spec))
        img = _scene(spec, rnd)
        _draw_prompt(img, spec.prompt)
        grain = _grain(spec, rnd)
        if grain is not None:
            img = ImageChops.add(img, grain, 1.0, -128)
        _draw_badges(img, spec, references)
        return _encode(img, spec)


class RenderCache:
    """LRU of rendered bytes plus de-duplication of renders already in progress.

    Lives on the event loop thread only; renders themselves run in worker threads.
    """

    def __init__(self, max_items: int, max_bytes: int = _CACHE_MAX_BYTES):
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: OrderedDict[ImageSpec, bytes] = OrderedDict()
        self._bytes = 0
        self._pending: dict[ImageSpec, asyncio.Future[bytes]] = {}
        self.renders = 0
        self.hits = 0

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def _store(self, spec: ImageSpec, data: bytes) -> None:
        if self.max_items <= 0 or len(data) > self.max_bytes:
            return
        self._items[spec] = data
        self._bytes += len(data)
        while len(self._items) > self.max_items or self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= len(old)

    async def get(self, spec: ImageSpec, renderer: Callable[[ImageSpec], bytes] = render) -> bytes:
        cached = self._items.get(spec)
        if cached is not None:
            self._items.move_to_end(spec)
            self.hits += 1
            return cached
        pending = self._pending.get(spec)
        if pending is not None:
            self.hits += 1
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[spec] = future
        try:
            data = await anyio.to_thread.run_sync(renderer, spec)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._pending.pop(spec, None)
        self.renders += 1
        future.set_result(data)
        self._store(spec, data)
        return data


def probe(data: bytes) -> tuple[int, int, str]:
    """(width, height, mime) from the header only; ValueError when it isn't an image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.width, img.height, Image.MIME.get(img.format or "", "application/octet")
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError(str(exc)) from None


def upscale(data: bytes, factor: int, mime: str, quality: int | None) -> bytes:
    """Resample by ``factor`` (Lanczos) and encode as asked; Vertex's upscaler stand-in."""
    buf = io.BytesIO()
    with _render_slots, Image.open(io.BytesIO(data)) as src:
        img = src.convert("RGB") if src.mode not in ("RGB", "RGBA", "L") else src.copy()
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.LANCZOS)
        if mime == "image/jpeg":
            img.convert("RGB").save(buf, "JPEG", quality=quality if quality is not None else 75)
        else:
            img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()
