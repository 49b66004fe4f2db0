"""compare: the same prompts on AI Studio and on Vertex AI, measured side by side.

Reads as the recipe: expand the prompts → pin every job to each backend (no fallback) → render
all of it, fresh → publish the platform table (latency, file sizes, timeout / retry / refusal
rates, cost per image) and a side-by-side picture grid. The statistics live in
``bananaflow.comparison``; this flow only runs the renders and stores the results.

Every render is measured: the context does not reuse masters, and the comparison's images are
published under ``runs/<compare run>/images`` (a prefix of their own), so no earlier run's
finished image can stand in for a measurement and the catalogue under ``images/`` stays clean.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    acreate_image_artifact,
    acreate_markdown_artifact,
    acreate_table_artifact,
)
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from bananaflow import comparison
from bananaflow.chain import ChainContext, open_context
from bananaflow.comparison import ComparisonReport
from bananaflow.config import Settings, load_settings
from bananaflow.emulator.embedded import embedded_emulator
from bananaflow.errors import InputError
from bananaflow.expand import ImageJob
from bananaflow.models import ImageSize
from bananaflow.records import ManifestRow
from flows.generate import global_limiters, new_run_id, render_all
from tasks.expand import expand_prompts
from tasks.report import publish_report
from tasks.route import route_jobs

MAX_INLINE_GRID = 1_500_000  # data URIs live in Prefect's database


class CompareParameters(BaseModel):
    """Which prompts to render on both platforms, at which sizes, and where to keep the results."""

    prompts: list[str] = Field(default_factory=list, description="Prompts to compare.")
    batch_file: str | None = Field(None, description="YAML, JSONL or CSV of prompt specs.")
    config: str = Field("local", description="local | dev | prod, or a path to a YAML config.")
    image_sizes: list[ImageSize] = Field(
        default_factory=lambda: ["1K"],
        min_length=1,
        description="Sizes to compare; each prompt is rendered at each size on each platform.",
    )
    output: str | None = Field(None, description="Storage URL, e.g. gs://bucket/path.")

    def overrides(self, run_id: str) -> dict[str, Any]:
        return {"storage.url": self.output, "upload.prefix": f"runs/{run_id}/images"}


@flow(name="compare")
async def compare(params: CompareParameters | None = None) -> ComparisonReport:
    params = params or CompareParameters()
    run_id = f"compare-{new_run_id()}"
    settings = measured(load_settings(params.config, params.overrides(run_id)))
    with embedded_emulator(settings) as (settings, emulator):
        base = expand_prompts(params.prompts, params.batch_file, settings.expand, settings.generate)
        if not base:
            raise InputError("prompts", "nothing to compare", fix="give prompts or a batch_file")
        jobs = comparison.comparison_jobs(base, _unique(params.image_sizes))
        no_fallback = settings.route.model_copy(update={"fallback": []})
        decisions = route_jobs(jobs, settings.stage, no_fallback)
        ctx = open_context(
            settings,
            run_id,
            set(comparison.BACKENDS),
            limiter_for=global_limiters(settings, decisions),
            reuse=False,
        )
        try:
            rows = await render_all(ctx, jobs, decisions)
            summary = await publish_report(ctx, rows)
            note = (
                f"embedded emulator, every delay x{settings.emulator.time_scale}"
                if emulator is not None
                else ""
            )
            report = await publish_comparison(
                ctx, jobs, rows, len(base), summary.manifest_uri, note
            )
        finally:
            await ctx.aclose()
    get_run_logger().info("comparison %s: %s", run_id, report.markdown_uri)
    return report


def measured(settings: Settings) -> Settings:
    """Cap jobs in flight at the smaller backend concurrency: no job then waits for a
    concurrency slot inside its measured latency (the per-minute quota still applies)."""
    if settings.generate.concurrency:
        return settings
    cap = min(settings.backends.aistudio.concurrency, settings.backends.vertex.concurrency)
    generate = settings.generate.model_copy(update={"concurrency": cap})
    return settings.model_copy(update={"generate": generate})


def _unique(sizes: list[ImageSize]) -> list[ImageSize]:
    return list(dict.fromkeys(sizes))


@task(name="publish_comparison", cache_policy=NO_CACHE)
async def publish_comparison(
    ctx: ChainContext,
    jobs: list[ImageJob],
    rows: list[ManifestRow],
    prompts: int,
    manifest_uri: str,
    note: str,
) -> ComparisonReport:
    """compare.md, compare.json and compare-grid.jpg next to the manifest, and as artifacts."""
    report = ComparisonReport(
        run_id=ctx.run_id,
        prompts=prompts,
        image_sizes=_unique([j.image_size for j in jobs]),
        note=note,
        stats=comparison.compute_stats(rows),
        pairs=comparison.pairs(jobs, rows),
        manifest_uri=manifest_uri,
    )
    grid = await asyncio.to_thread(write_grid, ctx, report)
    report.grid_uri = grid[0]
    markdown = comparison.comparison_markdown(report)
    store = ctx.store
    base = f"runs/{ctx.run_id}"
    report.markdown_uri = await asyncio.to_thread(
        store.write_text, f"{base}/compare.md", markdown, content_type="text/markdown"
    )
    text = json.dumps(report.model_dump(mode="json"), indent=2)
    await asyncio.to_thread(store.write_text, f"{base}/compare.json", text)

    await acreate_markdown_artifact(markdown, key="bananaflow-compare")
    await acreate_table_artifact(
        comparison.comparison_table(report),
        key="bananaflow-compare-table",
        description=f"comparison {ctx.run_id}",
    )
    if len(grid[1]) <= MAX_INLINE_GRID:
        data_uri = "data:image/jpeg;base64," + base64.b64encode(grid[1]).decode()
        await acreate_image_artifact(data_uri, key="bananaflow-compare-grid", description=grid[0])
    return report


def write_grid(ctx: ChainContext, report: ComparisonReport) -> tuple[str, bytes]:
    def read(uri: str) -> bytes | None:
        path = ctx.store.relative(uri)
        try:
            return ctx.store.get(path) if path else None
        except FileNotFoundError:
            return None

    grid = comparison.comparison_grid(report.pairs, read)
    path = f"runs/{ctx.run_id}/compare-grid.jpg"
    uri = ctx.store.put(path, grid, content_type="image/jpeg", create_only=False).uri
    return uri, grid
