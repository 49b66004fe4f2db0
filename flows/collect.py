"""collect_batches: finish the jobs of provider batches that have ended.

Batch delivery's waiting mechanism. A deployment run of generate-images submits its provider
batch, writes ``pending_batch`` rows and ends: no worker waits for the hours a batch may take.
This flow, deployed on a schedule (collect-batches, every few minutes), looks once at every
recorded batch not yet collected; an ended one has its answers matched to jobs by key and run
through the ordinary chain (compress, upload, manifest) under the submitting run's id, so that
run's manifest completes in place. A batch still pending costs one status read per visit.

``cancel_run`` cancels a run's batches at the provider first; their jobs then end (CANCELLED,
with the reason, or the configured online fallback) in this same visit.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from pydantic import Field

from bananaflow import standin
from bananaflow.batch.control import run_batches
from bananaflow.batch.deliver import finish
from bananaflow.batch.provider import ProviderPool
from bananaflow.chain import open_context
from bananaflow.config import load_settings
from bananaflow.parameters import FormParameters
from bananaflow.records import RunSummary
from bananaflow.tasks.batch import cancel_batches, publish_pending_batches
from bananaflow.tasks.blocks import with_blocks
from bananaflow.tasks.chain import CHAIN
from bananaflow.tasks.report import ProgressArtifact, publish_report


class CollectParameters(FormParameters):
    """Which store's batches to collect, and optionally a run whose batches to cancel."""

    config: str = Field("local", description="local | dev | prod, or a path to a YAML config.")
    cancel_run: str | None = Field(
        None, description="Cancel this run's pending provider batches before collecting."
    )


@flow(name="collect-batches")
async def collect_batches(params: CollectParameters | None = None) -> list[RunSummary]:
    params = params or CollectParameters()
    settings = await with_blocks(standin.apply(load_settings(params.config)))
    if params.cancel_run:
        await cancel_batches(settings, params.cancel_run)
    summaries = []
    providers = ProviderPool(settings)
    try:
        for record in [r for r in run_batches(settings) if not r.collected]:
            ctx = open_context(settings, record.run_id, {record.backend})
            try:
                bar = ProgressArtifact(len(record.jobs))
                rows = await finish(ctx, providers(record.backend), record, CHAIN, bar)
                if rows is not None:
                    summaries.append(await publish_report(ctx, rows))
            finally:
                await ctx.aclose()
    finally:
        await providers.aclose()
    waiting = await publish_pending_batches(settings)
    get_run_logger().info("collected %d ended batch(es); %d still pending", len(summaries), waiting)
    return summaries
