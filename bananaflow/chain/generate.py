"""The master of a job: from the ledger, the spool, or one paid generation under a claim."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from bananaflow.backends import generate_with_retries
from bananaflow.chain.context import ChainContext, claim_ttl_s
from bananaflow.chain.conversation import earlier_turns
from bananaflow.chain.failure import JobFailed
from bananaflow.chain.keys import master_key, model_for
from bananaflow.chain.objects import object_metadata, path_for
from bananaflow.chain.request import image_request, provider_encoding, reference_images
from bananaflow.config import Settings
from bananaflow.delivery import billed_delivery, is_shed, retry_policy
from bananaflow.errors import BackendError, InputError, Refused, Shed
from bananaflow.expand import ImageJob
from bananaflow.generation import (
    BackendName,
    EditTurn,
    GeneratedImage,
    ImageRequest,
    ProvisionedThroughput,
    ReferenceImage,
    SyncDelivery,
)
from bananaflow.imagetype import identify
from bananaflow.ledger import Claim
from bananaflow.pricing import price_for
from bananaflow.provisioned import PT_FIELD, billed_price, over_order, pool_fallback, pool_for
from bananaflow.records import (
    JobStatus,
    MasterRef,
    RouteAttempt,
)
from bananaflow.routing import RouteDecision, should_fall_back
from bananaflow.shutdown import draining
from bananaflow.tiers import fallback_models, may_change_model, wire_model

Move = Literal["primary", "backend", "model"]


def _to_request(
    job: ImageJob,
    attempt: _Attempt,
    delivery: SyncDelivery,
    encoding: dict[str, Any],
    pool: ProvisionedThroughput | None,
) -> ImageRequest:
    return image_request(
        job, attempt.wire_model, attempt.references, delivery, encoding, attempt.history, pool
    )


def _reference_images(ctx: ChainContext, job: ImageJob) -> list[ReferenceImage]:
    return reference_images(ctx.settings, job)


def _tries(
    settings: Settings, job: ImageJob, decision: RouteDecision
) -> list[tuple[BackendName, str, Move]]:
    """(backend, model, how we got there) in the order they are tried.

    The job's model on every backend of its route first (a backend fallback keeps the image
    the job asked for); then each configured fallback model, on the same backends. A step of
    an edit chain is asked of its primary backend and model only: the thought signatures it
    sends back are that model's, and a re-run continues the chain where it stopped.
    """
    tries: list[tuple[BackendName, str, Move]] = [
        (name, model_for(job, name, settings), "primary" if i == 0 else "backend")
        for i, name in enumerate(decision.backends)
    ]
    if job.edit is not None:
        return tries[:1]
    primary_model = tries[0][1]
    for other in fallback_models(settings, job, primary_model):
        tries += [(name, other, "model") for name in decision.backends]
    return tries


def _may_move(move: Move, error: BackendError) -> bool:
    return may_change_model(error) if move == "model" else should_fall_back(error)


def reserve_budget(ctx: ChainContext, job: ImageJob, decision: RouteDecision) -> str | None:
    """Hold the job's price before it starts; the reason it may not start, or None.

    Decided before the generate task runs, so a deliberate skip is a row, not a failed task.
    An image the ledger already holds costs nothing and always goes ahead.
    """
    primary = decision.backends[0]
    model = model_for(job, primary, ctx.settings)
    if ctx.reuse and ctx.ledger.paid(master_key(job, primary, model)) is not None:
        return None
    price = price_for(ctx.settings, model, job.image_size, decision.delivery.delivery)
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
        ttl_s = claim_ttl_s(ctx.settings, decision.delivery.delivery)
        verdict = await ctx.ledger.acquire(key, poll_s=_poll_s(ctx.settings), ttl_s=ttl_s)
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
    """Try the job's model on each backend of its route, then each allowed fallback model;
    within one try, a shed flex call is bought again by its fallback delivery, and a Vertex
    call over its Provisioned Throughput order from PayGo when configured."""
    settings = ctx.settings
    decided = decision.delivery.delivery
    if decided == "batch":  # bought by the batch delivery (routing.partition_by_delivery)
        _give_back(ctx, job)
        raise JobFailed(
            "failed",
            "delivery batch is bought through the Batch API / batch prediction, not one "
            "generateContent call each; this run only buys online, flex and priority",
            kind="WrongDelivery",
            routes=[],
        )
    try:
        references = await asyncio.to_thread(_reference_images, ctx, job)
    except InputError as err:
        _give_back(ctx, job)
        raise JobFailed("failed", str(err), kind="InputError", routes=[]) from err
    tries = _tries(settings, job, decision)
    try:
        history = await asyncio.to_thread(earlier_turns, ctx, job, *tries[0][:2])
    except JobFailed:
        _give_back(ctx, job)
        raise
    routes: list[RouteAttempt] = []
    last: BackendError | None = None
    for name, model, move in tries:
        if last is not None and not _may_move(move, last):
            continue
        if move == "primary":
            reason = decision.reason
        elif move == "backend":
            reason = f"fallback after {routes[-1].outcome}"
        else:
            reason = (
                f"model fallback {tries[0][1]} → {model} after {routes[-1].outcome} "
                f"(models.{tries[0][1]}.fallback)"
            )
        try:
            sent = await ctx.uploads.sent(name, job, references)
        except (BackendError, InputError) as err:  # a reference upload failed: nothing paid
            _give_back(ctx, job)
            raise JobFailed(
                "failed", f"reference upload: {err}", kind=type(err).__name__, routes=routes
            ) from err
        attempt = _Attempt(name, model, wire_model(settings, model, name), sent, history)
        delivery: SyncDelivery = decided
        pool = pool_for(name, settings)
        fell_back: str | None = None
        while True:
            retried: list[str] = []
            try:
                image = await _generate(ctx, job, decision, attempt, delivery, pool, retried)
            except Shed as err:
                routes.append(
                    _record(
                        attempt, reason, delivery, err.kind, getattr(err, "attempts", 1), retried
                    )
                )
                if pool == "dedicated":  # _generate sheds it only with a PayGo fallback
                    pool = "shared"
                    fell_back = reason = (
                        f"Provisioned Throughput order used up on {name} (HTTP {err.status}) "
                        f"→ shared PayGo ({PT_FIELD}_fallback)"
                    )
                    continue
                instead = decision.delivery.fallback
                assert instead is not None  # _generate only sheds with a fallback to go to
                fell_back = (
                    f"{delivery} shed by {name} (HTTP {err.status}) → {instead} "
                    f"(route.delivery_fallback.{delivery})"
                )
                _hold_more(
                    ctx, job, price_for(settings, model, job.image_size, instead), instead, routes
                )
                delivery, reason = instead, fell_back
                continue
            except BackendError as err:
                routes.append(
                    _record(
                        attempt, reason, delivery, err.kind, getattr(err, "attempts", 1), retried
                    )
                )
                last = err
                break
            except InputError as err:  # e.g. a Vertex-only option on a job falling back
                _give_back(ctx, job)
                routes.append(_record(attempt, reason, delivery, "invalid request"))
                raise JobFailed("failed", str(err), kind="InputError", routes=routes) from err
            routes.append(_record(attempt, reason, delivery, "ok", image.attempts, retried))
            bought = _Purchase(
                image, model, name, delivery, fell_back, reason if move == "model" else None
            )
            return await _paid(ctx, job, key, claim, bought, routes)
    assert last is not None, "a route always has at least one backend"
    _give_back(ctx, job)
    status: JobStatus = "refused" if isinstance(last, Refused) else "failed"
    raise JobFailed(status, str(last), kind=type(last).__name__, routes=routes) from last


@dataclass(frozen=True)
class _Attempt:
    """One backend and model of a job's tries, with what is sent to it."""

    backend: BackendName
    model: str  # the catalogue id (prices, records)
    wire_model: str  # the id this backend knows it by
    references: list[ReferenceImage]
    history: list[EditTurn]  # an edit step's earlier exchanges (empty otherwise)


def _record(
    attempt: _Attempt,
    reason: str,
    delivery: SyncDelivery,
    outcome: str,
    attempts: int = 1,
    retried: list[str] | None = None,
) -> RouteAttempt:
    return RouteAttempt(
        backend=attempt.backend,
        model=attempt.model,
        reason=reason,
        delivery=delivery,
        outcome=outcome,
        attempts=attempts,
        retried=retried or [],
    )


async def _generate(
    ctx: ChainContext,
    job: ImageJob,
    decision: RouteDecision,
    attempt: _Attempt,
    delivery: SyncDelivery,
    pool: ProvisionedThroughput | None,
    retried: list[str],
) -> GeneratedImage:
    """One backend, one delivery, one pool, under its retry policy; a shed call (flex, or PT
    only over the order) with somewhere to fall back to ends at once as :class:`Shed` instead
    of being retried."""
    settings = ctx.settings
    fallback = decision.delivery.fallback if delivery == decision.delivery.delivery else None
    paygo = pool_fallback(settings, pool)

    def shed(err: BackendError) -> bool:
        if pool == "dedicated":
            return paygo is not None and over_order(err, pool)
        return fallback is not None and is_shed(err, delivery, settings.route)

    encoding = provider_encoding(attempt.backend, settings)
    return await generate_with_retries(
        ctx.backends[attempt.backend],
        _to_request(job, attempt, delivery, encoding, pool),
        retry_policy(settings.generate.retry, delivery),
        on_retry=lambda err, _n, _wait: retried.append(err.kind),
        shed=shed,
    )


def _hold_more(
    ctx: ChainContext,
    job: ImageJob,
    price: float,
    instead: SyncDelivery,
    routes: list[RouteAttempt],
) -> None:
    """Raise the job's budget hold to ``price`` before buying it the dearer way, or stop."""
    held = ctx.reserved.get(job.job_id, 0.0)
    extra = max(0.0, price - held)
    if extra and not ctx.budget.try_reserve(extra):
        _give_back(ctx, job)
        raise JobFailed(
            "skipped_budget",
            f"{routes[-1].delivery} was shed and buying it {instead} at {price:.4f} USD would pass "
            f"budget.max_usd {ctx.settings.budget.max_usd}; job not bought",
            kind="budget",
            routes=routes,
        )
    ctx.reserved[job.job_id] = held + extra


@dataclass(frozen=True)
class _Purchase:
    """One image bought: by which backend, model and delivery, and why not as decided."""

    image: GeneratedImage
    model: str
    backend: BackendName
    delivery: SyncDelivery
    fell_back: str | None
    model_fallback: str | None


async def _paid(
    ctx: ChainContext,
    job: ImageJob,
    key: str,
    claim: Claim | None,
    bought: _Purchase,
    routes: list[RouteAttempt],
) -> MasterRef:
    """Charge what Google says it served, at the price of the model that answered (a
    downgraded priority call costs standard; a Pro job answered by Nano Banana 2 costs what
    Nano Banana 2 costs), then make the paid bytes durable."""
    image, asked = bought.image, bought.delivery
    billed = billed_delivery(asked, image.service_tier)
    cost = billed_price(ctx.settings, bought.model, job.image_size, billed, image.service_tier)
    note = bought.fell_back
    if billed != asked:
        downgrade = (
            f"{asked} served as {image.service_tier} by {bought.backend}; billed as {billed}"
        )
        note = f"{note}; {downgrade}" if note else downgrade
    held = ctx.reserved.pop(job.job_id, None)
    if held is not None:
        ctx.budget.commit(held, actual=cost)
    return await asyncio.to_thread(
        store_master,
        ctx,
        job,
        key,
        claim,
        image,
        routes=routes,
        price=cost,
        model=bought.model,
        extra={
            "billed_delivery": billed,
            "service_tier": image.service_tier,
            "delivery_fallback": note,
            "model_fallback": bought.model_fallback,
        },
    )


def store_master(
    ctx: ChainContext,
    job: ImageJob,
    key: str,
    claim: Claim | None,
    image: GeneratedImage,
    *,
    routes: list[RouteAttempt],
    price: float,
    model: str | None = None,
    extra: dict[str, object] | None = None,
) -> MasterRef:
    """A paid image becomes the job's durable master (online answer or provider batch line).

    ``model`` is the catalogue id when the backend knows the model by another name.
    """
    ref = _describe(ctx, image.data, model or image.model, image.backend).model_copy(
        update={
            "model_version": image.model_version,
            "response_id": image.response_id,
            "usage": image.usage,
            "latency_s": image.latency_s,
            "attempts": sum(r.attempts for r in routes),
            "estimated_usd": price,
            "routes": routes,
            # The next step of the chain sends this answer back (chain/conversation.py).
            "answer": image.answer() if job.edit is not None else None,
            **(extra or {}),
        }
    )
    return _keep_paid(ctx, job, key, claim, image.data, ref)


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
