"""route_jobs: the backend and delivery per job, with their reasons, recorded in the manifest."""

from __future__ import annotations

from typing import Literal

from prefect import task
from prefect.cache_policies import NO_CACHE

from bananaflow.config import RouteSettings
from bananaflow.expand import ImageJob
from bananaflow.generation import BackendName, Delivery
from bananaflow.routing import RouteDecision, route


@task(name="route_jobs", cache_policy=NO_CACHE)
async def route_jobs(
    jobs: list[ImageJob],
    stage: Literal["dev", "prod"],
    settings: RouteSettings,
    override: BackendName | None = None,
    delivery: Delivery = "online",
    delivery_override: Delivery | None = None,
) -> list[RouteDecision]:
    return [
        route(
            job, stage, settings, override, delivery=delivery, delivery_override=delivery_override
        )
        for job in jobs
    ]
