"""A batch too large for one flow run, cut into chunk runs and rolled back up.

Every job lands exactly once: jobs are deduplicated by id before splitting, so no two chunks
can pay for the same image; the budget is shared out so the chunks together never exceed it;
and the roll-up answers for every job, including those of a chunk that never ran.
"""

from __future__ import annotations

from pydantic import BaseModel

from bananaflow import runid
from bananaflow.chain import ChainContext, base_row, failed_row, model_for
from bananaflow.config import Settings
from bananaflow.errors import BananaflowError
from bananaflow.expand import ImageJob
from bananaflow.generation import BackendName
from bananaflow.manifest import read_manifest, run_ids
from bananaflow.pricing import price_for
from bananaflow.records import ManifestRow, utcnow
from bananaflow.routing import RouteDecision
from bananaflow.storage import Store

MICRO_USD = 1_000_000  # budgets split in integer micro-dollars, as pricing.Budget counts


class Chunk(BaseModel):
    """One slice of the batch and the budget it may spend."""

    index: int
    jobs: list[ImageJob]
    decisions: list[RouteDecision]
    max_usd: float | None = None


class ChunkRun(BaseModel):
    """What became of one chunk: its Prefect flow run and, once found, our run id."""

    index: int
    flow_run_id: str
    flow_run_name: str
    state: str
    message: str | None = None
    run_id: str | None = None


def backends_to_check(settings: Settings, decisions: list[RouteDecision]) -> set[BackendName]:
    """The backends whose credentials the chunks will need; none with the embedded emulator,
    whose stand-in each chunk's worker publishes."""
    if settings.emulator.embedded:
        return set()
    return {b for d in decisions for b in d.backends}


def unique_jobs(jobs: list[ImageJob]) -> list[ImageJob]:
    """First occurrence of each job id: two chunks holding one job would both pay for it."""
    seen: dict[str, ImageJob] = {}
    for job in jobs:
        seen.setdefault(job.job_id, job)
    return list(seen.values())


def split(
    jobs: list[ImageJob], decisions: list[RouteDecision], size: int, settings: Settings
) -> list[Chunk]:
    """Consecutive slices of ``size`` jobs, each with its share of ``budget.max_usd``.

    The shares never add up to more than the budget: when the whole batch fits, each chunk may
    spend its own list price; when it does not, each gets the budget in proportion to its price
    (rounded down to a micro-dollar), and each chunk skips the jobs past its share as a single run
    would. Jobs already paid for cost nothing, so a chunk usually spends less than its share.
    """
    chunks = [
        Chunk(index=i // size, jobs=jobs[i : i + size], decisions=decisions[i : i + size])
        for i in range(0, len(jobs), size)
    ]
    if settings.budget.max_usd is None:
        return chunks
    budget = round(settings.budget.max_usd * MICRO_USD)
    prices = [
        sum(
            round(
                price_for(
                    settings, model_for(j, d.primary, settings), j.image_size, d.delivery.delivery
                )
                * MICRO_USD
            )
            for j, d in zip(c.jobs, c.decisions, strict=True)
        )
        for c in chunks
    ]
    total = sum(prices)
    for chunk, price in zip(chunks, prices, strict=True):
        share = price if total <= budget else budget * price // total
        chunk.max_usd = share / MICRO_USD
    return chunks


def chunk_run_ids(store: Store, runs: list[ChunkRun]) -> dict[int, str]:
    """Our run id of each chunk, by the run-id convention (``bananaflow.runid``).

    The store is listed once for all chunks.
    """
    found = run_ids(store)
    ids: dict[int, str] = {}
    for run in runs:
        latest = runid.latest_of(found, run.flow_run_id)
        if latest:
            ids[run.index] = latest
    return ids


def roll_up(ctx: ChainContext, chunks: list[Chunk], runs: list[ChunkRun]) -> list[ManifestRow]:
    """This run's manifest: every job once, as its chunk recorded it, plus which chunk that was.

    A job its chunk never recorded (the chunk run crashed or never started) is a failed row that
    says so, so the manifest still answers for every job.
    """
    ids = chunk_run_ids(ctx.store, runs)
    rows: list[ManifestRow] = []
    for chunk, run in zip(chunks, runs, strict=True):
        run.run_id = ids.get(chunk.index)
        recorded = {r.job_id: r for r in read_manifest(ctx.store, run.run_id)} if run.run_id else {}
        for job, decision in zip(chunk.jobs, chunk.decisions, strict=True):
            row = recorded.get(job.job_id) or _missing(ctx, job, decision, run)
            link = {"chunk_run_id": run.run_id or "", "chunk_flow_run": run.flow_run_name}
            row = row.model_copy(update={"run_id": ctx.run_id, "lineage": {**row.lineage, **link}})
            ctx.manifest.append(row)
            rows.append(row)
    return rows


def _missing(
    ctx: ChainContext, job: ImageJob, decision: RouteDecision, run: ChunkRun
) -> ManifestRow:
    why = f"chunk run {run.flow_run_name} ended {run.state}"
    if run.message:
        why += f": {run.message}"
    return failed_row(
        base_row(ctx, job, decision, utcnow()), BananaflowError(why + "; not rendered")
    )
