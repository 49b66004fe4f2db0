"""Step 2 of the chain: which backend renders a job (and how it is bought), what next, and why.

The decision is made once, up front, and recorded with a human-readable reason, so the manifest
can answer "why did this prod image come from AI Studio?" without anyone reading logs. Falling
back is decided by the error's ``retryable`` verdict alone (see ``bananaflow.errors``): a refusal
or a bad request would fail the same way elsewhere, and a per-day or billing quota needs a human,
so moving those to another backend would only spend money or hide the problem.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bananaflow.config import RouteSettings
from bananaflow.delivery import DeliveryDecision, resolve_delivery
from bananaflow.errors import (
    BackendError,
    ConfigError,
    MalformedResponse,
    QuotaExceeded,
    RequestTimedOut,
    Unavailable,
)
from bananaflow.expand import ImageJob
from bananaflow.generation import BackendName, Delivery

Stage = Literal["dev", "prod"]

# Failures that say "not now / not here" rather than "not this request".
_FALLBACK_ERRORS: tuple[type[BackendError], ...] = (
    QuotaExceeded,
    Unavailable,
    RequestTimedOut,
    MalformedResponse,
)


class RouteDecision(BaseModel):
    """The ordered backends for one job plus the reason, as recorded in the manifest."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    backends: list[BackendName]
    reason: str
    delivery: DeliveryDecision = Field(default_factory=DeliveryDecision)

    @property
    def primary(self) -> BackendName:
        return self.backends[0]

    @property
    def fallbacks(self) -> list[BackendName]:
        return self.backends[1:]


def route(
    job: ImageJob,
    stage: Stage,
    settings: RouteSettings,
    override: BackendName | None = None,
    *,
    delivery: Delivery = "online",
    delivery_override: Delivery | None = None,
) -> RouteDecision:
    """Pick the primary backend by precedence, then append the configured fallbacks.

    Precedence runs from the most specific intent to the most general: a job that names its
    backend, then the run's override (a CLI flag or a Prefect parameter), then ``route.override``
    in the config, then the stage default. The fallback list applies whichever rule won: it is a
    separate, explicit setting (``route.fallback: []`` turns it off), and it never repeats the
    primary. The delivery is decided alongside (``delivery`` is ``generate.delivery``; see
    :func:`bananaflow.delivery.resolve_delivery`).
    """
    if job.backend is not None:
        primary, why = job.backend, f"job override → {job.backend}"
    elif override is not None:
        primary, why = override, f"run override → {override}"
    elif settings.override is not None:
        primary, why = settings.override, f"config override → {settings.override} (route.override)"
    else:
        backend = settings.stages.get(stage)
        if backend is None:
            raise ConfigError(
                f"route.stages.{stage}",
                f"no backend is set for stage {stage}",
                fix=f"add route.stages.{stage}: aistudio|vertex to the config",
            )
        primary, why = backend, f"stage {stage} → {backend} (route.stages)"
    fallbacks: list[BackendName] = []
    for backend in settings.fallback:
        if backend != primary and backend not in fallbacks:
            fallbacks.append(backend)
    if fallbacks:
        why += f"; fallback: {', '.join(fallbacks)} (route.fallback)"
    return RouteDecision(
        job_id=job.job_id,
        backends=[primary, *fallbacks],
        reason=why,
        delivery=resolve_delivery(job, delivery, settings, delivery_override),
    )


def partition_by_delivery(
    jobs: list[ImageJob], decisions: list[RouteDecision]
) -> tuple[deque[tuple[ImageJob, RouteDecision]], deque[tuple[ImageJob, RouteDecision]]]:
    """(synchronous, batch): the jobs bought one call each, and those for the batch delivery.

    The one seam between the two ways of buying: the synchronous chain refuses a batch job
    rather than buying it online at twice the price. Deques, so that the renderer
    (``render.render_into``) can take each job off as it starts and let it go as it ends.
    """
    synchronous: deque[tuple[ImageJob, RouteDecision]] = deque()
    batch: deque[tuple[ImageJob, RouteDecision]] = deque()
    for job, decision in zip(jobs, decisions, strict=True):
        (batch if decision.delivery.delivery == "batch" else synchronous).append((job, decision))
    return synchronous, batch


def should_fall_back(error: BaseException) -> bool:
    """Whether a failed job may move to the next backend in its decision.

    Requires both a transient error class and the instance's own ``retryable`` verdict, because
    ``QuotaExceeded`` is retryable per minute but not per day or for billing.
    """
    return isinstance(error, _FALLBACK_ERRORS) and bool(error.retryable)
