"""What the emulated services know: model ids, aspect ratios, image sizes, pixel tables, tokens.

Kept apart from the HTTP code so the limits the emulator enforces can be read in one place and
compared with ../shared/reference/google-image-apis.md §1.4 and §2.1.
"""

from __future__ import annotations

from typing import Literal

from bananaflow.models import OUTPUT_TOKENS, pixel_size

ModelKind = Literal["image", "text", "upscale"]

# Both GA and -preview ids are served: Google retired the -preview ids in 2026 and clients keep
# model ids in config, so either spelling must work against the emulator.
IMAGE_MODELS: frozenset[str] = frozenset(
    {
        "gemini-3-pro-image",
        "gemini-3-pro-image-preview",
        "gemini-3.1-flash-image",
        "gemini-3.1-flash-image-preview",
        "gemini-2.5-flash-image",
    }
)
TEXT_MODELS: frozenset[str] = frozenset({"gemini-2.5-flash", "gemini-3-flash", "gemini-3-pro"})
UPSCALE_MODELS: frozenset[str] = frozenset({"imagen-4.0-upscale-preview"})

STANDARD_RATIOS: tuple[str, ...] = (
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
)
# Only gemini-3.1-flash-image renders these; the other models reject them by name.
EXTREME_RATIOS: tuple[str, ...] = ("1:4", "4:1", "1:8", "8:1")
ALL_RATIOS: tuple[str, ...] = STANDARD_RATIOS + EXTREME_RATIOS

# Spellings the service accepts for imageSize (the probe saw lowercase accepted, billed as upper).
SIZE_SPELLINGS: dict[str, str] = {
    "1K": "1K", "2K": "2K", "4K": "4K", "512": "512", "512P": "512", "512PX": "512",
}
SUPPORTED_SIZES_TEXT = "1K, 2K, 4K, 512, 512P, 512PX"

# gemini-2.5-flash-image ignores imageSize and always answers from its own 1024-class table.
_FLASH25_PIXELS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184),
    "4:3": (1184, 864), "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344),
    "16:9": (1344, 768), "21:9": (1536, 672),
}
FLASH25_TOKENS = 1290
FLASH31_TOKENS = {"512": 1120, "1K": 1120, "2K": 1680, "4K": 2520}


def model_kind(model: str) -> ModelKind | None:
    if model in IMAGE_MODELS:
        return "image"
    if model in TEXT_MODELS:
        return "text"
    if model in UPSCALE_MODELS:
        return "upscale"
    return None


def is_flash25(model: str) -> bool:
    return model.startswith("gemini-2.5-flash-image")


def is_flash31(model: str) -> bool:
    return model.startswith("gemini-3.1-flash-image")


def thinks(model: str) -> bool:
    """Gemini 3 image models always think (and bill thought tokens); 2.5 does not."""
    return not is_flash25(model)


def _extreme_pixels(ratio: str, size: str) -> tuple[int, int]:
    """No published table: keep the 1K area and the ratio, rounded to multiples of 16."""
    a, b = (int(x) for x in ratio.split(":"))
    scale = {"512": 0.5, "1K": 1, "2K": 2, "4K": 4}[size]
    area = (1024 * scale) ** 2
    h = (area * b / a) ** 0.5
    w = h * a / b
    return max(16, round(w / 16) * 16), max(16, round(h / 16) * 16)


def output_pixels(model: str, ratio: str, size: str) -> tuple[int, int]:
    """Pixel size the emulator serves; the Pro table comes from ``bananaflow.models``."""
    if is_flash25(model):
        return _FLASH25_PIXELS[ratio]
    if ratio in EXTREME_RATIOS:
        return _extreme_pixels(ratio, size)
    if size == "512":
        w, h = pixel_size(ratio, "1K")
        return w // 2, h // 2
    return pixel_size(ratio, size)


def output_tokens(model: str, size: str) -> int:
    if is_flash25(model):
        return FLASH25_TOKENS
    if is_flash31(model):
        return FLASH31_TOKENS[size]
    return OUTPUT_TOKENS.get(size, OUTPUT_TOKENS["1K"])
