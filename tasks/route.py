"""route_jobs: the backend decision per job, with its reason, recorded in the manifest."""

from __future__ import annotations

from typing import Literal

from prefect import task
from prefect.cache_policies import NO_CACHE

from bananaflow.config import RouteSettings
from bananaflow.expand import ImageJob
from bananaflow.generation import BackendName
from bananaflow.routing import RouteDecision, route


@task(name="route_jobs", cache_policy=NO_CACHE)
def route_jobs(
    jobs: list[ImageJob],
    stage: Literal["dev", "prod"],
    settings: RouteSettings,
    override: BackendName | None = None,
) -> list[RouteDecision]:
    return [route(job, stage, settings, override) for job in jobs]
