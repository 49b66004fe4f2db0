"""What the emulated services know: models, their sizes, ratios, tokens, formats and limits.

One table answers ``models.get``/``models.list``, validates ``generateContent`` and shapes its
answer, so what the emulator advertises can never disagree with what it accepts. Values come
from ../shared/reference/batch-and-model-tiers.md §4 and google-image-apis.md §1.4/§2.1; where
a value is a guess it says so next to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bananaflow.generation import EXTREME_RATIOS, OUTPUT_TOKENS, STANDARD_RATIOS, pixel_size

ModelKind = Literal["image", "text", "upscale"]
Backend = Literal["aistudio", "vertex"]
BOTH: frozenset[str] = frozenset({"aistudio", "vertex"})

# Only the Nano Banana 2 family renders EXTREME_RATIOS; the other models reject them by name.
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
# §4.1 ladder ($60/M: 747/1120/1680/2520). google-image-apis.md §1.4 quotes a probe that saw
# 1120 at 512 ("sic"); the price table is the documented figure, so the emulator bills 747.
FLASH31_TOKENS = {"512": 747, "1K": 1120, "2K": 1680, "4K": 2520}
SERVICE_TIERS: frozenset[str] = frozenset({"standard", "flex", "priority"})


@dataclass(frozen=True)
class ImageModel:
    """One Gemini image model as both platforms describe and enforce it."""

    id: str
    display_name: str
    description: str
    version: str
    # Canonical imageSize values accepted; empty means imageSize is ignored (2.5 Flash).
    sizes: tuple[str, ...]
    ratios: dict[str, tuple[str, ...]]
    output_tokens: dict[str, int]
    input_token_limit: int
    output_token_limit: int
    # Interim ``thought: true`` images sent before the final one (the Pro model's thinking).
    thought_images: int = 0
    # Gemini 3 models think: they bill thought tokens and sign their parts, and reject history
    # image parts that lost their signature (google-image-apis.md §1.6).
    thinks: bool = True
    # The AI Studio output format when it is fixed by the model, not by the platform profile.
    aistudio_mime: str | None = None
    input_image_tokens: int = 258
    max_input_images: int = 14
    vertex_global_only: bool = False
    service_tiers: frozenset[str] = SERVICE_TIERS
    aliases: tuple[str, ...] = ()
    backends: frozenset[str] = BOTH
    launch_stage: str = "GA"

    def ratios_for(self, backend: str) -> tuple[str, ...]:
        return self.ratios.get(backend) or self.ratios["aistudio"]

    @property
    def default_size(self) -> str:
        return "1K"

    def tokens(self, size: str) -> int:
        return self.output_tokens.get(size) or self.output_tokens["1K"]

    def pixels(self, ratio: str, size: str) -> tuple[int, int]:
        """Pixel size served: the table (and its derived sizes) of ``bananaflow.generation``."""
        if not self.sizes:
            return _FLASH25_PIXELS[ratio]
        return pixel_size(ratio, size)


@dataclass(frozen=True)
class OtherModel:
    """A non-image model the emulator serves: the prompt-rewriting text models and the upscaler."""

    id: str
    kind: ModelKind
    display_name: str
    description: str
    version: str
    input_token_limit: int = 1_048_576
    output_token_limit: int = 65_536
    backends: frozenset[str] = BOTH
    methods: tuple[str, ...] = ("generateContent", "countTokens")
    aliases: tuple[str, ...] = field(default=())
    launch_stage: str = "GA"


PRO = ImageModel(
    id="gemini-3-pro-image",
    display_name="Nano Banana Pro",
    description="Gemini 3 Pro Image",
    version="3.0",
    sizes=("1K", "2K", "4K"),
    ratios={"aistudio": STANDARD_RATIOS},
    output_tokens=dict(OUTPUT_TOKENS),
    # Vertex model card (google-image-apis.md §2.1): 65,536 in / 32,768 out, 14 input images.
    input_token_limit=65_536,
    output_token_limit=32_768,
    thought_images=1,
    vertex_global_only=True,
    aliases=("gemini-3-pro-image-preview",),
)
FLASH31 = ImageModel(
    id="gemini-3.1-flash-image",
    display_name="Nano Banana 2",
    description="Gemini 3.1 Flash Image",
    version="3.1",
    sizes=("512", "1K", "2K", "4K"),
    ratios={"aistudio": ALL_RATIOS},
    output_tokens=dict(FLASH31_TOKENS),
    input_token_limit=65_536,  # not published in the reference; the Pro figure
    output_token_limit=32_768,
    input_image_tokens=1120,  # batch-and-model-tiers.md §4.1: ~1120 per input image [3P]
    aliases=("gemini-3.1-flash-image-preview",),
)
LITE = ImageModel(
    id="gemini-3.1-flash-lite-image",
    display_name="Nano Banana 2 Lite",
    description="Gemini 3.1 Flash-Lite Image",
    version="3.1",
    sizes=("1K",),
    # The Gemini API page lists the 10 standard ratios, the Vertex card all 14 (§4.1).
    ratios={"aistudio": STANDARD_RATIOS, "vertex": ALL_RATIOS},
    output_tokens={"1K": 1120},
    input_token_limit=65_536,  # not published in the reference; the Pro figure
    output_token_limit=32_768,
    input_image_tokens=1120,
    vertex_global_only=True,
    # The lite page: Batch supported, Flex and Priority not: such calls run as standard.
    service_tiers=frozenset({"standard"}),
)
FLASH25 = ImageModel(
    id="gemini-2.5-flash-image",
    display_name="Nano Banana",
    description="Gemini 2.5 Flash Image",
    version="2.0",
    sizes=(),
    ratios={"aistudio": STANDARD_RATIOS},
    output_tokens={"1K": FLASH25_TOKENS},
    input_token_limit=32_768,
    output_token_limit=32_768,
    thinks=False,
    aistudio_mime="image/png",  # google-image-apis.md §1.4: 2.5-flash returns image/png
    max_input_images=3,  # "works best with up to 3"; not enforced by Google, nor here
    aliases=("gemini-2.5-flash-image-preview",),
)
IMAGE_CATALOG: tuple[ImageModel, ...] = (PRO, FLASH31, LITE, FLASH25)

OTHER_CATALOG: tuple[OtherModel, ...] = (
    OtherModel("gemini-2.5-flash", "text", "Gemini 2.5 Flash", "Gemini 2.5 Flash", "2.5"),
    OtherModel("gemini-3-flash", "text", "Gemini 3 Flash", "Gemini 3 Flash", "3.0"),
    OtherModel("gemini-3-pro", "text", "Gemini 3 Pro", "Gemini 3 Pro", "3.0"),
    OtherModel(
        "imagen-4.0-upscale-preview",
        "upscale",
        "Imagen 4 Upscale",
        "Imagen 4 upscaler (x2/x3/x4); its status after the Imagen shutdown is UNVERIFIED, and "
        "it is not in Vertex's discontinued-endpoints table, so it stays served",
        "001",
        input_token_limit=0,
        output_token_limit=0,
        backends=frozenset({"vertex"}),
        methods=("predict",),
        launch_stage="PUBLIC_PREVIEW",
    ),
)

# Imagen ids Google shut down in 2026 (batch-and-model-tiers.md §4.2, google-image-apis.md §0):
# they answer 404 NOT_FOUND on every method, as Google does now.
RETIRED_MODELS: frozenset[str] = frozenset(
    {
        "imagen-3.0-generate-001",
        "imagen-3.0-generate-002",
        "imagen-3.0-fast-generate-001",
        "imagen-3.0-capability-001",
        "imagen-3.0-capability-002",
        "imagen-4.0-generate-001",
        "imagen-4.0-fast-generate-001",
        "imagen-4.0-ultra-generate-001",
        "imagen-4.0-generate-preview-06-06",
        "imagen-4.0-ultra-generate-preview-06-06",
        "imagegeneration@002",
        "imagegeneration@005",
        "imagegeneration@006",
    }
)


def is_retired(model: str) -> bool:
    """Listed ids, and any other Imagen generate/edit id (every one is discontinued)."""
    if model in RETIRED_MODELS or model.startswith("imagegeneration@"):
        return True
    return model.startswith(("imagen-3.0-", "imagen-4.0-")) and model not in _OTHER_BY_ID


_IMAGE_BY_ID: dict[str, ImageModel] = {
    name: m for m in IMAGE_CATALOG for name in (m.id, *m.aliases)
}
_OTHER_BY_ID: dict[str, OtherModel] = {
    name: m for m in OTHER_CATALOG for name in (m.id, *m.aliases)
}


def image_model(model: str) -> ImageModel | None:
    return _IMAGE_BY_ID.get(model)


def other_model(model: str) -> OtherModel | None:
    return _OTHER_BY_ID.get(model)


def model_kind(model: str, backend: str | None = None) -> ModelKind | None:
    """What the id is on ``backend`` (None for unknown, retired or not on that platform)."""
    im = _IMAGE_BY_ID.get(model)
    if im is not None:
        return "image" if backend is None or backend in im.backends else None
    om = _OTHER_BY_ID.get(model)
    if om is not None and (backend is None or backend in om.backends):
        return om.kind
    return None


def listed(backend: str) -> list[ImageModel | OtherModel]:
    """What ``models.list`` shows on ``backend``: GA ids only (aliases answer ``get``)."""
    out: list[ImageModel | OtherModel] = [m for m in IMAGE_CATALOG if backend in m.backends]
    out += [m for m in OTHER_CATALOG if backend in m.backends]
    return out


def is_flash25(model: str) -> bool:
    return model.startswith("gemini-2.5-flash-image")


def is_flash31(model: str) -> bool:
    return model.startswith("gemini-3.1-flash-image")


def thinks(model: str) -> bool:
    """Gemini 3 image models always think (and bill thought tokens); 2.5 does not."""
    im = _IMAGE_BY_ID.get(model)
    return im.thinks if im is not None else not is_flash25(model)


def output_pixels(model: str, ratio: str, size: str) -> tuple[int, int]:
    im = _IMAGE_BY_ID.get(model) or PRO
    return im.pixels(ratio, size)


def output_tokens(model: str, size: str) -> int:
    im = _IMAGE_BY_ID.get(model) or PRO
    return im.tokens(size)
