"""``bananaflow setup``: the Prefect objects a deployment needs, created idempotently.

Per backend, two global limits that every worker shares (``tasks/limits.py`` takes them with
``strict=True``, so a run never goes ahead unthrottled because one is missing):

- ``<prefix>-<backend>-rpm``: a rate limit (slot decay). Google counts requests per rolling
  minute, so a long burst is not allowed: a burst of ``b`` slots plus a decay of ``(rpm - b) / 60``
  per second admits at most ``rpm`` requests in any 60-second window. Prefect's decay only ever
  comes out slower than configured (whole slots, clock reset on each refusal), so this is a
  ceiling, never an overshoot.
- ``<prefix>-<backend>-concurrency``: requests in flight.

Running it again changes nothing and says so; after a config change it updates exactly the
limits whose values changed, so it is safe to run on every deploy.
"""

from __future__ import annotations

import math
from typing import Literal

from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
    WorkPoolCreate,
)
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel

from bananaflow.config import Settings
from bananaflow.generation import BackendName
from bananaflow.tasks.limits import limit_names

DEFAULT_POOL = "bananaflow-pool"
POOL_TYPE = "process"

Verb = Literal["created", "updated", "unchanged"]


class LimitSpec(BaseModel):
    """One global limit as the config wants it (decay 0: a plain concurrency limit)."""

    name: str
    limit: int
    slot_decay_per_second: float = 0.0

    def describe(self) -> str:
        if self.slot_decay_per_second:
            return f"limit {self.limit}, decay {self.slot_decay_per_second}/s"
        return f"limit {self.limit}"


def _floor6(x: float) -> float:
    """Round down, so that the stored decay can never admit more than the configured rate."""
    return math.floor(x * 1_000_000) / 1_000_000


def limit_specs(settings: Settings) -> list[LimitSpec]:
    specs: list[LimitSpec] = []
    backends: tuple[BackendName, ...] = ("aistudio", "vertex")
    for backend in backends:
        cfg = settings.backends.aistudio if backend == "aistudio" else settings.backends.vertex
        rpm_name, conc_name = limit_names(settings, backend)
        burst = max(1, min(cfg.concurrency, cfg.requests_per_minute // 60))
        decay = _floor6(max(cfg.requests_per_minute - burst, 1) / 60.0)
        specs.append(LimitSpec(name=rpm_name, limit=burst, slot_decay_per_second=decay))
        specs.append(LimitSpec(name=conc_name, limit=cfg.concurrency))
    return specs


async def _ensure_pool(client: PrefectClient, pool: str) -> str:
    try:
        found = await client.read_work_pool(pool)
    except ObjectNotFound:
        await client.create_work_pool(WorkPoolCreate(name=pool, type=POOL_TYPE))
        return f"work pool {pool}: created ({POOL_TYPE})"
    if found.type != POOL_TYPE:
        return (
            f"work pool {pool}: unchanged, but it is a {found.type} pool; the deployments in "
            f"deployments/prefect.yaml expect a {POOL_TYPE} pool (use --pool another-name)"
        )
    return f"work pool {pool}: unchanged ({POOL_TYPE})"


async def _ensure_limit(client: PrefectClient, spec: LimitSpec) -> Verb:
    try:
        old = await client.read_global_concurrency_limit_by_name(spec.name)
    except ObjectNotFound:
        await client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(
                name=spec.name, limit=spec.limit, slot_decay_per_second=spec.slot_decay_per_second
            )
        )
        return "created"
    same = (
        old.limit == spec.limit
        and math.isclose(old.slot_decay_per_second or 0.0, spec.slot_decay_per_second)
        and old.active
    )
    if same:
        return "unchanged"
    # A deactivated limit is skipped by Prefect, which would let runs exceed the quota.
    await client.update_global_concurrency_limit(
        spec.name,
        GlobalConcurrencyLimitUpdate(
            limit=spec.limit, slot_decay_per_second=spec.slot_decay_per_second, active=True
        ),
    )
    return "updated"


async def setup_prefect(settings: Settings, pool: str = DEFAULT_POOL) -> list[str]:
    """Create or update the work pool and the limits; returns one report line per object."""
    async with get_client() as client:
        report = [await _ensure_pool(client, pool)]
        for spec in limit_specs(settings):
            verb = await _ensure_limit(client, spec)
            report.append(f"limit {spec.name}: {verb} ({spec.describe()})")
    return report
