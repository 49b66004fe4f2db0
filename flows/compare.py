"""compare: the same prompts on AI Studio and on Vertex AI (or bought by each delivery),
measured side by side.

Reads as the recipe: expand the prompts → pin every job to each backend (no fallback) → render
all of it, fresh → publish the platform table (latency, file sizes, timeout / retry / refusal
rates, cost per image) and a side-by-side picture grid. The statistics live in
``bananaflow.comparison``; this flow only runs the renders and stores the results.

Every render is measured: the context does not reuse masters, and the comparison's images are
published under ``runs/<compare run>/images`` (a prefix of their own), so no earlier run's
finished image can stand in for a measurement and the catalogue under ``images/`` stays clean.

With ``deliveries`` (e.g. online, flex, batch) the comparison is of the ways of buying on the
config's platform instead: every prompt × size is bought once per delivery (batch through the
real batch path, waited for in this run: the wait is what it measures) and the delivery table
(cost per image at the billed tier, turnaround, shed / lost lines, fallback and failure rates)
is published; ``bananaflow.comparison_delivery`` holds its statistics.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import Field

from bananaflow import comparison, comparison_delivery, standin
from bananaflow.chain import open_context
from bananaflow.comparison import ComparisonReport
from bananaflow.comparison_delivery import DeliveryReport
from bananaflow.config import Settings, load_settings
from bananaflow.errors import InputError
from bananaflow.expand import ImageJob
from bananaflow.generation import Delivery, ImageSize
from bananaflow.parameters import FormParameters
from bananaflow.preflight import check_prices
from bananaflow.render import render_all
from bananaflow.runid import new_run_id
from bananaflow.tasks.blocks import with_blocks
from bananaflow.tasks.chain import CHAIN
from bananaflow.tasks.compare import publish_comparison, publish_delivery_comparison
from bananaflow.tasks.expand import expand_prompts
from bananaflow.tasks.limits import global_limiters
from bananaflow.tasks.report import ProgressArtifact, publish_report
from bananaflow.tasks.route import route_jobs


class CompareParameters(FormParameters):
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
    deliveries: list[Delivery] = Field(
        default_factory=list,
        description=(
            "Compare these deliveries (online, flex, priority, batch) on the config's platform "
            "instead of the two platforms; empty: compare AI Studio with Vertex AI."
        ),
    )

    def overrides(self, run_id: str) -> dict[str, Any]:
        return {"storage.url": self.output, "upload.prefix": f"runs/{run_id}/images"}


@flow(name="compare")
async def compare(params: CompareParameters | None = None) -> ComparisonReport | DeliveryReport:
    params = params or CompareParameters()
    run_id = f"compare-{new_run_id(flow_run.get_id())}"
    settings = comparison.measured(
        await with_blocks(standin.apply(load_settings(params.config, params.overrides(run_id))))
    )
    base = await expand_prompts(
        params.prompts, params.batch_file, settings.expand, settings.generate
    )
    if not base:
        raise InputError("prompts", "nothing to compare", fix="give prompts or a batch_file")
    if params.deliveries:
        return await compare_deliveries(params, settings, run_id, base)
    jobs = comparison.comparison_jobs(base, list(dict.fromkeys(params.image_sizes)))
    no_fallback = settings.route.model_copy(update={"fallback": []})
    decisions = await route_jobs(jobs, settings.stage, no_fallback)
    ctx = open_context(
        settings,
        run_id,
        set(comparison.BACKENDS),
        limiter_for=global_limiters(settings, decisions),
        reuse=False,
    )
    try:
        rows = await render_all(ctx, jobs, decisions, CHAIN, ProgressArtifact(len(jobs)))
        summary = await publish_report(ctx, rows)
        report = await publish_comparison(
            ctx, jobs, rows, len(base), summary.manifest_uri, comparison.setting_note(settings)
        )
    finally:
        await ctx.aclose()
    get_run_logger().info("comparison %s: %s", run_id, report.markdown_uri)
    return report


async def compare_deliveries(
    params: CompareParameters, settings: Settings, run_id: str, base: list[ImageJob]
) -> DeliveryReport:
    """expand → pin each delivery → route (no backend fallback) → price check → buy each way,
    batch waited for → publish the delivery table."""
    sizes = list(dict.fromkeys(params.image_sizes))
    deliveries = list(dict.fromkeys(params.deliveries))
    jobs = comparison_delivery.delivery_jobs(base, sizes, deliveries, run_id)
    no_fallback = settings.route.model_copy(update={"fallback": []})
    decisions = await route_jobs(jobs, settings.stage, no_fallback)
    check_prices(settings, jobs, decisions)  # before any request: an unpriced delivery is a typo
    ctx = open_context(
        settings,
        run_id,
        {d.primary for d in decisions},
        limiter_for=global_limiters(settings, decisions),
        reuse=False,
    )
    try:
        bar = ProgressArtifact(len(jobs))
        rows = await comparison_delivery.render_deliveries(ctx, jobs, decisions, CHAIN, bar)
        summary = await publish_report(ctx, rows)
        report = await publish_delivery_comparison(
            ctx, rows, len(base), decisions[0].primary, summary.manifest_uri, deliveries
        )
    finally:
        await ctx.aclose()
    get_run_logger().info("delivery comparison %s: %s", run_id, report.markdown_uri)
    return report
