"""What a generate run is asked to do: the flow's one parameter, hence the UI's run form.

Every enumerated choice is a plain dropdown whose first value, ``from config``, keeps what the
config file says: the form then opens ready to submit, with no ``None`` toggle to discover.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bananaflow.expand import ImageJob

FROM_CONFIG = "from config"

Stage = Literal["from config", "dev", "prod"]
BackendChoice = Literal["from config", "aistudio", "vertex"]
SizeChoice = Literal["from config", "512", "1K", "2K", "4K"]
RatioChoice = Literal[
    "from config", "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
    "1:4", "4:1", "1:8", "8:1",
]  # fmt: skip
# The shipped presets (generate.quality_presets); a config's own presets are picked in the
# batch file's ``quality:`` or the CLI's --quality.
QualityChoice = Literal["from config", "draft", "standard", "final"]
FormatChoice = Literal["from config", "jpeg", "webp", "avif", "png"]
Switch = Literal["from config", "on", "off"]
DeliveryChoice = Literal["from config", "online", "flex", "priority", "batch"]

_CHOICES = (
    "stage",
    "backend",
    "delivery",
    "quality",
    "image_size",
    "aspect_ratio",
    "format",
    "upscale",
)


def _keep_field_order(schema: dict[str, Any]) -> None:
    """Number the fields as declared: a server on PostgreSQL stores the schema as JSONB, which
    reorders keys (shortest first), and the UI then sorts the form by each field's position."""
    for position, field in enumerate(schema.get("properties", {}).values()):
        field["position"] = position


class FormParameters(BaseModel):
    """A flow's one parameter, shown in the UI as a form in the order the fields are declared."""

    model_config = ConfigDict(json_schema_extra=_keep_field_order)


def chosen(value: str) -> str | None:
    """The value a choice overrides the config with; None keeps the config's."""
    return None if value == FROM_CONFIG else value


class GenerateParameters(FormParameters):
    """What to generate and where; every choice left at "from config" keeps the config's."""

    prompts: list[str] = Field(default_factory=list, description="Prompts to render as-is.")
    batch_file: str | None = Field(None, description="YAML, JSONL or CSV of prompt specs.")
    jobs: list[ImageJob] = Field(
        default_factory=list,
        description="Already expanded jobs (set by the scale-out parent and by promote).",
    )
    config: str = Field("local", description="local | dev | prod, or a path to a YAML config.")
    stage: Stage = Field(FROM_CONFIG, description="dev renders on AI Studio, prod on Vertex AI.")
    backend: BackendChoice = Field(
        FROM_CONFIG, description="Force one backend for every job (no fallback to the other)."
    )
    delivery: DeliveryChoice = Field(
        FROM_CONFIG,
        description=(
            "How images are bought, unless a prompt names its own: online (list price), flex "
            "(half price, slow, may fall back to online), priority (~1.8x, fastest), batch "
            "(half price, hours)."
        ),
    )
    quality: QualityChoice = Field(
        FROM_CONFIG,
        description="draft: Nano Banana 2 at 1K; standard: Nano Banana 2 at 2K; final: Nano "
        "Banana Pro at 2K on Vertex. A prompt's own quality, model or size still wins.",
    )
    references: list[str] = Field(
        default_factory=list,
        description="Reference images sent with every prompt above: paths, file:// or gs://.",
    )
    image_size: SizeChoice = Field(FROM_CONFIG, description="Output size of every job.")
    aspect_ratio: RatioChoice = Field(FROM_CONFIG, description="Aspect ratio of every job.")
    format: FormatChoice = Field(FROM_CONFIG, description="Published file format.")
    upscale: Switch = Field(FROM_CONFIG, description="Upscale masters before compressing.")
    output: str | None = Field(None, description="Storage URL, e.g. gs://bucket/path.")
    max_usd: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="Budget cap for this run, in USD."
    )

    @field_validator(*_CHOICES, mode="before")
    @classmethod
    def _none_is_from_config(cls, v: Any) -> Any:
        return FROM_CONFIG if v is None else v

    def overrides(self) -> dict[str, Any]:
        upscale = chosen(self.upscale)
        quality = chosen(self.quality)
        # A size or backend chosen for this run beats the run's own preset (``--quality final
        # --size 4K`` is a 4K final), so they are written into that preset for this run.
        preset: dict[str, Any] = {}
        if quality is not None:
            preset = {
                f"generate.quality_presets.{quality}.image_size": chosen(self.image_size),
                f"generate.quality_presets.{quality}.backend": chosen(self.backend),
            }
        return {
            "stage": chosen(self.stage),
            "generate.aspect_ratio": chosen(self.aspect_ratio),
            "generate.image_size": chosen(self.image_size),
            "generate.quality": quality,
            **preset,
            "storage.url": self.output,
            "budget.max_usd": self.max_usd,
            "upscale.enabled": None if upscale is None else upscale == "on",
            "compress.format": chosen(self.format),
        }

    def forced_backend(self) -> str | None:
        return chosen(self.backend)

    def forced_delivery(self) -> str | None:
        """The run's delivery override: below a prompt's own, above ``generate.delivery``."""
        return chosen(self.delivery)
