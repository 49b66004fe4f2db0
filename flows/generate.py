"""generate_images: prompts in, finished images and a manifest out.

Reads as the chain: expand → route → generate → [upscale] → compress → upload → manifest.
Its one parameter is a pydantic model, so the Prefect UI shows a form for it. Whether the
backends are Google or the embedded emulator was decided by the entry point that started the
run; this flow only reads the config.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import deployment, flow_run

from bananaflow import standin
from bananaflow.batch.deliver import deliver
from bananaflow.chain import open_context
from bananaflow.config import Settings, load_settings
from bananaflow.errors import InputError
from bananaflow.expand import ImageJob
from bananaflow.memory import return_large_buffers_to_os
from bananaflow.parameters import GenerateParameters
from bananaflow.preflight import check_prices
from bananaflow.records import RunSummary
from bananaflow.render import render_into
from bananaflow.routing import RouteDecision, partition_by_delivery
from bananaflow.runid import new_run_id
from bananaflow.tally import RunTally
from bananaflow.tasks.batch import publish_pending_batches
from bananaflow.tasks.blocks import with_blocks
from bananaflow.tasks.chain import CHAIN
from bananaflow.tasks.expand import expand_prompts, rewrite_prompts
from bananaflow.tasks.limits import global_limiters
from bananaflow.tasks.report import ProgressArtifact, publish_report
from bananaflow.tasks.route import route_jobs


@flow(name="generate-images")
async def generate_images(params: GenerateParameters | None = None) -> RunSummary:
    params = params or GenerateParameters()
    return_large_buffers_to_os()  # 4K masters: keep peak memory from becoming the floor
    settings = await with_blocks(standin.apply(load_settings(params.config, params.overrides())))
    run_id = new_run_id(flow_run.get_id())
    jobs = params.jobs + await expand_prompts(
        params.prompts,
        params.batch_file,
        settings.expand,
        settings.generate,
        settings.storage,
        params.references,
    )
    if not jobs:
        raise InputError("prompts", "nothing to generate", fix="give prompts or a batch_file")
    decisions = await route_jobs(
        jobs,
        settings.stage,
        settings.route,
        params.forced_backend(),
        settings.generate.delivery,
        params.forced_delivery(),
    )
    check_prices(settings, jobs, decisions)  # models, sizes, references: before any request
    ctx = open_context(
        settings,
        run_id,
        {b for d in decisions for b in d.backends},
        limiter_for=global_limiters(settings, decisions),
    )
    try:
        if settings.expand.rewrite:
            jobs = await rewrite_prompts(jobs, ctx.backends[decisions[0].backends[0]])
        bar = ProgressArtifact(len(jobs))
        # A large run keeps counters and the rows that need a person, not every row.
        tally = RunTally([job.job_id for job in jobs], keep_rows=settings.generate.summary_rows)
        synchronous, batch = partition_by_delivery(jobs, decisions)
        del jobs, decisions  # the renderer's queue holds each job from here, until it ends
        if synchronous:
            await render_into(ctx, synchronous, CHAIN, bar, tally)
        if batch:
            tally.extend(await deliver(ctx, *_unzip(batch), CHAIN, bar, wait=_waits(settings)))
            await publish_pending_batches(settings, run_id)
        summary = await publish_report(ctx, tally)
    finally:
        await ctx.aclose()
    get_run_logger().info(
        "run %s: %s, $%.3f, manifest %s",
        run_id,
        summary.counts,
        summary.estimated_usd,
        summary.manifest_uri,
    )
    return summary


def _unzip(
    pairs: list[tuple[ImageJob, RouteDecision]],
) -> tuple[list[ImageJob], list[RouteDecision]]:
    return [job for job, _ in pairs], [decision for _, decision in pairs]


def _waits(settings: Settings) -> bool:
    """Batch delivery: the CLI waits for the batch (a person is watching); a deployment run
    submits and ends, and the collect-batches deployment finishes its jobs: no worker is
    held for the hours a provider batch may take."""
    return settings.batch.wait and deployment.id is None
