"""generate_batch: one large batch, rendered as chunks by every worker on the pool.

Reads as: expand → split into chunks → run each chunk as a deployment run of the generate flow
(``generate-images/generate-chunk``, all at once; any worker on the pool picks a chunk up) →
wait → roll the chunks' manifests up into this run's manifest → report. No home-made queue:
Prefect's work pool is the queue, and the global limits (``limits.mode: global``) keep all
chunks together inside the Google quota.

Every job lands exactly once: the parent deduplicates jobs by id before splitting, so no two
chunks can pay for the same image, and each chunk re-uses whatever the completion index already
holds, so a re-run of the parent makes no generation request for finished work. The parent's
manifest lists every job, so ``promote`` can take the whole batch by the parent's run id.
"""

from __future__ import annotations

import asyncio

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.deployments.flow_runs import arun_deployment
from pydantic import BaseModel, Field

from bananaflow.chain import ChainContext, base_row, failed_row, model_for, open_context
from bananaflow.config import Settings, load_settings
from bananaflow.errors import BananaflowError, InputError
from bananaflow.expand import ImageJob
from bananaflow.manifest import read_manifest
from bananaflow.models import BackendName
from bananaflow.pricing import price_per_image
from bananaflow.records import ManifestRow, RunSummary, utcnow
from bananaflow.routing import RouteDecision
from bananaflow.storage import Store
from flows.generate import GenerateParameters, new_run_id
from tasks.expand import expand_prompts
from tasks.report import publish_report
from tasks.route import route_jobs

CHUNK_POLL_S = 2.0
MICRO_USD = 1_000_000  # budgets split in integer micro-dollars, as pricing.Budget counts


class ScaleParameters(BaseModel):
    """A batch too large for one flow run, and how to cut it into chunk runs."""

    batch: GenerateParameters = Field(
        default_factory=GenerateParameters,
        description="What to render, exactly as for a generate-images run.",
    )
    chunk_size: int = Field(25, ge=1, le=1000, description="Jobs per chunk run.")
    deployment: str = Field(
        "generate-images/generate-chunk",
        description="Deployment (flow/deployment) that renders one chunk on the work pool.",
    )


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


@flow(name="generate-batch")
async def generate_batch(params: ScaleParameters | None = None) -> RunSummary:
    params = params or ScaleParameters()
    settings = load_settings(params.batch.config, params.batch.overrides())
    run_id = new_run_id()
    jobs = unique_jobs(
        params.batch.jobs
        + expand_prompts(
            params.batch.prompts, params.batch.batch_file, settings.expand, settings.generate
        )
    )
    if not jobs:
        raise InputError("batch.prompts", "nothing to generate", fix="give prompts or a batch_file")
    decisions = route_jobs(jobs, settings.stage, settings.route, params.batch.backend)
    # Storage and credentials are checked once, here, instead of failing in every chunk.
    ctx = open_context(settings, run_id, backends_to_check(settings, decisions))
    try:
        chunks = split(jobs, decisions, params.chunk_size, settings)
        get_run_logger().info(
            "run %s: %d jobs in %d chunks of ≤%d on %s",
            run_id,
            len(jobs),
            len(chunks),
            params.chunk_size,
            params.deployment,
        )
        runs = await asyncio.gather(
            *(run_chunk(params.deployment, params.batch, chunk, run_id) for chunk in chunks)
        )
        rows = await asyncio.to_thread(roll_up, ctx, chunks, runs)
        summary = await publish_report(ctx, rows)
        await publish_chunks(run_id, runs, rows)
    finally:
        await ctx.aclose()
    broken = [r for r in runs if r.state != "COMPLETED"]
    if broken:
        names = ", ".join(f"{r.flow_run_name} ({r.state})" for r in broken)
        raise BananaflowError(
            f"run {run_id}: chunk runs did not complete: {names}; their jobs are marked failed "
            f"in {summary.manifest_uri}; re-run this batch to finish them (done jobs cost nothing)"
        )
    return summary


def backends_to_check(settings: Settings, decisions: list[RouteDecision]) -> set[BackendName]:
    """The backends whose credentials the chunks will need; none with the embedded emulator,
    which each chunk starts for itself."""
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
                price_per_image(model_for(j, d.primary, settings), j.image_size, settings.prices)
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


async def run_chunk(
    deployment: str, batch: GenerateParameters, chunk: Chunk, parent_run_id: str
) -> ChunkRun:
    """One chunk as a deployment run (a subflow of this run in the UI); waits for its end."""
    child = batch.model_copy(
        update={"prompts": [], "batch_file": None, "jobs": chunk.jobs, "max_usd": chunk.max_usd}
    )
    flow_run: FlowRun = await arun_deployment(
        deployment,
        parameters={"params": child.model_dump(mode="json")},
        flow_run_name=f"{parent_run_id}-chunk-{chunk.index:03d}",
        timeout=None,
        poll_interval=CHUNK_POLL_S,
        as_subflow=True,
    )
    state = flow_run.state
    return ChunkRun(
        index=chunk.index,
        flow_run_id=str(flow_run.id),
        flow_run_name=flow_run.name,
        state=state.type.value if state else "UNKNOWN",
        message=state.message if state else None,
    )


def chunk_run_ids(store: Store, runs: list[ChunkRun]) -> dict[int, str]:
    """Our run id of each chunk, by the run-id convention of ``new_run_id``.

    A run id is ``<UTC stamp>-<first 8 characters of its Prefect flow-run id>``; a flow run that
    Prefect retried wrote a newer stamp with the same suffix, and the newest one finished last.
    The store is listed once for all chunks.
    """
    found = sorted({p.split("/")[1] for p in store.list("runs") if p.count("/") >= 2})
    ids: dict[int, str] = {}
    for run in runs:
        matches = [r for r in found if r.endswith("-" + run.flow_run_id[:8])]
        if matches:
            ids[run.index] = matches[-1]
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


async def publish_chunks(run_id: str, runs: list[ChunkRun], rows: list[ManifestRow]) -> None:
    """A table of the chunk runs next to the usual results table, for finding a chunk's logs."""
    by_chunk: dict[str, dict[str, int]] = {}
    for row in rows:
        counts = by_chunk.setdefault(row.lineage.get("chunk_flow_run", ""), {})
        counts[row.status] = counts.get(row.status, 0) + 1
    await acreate_table_artifact(
        table=[
            {
                "chunk": r.index,
                "flow_run": r.flow_run_name,
                "state": r.state,
                "run_id": r.run_id or "",
                "jobs": ", ".join(
                    f"{k}: {v}" for k, v in sorted(by_chunk.get(r.flow_run_name, {}).items())
                ),
                "message": (r.message or "")[:200],
            }
            for r in runs
        ],
        key="bananaflow-chunks",
        description=f"run {run_id}: chunk runs",
    )
