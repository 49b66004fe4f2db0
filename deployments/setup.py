"""``bananaflow setup``: the Prefect objects a deployment needs, created idempotently.

Per backend, two global limits that every worker shares:
- ``<prefix>-<backend>-rpm``: a rate limit (slot decay). A small burst plus a decay of
  ``(rpm - burst) / 60`` per second means no 60-second window ever sees more than ``rpm``
  requests, which is how Google counts.
- ``<prefix>-<backend>-concurrency``: requests in flight.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound

from bananaflow.config import Settings
from bananaflow.models import BackendName
from tasks.limits import limit_names

DEFAULT_POOL = "bananaflow-pool"


@dataclass(frozen=True)
class LimitSpec:
    name: str
    limit: int
    slot_decay_per_second: float | None


def limit_specs(settings: Settings) -> list[LimitSpec]:
    specs: list[LimitSpec] = []
    backends: tuple[BackendName, ...] = ("aistudio", "vertex")
    for backend in backends:
        cfg = settings.backends.aistudio if backend == "aistudio" else settings.backends.vertex
        rpm_name, conc_name = limit_names(settings, backend)
        burst = max(1, min(cfg.concurrency, cfg.requests_per_minute // 60))
        decay = max(cfg.requests_per_minute - burst, 1) / 60.0
        specs.append(LimitSpec(rpm_name, burst, round(decay, 6)))
        specs.append(LimitSpec(conc_name, cfg.concurrency, None))
    return specs


async def setup_prefect(settings: Settings, pool: str = DEFAULT_POOL) -> list[str]:
    """Create the work pool and the limits; returns one report line per object."""
    report: list[str] = []
    async with get_client() as client:
        try:
            await client.read_work_pool(pool)
            report.append(f"work pool {pool}: exists")
        except ObjectNotFound:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            report.append(f"work pool {pool}: created (process)")
        for spec in limit_specs(settings):
            try:
                old = await client.read_global_concurrency_limit_by_name(spec.name)
                same = old.limit == spec.limit and (old.slot_decay_per_second or None) == (
                    spec.slot_decay_per_second
                )
                verb = "unchanged" if same else "updated"
            except ObjectNotFound:
                verb = "created"
            await client.upsert_global_concurrency_limit_by_name(
                spec.name, spec.limit, slot_decay_per_second=spec.slot_decay_per_second
            )
            decay = (
                f", decay {spec.slot_decay_per_second}/s" if spec.slot_decay_per_second else ""
            )
            report.append(f"limit {spec.name}: {verb} (limit {spec.limit}{decay})")
    return report
