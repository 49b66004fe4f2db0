"""A run's batch delivery on top of the ordinary chain.

submit → (wait, or one look) → collect → the same chain as online (upscale, compress, upload,
manifest) with the batch's master in place of an online generation. Jobs whose batch has not
ended get a ``pending_batch`` manifest row; the collector finishes them later (``finish``)
under the same run id, so the run's manifest completes in place.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from bananaflow.batch.book import BatchRecord
from bananaflow.batch.collect import Outcome, collect, look, wait_for
from bananaflow.batch.provider import BatchProvider, ProviderPool, Providers
from bananaflow.batch.states import TERMINAL
from bananaflow.batch.submit import submit
from bananaflow.chain import ChainContext, base_row, model_for
from bananaflow.expand import ImageJob
from bananaflow.pricing import price_for
from bananaflow.records import ManifestRow, MasterRef, utcnow
from bananaflow.render import Progress, Steps, render_all
from bananaflow.routing import RouteDecision


def batch_steps(steps: Steps, outcomes: dict[str, Outcome], *, fallback_online: bool) -> Steps:
    """``steps`` with generate answered from the batch; the rest of the chain is unchanged.

    A job the batch did not cover (already paid, or held by another run) takes the ordinary
    generate step, which reuses or waits. A failed line goes online when configured; a
    refusal never does (it would be refused again, and paid for).
    """

    async def generate(ctx: ChainContext, job: ImageJob, decision: RouteDecision) -> MasterRef:
        got = outcomes.get(job.job_id)
        if isinstance(got, MasterRef):
            reserved = ctx.reserved.pop(job.job_id, None)
            if reserved is not None:
                ctx.budget.commit(reserved)
            return got
        if got is None:
            return await steps.generate(ctx, job, decision)
        if not fallback_online or got.status == "refused":
            raise got
        master = await steps.generate(ctx, job, decision)
        return master.model_copy(update={"routes": [*got.routes, *master.routes]})

    # One task run per step: the grouped runner (``Steps.jobs``) is built from the online
    # generate task and would not see the batch's answers.
    return replace(steps, generate=generate, jobs=None)


def pending_row(
    ctx: ChainContext, job: ImageJob, decision: RouteDecision, record: BatchRecord
) -> ManifestRow:
    model = model_for(job, decision.backends[0], ctx.settings)
    return base_row(ctx, job, decision, utcnow()).model_copy(
        update={
            "status": "pending_batch",
            "batch": record.name,
            "backend": record.backend,
            "model": model,
            "estimated_usd": price_for(ctx.settings, model, job.image_size, "batch"),
            "error": f"waiting for provider batch {record.name} ({record.state})",
        }
    )


async def deliver(
    ctx: ChainContext,
    jobs: list[ImageJob],
    decisions: list[RouteDecision],
    steps: Steps,
    bar: Progress,
    *,
    wait: bool,
    providers: Providers | None = None,
) -> list[ManifestRow]:
    """Every job of the run through batch delivery; pending ones get ``pending_batch`` rows."""
    if providers is None:
        pool = ProviderPool(ctx.settings)
        try:
            return await deliver(ctx, jobs, decisions, steps, bar, wait=wait, providers=pool)
        finally:
            await pool.aclose()
    records = await submit(ctx, providers, jobs, decisions)
    outcomes: dict[str, Outcome] = {}
    pending: dict[str, BatchRecord] = {}
    for record in records:
        api = providers(record.backend)
        seen, op = await (wait_for(ctx, api, record) if wait else look(ctx, api, record))
        if seen.state in TERMINAL:
            outcomes.update(await collect(ctx, api, seen, op))
        else:
            pending.update({j.job_id: seen for j in seen.jobs})
    rows = []
    for job, decision in zip(jobs, decisions, strict=True):
        if job.job_id in pending:
            row = pending_row(ctx, job, decision, pending[job.job_id])
            await asyncio.to_thread(ctx.manifest.append, row)
            rows.append(row)
    rest = [(j, d) for j, d in zip(jobs, decisions, strict=True) if j.job_id not in pending]
    fallback = ctx.settings.batch.fallback == "online"
    rows += await render_all(
        ctx,
        [j for j, _ in rest],
        [d for _, d in rest],
        batch_steps(steps, outcomes, fallback_online=fallback),
        bar,
    )
    return rows


async def finish(
    ctx: ChainContext, api: BatchProvider, record: BatchRecord, steps: Steps, bar: Progress
) -> list[ManifestRow] | None:
    """The collector's step: when ``record``'s batch ended, finish its jobs (None: not yet).

    ``ctx`` must be the batch's own run (``record.run_id``), so its manifest completes.
    """
    seen, op = await look(ctx, api, record)
    if seen.state not in TERMINAL:
        return None
    outcomes = await collect(ctx, api, seen, op)
    fallback = ctx.settings.batch.fallback == "online"
    return await render_all(
        ctx, seen.jobs, seen.decisions, batch_steps(steps, outcomes, fallback_online=fallback), bar
    )
