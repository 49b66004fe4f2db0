"""The one place a manifest row is built, for every way a job can end.
"""

from __future__ import annotations

from bananaflow.chain.context import ChainContext
from bananaflow.chain.failure import JobFailed
from bananaflow.chain.keys import primary_output_key
from bananaflow.expand import ImageJob
from bananaflow.records import (
    CompressedRef,
    ManifestRow,
    MasterRef,
    RouteAttempt,
    utcnow,
)
from bananaflow.routing import RouteDecision


def base_row(
    ctx: ChainContext, job: ImageJob, decision: RouteDecision, started: str
) -> ManifestRow:
    return ManifestRow(
        run_id=ctx.run_id,
        job_id=job.job_id,
        output_key=primary_output_key(job, decision, ctx.settings),
        status="failed",
        stage=ctx.settings.stage,
        spec_id=job.spec_id,
        prompt=job.prompt,
        original_prompt=job.original_prompt,
        rewritten=job.rewritten,
        aspect_ratio=job.aspect_ratio,
        image_size=job.image_size,
        variant=job.variant,
        seed=job.seed,
        presets=job.presets,
        quality_preset=job.quality,
        references=job.references,
        edit=job.edit,
        routes=[
            RouteAttempt(
                backend=decision.backends[0],
                reason=decision.reason,
                delivery=decision.delivery.delivery,
            )
        ],
        delivery=decision.delivery.delivery,
        delivery_reason=decision.delivery.reason,
        started_at=started,
    )


def uploaded_row(
    row: ManifestRow,
    master: MasterRef,
    compressed: CompressedRef,
    uri: str,
    thumbs: list[str],
    ctx: ChainContext,
) -> ManifestRow:
    return row.model_copy(
        update={
            "status": "uploaded",
            "backend": master.backend,
            "model": master.model,
            "model_version": master.model_version,
            "model_fallback": master.model_fallback,
            "routes": master.routes or row.routes,
            "attempts": 0 if master.reused else master.attempts,
            "latency_s": 0.0 if master.reused else master.latency_s,
            "usage": master.usage,
            "estimated_usd": 0.0 if master.reused else master.estimated_usd,
            "billed_delivery": master.billed_delivery,
            "service_tier": master.service_tier,
            "delivery_fallback": master.delivery_fallback,
            "bytes_raw": master.bytes,
            "bytes_final": compressed.bytes,
            "width": compressed.width,
            "height": compressed.height,
            "sha256": compressed.sha256,
            "uri": uri,
            "master_uri": master.uri if ctx.settings.upload.include_master else "",
            "thumbnail_uris": thumbs,
            "path": ctx.store.relative(uri) or "",
            "master_path": master.path,
            "thumbnail_paths": [ctx.store.relative(t) or "" for t in thumbs],
            "upscale_method": master.upscale_method,
            "batch": master.batch,
            "format": ctx.settings.compress.format,
            "quality": compressed.quality,
            "compress_method": compressed.method,
            "finished_at": utcnow(),
        }
    )


def failed_row(row: ManifestRow, err: BaseException) -> ManifestRow:
    if isinstance(err, JobFailed):
        return row.model_copy(
            update={
                "status": err.status,
                "error": str(err),
                "error_kind": err.kind,
                "routes": err.routes or row.routes,
                "attempts": sum(r.attempts for r in err.routes),
                "finished_at": utcnow(),
            }
        )
    return row.model_copy(
        update={
            "status": "failed",
            "error": str(err) or type(err).__name__,
            "error_kind": type(err).__name__,
            "finished_at": utcnow(),
        }
    )


def reused_row(done: ManifestRow, ctx: ChainContext) -> ManifestRow:
    """A job a previous run finished: recorded again in this run, at no cost."""
    store = ctx.store
    return done.model_copy(
        update={
            "run_id": ctx.run_id,
            # Resolved in the store as it is now: a moved store still points at its files.
            "uri": store.uri(done.path),
            "master_uri": store.uri(done.master_path) if done.master_uri else "",
            "thumbnail_uris": [store.uri(p) for p in done.thumbnail_paths],
            "reused_from_run": done.reused_from_run or done.run_id,
            "attempts": 0,
            "latency_s": 0.0,
            "estimated_usd": 0.0,
            "step_s": {},
            "started_at": utcnow(),
            "finished_at": utcnow(),
        }
    )
