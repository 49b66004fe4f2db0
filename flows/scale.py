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
from prefect.runtime import flow_run
from pydantic import Field

from bananaflow.chain import open_context
from bananaflow.chunking import backends_to_check, roll_up, split, unique_jobs
from bananaflow.config import load_settings
from bananaflow.errors import BananaflowError, InputError
from bananaflow.parameters import FormParameters, GenerateParameters
from bananaflow.records import RunSummary
from bananaflow.runid import new_run_id
from bananaflow.tasks.blocks import with_blocks
from bananaflow.tasks.chunks import publish_chunks, run_chunk
from bananaflow.tasks.expand import expand_prompts
from bananaflow.tasks.report import publish_report
from bananaflow.tasks.route import route_jobs


class ScaleParameters(FormParameters):
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


@flow(name="generate-batch")
async def generate_batch(params: ScaleParameters | None = None) -> RunSummary:
    params = params or ScaleParameters()
    settings = await with_blocks(load_settings(params.batch.config, params.batch.overrides()))
    run_id = new_run_id(flow_run.get_id())
    jobs = unique_jobs(
        params.batch.jobs
        + await expand_prompts(
            params.batch.prompts,
            params.batch.batch_file,
            settings.expand,
            settings.generate,
            settings.storage,
            params.batch.references,
        )
    )
    if not jobs:
        raise InputError("batch.prompts", "nothing to generate", fix="give prompts or a batch_file")
    decisions = await route_jobs(
        jobs,
        settings.stage,
        settings.route,
        params.batch.forced_backend(),
        settings.generate.delivery,
        params.batch.forced_delivery(),
    )
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
