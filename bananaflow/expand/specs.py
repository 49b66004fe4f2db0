"""What a user writes (a prompt spec) and what the pipeline renders (an image job).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from bananaflow.generation import AspectRatio, BackendName, Delivery, ImageSize, is_blank_text
from bananaflow.records import EditStep, ReferenceRef

MAX_PROMPT_CHARS = 30_000  # the API's limit; ImageRequest enforces the same bound
MAX_VARIANTS = 16
# Each step sends every earlier image back (a 2K step is megabytes per turn): a longer chain
# is better split, its next chain starting from this one's output ({run, job}).
MAX_EDIT_STEPS = 8
LIST_FIELDS = ("presets", "aspect_ratios", "image_sizes", "references", "edits")


class RunOutput(BaseModel):
    """A reference that is the image an earlier run made: job ``job`` of run ``run``, read from
    this config's storage (a job id or a unique prefix of at least 6 characters)."""

    model_config = ConfigDict(extra="forbid")

    run: str = Field(min_length=1)
    job: str = Field(min_length=1)

    def __str__(self) -> str:
        return f"run {self.run} job {self.job}"


class PromptSpec(BaseModel):
    """What a user writes: one prompt plus the matrix it should be rendered over.

    Only structural checks live here (so constructing a spec never needs the config); checks
    that need settings or produce a prompt (presets, templates, length) happen in ``expand`` and
    are reported as ``InputError``.
    """

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    text: str | None = None
    template: str | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    presets: list[str] = Field(default_factory=list)
    aspect_ratios: list[AspectRatio] | None = Field(None, min_length=1)
    image_sizes: list[ImageSize] | None = Field(None, min_length=1)
    variants: int = Field(1, ge=1, le=MAX_VARIANTS)
    backend: BackendName | None = None
    model: str | None = None
    quality: str | None = None
    references: list[str | RunOutput] = Field(
        default_factory=list,
        description="Images sent with the prompt: paths, file:// or gs:// URLs, {run, job}.",
    )
    delivery: Delivery | None = Field(
        None, description="How to buy these images; None takes the run's or the config's."
    )
    start_image: str | RunOutput | None = Field(
        None, description="An edit chain's start image: a path, file:// or gs:// URL, {run, job}."
    )
    edits: list[str] | None = Field(
        None,
        max_length=MAX_EDIT_STEPS,
        description="Edit instructions applied turn by turn to start_image, one image per step.",
    )

    @field_validator(*LIST_FIELDS, mode="before")
    @classmethod
    def _single_value_is_a_list(cls, v: Any) -> Any:
        # `presets: catalogue` in YAML is an obvious intent; refusing it would only annoy.
        return [v] if isinstance(v, str | Mapping) else v

    @field_validator("variables", mode="before")
    @classmethod
    def _scalars_are_text(cls, v: Any) -> Any:
        # YAML turns `count: 3` into an int; a template only ever substitutes text.
        if not isinstance(v, Mapping):
            return v
        out: dict[Any, Any] = {}
        for key, value in v.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, int | float):
                value = str(value)
            out[key] = value
        return out

    @field_validator("edits")
    @classmethod
    def _instructions_not_blank(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("is an empty list; an edit chain needs at least one instruction")
        for i, instruction in enumerate(v):
            if is_blank_text(instruction):
                raise ValueError(f"instruction {i + 1} is blank")
        return [instruction.strip() for instruction in v]

    @model_validator(mode="after")
    def _exactly_one_source(self) -> PromptSpec:
        if self.edits is not None or self.start_image is not None:
            return self._an_edit_chain()
        if self.text is not None and self.template is not None:
            raise ValueError("both text and template are set; give exactly one")
        if self.text is None and self.template is None:
            raise ValueError("neither text nor template is set; give exactly one")
        return self

    def _an_edit_chain(self) -> PromptSpec:
        # "<field> <problem>; <fix>": the batch reader turns it into one line naming the field.
        if self.edits is None:
            raise ValueError("edits missing: start_image is set; list the edit instructions")
        if self.start_image is None:
            raise ValueError(
                "start_image missing: edits need one; add start_image: <path, URL or {run, job}>"
            )
        if self.text is not None or self.template is not None:
            raise ValueError(
                "edits and text/template both set: an edit chain's prompts are its edits; "
                "remove text/template"
            )
        if self.presets:
            raise ValueError(
                "presets not appended to edit instructions; remove presets from the edit chain"
            )
        return self


class ImageJob(BaseModel):
    """One image to render: fully resolved, so nothing downstream needs the spec or the config."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    spec_id: str
    prompt: str
    original_prompt: str
    aspect_ratio: AspectRatio
    image_size: ImageSize
    variant: int = 0
    presets: list[str] = Field(default_factory=list)
    backend: BackendName | None = None
    model: str | None = None
    delivery: Delivery | None = Field(
        None, description="The spec's delivery, if it named one; not part of the job id."
    )
    preset_delivery: Delivery | None = Field(
        None,
        description=(
            "Its quality preset's delivery: below the run's --delivery, above generate.delivery; "
            "not part of the job id."
        ),
    )
    rewritten: bool = False
    quality: str | None = None
    references: list[ReferenceRef] = Field(default_factory=list)
    edit: EditStep | None = Field(
        None, description="Set on a step of an edit chain; ``references[0]`` is its start image."
    )

    @property
    def seed(self) -> int:
        """The job's seed, from its id: each variant differs, and a re-render reproduces it."""
        return int(self.job_id[:8], 16) & 0x7FFFFFFF
