"""generate_images: prompts in, finished images and a manifest out.

Reads as the chain: expand → route → generate → [upscale] → compress → upload → manifest.
Its one parameter is a pydantic model, so the Prefect UI shows a form for it. Whether the
backends are Google or the embedded emulator was decided by the entry point that started the
run; this flow only reads the config.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from bananaflow import standin
from bananaflow.chain import open_context
from bananaflow.config import load_settings
from bananaflow.errors import InputError
from bananaflow.memory import return_large_buffers_to_os
from bananaflow.parameters import GenerateParameters
from bananaflow.records import RunSummary
from bananaflow.render import render_all
from bananaflow.runid import new_run_id
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
    jobs = params.jobs + expand_prompts(
        params.prompts, params.batch_file, settings.expand, settings.generate
    )
    if not jobs:
        raise InputError("prompts", "nothing to generate", fix="give prompts or a batch_file")
    decisions = route_jobs(jobs, settings.stage, settings.route, params.forced_backend())
    ctx = open_context(
        settings,
        run_id,
        {b for d in decisions for b in d.backends},
        limiter_for=global_limiters(settings, decisions),
    )
    try:
        if settings.expand.rewrite:
            jobs = await rewrite_prompts(jobs, ctx.backends[decisions[0].backends[0]])
        rows = await render_all(ctx, jobs, decisions, CHAIN, ProgressArtifact(len(jobs)))
        summary = await publish_report(ctx, rows)
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
