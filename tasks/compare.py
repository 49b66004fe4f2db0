"""publish_comparison: the A/B table, compare.json and the side-by-side grid, stored and shown;
publish_delivery_comparison: the same for a comparison by delivery (table, markdown, json)."""

from __future__ import annotations

import asyncio
import base64
import json

from prefect import task
from prefect.artifacts import (
    acreate_image_artifact,
    acreate_markdown_artifact,
    acreate_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from bananaflow import comparison, comparison_delivery
from bananaflow.chain import ChainContext
from bananaflow.comparison import ComparisonReport
from bananaflow.comparison_delivery import DeliveryReport
from bananaflow.expand import ImageJob
from bananaflow.generation import BackendName, Delivery
from bananaflow.records import ManifestRow

MAX_INLINE_GRID = 1_500_000  # data URIs live in Prefect's database


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
        image_sizes=list(dict.fromkeys(j.image_size for j in jobs)),
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


@task(name="publish_delivery_comparison", cache_policy=NO_CACHE)
async def publish_delivery_comparison(
    ctx: ChainContext,
    rows: list[ManifestRow],
    prompts: int,
    backend: BackendName,
    manifest_uri: str,
    deliveries: list[Delivery],
) -> DeliveryReport:
    """compare.md and compare.json next to the manifest, and as markdown and table artifacts."""
    submitted = await asyncio.to_thread(
        comparison_delivery.batch_submissions, ctx.store, ctx.run_id
    )
    emulator = ctx.settings.emulator
    report = DeliveryReport(
        run_id=ctx.run_id,
        prompts=prompts,
        image_sizes=list(dict.fromkeys(r.image_size for r in rows)),
        deliveries=deliveries,
        backend=backend,
        note=comparison_delivery.time_note(emulator.time_scale, emulator.embedded),
        stats=comparison_delivery.compute_delivery_stats(rows, submitted),
        manifest_uri=manifest_uri,
    )
    markdown = comparison_delivery.delivery_markdown(report)
    base = f"runs/{ctx.run_id}"
    report.markdown_uri = await asyncio.to_thread(
        ctx.store.write_text, f"{base}/compare.md", markdown, content_type="text/markdown"
    )
    text = json.dumps(report.model_dump(mode="json"), indent=2)
    await asyncio.to_thread(ctx.store.write_text, f"{base}/compare.json", text)
    await acreate_markdown_artifact(markdown, key="bananaflow-compare")
    await acreate_table_artifact(
        comparison_delivery.delivery_table(report),
        key="bananaflow-compare-deliveries",
        description=f"comparison by delivery {ctx.run_id}",
    )
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
