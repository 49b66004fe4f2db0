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

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import Field

from bananaflow import comparison, standin
from bananaflow.chain import open_context
from bananaflow.comparison import ComparisonReport
from bananaflow.config import load_settings
from bananaflow.errors import InputError
from bananaflow.generation import ImageSize
from bananaflow.parameters import FormParameters
from bananaflow.render import render_all
from bananaflow.runid import new_run_id
from bananaflow.tasks.blocks import with_blocks
from bananaflow.tasks.chain import CHAIN
from bananaflow.tasks.compare import publish_comparison
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

    def overrides(self, run_id: str) -> dict[str, Any]:
        return {"storage.url": self.output, "upload.prefix": f"runs/{run_id}/images"}


@flow(name="compare")
async def compare(params: CompareParameters | None = None) -> ComparisonReport:
    params = params or CompareParameters()
    run_id = f"compare-{new_run_id(flow_run.get_id())}"
    settings = comparison.measured(
        await with_blocks(standin.apply(load_settings(params.config, params.overrides(run_id))))
    )
    base = expand_prompts(params.prompts, params.batch_file, settings.expand, settings.generate)
    if not base:
        raise InputError("prompts", "nothing to compare", fix="give prompts or a batch_file")
    jobs = comparison.comparison_jobs(base, list(dict.fromkeys(params.image_sizes)))
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
        rows = await render_all(ctx, jobs, decisions, CHAIN, ProgressArtifact(len(jobs)))
        summary = await publish_report(ctx, rows)
        report = await publish_comparison(
            ctx, jobs, rows, len(base), summary.manifest_uri, comparison.setting_note(settings)
        )
    finally:
        await ctx.aclose()
    get_run_logger().info("comparison %s: %s", run_id, report.markdown_uri)
    return report
