"""generate_images: prompts in, finished images and a manifest out.

Reads as the chain: expand → route → generate → [upscale] → compress → upload → manifest.
Its one parameter is a pydantic model, so the Prefect UI shows a form for it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from bananaflow.chain import (
    ChainContext,
    base_row,
    failed_row,
    open_context,
    reused_row,
    uploaded_row,
)
from bananaflow.config import Settings, load_settings
from bananaflow.emulator.embedded import embedded_emulator
from bananaflow.errors import InputError
from bananaflow.expand import ImageJob
from bananaflow.memory import return_large_buffers_to_os
from bananaflow.models import AspectRatio, BackendName, ImageSize
from bananaflow.records import ManifestRow, RunSummary, utcnow
from bananaflow.routing import RouteDecision
from tasks.compress import compress_image
from tasks.expand import expand_prompts, rewrite_prompts
from tasks.generate import generate_image
from tasks.limits import PrefectGlobalLimiter
from tasks.report import ProgressArtifact, publish_report
from tasks.route import route_jobs
from tasks.upload import upload_image
from tasks.upscale import upscale_image

log = logging.getLogger("bananaflow")

# In-process listeners (the CLI's progress bar); flow parameters must stay serialisable.
ProgressListener = Callable[[ManifestRow], None]
_listeners: list[ProgressListener] = []


class GenerateParameters(BaseModel):
    """What to generate and where; anything left empty comes from the config file."""

    prompts: list[str] = Field(default_factory=list, description="Prompts to render as-is.")
    batch_file: str | None = Field(None, description="YAML, JSONL or CSV of prompt specs.")
    jobs: list[ImageJob] = Field(
        default_factory=list,
        description="Already expanded jobs (set by the scale-out parent and by promote).",
    )
    config: str = Field("local", description="local | dev | prod, or a path to a YAML config.")
    stage: Literal["dev", "prod"] | None = Field(
        None, description="dev → AI Studio, prod → Vertex."
    )
    backend: BackendName | None = Field(None, description="Force one backend for every job.")
    aspect_ratio: AspectRatio | None = None
    image_size: ImageSize | None = None
    output: str | None = Field(None, description="Storage URL, e.g. gs://bucket/path.")
    max_usd: float | None = Field(None, ge=0, description="Budget cap for this run.")
    upscale: bool | None = None
    format: Literal["jpeg", "webp", "avif", "png"] | None = None

    def overrides(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "generate.aspect_ratio": self.aspect_ratio,
            "generate.image_size": self.image_size,
            "storage.url": self.output,
            "budget.max_usd": self.max_usd,
            "upscale.enabled": self.upscale,
            "compress.format": self.format,
        }


def new_run_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run = flow_run.get_id() or uuid.uuid4().hex
    return f"{stamp}-{str(run)[:8]}"


@flow(name="generate-images")
async def generate_images(params: GenerateParameters | None = None) -> RunSummary:
    params = params or GenerateParameters()
    return_large_buffers_to_os()  # 4K masters: keep peak memory from becoming the floor
    settings = load_settings(params.config, params.overrides())
    run_id = new_run_id()
    with embedded_emulator(settings) as (settings, emulator):
        if emulator is not None:
            log.info(
                "embedded emulator of AI Studio + Vertex (no Google calls) on %s", emulator.url
            )
        jobs = params.jobs + expand_prompts(
            params.prompts, params.batch_file, settings.expand, settings.generate
        )
        if not jobs:
            raise InputError("prompts", "nothing to generate", fix="give prompts or a batch_file")
        decisions = route_jobs(jobs, settings.stage, settings.route, params.backend)
        ctx = open_context(
            settings,
            run_id,
            {b for d in decisions for b in d.backends},
            limiter_for=global_limiters(settings, decisions),
        )
        try:
            if settings.expand.rewrite:
                jobs = await rewrite_prompts(jobs, ctx.backends[decisions[0].backends[0]])
            rows = await render_all(ctx, jobs, decisions)
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


def global_limiters(settings: Settings, decisions: list[RouteDecision]) -> dict:
    if settings.limits.mode != "global":
        return {}
    names = {b for d in decisions for b in d.backends}
    return {name: PrefectGlobalLimiter(settings, name) for name in names}


async def render_all(
    ctx: ChainContext,
    jobs: list[ImageJob],
    decisions: list[RouteDecision],
    lineage: dict[str, dict[str, str]] | None = None,
) -> list[ManifestRow]:
    """Run every job's chain concurrently; one job's failure never touches another.

    ``lineage`` (job id → links) is written into each row before it reaches the manifest.
    """
    progress = ProgressArtifact(len(jobs))
    await progress.start(ctx.run_id)
    in_flight = asyncio.Semaphore(_jobs_in_flight(ctx.settings, decisions))

    async def one(job: ImageJob, decision: RouteDecision) -> ManifestRow:
        async with in_flight:
            row = await render_one(ctx, job, decision)
        if lineage and job.job_id in lineage:
            row = row.model_copy(update={"lineage": {**row.lineage, **lineage[job.job_id]}})
        await asyncio.to_thread(ctx.manifest.append, row)
        if row.status == "uploaded" and row.reused_from_run is None:
            await asyncio.to_thread(ctx.index.put_done, row)
        await progress.advance()
        for listener in _listeners:
            listener(row)
        return row

    return list(await asyncio.gather(*(one(j, d) for j, d in zip(jobs, decisions, strict=True))))


def _jobs_in_flight(settings: Settings, decisions: list[RouteDecision]) -> int:
    """Enough jobs to keep every backend's quota busy while others compress and upload."""
    if settings.generate.concurrency:
        return settings.generate.concurrency
    backends = {d.backends[0] for d in decisions} or {"aistudio"}
    cfg = {"aistudio": settings.backends.aistudio, "vertex": settings.backends.vertex}
    return max(2, 2 * sum(cfg[b].concurrency for b in backends))


async def render_one(ctx: ChainContext, job: ImageJob, decision: RouteDecision) -> ManifestRow:
    row = base_row(ctx, job, decision, utcnow())
    done = await asyncio.to_thread(ctx.index.get_done, row.output_key) if ctx.reuse else None
    if done is not None:
        return reused_row(done, ctx)
    try:
        master = await generate_image(ctx, job, decision)
        if ctx.settings.upscale.enabled:
            master = await upscale_image(ctx, master)
        compressed = await compress_image(ctx, master)
        uri, thumbs = await upload_image(ctx, job, master, compressed)
    except Exception as err:  # one job's failure (or bug) must not sink the batch
        return failed_row(row, err)
    return uploaded_row(row, master, compressed, uri, thumbs, ctx)
