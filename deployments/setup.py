"""``bananaflow setup``: the Prefect objects a deployment needs, created idempotently.

Per backend, two global limits that every worker shares (``tasks/limits.py`` takes them with
``strict=True``, so a run never goes ahead unthrottled because one is missing):

- ``<prefix>-<backend>-rpm``: a rate limit (slot decay). Google counts requests per rolling
  minute, so a long burst is not allowed: a burst of ``b`` slots plus a decay of ``(rpm - b) / 60``
  per second admits at most ``rpm`` requests in any 60-second window. Prefect's decay only ever
  comes out slower than configured (whole slots, clock reset on each refusal), so this is a
  ceiling, never an overshoot.
- ``<prefix>-<backend>-concurrency``: requests in flight.

And one automation, ``<prefix>-crash-dead-chunks``: a chunk run of a scale-out batch (tag
``bananaflow-chunk``; its deployment makes it send a heartbeat event every 30 s) that has sent
none for 90 s lost its worker, so it is marked CRASHED and its parent starts the chunk again on a
live worker (``tasks/chunks.py``). Prefect's own zombie-flow recipe, scoped to our chunk runs:
other flow runs on a shared server heartbeat at their own pace and must not be touched.

Running it again changes nothing and says so; after a config change it updates exactly the
limits whose values changed, so it is safe to run on every deploy.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Literal

from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
    WorkPoolCreate,
)
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel

from bananaflow.config import Settings
from bananaflow.generation import BackendName
from bananaflow.tasks.limits import limit_names

DEFAULT_POOL = "bananaflow-pool"
CHUNK_TAG = "bananaflow-chunk"  # deployments/prefect.yaml tags generate-chunk with it
DEAD_CHUNK_AFTER_S = 90  # three missed heartbeats (PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30)
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


def dead_chunk_automation(settings: Settings) -> AutomationCore:
    """Mark a chunk run CRASHED once its heartbeats stop (see the module docstring)."""
    return AutomationCore(
        name=f"{settings.limits.name_prefix}-crash-dead-chunks",
        description=(
            f"A bananaflow chunk run that sent no heartbeat for {DEAD_CHUNK_AFTER_S} s lost its "
            "worker: marked Crashed, its parent batch starts the chunk again."
        ),
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{CHUNK_TAG}"}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=DEAD_CHUNK_AFTER_S),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {DEAD_CHUNK_AFTER_S} s: its worker is gone",
            )
        ],
    )


async def _ensure_automation(client: PrefectClient, wanted: AutomationCore) -> Verb:
    found = await client.read_automations_by_name(wanted.name)
    if not found:
        await client.create_automation(wanted)
        return "created"
    (first, *extra) = found
    for duplicate in extra:
        await client.delete_automation(duplicate.id)
    same = AutomationCore.model_validate(first.model_dump(exclude={"id", "created", "updated"}))
    if same.model_dump() == wanted.model_dump() and not extra:  # sets: order-free
        return "unchanged"
    await client.update_automation(first.id, wanted)
    return "updated"


async def setup_prefect(settings: Settings, pool: str = DEFAULT_POOL) -> list[str]:
    """Create or update the work pool, the limits and the automation; one report line each."""
    async with get_client() as client:
        report = [await _ensure_pool(client, pool)]
        for spec in limit_specs(settings):
            verb = await _ensure_limit(client, spec)
            report.append(f"limit {spec.name}: {verb} ({spec.describe()})")
        automation = dead_chunk_automation(settings)
        verb = await _ensure_automation(client, automation)
        report.append(
            f"automation {automation.name}: {verb} (chunk runs silent for "
            f"{DEAD_CHUNK_AFTER_S} s are marked Crashed)"
        )
    return report
