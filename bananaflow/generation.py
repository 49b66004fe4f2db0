"""What is asked of an image model and what it answers, the same for every backend.

The rule beside ``records.py``: here, one generation (the request, the decoded answer, the
vocabulary of sizes and ratios); there, what the pipeline keeps about a job (step references,
manifest rows, run summaries).

The pixel table is Google's published one for gemini-3-pro-image (ai.google.dev image-generation,
see ../shared/reference/google-image-apis.md §1.4). Clients never take a size from it: they read
dimensions from the bytes, then check them against it (:func:`size_problem`), because a Pro answer
of any other size is a placeholder or a broken image. The emulator uses it to serve the right size.
Nano Banana 2's extra sizes and ratios (512; 1:4, 4:1, 1:8, 8:1) have no published table: their
sizes here are derived (half of 1K; the size's area at exactly the ratio) and checked only by
aspect, like every model without a table.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

AspectRatio = Literal[
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
    "1:4", "4:1", "1:8", "8:1",
]  # fmt: skip
ImageSize = Literal["512", "1K", "2K", "4K"]
BackendName = Literal["aistudio", "vertex"]
# How an image is bought: ``online`` is the standard synchronous tier; ``flex`` and ``priority``
# are Google's service tiers of the same call; ``batch`` is the Batch API / Vertex batch
# prediction (../shared/reference/batch-and-model-tiers.md §1-3, §5).
Delivery = Literal["online", "flex", "priority", "batch"]
# The deliveries that are one ``generateContent`` call each; ``batch`` is bought another way.
SyncDelivery = Literal["online", "flex", "priority"]
# Vertex Provisioned Throughput (batch-and-model-tiers.md §5.2): ``spillover`` sends no header
# (PT while the order lasts, then standard PayGo), ``dedicated`` PT only, ``shared`` PayGo only.
ProvisionedThroughput = Literal["spillover", "dedicated", "shared"]
PersonGeneration = Literal["ALLOW_ALL", "ALLOW_ADULT", "ALLOW_NONE"]
OutputMime = Literal["image/png", "image/jpeg"]
ReferenceMime = Literal["image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"]

ASPECT_RATIOS: tuple[str, ...] = AspectRatio.__args__  # type: ignore[attr-defined]
IMAGE_SIZES: tuple[str, ...] = ImageSize.__args__  # type: ignore[attr-defined]
DELIVERIES: tuple[str, ...] = Delivery.__args__  # type: ignore[attr-defined]
REFERENCE_TYPES: tuple[str, ...] = ReferenceMime.__args__  # type: ignore[attr-defined]
SYNC_DELIVERIES: tuple[str, ...] = SyncDelivery.__args__  # type: ignore[attr-defined]

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
_SCALE = {"512": 0.5, "1K": 1, "2K": 2, "4K": 4}
# Only the Nano Banana 2 family renders these (batch-and-model-tiers.md §4.1).
EXTREME_RATIOS: tuple[str, ...] = ("1:4", "4:1", "1:8", "8:1")
STANDARD_RATIOS: tuple[str, ...] = tuple(r for r in ASPECT_RATIOS if r not in EXTREME_RATIOS)

# Output tokens billed per image on the Pro model (doc table): 1120 for 1K/2K, 2000 for 4K.
OUTPUT_TOKENS = {"1K": 1120, "2K": 1120, "4K": 2000}


# Models known to answer with exactly the published pixel table (ids with a version or
# ``-preview`` suffix included).
_TABLE_MODEL_PREFIX = "gemini-3-pro-image"

# Models without a table: the aspect drift and the smallest long side still taken as an answer.
# Google's own 2.5 Flash sizes sit up to 2.9 % off their nominal ratio (5:4 is 1152x896).
_ASPECT_TOLERANCE = 0.03
_MIN_LONG_SIDE = 256

# Unicode categories that draw nothing: format (zero-width space/joiners, word joiner, BOM, soft
# hyphen), separators and controls.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Zs", "Zl", "Zp", "Cc"})
# Letters and symbols that render as blanks though their category says otherwise (Hangul
# fillers, the blank Braille pattern): the usual ways to smuggle an "empty" name past a check.
_INVISIBLE_CHARS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def pixel_size(aspect_ratio: str, image_size: str) -> tuple[int, int]:
    """Output size for a ratio × size: published for gemini-3-pro-image, derived beyond it."""
    if aspect_ratio in EXTREME_RATIOS:
        return _extreme_pixels(aspect_ratio, image_size)
    w, h = _PIXELS_1K[aspect_ratio]
    s = _SCALE[image_size]
    return int(w * s), int(h * s)


def _extreme_pixels(aspect_ratio: str, image_size: str) -> tuple[int, int]:
    """No published table: the size's area at exactly the ratio, both sides multiples of 16."""
    a, b = (int(x) for x in aspect_ratio.split(":"))
    area = (1024 * _SCALE[image_size]) ** 2
    k = max(1, round((area / (a * b * 256)) ** 0.5))
    return a * 16 * k, b * 16 * k


def follows_pixel_table(model: str) -> bool:
    """Whether answers of ``model`` must have exactly the :func:`pixel_size` dimensions."""
    return model.removeprefix("models/").startswith(_TABLE_MODEL_PREFIX)


def size_problem(
    model: str, aspect_ratio: str, image_size: str, width: int, height: int
) -> str | None:
    """Why ``width`` x ``height`` cannot be the answer to this request; None when it can be.

    gemini-3-pro-image (any version or ``-preview``) follows Google's published table, so its
    answers must match :func:`pixel_size` exactly. Other models follow no table we can rely on
    (2.5 Flash answers its own 1024-class sizes whatever size is asked, rounded up to 2.9 % off
    the ratio), so for them any size is accepted whose aspect is within 3 % of the requested
    ratio and whose long side is at least 256 px: that still catches the thumbnails and
    placeholders a broken front end serves instead of the picture.
    """
    if follows_pixel_table(model):
        want_w, want_h = pixel_size(aspect_ratio, image_size)
        if (width, height) != (want_w, want_h):
            return f"{width}x{height}, not the {want_w}x{want_h} of {aspect_ratio} {image_size}"
        return None
    num, den = (int(part) for part in aspect_ratio.split(":"))
    if abs((width / height) / (num / den) - 1) > _ASPECT_TOLERANCE:
        return f"{width}x{height} is not {aspect_ratio}"
    if max(width, height) < _MIN_LONG_SIDE:
        return f"{width}x{height} is smaller than any {image_size} answer"
    return None


def is_blank_text(text: str) -> bool:
    """True when no character of ``text`` would be visible.

    ``str.strip`` only removes whitespace, so a prompt of zero-width spaces, joiners, BOMs or
    soft hyphens passes it, is sent, and is paid for as an image of nothing in particular.
    """
    return all(
        ch.isspace() or ch in _INVISIBLE_CHARS or unicodedata.category(ch) in _INVISIBLE_CATEGORIES
        for ch in text
    )


class ReferenceImage(BaseModel):
    """An input image sent with the prompt (edits, style references): inline bytes, or a file
    the backend reads itself (``fileData``: an AI Studio Files API uri, a Vertex ``gs://``)."""

    model_config = ConfigDict(extra="forbid")

    mime_type: ReferenceMime
    data: bytes = Field(b"", repr=False)
    file_uri: str | None = None

    @model_validator(mode="after")
    def _bytes_or_file(self) -> ReferenceImage:
        if bool(self.data) == bool(self.file_uri):
            raise ValueError("a reference image is either inline data or a file_uri")
        return self


class ModelTurn(BaseModel):
    """What the model said around its image, as a multi-turn edit must send it back.

    Gemini 3 image models sign their answer (the image part, and the first text part) and
    validate the signatures when the turn comes back (google-image-apis.md §1.6): they are
    kept exactly as received, base64 text as on the wire.
    """

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    text_signature: str | None = Field(None, repr=False)
    image_signature: str | None = Field(None, repr=False)


class EditTurn(BaseModel):
    """One earlier exchange of an edit conversation: the instruction, and the model's answer
    (its image, as returned, and its signed words)."""

    model_config = ConfigDict(extra="forbid")

    instruction: str = Field(min_length=1)
    image: ReferenceImage
    answer: ModelTurn


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
    history: list[EditTurn] = Field(
        default_factory=list,
        description=(
            "Earlier exchanges of a multi-turn edit, oldest first: the first user turn carries "
            "the reference images, and ``prompt`` is the newest instruction."
        ),
    )
    seed: int | None = Field(
        None, ge=-(2**31), lt=2**31, description="generationConfig.seed: same seed, same image."
    )
    delivery: SyncDelivery = Field(
        "online", description="Service tier of the call: standard (online), flex or priority."
    )
    # Vertex-only
    provisioned_throughput: ProvisionedThroughput | None = Field(
        None, description="The Vertex pool asked for; None: no header (as spillover)."
    )
    output_mime_type: OutputMime | None = None
    output_quality: int | None = Field(None, ge=0, le=100)
    person_generation: PersonGeneration | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, v: str) -> str:
        if is_blank_text(v):
            raise ValueError("prompt is blank")
        return v

    def vertex_only_fields(self) -> list[str]:
        """Names of the Vertex-only options this request sets (for a clear AI Studio error)."""
        names = [
            "provisioned_throughput",
            "output_mime_type",
            "output_quality",
            "person_generation",
        ]
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
    text_signature: str | None = Field(
        None, repr=False, description="The first non-thought text part's thoughtSignature."
    )
    usage: Usage = Field(default_factory=Usage)
    service_tier: str | None = Field(
        None,
        description=(
            "The tier Google says served the call, as sent: x-gemini-service-tier or "
            "usageMetadata.serviceTier (AI Studio), usageMetadata.trafficType (Vertex)."
        ),
    )
    latency_s: float = 0.0
    attempts: int = 1

    def answer(self) -> ModelTurn:
        """The model's turn as the next edit step must send it back."""
        return ModelTurn(
            text=self.text,
            text_signature=self.text_signature,
            image_signature=self.thought_signature,
        )


class UpscaledImage(BaseModel):
    data: bytes = Field(repr=False)
    mime_type: str
    width: int
    height: int
    factor: int
    method: Literal["vertex", "local-lanczos"]
    model: str | None = None
