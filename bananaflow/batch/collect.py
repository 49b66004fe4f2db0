"""Look at a provider batch, wait for it, and turn its answers into masters or reasons.

Any process may collect a recorded batch: the record holds the jobs, and each job's claim
names the batch, so the image is stored under the job's claim exactly as an online answer
would be (store, then ``paid``). Every job ends as a master or a ``JobFailed`` with a reason:
a refusal (final), a failed or missing line, or the whole batch ending FAILED, CANCELLED or
EXPIRED. Claims are released at the end, so an online fallback may claim the failed ones.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bananaflow.batch.book import BatchBook, BatchRecord
from bananaflow.batch.lines import (
    answer_image,
    match,
    read_answer,
    request_digest,
    request_line,
)
from bananaflow.batch.provider import BatchProvider
from bananaflow.batch.states import TERMINAL, WITH_OUTPUT
from bananaflow.chain import ChainContext, JobFailed, store_master
from bananaflow.errors import BackendError, NotFound, Refused
from bananaflow.pricing import price_for
from bananaflow.records import MasterRef, RouteAttempt

log = logging.getLogger("bananaflow")

Outcome = MasterRef | JobFailed


async def look(
    ctx: ChainContext, api: BatchProvider, record: BatchRecord
) -> tuple[BatchRecord, dict[str, Any]]:
    """The batch as the provider sees it now; the record notes its state.

    A batch the provider no longer knows (deleted, or an emulator without ``state_dir``
    restarted) has ended without answers: its jobs end with that reason, or go online.
    """
    try:
        state, op = await api.status(record.name)
    except NotFound:
        state, op = "failed", {"error": {"message": "the provider no longer knows this batch"}}
    if state != record.state:
        record = record.model_copy(update={"state": state})
        await asyncio.to_thread(BatchBook(ctx.store).save, record)
    return record, op


def poll_interval(ctx: ChainContext, attempt: int) -> float:
    """``batch.poll_s`` growing by half each look up to ``max_poll_s`` (emulator: scaled)."""
    cfg = ctx.settings.batch
    emu = ctx.settings.emulator
    scale = emu.time_scale if emu.embedded else 1.0
    return min(cfg.max_poll_s, cfg.poll_s * 1.5 ** min(attempt, 64)) * scale  # no overflow


def _age_s(record: BatchRecord) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(record.created_at)).total_seconds()


async def wait_for(
    ctx: ChainContext, api: BatchProvider, record: BatchRecord
) -> tuple[BatchRecord, dict[str, Any]]:
    """Poll until the batch ends; a batch older than ``batch.max_wait_s`` (emulator: scaled)
    is cancelled, and polled until the cancel took (Vertex passes through CANCELLING), so its
    jobs end with a reason or go to the fallback instead of holding this process for ever."""
    emu = ctx.settings.emulator
    limit_s = ctx.settings.batch.max_wait_s * (emu.time_scale if emu.embedded else 1.0)
    attempt = 0
    cancelled = False
    while True:
        record, op = await look(ctx, api, record)
        if record.state in TERMINAL:
            return record, op
        if not cancelled and record.state != "cancelling" and _age_s(record) > limit_s:
            log.warning(
                "batch %s still %s after batch.max_wait_s: cancelling", record.name, record.state
            )
            await api.cancel(record.name)
            cancelled = True
            continue
        await asyncio.sleep(poll_interval(ctx, attempt))
        attempt += 1


async def collect(
    ctx: ChainContext, api: BatchProvider, record: BatchRecord, op: dict[str, Any]
) -> dict[str, Outcome]:
    """Every job of an ended batch: its stored master, or why it has none (job id → outcome).

    The answers are copied into the run's work dir (in chunks) and read a line at a time;
    the copy is removed when the batch is collected."""
    why = f"batch {record.name} ended {record.state}"
    error = op.get("error")
    if isinstance(error, dict) and error.get("message"):
        why += f": {str(error['message'])[:200]}"
    folder = ctx.work_dir / f"batch-{record.record_id}"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return await _outcomes(ctx, api, record, op, why, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _outcomes(
    ctx: ChainContext,
    api: BatchProvider,
    record: BatchRecord,
    op: dict[str, Any],
    why: str,
    folder: Path,
) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    paths = await api.answers(op, folder) if record.state in WITH_OUTPUT else []
    digests = {
        request_digest(request_line(j, record.model, record.backend, ctx.settings)["request"]): (
            j.job_id
        )
        for j in record.jobs
    }
    matched = await asyncio.to_thread(match, paths, [j.job_id for j in record.jobs], digests)
    for job in record.jobs:
        key = record.keys[job.job_id]
        attempt = RouteAttempt(
            backend=record.backend,
            model=record.model,
            reason=f"delivery batch {record.name}",
            delivery="batch",
        )
        claim = await asyncio.to_thread(ctx.ledger.batch_claim, key)
        where = matched.answers.get(job.job_id)
        row = await asyncio.to_thread(read_answer, where) if where is not None else None
        try:
            if record.state not in WITH_OUTPUT:
                attempt.outcome = record.state
                raise JobFailed(
                    "failed", why, kind=f"Batch{record.state.title()}", routes=[attempt]
                )
            if row is None:
                attempt.outcome = "missing"
                raise JobFailed(
                    "failed",
                    f"no answer for this job in the output of batch {record.name}",
                    kind="BatchLineMissing",
                    routes=[attempt],
                )
            try:
                image = answer_image(row, job, record.backend, record.model, ctx.settings)
            except BackendError as err:
                attempt.outcome = err.kind
                status = "refused" if isinstance(err, Refused) else "failed"
                raise JobFailed(
                    status, str(err), kind=type(err).__name__, routes=[attempt]
                ) from err
            attempt.outcome, attempt.attempts = "ok", 1
            master = await asyncio.to_thread(
                store_master,
                ctx,
                job,
                key,
                claim,
                image,
                routes=[attempt],
                price=price_for(ctx.settings, record.model, job.image_size, "batch"),
                extra={"billed_delivery": "batch"},
            )
            outcomes[job.job_id] = master.model_copy(update={"batch": record.name})
        except JobFailed as failed:
            outcomes[job.job_id] = failed
        finally:
            if claim is not None:
                await asyncio.to_thread(ctx.ledger.release, claim)
    done = record.model_copy(update={"collected": True})
    await asyncio.to_thread(BatchBook(ctx.store).save, done)
    return outcomes
