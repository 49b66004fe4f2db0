"""promote: the approved images of a finished dev run, re-rendered for production.

Reads as the recipe: find the dev run → pick what is approved (all, a list, or a person ticking
boxes in the Prefect UI while the run is paused) → re-render exactly those jobs on the prod
backend and settings → record the lineage in both manifests. Rendering is the generate flow's
own ``render_all``, so a promotion pays once: repeating it finds every image in the prod
completion index and renders nothing.

A deployment trigger can start it when a dev run completes: ``source_run`` then receives
``prefect.flow-run.<uuid>`` (``{{ event.resource.id }}``), which is resolved to our run id by
the run-id convention of ``bananaflow.runid``.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any, Literal

from prefect import flow, get_client, get_run_logger
from prefect.artifacts import acreate_image_artifact, acreate_markdown_artifact
from prefect.exceptions import ObjectNotFound
from prefect.flow_runs import FlowPauseTimeout, apause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from pydantic import Field, create_model

from bananaflow import promotion, standin
from bananaflow.chain import open_context
from bananaflow.config import Settings, load_settings
from bananaflow.errors import BananaflowError, InputError
from bananaflow.generation import ImageSize
from bananaflow.parameters import FormParameters
from bananaflow.preflight import check_prices
from bananaflow.promotion import DevRun, PromotionSummary
from bananaflow.records import ManifestRow, RunSummary
from bananaflow.render import render_all
from bananaflow.runid import new_run_id
from bananaflow.tasks.blocks import with_blocks
from bananaflow.tasks.chain import CHAIN
from bananaflow.tasks.limits import global_limiters
from bananaflow.tasks.promote import link_dev_rows, read_dev_run
from bananaflow.tasks.report import MAX_INLINE_SHEET, ProgressArtifact, publish_report
from bananaflow.tasks.route import route_jobs


class PromoteParameters(FormParameters):
    """Which dev run, what is approved, and the production settings to render it with."""

    source_run: str = Field(
        description="Dev run id, its manifest URI (…/runs/<id>/manifest.jsonl), or its Prefect "
        "flow-run id (prefect.flow-run.<uuid> or the bare uuid)."
    )
    source_config: str = Field(
        "dev", description="Config of the dev run's storage: local | dev | prod or a path."
    )
    approve: Literal["all-uploaded", "list", "ask"] = Field(
        "ask",
        description="all-uploaded: every uploaded dev image; list: job_ids; ask: pause for a "
        "person to tick images in the Prefect UI.",
    )
    job_ids: list[str] = Field(
        default_factory=list, description="Dev job ids (or 6+ character prefixes) for list."
    )
    config: str = Field("prod", description="Production config: prod or a path.")
    output: str | None = Field(None, description="Prod storage URL override, e.g. gs://bucket.")
    quality: str | None = Field(
        None,
        description="Prod quality preset (e.g. final: Nano Banana Pro at 2K on Vertex); "
        "default: the prod config's generate.quality.",
    )
    image_size: ImageSize | None = Field(
        None, description="Prod size; default: the quality's, else the prod config's."
    )
    upscale: bool | None = Field(None, description="Upscale the prod masters.")
    approval_timeout_s: int = Field(
        3600, ge=1, description="How long ask waits for the form before failing the run."
    )
    approval_poll_s: float = Field(
        10.0, gt=0, description="How often a paused run checks whether it was resumed."
    )

    def overrides(self) -> dict[str, Any]:
        return {
            "stage": "prod",
            "storage.url": self.output,
            "generate.image_size": self.image_size,
            "upscale.enabled": self.upscale,
        }


@flow(name="promote")
async def promote(params: PromoteParameters) -> PromotionSummary:
    dev_settings = await with_blocks(load_settings(params.source_config))
    prod_settings = await with_blocks(load_settings(params.config, params.overrides()))
    quality, preset, size = promotion.prod_target(
        prod_settings.generate, params.quality, params.image_size
    )
    dev = await find_dev_run(params.source_run, dev_settings)
    pool = promotion.candidates(dev.rows)
    approved = promotion.select(dev.rows, params.approve, params.job_ids)
    if approved is None:
        approved = await ask_for_approval(dev, pool, size, params) if pool else []
    plan = promotion.plan(approved, size, quality, preset)
    prod = await render_in_prod(prod_settings, plan) if plan.jobs else None
    linked = link_dev_rows(dev, plan, prod.rows) if prod else 0

    summary = PromotionSummary.build(
        dev_run=dev.run_id,
        dev_manifest_uri=dev.manifest_uri,
        approval=params.approve,
        candidates=len(pool),
        plan=plan,
        prod=prod,
        dev_rows_updated=linked,
    )
    await acreate_markdown_artifact(summary.markdown(), key="bananaflow-promotion")
    get_run_logger().info(
        "dev run %s: %d of %d uploaded images approved; prod run %s: %d rendered, "
        "%d already in production, $%.3f",
        dev.run_id,
        len(summary.approved),
        len(pool),
        summary.prod_run,
        summary.rendered,
        summary.reused,
        summary.estimated_usd,
    )
    return summary


async def render_in_prod(settings: Settings, plan: promotion.PromotionPlan) -> RunSummary:
    """The generate flow's rendering, on prod settings, with the dev origin on every row."""
    decisions = await route_jobs(
        plan.jobs, settings.stage, settings.route, delivery=settings.generate.delivery
    )
    check_prices(settings, plan.jobs, decisions)
    settings = standin.apply(settings)
    ctx = open_context(
        settings,
        new_run_id(flow_run.get_id()),
        {b for d in decisions for b in d.backends},
        limiter_for=global_limiters(settings, decisions),
    )
    try:
        rows = await render_all(
            ctx,
            plan.jobs,
            decisions,
            CHAIN,
            ProgressArtifact(len(plan.jobs)),
            lineage=plan.prod_lineage(),
        )
        return await publish_report(ctx, rows)
    finally:
        await ctx.aclose()


# ------------------------------------------------------------------------------- steps


async def find_dev_run(source_run: str, dev_settings: Settings) -> DevRun:
    """Resolve ``source_run`` to a run in a store and read its manifest."""
    ref = promotion.parse_source_run(source_run)
    storage = dev_settings.storage
    url, options, credentials = storage.url, storage.options, storage.credentials_info
    if ref.kind == "manifest":
        assert ref.store_url is not None
        if ref.store_url.split("://")[0] != url.split("://")[0]:
            options, credentials = {}, None
        url = ref.store_url
    elif ref.kind == "flow_run":
        assert ref.flow_run_id is not None
        url = await _dev_flow_run_output(ref.flow_run_id) or url
    return read_dev_run(ref, url, options, credentials)


async def _dev_flow_run_output(flow_run_id: uuid.UUID) -> str | None:
    """A triggered promotion must not pick up a run that has not finished; and if the dev run
    was given its own ``output``, that is where its manifest is."""
    async with get_client() as client:
        try:
            run = await client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            return None  # another Prefect server's run: the run-id convention still works
    if run.state is not None and not run.state.is_completed():
        raise InputError(
            "source_run",
            f"flow run {flow_run_id} is {run.state.name}, not Completed",
            fix="promote a dev run that has finished",
        )
    params = run.parameters.get("params")
    output = params.get("output") if isinstance(params, dict) else None
    return output if isinstance(output, str) and output else None


async def ask_for_approval(
    dev: DevRun, pool: list[ManifestRow], prod_size: ImageSize, params: PromoteParameters
) -> list[ManifestRow]:
    """Pause this run with one tick box per dev image; a person resumes it from the UI."""
    form = promotion.approval_form(pool, dev.run_id, prod_size)
    sheet = await asyncio.to_thread(promotion.approval_sheet, dev.store(), pool)
    if sheet and len(sheet) <= MAX_INLINE_SHEET:
        await acreate_image_artifact(
            "data:image/jpeg;base64," + base64.b64encode(sheet).decode(),
            key=promotion.APPROVAL_SHEET_KEY,
            description=f"dev run {dev.run_id}: the images waiting for approval",
        )
    fields: dict[str, Any] = {
        f.name: (bool, Field(False, title=f.title, description=f.description)) for f in form.fields
    }
    approval = create_model("PromoteApproval", __base__=RunInput, **fields)
    approval._description = form.description  # shown above the form (markdown)
    try:
        answer = await apause_flow_run(
            wait_for_input=approval,
            timeout=params.approval_timeout_s,
            poll_interval=params.approval_poll_s,  # type: ignore[arg-type]
        )
    except FlowPauseTimeout:
        raise BananaflowError(
            f"nobody approved within approval_timeout_s={params.approval_timeout_s}; nothing "
            "was promoted (run promote again to ask again)"
        ) from None
    chosen = set(form.approved(answer.model_dump()))
    return [r for r in pool if r.job_id in chosen]
