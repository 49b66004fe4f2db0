"""Model tiers: what each image model may be asked, checked per job before a cent is spent,
and which other model may answer when it is overloaded.

The catalogue is config (``Settings.models``): Google's ids, sizes and limits churn, and a team
pins what it has verified. A job is checked against the model its route will ask, on every
backend of the route, so a 4K Lite job or a 1:8 Pro job is one line at plan time (exit 2, no
request) rather than a 400 per image after the batch started.

Model fallback is separate from backend fallback (``routing``): a backend fallback keeps the
image and changes the platform; a model fallback changes the image, so it is off unless the
config lists it per model, it only takes a model that allows the job as it is (same size,
ratio and references), and the manifest says why it happened.
"""

from __future__ import annotations

from bananaflow.config import ModelTier, Settings
from bananaflow.errors import InputError, QuotaExceeded, Unavailable
from bananaflow.expand import ImageJob
from bananaflow.generation import BackendName
from bananaflow.routing import RouteDecision

# "Overloaded" or "over quota right now": the failures another model may absorb. Timeouts and
# malformed answers are the platform's trouble, which backend fallback handles.
_MODEL_FALLBACK_ERRORS = (QuotaExceeded, Unavailable)
_MB = 1024 * 1024


def model_for(job: ImageJob, backend: BackendName, settings: Settings) -> str:
    """The model a job asks on ``backend``: its own (spec or quality preset), else the
    backend's configured one. Catalogue key, as prices and ledger keys use it."""
    cfg = settings.backends.aistudio if backend == "aistudio" else settings.backends.vertex
    return job.model or cfg.model


def model_tier(settings: Settings, model: str) -> ModelTier | None:
    """The catalogue entry of ``model`` (its key, or a backend's id for it)."""
    name = model.rsplit("/", 1)[-1]
    tier = settings.models.get(name)
    if tier is not None:
        return tier
    return next((t for t in settings.models.values() if name in t.ids.values()), None)


def wire_model(settings: Settings, model: str, backend: BackendName) -> str:
    """The id ``backend`` knows ``model`` by (the catalogue key unless ``ids`` says else)."""
    tier = settings.models.get(model)
    return tier.ids.get(backend, model) if tier is not None else model


def job_problem(job: ImageJob, model: str, tier: ModelTier) -> tuple[str, str] | None:
    """Why ``model`` cannot render ``job`` and the fix (allowed values); None when it can."""
    if job.image_size not in tier.sizes:
        return (
            f"{model} does not render {job.image_size}",
            f"use a size it renders ({', '.join(tier.sizes)}), or another model or quality",
        )
    if job.aspect_ratio not in tier.aspect_ratios:
        return (
            f"{model} does not render {job.aspect_ratio}",
            f"use a ratio it renders ({', '.join(tier.aspect_ratios)}), or another model",
        )
    if job.edit is not None and not tier.edits:
        return (
            f"{model} does not take multi-turn edits (models.{model}.edits is false)",
            "give the chain a model that edits (model: or quality:)",
        )
    # An edit step also sends the image of every step before it.
    earlier = len(job.edit.earlier_jobs) if job.edit is not None else 0
    if len(job.references) + earlier > tier.max_reference_images:
        what = f"{len(job.references)} reference images"
        if earlier:
            what += f" and {earlier} earlier edit steps' images"
        return (
            f"{what}, {model} takes at most {tier.max_reference_images}",
            "use fewer references" + (" or a shorter chain" if earlier else ""),
        )
    for ref in job.references:
        if ref.mime_type not in tier.reference_types:
            return (
                f"reference {ref.source!r} is {ref.mime_type}, which {model} does not take",
                f"convert it to one of {', '.join(tier.reference_types)}",
            )
        if ref.bytes > tier.max_reference_mb * _MB:
            return (
                f"reference {ref.source!r} is {ref.bytes / _MB:.1f} MB, over {model}'s "
                f"{tier.max_reference_mb:g} MB per image",
                "downscale or recompress it",
            )
    return None


def check_jobs(
    settings: Settings,
    jobs: list[ImageJob],
    decisions: list[RouteDecision],
) -> None:
    """Raise the first job a model on its route cannot render, naming the allowed values."""
    for job, decision in zip(jobs, decisions, strict=True):
        for backend in decision.backends:
            model = model_for(job, backend, settings)
            tier = model_tier(settings, model)
            label = f"job {job.job_id} ({job.spec_id}{', ' + job.quality if job.quality else ''})"
            if tier is None:
                raise InputError(
                    "model",
                    f"{label}: {model} is not in the model catalogue",
                    fix=f"use one of {', '.join(settings.models)}, or add models.{model} "
                    "(sizes, aspect_ratios) to the config",
                )
            if job.edit is not None and decision.delivery.delivery == "batch":
                why = decision.delivery.reason.split(";")[0]
                raise InputError(
                    "delivery",
                    f"{label}: edit chain {job.edit.chain_id} cannot be bought by batch ({why}; "
                    "each step needs the image of the step before it)",
                    fix="give edits delivery online, flex or priority (in the prompt, --delivery "
                    "or another quality)",
                )
            problem = job_problem(job, model, tier)
            if problem is not None:
                raise InputError("model", f"{label}: {problem[0]}", fix=problem[1])


def fallback_models(settings: Settings, job: ImageJob, model: str) -> list[str]:
    """The configured fallbacks of ``model`` that can render ``job`` exactly as asked."""
    tier = model_tier(settings, model)
    if tier is None:
        return []
    out: list[str] = []
    for other in tier.fallback:
        other_tier = settings.models[other]
        if job_problem(job, other, other_tier) is None and other not in out:
            out.append(other)
    return out


def may_change_model(error: BaseException) -> bool:
    """Whether a failure may move the job to a fallback model (overloaded or over quota now)."""
    return isinstance(error, _MODEL_FALLBACK_ERRORS) and bool(getattr(error, "retryable", False))
