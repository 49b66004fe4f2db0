"""Every job of a run through the chain, concurrently; one job's failure never touches another.

The loop is per-job logic that several flows share (generate, promote, compare), so it lives
in the core. The steps themselves are injected (``Steps``): flows pass their Prefect tasks, so
each step stays a task in the UI with its own policy, and the core never imports Prefect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from bananaflow import progress
from bananaflow.chain import (
    ChainContext,
    JobFailed,
    base_row,
    failed_row,
    reserve_budget,
    reused_row,
    uploaded_row,
)
from bananaflow.config import Settings
from bananaflow.expand import ImageJob
from bananaflow.records import CompressedRef, ManifestRow, MasterRef, utcnow
from bananaflow.routing import RouteDecision
from bananaflow.shutdown import draining


class Progress(Protocol):
    """Where a run reports finished jobs (the UI's progress artifact)."""

    async def start(self, run_id: str) -> None: ...
    async def advance(self) -> None: ...
    async def finish(self) -> None: ...


@dataclass(frozen=True)
class Steps:
    """The chain's steps for one job, in order."""

    generate: Callable[[ChainContext, ImageJob, RouteDecision], Awaitable[MasterRef]]
    upscale: Callable[[ChainContext, MasterRef], Awaitable[MasterRef]]
    compress: Callable[[ChainContext, MasterRef], Awaitable[CompressedRef]]
    upload: Callable[
        [ChainContext, ImageJob, MasterRef, CompressedRef], Awaitable[tuple[str, list[str]]]
    ]


async def render_all(
    ctx: ChainContext,
    jobs: list[ImageJob],
    decisions: list[RouteDecision],
    steps: Steps,
    bar: Progress,
    lineage: dict[str, dict[str, str]] | None = None,
) -> list[ManifestRow]:
    """Render every job; ``lineage`` (job id → links) is written into each row first."""
    await bar.start(ctx.run_id)
    in_flight = asyncio.Semaphore(jobs_in_flight(ctx.settings, decisions))

    async def one(job: ImageJob, decision: RouteDecision) -> ManifestRow:
        async with in_flight:
            row = await render_one(ctx, job, decision, steps)
        if lineage and job.job_id in lineage:
            row = row.model_copy(update={"lineage": {**row.lineage, **lineage[job.job_id]}})
        await asyncio.to_thread(ctx.manifest.append, row)
        if row.status == "uploaded" and row.reused_from_run is None:
            await asyncio.to_thread(ctx.ledger.put_done, row)
        await bar.advance()
        progress.notify(row)
        return row

    try:
        return list(
            await asyncio.gather(*(one(j, d) for j, d in zip(jobs, decisions, strict=True)))
        )
    finally:
        await bar.finish()


def jobs_in_flight(settings: Settings, decisions: list[RouteDecision]) -> int:
    """Enough jobs to keep every backend's quota busy while others compress and upload."""
    if settings.generate.concurrency:
        return settings.generate.concurrency
    backends = {d.backends[0] for d in decisions} or {"aistudio"}
    cfg = {"aistudio": settings.backends.aistudio, "vertex": settings.backends.vertex}
    return max(2, 2 * sum(cfg[b].concurrency for b in backends))


async def render_one(
    ctx: ChainContext, job: ImageJob, decision: RouteDecision, steps: Steps
) -> ManifestRow:
    row = base_row(ctx, job, decision, utcnow())
    done = await asyncio.to_thread(ctx.ledger.get_done, row.output_key) if ctx.reuse else None
    if done is not None:
        return reused_row(done, ctx)
    if draining.is_set():
        return failed_row(row, JobFailed("interrupted", "stopped before it started", kind="stop"))
    skip = await asyncio.to_thread(reserve_budget, ctx, job, decision)
    if skip is not None:
        return failed_row(row, JobFailed("skipped_budget", skip, kind="budget"))
    try:
        master = await steps.generate(ctx, job, decision)
        if ctx.settings.upscale.enabled:
            master = await steps.upscale(ctx, master)
        compressed = await steps.compress(ctx, master)
        uri, thumbs = await steps.upload(ctx, job, master, compressed)
    except Exception as err:  # one job's failure (or bug) must not sink the batch
        return failed_row(row, err)
    return uploaded_row(row, master, compressed, uri, thumbs, ctx)
