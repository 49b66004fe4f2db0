"""Claim a run's jobs and send them as one provider batch per backend and model.

Order is what makes it crash-safe: every job is claimed in the ledger before anything is
sent; the batch's name goes into the batch book and into each job's claim right after the
provider accepts it, before the first poll. A job whose claim already names a live batch is
joined, never resubmitted; a job already paid, or being rendered online by another run, is
left to the ordinary chain (which reuses it or waits for it).
"""

from __future__ import annotations

import asyncio
import logging

from bananaflow.batch.admission import create_policy
from bananaflow.batch.book import BatchBook, BatchRecord
from bananaflow.batch.lines import request_line
from bananaflow.batch.provider import BatchProvider, Providers
from bananaflow.chain import ChainContext, master_key, model_for
from bananaflow.chain.request import reference_images
from bananaflow.expand import ImageJob
from bananaflow.generation import BackendName
from bananaflow.ledger import Claim
from bananaflow.pricing import price_for
from bananaflow.routing import RouteDecision

log = logging.getLogger("bananaflow")

Member = tuple[ImageJob, RouteDecision, Claim]


async def submit(
    ctx: ChainContext,
    providers: Providers,
    jobs: list[ImageJob],
    decisions: list[RouteDecision],
) -> list[BatchRecord]:
    """The batches this run's jobs wait on: joined ones first, then the ones sent now."""
    book = BatchBook(ctx.store)
    groups: dict[tuple[BackendName, str], list[Member]] = {}
    joined: list[str] = []
    # Held through a create refused for quota and asked again for hours (``admission``): a
    # claim that lapsed meanwhile would let another run submit the same jobs.
    claim_s = create_policy(ctx.settings).deadline_s + ctx.ledger.claim_ttl_s
    for job, decision in zip(jobs, decisions, strict=True):
        backend = decision.backends[0]
        model = model_for(job, backend, ctx.settings)
        key = master_key(job, backend, model)
        held = await asyncio.to_thread(ctx.ledger.batch_claim, key)
        if held is not None and held.record.batch is not None:
            if held.record.batch not in joined:
                joined.append(held.record.batch)
            continue
        verdict = await asyncio.to_thread(ctx.ledger.try_claim, key, claim_s)
        if verdict.claim is not None:
            groups.setdefault((backend, model), []).append((job, decision, verdict.claim))
    records = []
    for name in joined:
        record = await asyncio.to_thread(book.find, name)
        if record is None:
            log.warning("batch %s is named in the ledger but not in the batch book", name)
        elif not record.collected:
            log.info("joining batch %s (submitted by run %s)", name, record.run_id)
            records.append(record)
    for (backend, model), members in groups.items():
        records.append(await _send(ctx, providers(backend), book, backend, model, members))
    return records


async def _send(
    ctx: ChainContext,
    api: BatchProvider,
    book: BatchBook,
    backend: BackendName,
    model: str,
    members: list[Member],
) -> BatchRecord:
    settings = ctx.settings
    try:
        lines = []
        for job, _, _ in members:  # references read (and checked) now, large ones uploaded
            references = await ctx.uploads.sent(
                backend, job, await asyncio.to_thread(reference_images, settings, job)
            )
            lines.append(request_line(job, model, backend, settings, references))
        display = f"bananaflow-{ctx.run_id}-{model}"[:128]
        inline = len(members) <= settings.batch.inline_max_jobs
        name, source = await api.submit(model, lines, display, inline=inline)
    except BaseException:
        for _, _, claim in members:  # nothing was bought: the next run need not wait
            await asyncio.to_thread(ctx.ledger.release, claim)
        raise
    record = BatchRecord(
        name=name,
        backend=backend,
        model=model,
        run_id=ctx.run_id,
        display_name=display,
        input=source,
        jobs=[job for job, _, _ in members],
        decisions=[decision for _, decision, _ in members],
        keys={job.job_id: claim.key for job, _, claim in members},
        expected_usd=round(
            sum(price_for(ctx.settings, model, job.image_size, "batch") for job, _, _ in members), 6
        ),
    )
    # Durable before anything else: create is not idempotent, the name is what resumes it.
    await asyncio.to_thread(book.save, record)
    hold_s = settings.batch.max_wait_s + 3600.0
    for _, _, claim in members:
        await asyncio.to_thread(ctx.ledger.attach_batch, claim, record.name, hold_s)
    log.info("submitted batch %s: %d jobs of %s", record.name, len(members), model)
    return record
