"""The chain for one job, as plain async functions; Prefect tasks are thin shells over these.

generate → [upscale] → compress → upload → manifest row. Between steps only small references
travel (``MasterRef``, ``CompressedRef``); bytes stay in storage or in the run's work dir.

Paying once: a generated master is written to storage and indexed under ``master_key`` (job id +
model) before anything else happens to it, and a finished job is indexed under ``output_key``
(master key + every setting that changes the published bytes). A re-run looks both up first,
so a crash at any point costs at most the request that was in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from bananaflow.backends import create_backend, generate_with_retries
from bananaflow.backends.base import ImageBackend
from bananaflow.config import Settings
from bananaflow.errors import BackendError, BananaflowError, InputError, Refused, Unsupported
from bananaflow.expand import ImageJob
from bananaflow.imaging import derivatives, sniff, upscale_local
from bananaflow.ledger import Claim, Ledger
from bananaflow.limits import LimitedBackend, Limiter, LocalLimiter
from bananaflow.manifest import ManifestWriter
from bananaflow.models import BackendName, ImageRequest
from bananaflow.pricing import Budget, price_per_image
from bananaflow.records import (
    CompressedRef,
    JobStatus,
    ManifestRow,
    MasterRef,
    RouteAttempt,
    utcnow,
)
from bananaflow.retry import retry_async
from bananaflow.routing import RouteDecision, should_fall_back
from bananaflow.shutdown import draining
from bananaflow.spool import Spool
from bananaflow.storage import Store, check_relative, object_name

# Encoding is CPU-bound (Pillow releases the GIL): more at once than cores only adds memory.
_ENCODE_SLOTS = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))


class JobFailed(BananaflowError):
    """A job ended without an uploaded image; carries what the manifest must say."""

    def __init__(
        self, status: JobStatus, error: str, *, kind: str, routes: list[RouteAttempt] | None = None
    ):
        super().__init__(error)
        self.status = status
        self.kind = kind
        self.routes = routes or []


@dataclass
class ChainContext:
    """Everything one run's steps share. Built once per flow run, closed at its end."""

    settings: Settings
    run_id: str
    store: Store
    ledger: Ledger
    spool: Spool
    manifest: ManifestWriter
    budget: Budget
    backends: dict[BackendName, ImageBackend]
    work_dir: Path
    reuse: bool = True  # False: render even when the ledger has it (compare measures latency)
    reserved: dict[str, float] = field(default_factory=dict)  # job id -> budget held for it
    _owns_work_dir: bool = field(default=True, repr=False)

    async def aclose(self) -> None:
        for backend in self.backends.values():
            await backend.aclose()
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def open_context(
    settings: Settings,
    run_id: str,
    backends_needed: set[BackendName],
    *,
    limiter_for: dict[BackendName, Limiter] | None = None,
    reuse: bool = True,
) -> ChainContext:
    """Create clients, store, manifest and budget for a run; fails before any spending."""
    check_upload_names(settings)
    store = Store(settings.storage.url, settings.storage.options)
    store.check_writable()
    backends: dict[BackendName, ImageBackend] = {}
    for name in sorted(backends_needed):
        backend = create_backend(name, settings)
        limiter = (limiter_for or {}).get(name) or local_limiter(settings, name)
        backends[name] = LimitedBackend(backend, limiter)
    return ChainContext(
        settings=settings,
        run_id=run_id,
        store=store,
        ledger=Ledger(store, run_id, claim_ttl_s=claim_ttl_s(settings)),
        spool=Spool(store.url),
        manifest=ManifestWriter(store, run_id),
        budget=Budget(settings.budget.max_usd),
        backends=backends,
        work_dir=Path(tempfile.mkdtemp(prefix=f"bananaflow-{run_id}-")),
        reuse=reuse,
    )


def check_upload_names(settings: Settings) -> None:
    """Expand ``upload.prefix`` + ``upload.name_template`` once with dummy values.

    Names are otherwise first built at upload time, i.e. after the image was paid for; a
    prefix with ``..`` or a template reaching for attributes must fail before that.
    """
    prefix = settings.upload.prefix.strip("/")
    if prefix:
        check_relative(prefix, field="upload.prefix")
    template = settings.upload.name_template
    for sub in ("", "masters", "thumbs/256"):
        joined = "/".join(p for p in (prefix, sub) if p)
        try:
            object_name(template, prefix=joined, sha="0" * 64, ext="webp")
        except InputError as err:
            if err.field != "upload.name_template" or "{" in err.problem:
                raise
            raise InputError(
                "upload.name_template",
                f"{template!r} makes names outside the store ({err.problem})",
                fix="keep names relative, e.g. {prefix}/{sha[:2]}/{sha}.{ext}",
            ) from None


def claim_ttl_s(settings: Settings) -> float:
    """How long a claim holds: the longest a generation may take (every retry and fallback),
    plus storing the master. A holder that outlives it has died or hung."""
    return settings.generate.retry.deadline_s * 2 + 120.0


def local_limiter(settings: Settings, name: BackendName) -> LocalLimiter:
    """The backend's quota for one process; scaled with the embedded emulator's clock."""
    cfg = settings.backends.aistudio if name == "aistudio" else settings.backends.vertex
    scale = settings.emulator.time_scale if settings.emulator.embedded else 1.0
    return LocalLimiter(cfg.requests_per_minute, cfg.concurrency, window_s=60.0 * scale)


# ------------------------------------------------------------------------------- keys


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:32]


def model_for(job: ImageJob, backend: BackendName, settings: Settings) -> str:
    cfg = settings.backends.aistudio if backend == "aistudio" else settings.backends.vertex
    return job.model or cfg.model


def master_key(job: ImageJob, backend: BackendName, model: str) -> str:
    """Identity of the generated bytes: what was asked, of which model, on which platform.

    The platform is part of it because the same model id gives different files on AI Studio
    and Vertex (format, size, metadata). A fallback's master is filed under the primary's key:
    it is what the job asked for.
    """
    return _digest({"job": job.job_id, "backend": backend, "model": model})


def output_key(job: ImageJob, backend: BackendName, model: str, settings: Settings) -> str:
    """Identity of the published result: the master plus every setting that changes the output."""
    return _digest(
        {
            "master": master_key(job, backend, model),
            "upscale": settings.upscale.model_dump(mode="json"),
            "compress": settings.compress.model_dump(mode="json"),
            "upload": settings.upload.model_dump(mode="json"),
        }
    )


def primary_output_key(job: ImageJob, decision: RouteDecision, settings: Settings) -> str:
    primary = decision.backends[0]
    return output_key(job, primary, model_for(job, primary, settings), settings)


# ------------------------------------------------------------------------------- steps


def _object_metadata(ctx: ChainContext, job: ImageJob, master: MasterRef) -> dict[str, str]:
    return {
        "job-id": job.job_id,
        "run-id": ctx.run_id,
        "stage": ctx.settings.stage,
        "backend": master.backend,
        "model": master.model,
        "prompt-sha256": hashlib.sha256(job.prompt.encode()).hexdigest()[:16],
    }


def _path_for(ctx: ChainContext, sub: str, sha: str, ext: str) -> str:
    prefix = "/".join(p for p in (ctx.settings.upload.prefix.strip("/"), sub) if p)
    return object_name(ctx.settings.upload.name_template, prefix=prefix, sha=sha, ext=ext)


def _to_request(job: ImageJob, model: str) -> ImageRequest:
    return ImageRequest(
        prompt=job.prompt, aspect_ratio=job.aspect_ratio, image_size=job.image_size, model=model
    )


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
                _to_request(job, model),
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
        ref = _stamp(
            _describe(ctx, image.data, model, name),
            model_version=image.model_version,
            response_id=image.response_id,
            usage=image.usage,
            latency_s=image.latency_s,
            attempts=sum(r.attempts for r in routes),
            estimated_usd=price,
            routes=routes,
        )
        return await asyncio.to_thread(_keep_paid, ctx, job, key, claim, image.data, ref)
    raise AssertionError("a route always has at least one backend")


def _stamp(ref: MasterRef, **fields: object) -> MasterRef:
    return ref.model_copy(update=fields)


def _describe(ctx: ChainContext, data: bytes, model: str, backend: BackendName) -> MasterRef:
    """The master's record before it is stored: where it will live, what it is."""
    info = sniff(data)
    sha = hashlib.sha256(data).hexdigest()
    sub = "masters" if ctx.settings.upload.include_master else "ledger/masters"
    path = _path_for(ctx, sub, sha, info.ext)
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
        meta = _object_metadata(ctx, job, ref)
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


def _master_bytes(ctx: ChainContext, master: MasterRef) -> bytes:
    """The work-dir copy when this process made it, else the stored master (a re-run)."""
    local = ctx.work_dir / master.sha256
    if local.exists():
        return local.read_bytes()
    data = ctx.store.get(master.path)
    local.write_bytes(data)
    return data


async def upscale_master(ctx: ChainContext, master: MasterRef) -> MasterRef:
    """Vertex's upscaler where it applies, else a local Lanczos resample; records which."""
    cfg = ctx.settings.upscale
    data = await asyncio.to_thread(_master_bytes, ctx, master)
    vertex = ctx.backends.get("vertex")
    method = "local-lanczos"
    upscaled: bytes | None = None
    if cfg.method == "vertex" or (cfg.method == "auto" and vertex is not None):
        if vertex is None:
            raise JobFailed(
                "failed",
                "upscale.method is vertex but no Vertex backend is configured",
                kind="ConfigError",
                routes=master.routes,
            )
        try:
            result, _ = await retry_async(
                lambda: vertex.upscale(data, master.mime_type, cfg.factor),
                ctx.settings.generate.retry,
            )
            upscaled, method = result.data, "vertex"
        except Unsupported:
            if cfg.method == "vertex":
                raise
    if upscaled is None:
        upscaled = (await asyncio.to_thread(upscale_local, data, cfg.factor)).data
    info = sniff(upscaled)
    sha = hashlib.sha256(upscaled).hexdigest()
    (ctx.work_dir / sha).write_bytes(upscaled)
    return master.model_copy(
        update={
            "sha256": sha,
            "mime_type": info.mime_type,
            "width": info.width,
            "height": info.height,
            "bytes": len(upscaled),
            "upscale_method": method,
        }
    )


def compress_master(ctx: ChainContext, master: MasterRef) -> CompressedRef:
    """Encode the web derivative and thumbnails into the work dir (CPU-bound: run in a thread)."""
    cfg = ctx.settings.compress
    with _ENCODE_SLOTS:  # one decoded master per core: a 4K one is ~50 MB of pixels
        data = _master_bytes(ctx, master)
        main, thumbs = derivatives(data, cfg)
        del data

    def keep(enc, tag: str) -> CompressedRef:
        sha = hashlib.sha256(enc.data).hexdigest()
        path = ctx.work_dir / f"{sha}-{tag}.{enc.ext}"
        path.write_bytes(enc.data)
        return CompressedRef(
            local_path=str(path),
            sha256=sha,
            mime_type=enc.mime_type,
            ext=enc.ext,
            width=enc.width,
            height=enc.height,
            bytes=len(enc.data),
            quality=enc.quality,
        )

    ref = keep(main, "main")
    ref.thumbnails = [keep(t, f"t{side}") for t, side in zip(thumbs, cfg.thumbnails, strict=True)]
    return ref


def upload_derivative(
    ctx: ChainContext, job: ImageJob, master: MasterRef, compressed: CompressedRef
) -> tuple[str, list[str]]:
    """Create-only, content-addressed uploads of the derivative and its thumbnails."""
    meta = _object_metadata(ctx, job, master)
    cache = ctx.settings.upload.cache_control

    def put(ref: CompressedRef, sub: str) -> str:
        data = Path(ref.local_path).read_bytes()
        path = _path_for(ctx, sub, ref.sha256, ref.ext)
        return ctx.store.put(
            path, data, content_type=ref.mime_type, metadata=meta, cache_control=cache
        ).uri

    uri = put(compressed, "")
    thumbs = [put(t, f"thumbs/{max(t.width, t.height)}") for t in compressed.thumbnails]
    return uri, thumbs


# ------------------------------------------------------------------------------- records


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
        presets=job.presets,
        routes=[RouteAttempt(backend=decision.backends[0], reason=decision.reason)],
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
            "routes": master.routes or row.routes,
            "attempts": 0 if master.reused else master.attempts,
            "latency_s": 0.0 if master.reused else master.latency_s,
            "usage": master.usage,
            "estimated_usd": 0.0 if master.reused else master.estimated_usd,
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
            "format": ctx.settings.compress.format,
            "quality": compressed.quality,
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
            "started_at": utcnow(),
            "finished_at": utcnow(),
        }
    )
