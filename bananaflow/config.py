"""Typed, layered configuration: ``configs/*.yaml`` < ``BANANAFLOW_*`` env vars < CLI flags.

Dev and prod differ only in data, so every knob a stage needs lives here. Layering is done by
hand (YAML, then env, then flags, deep-merged, validated once by pydantic with ``extra=forbid``)
rather than with pydantic-settings, because a bad value must be reported with *where it came
from* (the file, the env var or the flag) and pydantic-settings loses that.

Env overrides use ``BANANAFLOW_`` plus the dotted path with ``__`` between levels, e.g.
``BANANAFLOW_STAGE=prod`` or ``BANANAFLOW_BACKENDS__VERTEX__PROJECT=my-proj``. Credentials keep
Google's own variables: ``GEMINI_API_KEY``/``GOOGLE_API_KEY``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``GOOGLE_CLOUD_PROJECT``. Or they are kept in Prefect blocks, named here (``*_block``): the
flow reads those at run time and fills the ``SecretStr`` fields below; this module never talks to
Prefect.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bananaflow.configfiles import config_file
from bananaflow.errors import ConfigError
from bananaflow.generation import (
    ASPECT_RATIOS,
    REFERENCE_TYPES,
    STANDARD_RATIOS,
    AspectRatio,
    BackendName,
    Delivery,
    ImageSize,
    ProvisionedThroughput,
    ReferenceMime,
    SyncDelivery,
)
from bananaflow.yamlio import AliasLimitError, load_yaml

ENV_PREFIX = "BANANAFLOW_"


class _Model(BaseModel):
    """Strict base: unknown keys and non-finite numbers are errors.

    ``inf`` and ``nan`` pass every ``gt``/``ge`` bound (``nan`` compares false to everything, so
    a ``max_usd: nan`` budget never stops spending) and YAML spells them ``.inf``/``.nan``, env
    vars plain ``inf``; no setting here means anything by them.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


# Numbers that only make sense above zero (durations, sizes) or at/above zero (rates, prices).
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]


# --------------------------------------------------------------------------- backends


class RetrySettings(_Model):
    """Backoff for one image's generation (core policy, usable without Prefect)."""

    initial_delay_s: float = Field(1.0, gt=0)
    multiplier: float = Field(2.0, ge=1)
    max_delay_s: float = Field(60.0, gt=0)
    max_attempts: int = Field(6, ge=1, le=50)
    deadline_s: float = Field(600.0, gt=0, description="Overall time budget for one image.")
    delivery_deadline_s: dict[Delivery, Positive] = Field(
        default_factory=lambda: {"flex": 3600.0},
        description=(
            "deadline_s for one image bought by this delivery; flex answers take up to 15 min "
            "(AI Studio) or 30 min (Vertex), so its calls need more than the online budget."
        ),
    )
    jitter: bool = True


class TimeoutSettings(_Model):
    """httpx timeouts; the only timeouts that can cut a blocked socket read."""

    connect_s: float = Field(10.0, gt=0)
    read_s: dict[ImageSize, Positive] = Field(
        default_factory=lambda: {"1K": 90.0, "2K": 180.0, "4K": 180.0}
    )
    upscale_s: float = Field(180.0, gt=0)
    text_s: float = Field(60.0, gt=0)
    delivery_read_s: dict[Delivery, dict[BackendName, Positive]] = Field(
        default_factory=lambda: {"flex": {"aistudio": 900.0, "vertex": 1800.0}},
        description=(
            "Read timeout per delivery and backend, used when longer than read_s: Google asks "
            "for at least 15 min on AI Studio flex; Vertex flex runs up to 30 min."
        ),
    )

    def read_for(self, size: ImageSize) -> float:
        """A size the config does not list (512 in an older config) waits as long as the
        longest listed one rather than failing a paid request on a KeyError."""
        return self.read_s.get(size) or max(self.read_s.values(), default=90.0)


class AIStudioSettings(_Model):
    base_url: str = "https://generativelanguage.googleapis.com"
    api_version: Literal["v1beta", "v1"] = "v1beta"
    model: str = "gemini-3-pro-image"
    text_model: str = "gemini-2.5-flash"
    api_key: SecretStr | None = Field(
        None, description="Prefer GEMINI_API_KEY / GOOGLE_API_KEY over writing it here."
    )
    api_key_block: str | None = Field(
        None,
        description=(
            "Name of a Prefect Secret block holding the key; read at run time, it wins over "
            "api_key and GEMINI_API_KEY."
        ),
    )
    requests_per_minute: int = Field(60, ge=1)
    concurrency: int = Field(5, ge=1)


class VertexSettings(_Model):
    base_url: str | None = Field(
        None, description="None derives the Google host from location (global or regional)."
    )
    api_version: Literal["v1", "v1beta1"] = "v1"
    project: str | None = None
    location: str = "global"
    model: str = "gemini-3-pro-image"
    text_model: str = "gemini-2.5-flash"
    upscale_model: str = "imagen-4.0-upscale-preview"
    credentials_file: Path | None = Field(
        None, description="Service-account JSON; None uses Application Default Credentials."
    )
    credentials_block: str | None = Field(
        None,
        description=(
            "Name of a prefect-gcp GcpCredentials block; read at run time, it wins over "
            "credentials_file and fills project when that is empty."
        ),
    )
    credentials_info: SecretStr | None = Field(
        None,
        description=(
            "Service-account key JSON, filled from credentials_block at run time; prefer the "
            "block or credentials_file over writing it here."
        ),
    )
    requests_per_minute: int = Field(300, ge=1)
    concurrency: int = Field(20, ge=1)
    provisioned_throughput: ProvisionedThroughput = Field(
        "spillover",
        description=(
            "Which pool serves online calls: spillover (no header: Provisioned Throughput "
            "while the order lasts, then PayGo), dedicated (PT only; over the order Vertex "
            "answers 429) or shared (PayGo only, skip PT). AI Studio has no PT."
        ),
    )
    provisioned_throughput_fallback: Literal["none", "shared"] = Field(
        "none",
        description=(
            "What a dedicated call over the PT order does: none retries it on PT and then "
            "ends the job with the reason; shared buys it at once from PayGo, recorded."
        ),
    )
    provisioned_throughput_price: NonNegative = Field(
        1.0,
        description=(
            "Multiplier on the online list price for an image Vertex reports as served from "
            "PT (trafficType PROVISIONED_THROUGHPUT). PT is prepaid, so its marginal cost "
            "is 0; the default keeps the list price, so a budget is never too low."
        ),
    )
    reference_staging: str | None = Field(
        None,
        pattern=r"^gs://[^/]+",
        description=(
            "gs:// prefix local references above references.upload_above_bytes are copied to "
            "once (named by content hash) and sent from as fileData; None sends them inline."
        ),
    )

    def endpoint(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        if self.location == "global":
            return "https://aiplatform.googleapis.com"
        return f"https://{self.location}-aiplatform.googleapis.com"


class BackendsSettings(_Model):
    aistudio: AIStudioSettings = Field(default_factory=AIStudioSettings)
    vertex: VertexSettings = Field(default_factory=VertexSettings)


# --------------------------------------------------------------------------- emulator


class BackendProfile(_Model):
    """How one emulated platform behaves (../shared/reference/platform-measurements.md).

    All durations are real seconds before ``EmulatorSettings.time_scale`` is applied.
    """

    latency_s: dict[ImageSize, tuple[NonNegative, NonNegative]]
    hang_rate: float = Field(0.0, ge=0, le=1)
    hang_s: float = Field(600.0, ge=0)
    error_rates: dict[int, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    fault_rates: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict,
        description=(
            "Seeded random rate per fault class (the names of forced faults: quota, "
            "quota_daily, quota_billing, 500, 503, 504, hang, reset, truncated_json, "
            "malformed_json, bad_base64, lying_mime, no_image, image_safety, "
            "no_image_refusal, token_expired, token_error); token_* rates are read from the "
            "vertex profile."
        ),
    )
    requests_per_minute: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=1)
    requests_per_day: int | None = Field(None, ge=1)
    flex_latency_factor: float = Field(
        3.0, ge=1, description="Flex calls take this many times the latency (sheddable, slow)."
    )
    flex_shed_rate: float = Field(
        0.0, ge=0, le=1, description="Seeded share of flex calls shed with flex_shed_status."
    )
    flex_shed_status: Literal[429, 503] = Field(
        503, description="How a shed flex call is answered (Google's real answer is unverified)."
    )
    priority_downgrade_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Seeded share of priority calls served and billed as standard instead.",
    )
    provisioned_images_per_min: int = Field(
        0,
        ge=0,
        description=(
            "Vertex only: the Provisioned Throughput order, in images per emulated minute (0: "
            "none bought). Calls without a request-type header are served from it while it "
            "lasts, then spill over to on-demand; 'dedicated' calls over it get the PT 429."
        ),
    )
    image_format: Literal["png", "jpeg"] = "png"
    jpeg_quality: int = Field(90, ge=1, le=100)
    detail: float = Field(
        8.0, ge=0, description="Grain strength; more grain means larger files, as measured."
    )


def _aistudio_profile() -> BackendProfile:
    return BackendProfile(
        latency_s={"1K": (2.0, 4.0), "2K": (4.0, 8.0), "4K": (8.0, 15.0)},
        hang_rate=0.005,
        error_rates={500: 0.002, 503: 0.005},
        requests_per_minute=60,
        concurrency=5,
        requests_per_day=1500,
        image_format="jpeg",
        jpeg_quality=92,
        detail=6.0,
    )


def _vertex_profile() -> BackendProfile:
    return BackendProfile(
        latency_s={"1K": (5.0, 10.0), "2K": (10.0, 20.0), "4K": (20.0, 40.0)},
        hang_rate=0.05,
        error_rates={500: 0.005, 503: 0.01},
        requests_per_minute=300,
        concurrency=20,
        requests_per_day=10_000,
        image_format="png",
        detail=10.0,
    )


class RefusalSettings(_Model):
    """Prompt words (case-insensitive substrings) and rates that make the emulator refuse."""

    image_safety_words: list[str] = Field(default_factory=lambda: ["forbidden"])
    no_image_words: list[str] = Field(default_factory=lambda: ["no-image-please"])
    blocked_prompt_words: list[str] = Field(default_factory=lambda: ["blocked-prompt"])
    image_safety_rate: float = Field(0.0, ge=0, le=1)
    no_image_rate: float = Field(0.0, ge=0, le=1)


class EmulatorBatchSettings(_Model):
    """How the emulated provider batches age (emulated seconds, scaled by ``time_scale``)."""

    pending_s: float = Field(30.0, ge=0, description="A new batch waits this long, then runs.")
    running_s: float = Field(60.0, ge=0, description="Then runs this long, then ends.")
    max_concurrent_batches: int | None = Field(
        100,
        ge=1,
        description="AI Studio refuses a create with 429 while this many batches are unfinished.",
    )
    vertex_queued_s: float = Field(
        0.0, ge=0, description="A new Vertex job first sits JOB_STATE_QUEUED this long."
    )
    vertex_max_running_jobs: int = Field(
        1000,
        ge=1,
        description=(
            "Vertex jobs past this many unfinished ones stay JOB_STATE_QUEUED until one ends "
            "(Google documents ~8 concurrent Gemini jobs, the rest queued)."
        ),
    )
    vertex_cancelling_s: float = Field(
        5.0, ge=0, description="A cancelled Vertex job is JOB_STATE_CANCELLING this long."
    )
    expire_after_s: float = Field(172_800.0, gt=0, description="Pending/running past it: EXPIRED.")
    file_ttl_s: float = Field(172_800.0, gt=0, description="Files API objects live 48 h.")
    shuffle_output: bool = Field(True, description="Answer lines in an order unlike the input.")
    max_inline_mb: float = Field(20.0, gt=0, description="Largest inline batch create body.")
    state_dir: str | None = Field(
        None, description="Keep files and batches here so they outlive the process (embedded)."
    )
    gcs_endpoint: str | None = Field(
        None, description="GCS JSON API the emulated Vertex batches read and write (tests)."
    )


class EmulatorSettings(_Model):
    """The local stand-in for both Google APIs. ``embedded`` makes bananaflow start it itself."""

    embedded: bool = False
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port.")
    time_scale: float = Field(1.0, ge=0, description="Multiplies every delay; 0.01 for tests.")
    seed: int = 0
    api_keys: list[str] = Field(default_factory=lambda: ["emulator-local-key"])
    project: str = "emulator-project"
    profiles: dict[BackendName, BackendProfile] = Field(
        default_factory=lambda: {"aistudio": _aistudio_profile(), "vertex": _vertex_profile()}
    )
    refusals: RefusalSettings = Field(default_factory=RefusalSettings)
    image_cache_size: int = Field(64, ge=0, description="Rendered images kept for reuse.")
    batch: EmulatorBatchSettings = Field(default_factory=EmulatorBatchSettings)


# --------------------------------------------------------------------------- chain steps


class ExpandSettings(_Model):
    presets: dict[str, str] = Field(
        default_factory=dict, description="Style preset name -> text appended to the prompt."
    )
    rewrite: bool = Field(False, description="Rewrite prompts with the backend's text model.")


class RouteSettings(_Model):
    stages: dict[Literal["dev", "prod"], BackendName] = Field(
        default_factory=lambda: {"dev": "aistudio", "prod": "vertex"}
    )
    override: BackendName | None = Field(None, description="Force one backend for every job.")
    fallback: list[BackendName] = Field(
        default_factory=list, description="Tried in order, only after retryable failures."
    )
    delivery_fallback: dict[Delivery, SyncDelivery] = Field(
        default_factory=lambda: {"flex": "online"},
        description=(
            "What a shed call is bought as instead, on the same backend (flex → online at the "
            "standard price); {} waits and retries the shed delivery instead."
        ),
    )
    shed_statuses: list[int] = Field(
        default_factory=lambda: [429, 503],
        description=(
            "HTTP statuses that mean Google shed a flex call (an assumption: the real error "
            "is undocumented, see batch-and-model-tiers.md §5.1)."
        ),
    )


class ModelTier(_Model):
    """One image model as bananaflow may use it (batch-and-model-tiers.md §4.1).

    Keyed in ``Settings.models`` by the id jobs and prices use; ``ids`` names it per backend
    when a platform spells it differently (ids churn: config, never code). Everything here is
    checked before a request is sent, so an impossible job costs nothing.
    """

    ids: dict[BackendName, str] = Field(
        default_factory=dict, description="Wire id per backend; missing = the catalogue key."
    )
    sizes: list[ImageSize] = Field(min_length=1)
    aspect_ratios: list[AspectRatio] = Field(min_length=1)
    max_reference_images: int = Field(14, ge=0)
    max_reference_mb: float = Field(
        7.0, gt=0, description="Largest inline reference image (Vertex card: 7 MB)."
    )
    reference_types: list[ReferenceMime] = Field(
        default_factory=lambda: list(REFERENCE_TYPES),  # type: ignore[arg-type]
        description="Reference MIME types taken (read from the bytes, not the file name).",
    )
    edits: bool = Field(
        True,
        description=(
            "Takes multi-turn edits (earlier answers sent back with their thought signatures); "
            "false refuses edit chains for this model before anything is paid."
        ),
    )
    fallback: list[str] = Field(
        default_factory=list,
        description=(
            "Models tried in order when this one is overloaded (503) or over quota (429), "
            "where they allow the job's size, ratio and references; empty: never."
        ),
    )


def _default_models() -> dict[str, ModelTier]:
    standard = list(STANDARD_RATIOS)
    return {
        "gemini-3-pro-image": ModelTier(sizes=["1K", "2K", "4K"], aspect_ratios=standard),
        "gemini-3.1-flash-image": ModelTier(
            sizes=["512", "1K", "2K", "4K"], aspect_ratios=list(ASPECT_RATIOS)
        ),
        # The Gemini API page lists the 10 standard ratios, the Vertex card all 14 (§4.1): the
        # narrower list until one is verified.
        "gemini-3.1-flash-lite-image": ModelTier(sizes=["1K"], aspect_ratios=standard),
    }


def _over_shipped(given: Any, shipped: Mapping[str, BaseModel]) -> Any:
    """``given`` (name -> fields) merged field by field over the shipped entries."""
    if not isinstance(given, Mapping):
        return given
    out: dict[str, Any] = {k: m.model_dump(exclude_unset=True) for k, m in shipped.items()}
    for name, fields in given.items():
        base = out.get(name)
        out[name] = {**base, **fields} if base and isinstance(fields, Mapping) else fields
    return out


class QualityPreset(_Model):
    """A named intent (draft, standard, final): each field set here replaces the config's
    default for the jobs that choose it; a spec's own fields still win."""

    model: str | None = None
    image_size: ImageSize | None = None
    backend: BackendName | None = None
    delivery: Delivery | None = Field(
        None,
        description=(
            "How its images are bought; a prompt's own delivery and the run's --delivery win, "
            "generate.delivery applies when unset."
        ),
    )
    description: str = ""


def _default_quality_presets() -> dict[str, QualityPreset]:
    return {
        "draft": QualityPreset(
            model="gemini-3.1-flash-image",
            image_size="1K",
            description="Nano Banana 2 at 1K: cheap looks at an idea.",
        ),
        "standard": QualityPreset(
            model="gemini-3.1-flash-image",
            image_size="2K",
            description="Nano Banana 2 at 2K: good enough to publish most images.",
        ),
        "final": QualityPreset(
            model="gemini-3-pro-image",
            image_size="2K",
            backend="vertex",
            description="Nano Banana Pro at 2K on Vertex: the production image.",
        ),
    }


class GenerateSettings(_Model):
    aspect_ratio: AspectRatio = "1:1"
    image_size: ImageSize = "1K"
    quality: str | None = Field(
        None, description="Quality preset for jobs that name none; None: the plain defaults."
    )
    quality_presets: dict[str, QualityPreset] = Field(
        default_factory=_default_quality_presets,
        description="Preset name -> model, size and backend it stands for; merged field by "
        "field over the shipped draft, standard and final.",
    )

    @field_validator("quality_presets", mode="before")
    @classmethod
    def _over_shipped_presets(cls, v: Any) -> Any:
        # A config (or a run's --size) changing one field of `final` keeps the rest of it.
        return _over_shipped(v, _default_quality_presets())

    delivery: Delivery = Field(
        "online", description="How images are bought: online, flex, priority or batch."
    )
    retry: RetrySettings = Field(default_factory=RetrySettings)
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    concurrency: int | None = Field(
        None, ge=1, description="Jobs in flight per run; None uses the backend's concurrency."
    )
    task_runs: Literal["auto", "per_step", "grouped"] = Field(
        "auto",
        description=(
            "Prefect task runs: per_step (one per chain step of each job), grouped (one per "
            "jobs_per_task_run jobs, running their steps in order; step timings go to the "
            "manifest), auto (per_step up to per_step_max_jobs jobs, grouped above)."
        ),
    )
    per_step_max_jobs: int = Field(
        50, ge=0, description="Largest run that gets per-step task runs when task_runs is auto."
    )
    jobs_per_task_run: int = Field(
        25,
        ge=1,
        description=(
            "Grouped runs: jobs sharing one task run. 1 gives a task run per job in the UI; "
            "25 costs the Prefect server about a quarter of that per image. Every job keeps "
            "its row in the results table and manifest either way."
        ),
    )
    summary_rows: int = Field(
        500,
        ge=0,
        description=(
            "Runs up to this many jobs keep every row in memory for the run's summary (the "
            "CLI's table, the flow result); larger ones keep counters, every job that did not "
            "upload and the first uploaded ones, so memory stays flat. The results table and "
            "the manifest list every job either way."
        ),
    )
    max_response_mb: float = Field(
        96.0,
        gt=0,
        description=(
            "Largest answer body read, in MiB after decompression; bigger ones are cut off. "
            "A 4K Vertex PNG is 18-30 MB, ~40 MB as base64 JSON."
        ),
    )


class UpscaleSettings(_Model):
    enabled: bool = False
    factor: Literal[2, 4] = 2
    method: Literal["auto", "vertex", "local"] = "auto"


class CompressSettings(_Model):
    format: Literal["jpeg", "webp", "avif", "png"] = "webp"
    quality: int = Field(85, ge=1, le=100)
    max_bytes: int | None = Field(None, gt=0, description="Byte budget; bisects the quality.")
    strip_metadata: bool = True
    digital_source_type: bool = Field(True, description="Write IPTC trainedAlgorithmicMedia.")
    thumbnails: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=list, description="Longest-side sizes in px."
    )
    provider_jpeg: bool = Field(
        True,
        description=(
            "JPEG on Vertex: ask Google for the JPEG at this quality (imageOutputOptions) and "
            "publish it without re-encoding; false keeps a lossless PNG master."
        ),
    )


class UploadSettings(_Model):
    prefix: str = "images"
    name_template: str = "{prefix}/{sha[:2]}/{sha}.{ext}"
    cache_control: str = "public, max-age=31536000, immutable"
    include_master: bool = True


class StorageSettings(_Model):
    url: str = Field("file://./output", description="Any fsspec URL: file://, gs://, memory://")
    options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec storage options, e.g. gcsfs endpoint_url."
    )
    credentials_block: str | None = Field(
        None,
        description=(
            "Name of a prefect-gcp GcpCredentials block for gs:// storage; read at run time, "
            "it wins over options.token."
        ),
    )
    credentials_info: SecretStr | None = Field(
        None,
        description=(
            "Service-account key JSON for gs://, filled from credentials_block at run time "
            "and handed to gcsfs as its token."
        ),
    )


class ReferencesSettings(_Model):
    """How reference images travel: inline bytes per request, or uploaded once and named."""

    upload_above_bytes: int = Field(
        1024 * 1024,
        ge=0,
        description=(
            "References larger than this are uploaded once and reused by every job (AI Studio: "
            "the Files API; Vertex: backends.vertex.reference_staging) instead of inlined."
        ),
    )


class LimitsSettings(_Model):
    """Where per-backend quotas are enforced.

    ``local`` holds one process inside the quota; ``global`` uses Prefect global concurrency
    limits (strict) so every worker of a deployment shares one quota. ``bananaflow setup``
    creates them.
    """

    mode: Literal["local", "global"] = "local"
    name_prefix: str = "bananaflow"


class BudgetSettings(_Model):
    max_usd: float | None = Field(None, ge=0)


def _default_delivery_prices() -> dict[Delivery, float]:
    # Multipliers on the list (online) price: flex and batch are half price, priority +75-100 %.
    return {"online": 1.0, "flex": 0.5, "priority": 1.8, "batch": 0.5}


def _default_prices() -> dict[str, dict[ImageSize, float]]:
    # Online list prices per image, batch-and-model-tiers.md §4.1 (Vertex reported equal).
    pro: dict[ImageSize, float] = {"1K": 0.134, "2K": 0.134, "4K": 0.24}
    return {
        "gemini-3-pro-image": pro,
        "gemini-3-pro-image-preview": dict(pro),
        "gemini-3.1-flash-image": {"512": 0.045, "1K": 0.067, "2K": 0.101, "4K": 0.151},
        "gemini-3.1-flash-lite-image": {"1K": 0.0336},
    }


class BatchSettings(_Model):
    """Batch delivery: how the provider batch is sent, watched and given up on."""

    poll_s: float = Field(30.0, gt=0, description="First wait between two status reads.")
    max_poll_s: float = Field(300.0, gt=0, description="Waits grow to at most this.")
    max_wait_s: float = Field(
        90_000.0, gt=0, description="Collect gives up (cancels) a batch older than this."
    )
    wait: bool = Field(
        True,
        description=(
            "Poll in the submitting run until the batch ends (the CLI). False: submit, leave "
            "the jobs pending_batch and let the collector deployment finish them."
        ),
    )
    inline_max_jobs: int = Field(
        0, ge=0, description="Send up to this many jobs inline instead of as a file (0: never)."
    )
    vertex_staging: str | None = Field(
        None, description="gs:// folder for Vertex batch JSONL; None: batch/ in the store."
    )
    fallback: Literal["none", "online"] = Field(
        "none",
        description="Jobs whose batch line failed, expired or was cancelled: end or go online.",
    )
    create_retry: RetrySettings = Field(
        default_factory=lambda: RetrySettings(
            initial_delay_s=60.0, max_delay_s=900.0, max_attempts=20, deadline_s=6 * 3600.0
        ),
        description=(
            "Backoff for a batch create refused with 429 (too many batch jobs waiting at "
            "Google); only a 429 is asked again, create being non-idempotent."
        ),
    )


class Settings(_Model):
    stage: Literal["dev", "prod"] = "dev"
    backends: BackendsSettings = Field(default_factory=BackendsSettings)
    emulator: EmulatorSettings = Field(default_factory=EmulatorSettings)
    expand: ExpandSettings = Field(default_factory=ExpandSettings)
    route: RouteSettings = Field(default_factory=RouteSettings)
    generate: GenerateSettings = Field(default_factory=GenerateSettings)
    upscale: UpscaleSettings = Field(default_factory=UpscaleSettings)
    compress: CompressSettings = Field(default_factory=CompressSettings)
    upload: UploadSettings = Field(default_factory=UploadSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    references: ReferencesSettings = Field(default_factory=ReferencesSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    models: dict[str, ModelTier] = Field(
        default_factory=_default_models,
        description="Image models jobs may use: ids, sizes, ratios, reference limits, "
        "fallback; merged field by field over the shipped three.",
    )
    batch: BatchSettings = Field(default_factory=BatchSettings)
    prices: dict[str, dict[ImageSize, NonNegative]] = Field(default_factory=_default_prices)
    delivery_prices: dict[Delivery, NonNegative] = Field(
        default_factory=_default_delivery_prices,
        description="Multiplier on the online price per delivery (flex/batch 0.5).",
    )

    @model_validator(mode="after")
    def _fallback_not_primary_only(self) -> Settings:
        if len(set(self.route.fallback)) != len(self.route.fallback):
            raise ValueError("route.fallback lists a backend twice")
        for shed, instead in self.route.delivery_fallback.items():
            if shed == instead:
                raise ValueError(f"route.delivery_fallback.{shed} falls back to itself")
        return self

    @field_validator("models", mode="before")
    @classmethod
    def _over_shipped_models(cls, v: Any) -> Any:
        # `models: {gemini-3-pro-image: {fallback: [...]}}` turns one thing on, not the rest off.
        return _over_shipped(v, _default_models())

    @model_validator(mode="after")
    def _tiers_name_known_models(self) -> Settings:
        # A typo in a fallback or a preset would otherwise surface only when a job needs it.
        for name, tier in self.models.items():
            for other in tier.fallback:
                if other not in self.models or other == name:
                    raise ValueError(
                        f"models.{name}.fallback names {other!r}, which is not another model "
                        f"under models ({', '.join(self.models)})"
                    )
        presets = self.generate.quality_presets
        if self.generate.quality is not None and self.generate.quality not in presets:
            raise ValueError(
                f"generate.quality {self.generate.quality!r} is not a preset under "
                f"generate.quality_presets ({', '.join(presets) or 'none'})"
            )
        return self


# --------------------------------------------------------------------------- loading


def _parse_scalar(text: str) -> Any:
    """Env and flag values are YAML scalars, so ``0.5``, ``true`` and ``[a, b]`` keep types."""
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    node[parts[-1]] = value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def resolve_config_path(config: str | Path | None) -> Path:
    """A bare name like ``local`` means ``configs/local.yaml`` here, else the shipped one."""
    if config is None:
        config = os.environ.get("BANANAFLOW_CONFIG", "local")
    p = Path(config)
    if p.suffix not in (".yaml", ".yml") and not p.exists():
        p = config_file(f"{config}.yaml")
    return p


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "config", f"file {path} does not exist", fix="pass --config local|dev|prod or a path"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("config", f"cannot read {path}: {e.__class__.__name__}") from None
    try:
        data = load_yaml(text)
    except AliasLimitError as e:
        line = f" at line {e.problem_mark.line + 1}" if e.problem_mark else ""
        raise ConfigError("config", f"{path}{line}: {e.problem}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(
            "config", f"{path} is not valid YAML{where}", fix="fix the syntax"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path} must hold a mapping at the top level")
    return data


# Variables of ours that are not settings: the config name, the entry point's stand-in, and
# what the test suite passes to its own fixtures.
_NOT_SETTINGS = (
    "BANANAFLOW_CONFIG",
    "BANANAFLOW_STAND_IN",
    "BANANAFLOW_TEST_POSTGRES_URL",
    "BANANAFLOW_SCREENSHOTS",
)


def _env_layer(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    tree: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
            continue
        dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
        _set_dotted(tree, dotted, _parse_scalar(raw))
        sources[dotted] = f"env {name}"
    return tree, sources


def _credential_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Google's own variables fill credentials the YAML leaves empty."""
    tree: dict[str, Any] = {}
    key = environ.get("GEMINI_API_KEY") or environ.get("GOOGLE_API_KEY")
    if key:
        _set_dotted(tree, "backends.aistudio.api_key", key)
    project = environ.get("GOOGLE_CLOUD_PROJECT") or environ.get("GCLOUD_PROJECT")
    if project:
        _set_dotted(tree, "backends.vertex.project", project)
    return tree


def _source_for(loc: tuple[Any, ...], sources: dict[str, str], default: str) -> str:
    dotted = ".".join(str(p) for p in loc)
    best = default
    for key, src in sources.items():
        if dotted == key or dotted.startswith(key + "."):
            best = src
    return best


_BOUND_WORDS = {
    "greater_than": ("above", "gt"),
    "greater_than_equal": ("of at least", "ge"),
    "less_than": ("below", "lt"),
    "less_than_equal": ("of at most", "le"),
}


def _fix_for(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        loc = tuple(err.get("loc", ()))
        if loc[:2] == ("backends", "aistudio") and str(loc[-1]).startswith("provisioned_"):
            return (
                "AI Studio has no Provisioned Throughput: remove it (Vertex's is "
                f"backends.vertex.{loc[-1]})"
            )
        return "remove it or check its spelling against configs/local.yaml"
    if kind == "literal_error":
        return f"use one of {err.get('ctx', {}).get('expected', 'the allowed values')}"
    if kind == "missing":
        return "add it"
    if kind == "finite_number":
        return "use a finite number (inf and nan mean nothing here)"
    if kind in _BOUND_WORDS:
        words, key = _BOUND_WORDS[kind]
        bound = (err.get("ctx") or {}).get(key)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"use a number {words} {bound}"
    return "correct the value"


def load_settings(
    config: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load one config file, apply env and flag overrides, and validate the result.

    ``overrides`` maps dotted paths (``"generate.image_size"``) to values, as CLI flags do.
    """
    environ = os.environ if environ is None else environ
    path = resolve_config_path(config)
    data = _read_yaml(path)
    sources: dict[str, str] = {}
    data = _merge(_credential_env(environ), data)
    env_tree, env_sources = _env_layer(environ)
    data = _merge(data, env_tree)
    sources.update(env_sources)
    flag_tree: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        _set_dotted(flag_tree, dotted, value)
        sources[dotted] = f"flag --{dotted.split('.')[-1].replace('_', '-')}"
    data = _merge(data, flag_tree)
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        loc = tuple(first["loc"])
        field = ".".join(str(p) for p in loc) or "config"
        raise ConfigError(
            field,
            first["msg"].rstrip("."),
            source=_source_for(loc, sources, str(path)),
            fix=_fix_for(first),
        ) from None
