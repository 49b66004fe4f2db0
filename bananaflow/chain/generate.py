"""The master of a job: from the ledger, the spool, or one paid generation under a claim.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from bananaflow.backends import generate_with_retries
from bananaflow.chain.context import ChainContext
from bananaflow.chain.failure import JobFailed
from bananaflow.chain.keys import master_key, model_for
from bananaflow.chain.objects import object_metadata, path_for
from bananaflow.config import Settings
from bananaflow.errors import BackendError, InputError, Refused
from bananaflow.expand import ImageJob
from bananaflow.generation import BackendName, ImageRequest
from bananaflow.imagetype import identify
from bananaflow.ledger import Claim
from bananaflow.pricing import price_per_image
from bananaflow.records import (
    JobStatus,
    MasterRef,
    RouteAttempt,
)
from bananaflow.routing import RouteDecision, should_fall_back
from bananaflow.shutdown import draining


def _to_request(
    job: ImageJob, model: str, backend: BackendName, settings: Settings
) -> ImageRequest:
    return ImageRequest(
        prompt=job.prompt,
        aspect_ratio=job.aspect_ratio,
        image_size=job.image_size,
        model=model,
        seed=job.seed,
        **provider_encoding(backend, settings),
    )


def provider_encoding(backend: BackendName, settings: Settings) -> dict[str, Any]:
    """Vertex encodes the JPEG we publish, at our quality, when asked (``imageOutputOptions``).

    The compress step then publishes those bytes with only their metadata rewritten
    (``imaging.passthrough``): no 4K decode and encode here, and a JPEG instead of a 20 MB PNG
    over the wire. Not with upscaling, whose input should stay lossless.
    """
    cfg = settings.compress
    if backend != "vertex" or cfg.format != "jpeg" or not cfg.provider_jpeg:
        return {}
    if settings.upscale.enabled:
        return {}
    return {"output_mime_type": "image/jpeg", "output_quality": cfg.quality}


def reserve_budget(ctx: ChainContext, job: ImageJob, decision: RouteDecision) -> str | None:
    """Hold the job's price before it starts; the reason it may not start, or None.

    Decided before the generate task runs, so a deliberate skip is a row, not a failed task.
    An image the ledger already holds costs nothing and always goes ahead.
    """
    primary = decision.backends[0]
    model = model_for(job, primary, ctx.settings)
    if ctx.reuse and ctx.ledger.paid(master_key(job, primary, model)) is not None:
        return None
    price = price_per_image(model, job.image_size, ctx.settings.prices)
    if not ctx.budget.try_reserve(price):
        cap = ctx.settings.budget.max_usd
        why = (
            "budget.max_usd is 0: nothing may be spent (finished jobs are still reused)"
            if cap == 0
            else f"budget.max_usd {cap} reached"
        )
        return f"{why}; job not started"
    ctx.reserved[job.job_id] = price
    return None


def _give_back(ctx: ChainContext, job: ImageJob) -> None:
    price = ctx.reserved.pop(job.job_id, None)
    if price is not None:
        ctx.budget.release(price)


async def generate_master(ctx: ChainContext, job: ImageJob, decision: RouteDecision) -> MasterRef:
    """The job's master: from the ledger, the spool, or one paid generation under a claim.

    The claim is taken before any request is sent and the bytes are durable (store, or the
    local spool when the store refuses them) before this returns, so a crash at any point
    costs at most the answer in flight, and two runs never both pay for one image.
    """
    primary = decision.backends[0]
    key = master_key(job, primary, model_for(job, primary, ctx.settings))
    claim: Claim | None = None
    if ctx.reuse:
        verdict = await ctx.ledger.acquire(key, poll_s=_poll_s(ctx.settings))
        if verdict.master is not None:
            _give_back(ctx, job)
            return verdict.master.model_copy(update={"reused": True})
        claim = verdict.claim
    try:
        spooled = await asyncio.to_thread(_from_spool, ctx, job, key, claim)
        if spooled is not None:
            _give_back(ctx, job)
            return spooled
        if draining.is_set():
            _give_back(ctx, job)
            raise JobFailed("interrupted", "stopped before it started", kind="stop", routes=[])
        return await _pay_for_master(ctx, job, decision, key, claim)
    finally:
        if claim is not None:
            await asyncio.to_thread(ctx.ledger.release, claim)


def _poll_s(settings: Settings) -> float:
    scale = settings.emulator.time_scale if settings.emulator.embedded else 1.0
    return max(0.05, min(1.0, scale))


async def _pay_for_master(
    ctx: ChainContext, job: ImageJob, decision: RouteDecision, key: str, claim: Claim | None
) -> MasterRef:
    settings = ctx.settings
    price = ctx.reserved.get(job.job_id, 0.0)
    routes: list[RouteAttempt] = []
    for i, name in enumerate(decision.backends):
        model = model_for(job, name, settings)
        reason = decision.reason if i == 0 else f"fallback after {routes[-1].outcome}"
        retried: list[str] = []
        try:
            image = await generate_with_retries(
                ctx.backends[name],
                _to_request(job, model, name, settings),
                settings.generate.retry,
                on_retry=lambda err, _n, _wait, kinds=retried: kinds.append(err.kind),
            )
        except BackendError as err:
            routes.append(
                RouteAttempt(
                    backend=name,
                    reason=reason,
                    outcome=err.kind,
                    attempts=getattr(err, "attempts", 1),
                    retried=retried,
                )
            )
            if i + 1 < len(decision.backends) and should_fall_back(err):
                continue
            _give_back(ctx, job)
            status: JobStatus = "refused" if isinstance(err, Refused) else "failed"
            raise JobFailed(status, str(err), kind=type(err).__name__, routes=routes) from err
        except InputError as err:  # e.g. a Vertex-only option on a job falling back to AI Studio
            _give_back(ctx, job)
            routes.append(RouteAttempt(backend=name, reason=reason, outcome="invalid request"))
            raise JobFailed("failed", str(err), kind="InputError", routes=routes) from err
        routes.append(
            RouteAttempt(
                backend=name, reason=reason, outcome="ok", attempts=image.attempts, retried=retried
            )
        )
        if job.job_id in ctx.reserved:
            ctx.budget.commit(ctx.reserved.pop(job.job_id))
        ref = _describe(ctx, image.data, model, name).model_copy(
            update={
                "model_version": image.model_version,
                "response_id": image.response_id,
                "usage": image.usage,
                "latency_s": image.latency_s,
                "attempts": sum(r.attempts for r in routes),
                "estimated_usd": price,
                "routes": routes,
            }
        )
        return await asyncio.to_thread(_keep_paid, ctx, job, key, claim, image.data, ref)
    raise AssertionError("a route always has at least one backend")


def _describe(ctx: ChainContext, data: bytes, model: str, backend: BackendName) -> MasterRef:
    """The master's record before it is stored: where it will live, what it is."""
    info = identify(data)
    sha = hashlib.sha256(data).hexdigest()
    sub = "masters" if ctx.settings.upload.include_master else "ledger/masters"
    path = path_for(ctx, sub, sha, info.ext)
    return MasterRef(
        uri=ctx.store.uri(path),
        path=path,
        sha256=sha,
        mime_type=info.mime_type,
        width=info.width,
        height=info.height,
        bytes=len(data),
        backend=backend,
        model=model,
    )


def _keep_paid(
    ctx: ChainContext, job: ImageJob, key: str, claim: Claim | None, data: bytes, ref: MasterRef
) -> MasterRef:
    """Paid bytes become durable before any later step can fail: the store, else the spool."""
    (ctx.work_dir / ref.sha256).write_bytes(data)
    try:
        # The same job metadata as the derivative: an audit can count masters per job.
        meta = object_metadata(ctx, job, ref)
        ctx.store.put(ref.path, data, content_type=ref.mime_type, metadata=meta)
        if claim is not None:
            ctx.ledger.record_paid(claim, ref)
    except Exception as err:
        where = ctx.spool.keep(key, data, ref)
        raise JobFailed(
            "failed",
            f"the paid image could not be stored in {ctx.store.url} "
            f"({err.__class__.__name__}: {str(err)[:160]}); it is kept in {where} and the "
            "next run against this store saves it there without paying again",
            kind="StoreUnavailable",
            routes=ref.routes,
        ) from None
    return ref


def _from_spool(
    ctx: ChainContext, job: ImageJob, key: str, claim: Claim | None
) -> MasterRef | None:
    """A master an earlier run paid for but could not store: stored now, at no cost."""
    found = ctx.spool.take(key)
    if found is None:
        return None
    data, ref = found
    ref = ref.model_copy(update={"uri": ctx.store.uri(ref.path)})
    kept = _keep_paid(ctx, job, key, claim, data, ref)
    ctx.spool.drop(key)
    return kept.model_copy(update={"reused": True})
