"""What a person asks about a run's provider batches: where they stand, and stop them.

Cancel asks the provider to stop; the jobs end at the next collection (CANCELLED, with the
reason, or the online fallback), so a cancelled run still completes its manifest.
"""

from __future__ import annotations

import asyncio

from bananaflow.batch.book import BatchBook, BatchRecord
from bananaflow.batch.provider import ProviderPool, Providers
from bananaflow.config import Settings
from bananaflow.errors import InputError, NotFound
from bananaflow.storage import open_store


def run_batches(settings: Settings, run_id: str | None = None) -> list[BatchRecord]:
    """Every recorded batch (of one run), collected or not."""
    book = BatchBook(open_store(settings.storage))
    return [r for r in book.all() if run_id is None or r.run_id == run_id]


async def refresh(providers: Providers, records: list[BatchRecord]) -> list[BatchRecord]:
    """The provider's current state of each uncollected batch (collected ones as recorded)."""
    out = []
    for record in records:
        if not record.collected:
            try:
                state, _ = await providers(record.backend).status(record.name)
            except NotFound:
                record = record.model_copy(update={"note": "unknown to the provider"})
            else:
                record = record.model_copy(update={"state": state})
        out.append(record)
    return out


async def status(settings: Settings, run_id: str | None) -> list[BatchRecord]:
    """The recorded batches (of one run), with the provider's current state."""
    records = await asyncio.to_thread(run_batches, settings, run_id)
    pool = ProviderPool(settings)
    try:
        return await refresh(pool, records)
    finally:
        await pool.aclose()


async def cancel_run(settings: Settings, run_id: str) -> list[str]:
    """Cancel every uncollected batch of ``run_id``; the names that were asked to stop."""
    records = await asyncio.to_thread(run_batches, settings, run_id)
    if not records:
        raise InputError("run", f"run {run_id} has no provider batches", fix="check the run id")
    pool = ProviderPool(settings)
    names = []
    try:
        for record in await refresh(pool, records):
            if not record.collected and record.state in ("queued", "pending", "running"):
                await pool(record.backend).cancel(record.name)
                names.append(record.name)
    finally:
        await pool.aclose()
    return names
