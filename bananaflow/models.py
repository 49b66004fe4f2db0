"""Records that cross a boundary between the core, the backends, the tasks and the emulator.

The pixel table is Google's published one for gemini-3-pro-image (ai.google.dev image-generation,
see ../shared/reference/google-image-apis.md §1.4). Clients never trust it for real outputs: they
read dimensions from the decoded bytes. The emulator uses it to serve the right size.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

AspectRatio = Literal["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"]
ImageSize = Literal["1K", "2K", "4K"]
BackendName = Literal["aistudio", "vertex"]
PersonGeneration = Literal["ALLOW_ALL", "ALLOW_ADULT", "ALLOW_NONE"]
OutputMime = Literal["image/png", "image/jpeg"]

ASPECT_RATIOS: tuple[str, ...] = AspectRatio.__args__  # type: ignore[attr-defined]
IMAGE_SIZES: tuple[str, ...] = ImageSize.__args__  # type: ignore[attr-defined]

# (width, height) at 1K; 2K doubles and 4K quadruples both sides.
_PIXELS_1K: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (848, 1264),
    "3:2": (1264, 848),
    "3:4": (896, 1200),
    "4:3": (1200, 896),
    "4:5": (928, 1152),
    "5:4": (1152, 928),
    "9:16": (768, 1376),
    "16:9": (1376, 768),
    "21:9": (1584, 672),
}
_SCALE = {"1K": 1, "2K": 2, "4K": 4}

# Output tokens billed per image on the Pro model (doc table): 1120 for 1K/2K, 2000 for 4K.
OUTPUT_TOKENS = {"1K": 1120, "2K": 1120, "4K": 2000}


def pixel_size(aspect_ratio: str, image_size: str) -> tuple[int, int]:
    """Published output size for a ratio × size on gemini-3-pro-image."""
    w, h = _PIXELS_1K[aspect_ratio]
    s = _SCALE[image_size]
    return w * s, h * s


class ReferenceImage(BaseModel):
    """An input image sent inline with the prompt (edits, style references)."""

    model_config = ConfigDict(extra="forbid")

    mime_type: Literal["image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"]
    data: bytes = Field(repr=False)


class ImageRequest(BaseModel):
    """One image to generate: what the caller asks for, independent of the backend.

    Vertex-only options live here too so that one job description can be routed to either
    backend; the AI Studio client rejects them before sending (the API would answer 400).
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=30_000)
    aspect_ratio: AspectRatio = "1:1"
    image_size: ImageSize = "1K"
    model: str | None = Field(
        None, description="Model id; None takes the backend's configured model."
    )
    reference_images: list[ReferenceImage] = Field(default_factory=list, max_length=14)
    # Vertex-only
    output_mime_type: OutputMime | None = None
    output_quality: int | None = Field(None, ge=0, le=100)
    person_generation: PersonGeneration | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt is blank")
        return v

    def vertex_only_fields(self) -> list[str]:
        """Names of the Vertex-only options this request sets (for a clear AI Studio error)."""
        names = ["output_mime_type", "output_quality", "person_generation"]
        return [n for n in names if getattr(self, n) is not None]


class Usage(BaseModel):
    prompt_tokens: int = 0
    output_tokens: int = 0
    thoughts_tokens: int = 0
    total_tokens: int = 0


class GeneratedImage(BaseModel):
    """A decoded image from one successful generateContent call.

    ``mime_type``/``width``/``height`` come from the bytes; ``declared_mime_type`` is what the
    server said, kept for the audit trail because it is sometimes wrong.
    """

    data: bytes = Field(repr=False)
    mime_type: str
    declared_mime_type: str | None = None
    width: int
    height: int
    backend: BackendName
    model: str
    model_version: str | None = None
    response_id: str | None = None
    thought_signature: str | None = Field(None, repr=False)
    text: str | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    attempts: int = 1


class UpscaledImage(BaseModel):
    data: bytes = Field(repr=False)
    mime_type: str
    width: int
    height: int
    factor: int
    method: Literal["vertex", "local-lanczos"]
    model: str | None = None
