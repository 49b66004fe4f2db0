"""Typed, layered configuration: ``configs/*.yaml`` < ``BANANAFLOW_*`` env vars < CLI flags.

Dev and prod differ only in data, so every knob a stage needs lives here. Layering is done by
hand (YAML, then env, then flags, deep-merged, validated once by pydantic with ``extra=forbid``)
rather than with pydantic-settings, because a bad value must be reported with *where it came
from* (the file, the env var or the flag) and pydantic-settings loses that.

Env overrides use ``BANANAFLOW_`` plus the dotted path with ``__`` between levels, e.g.
``BANANAFLOW_STAGE=prod`` or ``BANANAFLOW_BACKENDS__VERTEX__PROJECT=my-proj``. Credentials keep
Google's own variables: ``GEMINI_API_KEY``/``GOOGLE_API_KEY``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``GOOGLE_CLOUD_PROJECT``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from bananaflow.configfiles import config_file
from bananaflow.errors import ConfigError
from bananaflow.generation import AspectRatio, BackendName, Delivery, ImageSize
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
    jitter: bool = True


class TimeoutSettings(_Model):
    """httpx timeouts; the only timeouts that can cut a blocked socket read."""

    connect_s: float = Field(10.0, gt=0)
    read_s: dict[ImageSize, Positive] = Field(
        default_factory=lambda: {"1K": 90.0, "2K": 180.0, "4K": 180.0}
    )
    upscale_s: float = Field(180.0, gt=0)
    text_s: float = Field(60.0, gt=0)


class AIStudioSettings(_Model):
    base_url: str = "https://generativelanguage.googleapis.com"
    api_version: Literal["v1beta", "v1"] = "v1beta"
    model: str = "gemini-3-pro-image"
    text_model: str = "gemini-2.5-flash"
    api_key: SecretStr | None = Field(
        None, description="Prefer GEMINI_API_KEY / GOOGLE_API_KEY over writing it here."
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
    requests_per_minute: int = Field(300, ge=1)
    concurrency: int = Field(20, ge=1)

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


class GenerateSettings(_Model):
    aspect_ratio: AspectRatio = "1:1"
    image_size: ImageSize = "1K"
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
    pro = {"1K": 0.134, "2K": 0.134, "4K": 0.24}
    return {"gemini-3-pro-image": pro, "gemini-3-pro-image-preview": dict(pro)}


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
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    prices: dict[str, dict[ImageSize, NonNegative]] = Field(default_factory=_default_prices)
    delivery_prices: dict[Delivery, NonNegative] = Field(
        default_factory=_default_delivery_prices,
        description="Multiplier on the online price per delivery (flex/batch 0.5).",
    )

    @model_validator(mode="after")
    def _fallback_not_primary_only(self) -> Settings:
        if len(set(self.route.fallback)) != len(self.route.fallback):
            raise ValueError("route.fallback lists a backend twice")
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
