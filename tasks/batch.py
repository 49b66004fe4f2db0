"""Batch delivery's Prefect tasks: the pending-batches artifact, and cancel for a run.

The artifact is how a person sees in the UI what waits at Google: one row per provider batch
not collected yet, with its job count, expected cost and last seen state. The generate run
that submitted batches shows its own; each collect-batches visit shows all that remain.
"""

from __future__ import annotations

import asyncio

from prefect import task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE

from bananaflow.batch.control import cancel_run, run_batches
from bananaflow.config import Settings


@task(name="publish_pending_batches", cache_policy=NO_CACHE)
async def publish_pending_batches(settings: Settings, run_id: str | None = None) -> int:
    """A table of the pending provider batches (of one run); how many there are."""
    pending = [r for r in await asyncio.to_thread(run_batches, settings, run_id) if not r.collected]
    if pending:
        await acreate_table_artifact(
            table=[
                {
                    "batch": r.name,
                    "run": r.run_id,
                    "model": r.model,
                    "jobs": len(r.jobs),
                    "expected_usd": r.expected_usd,
                    "state": r.state,
                    "submitted": r.created_at,
                }
                for r in pending
            ],
            key="pending-batches",
            description=(
                "Provider batches waiting at Google; the collect-batches deployment finishes "
                "their jobs into the submitting run's manifest when they end."
            ),
        )
    return len(pending)


@task(name="cancel_batches", cache_policy=NO_CACHE)
async def cancel_batches(settings: Settings, run_id: str) -> list[str]:
    return await cancel_run(settings, run_id)
