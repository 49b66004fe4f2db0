"""The life of one API call: route, authenticate, validate, decide its fate, answer.

Order matters and copies Google's: authentication first (a bad key is a 400/403 whatever the
body), then the model, then the body, then quota, then the model "runs" (latency, refusals,
rendering). Forced faults are taken after validation, so a test can't burn a queued fault on
a request that would have been rejected anyway; ``token_expired`` is the exception, as it is a
fault of authentication itself. A forced fault replaces the request's normal fate: it takes no
quota slot and no random fault is rolled for it, so what a test forces is exactly what it gets.

Besides generating, the same pipeline answers what an SDK asks about models: ``models.get``,
``models.list`` (paged) and ``countTokens``, from the catalogue that also validates generation.
Those calls are authenticated like any other but take no quota and no forced fault, so a client
that looks a model up first cannot burn a fault a test queued for its generate call.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bananaflow.config import BackendProfile, EmulatorSettings
from bananaflow.emulator import faults as flt
from bananaflow.emulator import messages as msg
from bananaflow.emulator import responses as resp
from bananaflow.emulator.auth import api_key_of, bearer_of
from bananaflow.emulator.catalog import (
    PRO,
    ImageModel,
    OtherModel,
    image_model,
    listed,
    model_kind,
    other_model,
    output_pixels,
    output_tokens,
    thinks,
)
from bananaflow.emulator.filedata import fetch_files
from bananaflow.emulator.imagegen import FORMAT_OF_MIME, ImageSpec, probe, render, upscale
from bananaflow.emulator.routing import NoRoute, Route, parse
from bananaflow.emulator.state import Call, EmulatorState
from bananaflow.emulator.textgen import count_tokens, rewrite
from bananaflow.emulator.validation import (
    GenerateRequest,
    parse_count_tokens,
    parse_generate,
    parse_upscale,
)

GENERATE_OPS = frozenset({"generateContent", "streamGenerateContent"})
READ_OPS = frozenset({"get", "list", "countTokens"})
# models.list page sizes: AI Studio defaults to 50 and caps at 1000; Vertex's
# ListPublisherModels defaults to 100 (the catalogue is small: paging is what matters).
DEFAULT_PAGE_SIZE = {"aistudio": 50, "vertex": 100}
MAX_PAGE_SIZE = 1000
# Vertex routes a request to a pool by these headers (batch-and-model-tiers.md §5.2).
REQUEST_TYPE_HEADER = "x-vertex-ai-llm-request-type"
SHARED_REQUEST_TYPE_HEADER = "x-vertex-ai-llm-shared-request-type"
TRAFFIC_OF_TIER = {
    "priority": "ON_DEMAND_PRIORITY",
    "flex": "ON_DEMAND_FLEX",
    "provisioned": "PROVISIONED_THROUGHPUT",
}
PAYGO_TIERS = ("priority", "flex")  # what X-Vertex-AI-LLM-Shared-Request-Type may ask for
# The Pro model's interim thought image: a composition draft at this fraction of each side
# (small on purpose: interim images are not billed, and clients must simply skip them).
DRAFT_SCALE = 4
MAX_UPSCALE_PIXELS = 17_000_000
VERTEX_JPEG_DEFAULT_QUALITY = 75  # what Vertex uses when JPEG is asked without a quality
# Faults answered with an error status instead of a body.
ERROR_FAULTS = frozenset(
    {"quota", "quota_daily", "quota_billing", "500", "502", "503", "504", "hang", "flex_shed"}
)
# A token dies of age or revocation, never in the instant after it was issued: random expiry
# spares tokens younger than this (scaled), so a client's refresh-and-replay cannot meet a
# second, impossible 401 just because twenty other requests shared the fresh token.
RANDOM_EXPIRY_MIN_AGE_S = 60.0
FORCED_REFUSALS = {
    "image_safety": "IMAGE_SAFETY",
    "no_image_refusal": "NO_IMAGE",
    "prompt_blocked": "PROMPT_BLOCKED",
}


class DroppedConnection(httpx.RemoteProtocolError):
    """Raised on purpose by the ``reset`` fault after part of the body was sent.

    Over a socket the server just closes the connection (clients see httpx's
    RemoteProtocolError); through ``httpx.ASGITransport`` this exception reaches the client as
    is, and being a RemoteProtocolError it looks the same to client code.
    """


class DroppedResponse(Response):
    """Status, headers with the full Content-Length, half the body, then a dropped connection."""

    def __init__(self, payload: bytes, media_type: str):
        super().__init__(b"", 200, media_type=media_type)
        self.payload = payload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", str(self.media_type).encode("latin-1")),
            (b"content-length", str(len(self.payload)).encode("latin-1")),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        half = self.payload[: max(1, len(self.payload) // 2)]
        await send({"type": "http.response.body", "body": half, "more_body": True})
        raise DroppedConnection("emulated connection reset (reset fault)")


def received_url(request: Request) -> str:
    """The URL as the client sent it (raw path and query), for the request log."""
    scope = request.scope
    raw = scope.get("raw_path") or scope["path"].encode()
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    query = scope.get("query_string", b"").decode("latin-1")
    host = request.headers.get("host") or "emulator"
    return f"{scope.get('scheme', 'http')}://{host}{path}" + (f"?{query}" if query else "")


@dataclass
class Ctx:
    """One API call being handled."""

    state: EmulatorState
    request: Request
    route: Route
    kind: str | None
    call: Call
    stream: bool
    sse: bool
    holds_slot: bool = False
    batch_line: bool = False  # a line of a provider batch: no online quota, no own latency

    @property
    def settings(self) -> EmulatorSettings:
        return self.state.settings

    @property
    def profile(self) -> BackendProfile:
        return self.state.settings.profiles[self.route.backend]

    @property
    def scale(self) -> float:
        return self.state.settings.time_scale

    def release(self) -> None:
        if self.holds_slot:
            self.holds_slot = False
            self.state.quotas[self.route.backend].release()


# ---------------------------------------------------------------------------- entry point


async def api_endpoint(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    route = parse(request.method, request.url.path)
    if isinstance(route, NoRoute):
        if route.status == 405:
            return error_response(msg.method_not_allowed(route.allowed))
        return error_response(msg.route_not_found())
    kind = model_kind(route.model, route.backend) if route.model else None
    stream = route.operation == "streamGenerateContent"
    call = state.begin(
        method=request.method,
        url=received_url(request),
        backend=route.backend,
        operation=route.operation,
        model=route.model,
        generation=kind == "image" and route.operation in GENERATE_OPS,
        api=True,
    )
    ctx = Ctx(state, request, route, kind, call, stream, stream and _wants_sse(request))
    try:
        return await _handle(ctx)
    except msg.ApiError as err:
        state.decide(call, err.status, str(err.status))
        return error_response(err, array=ctx.stream and not ctx.sse)
    finally:
        ctx.release()
        state.end(call)


def _wants_sse(request: Request) -> bool:
    return request.query_params.get("alt") == "sse"


def error_response(err: msg.ApiError, *, array: bool = False) -> Response:
    """Errors on a non-SSE stream come wrapped in a JSON array, as Google sends them."""
    if isinstance(err.body, str):
        return Response(err.body, err.status, headers=err.headers, media_type=err.media_type)
    payload = resp.dumps([err.body] if array else err.body)
    return Response(
        payload, err.status, headers=err.headers, media_type="application/json; charset=UTF-8"
    )


async def _handle(ctx: Ctx) -> Response:
    _authenticate(ctx)
    _check_project(ctx)
    _check_model(ctx)
    if ctx.route.operation == "list":
        return _list_models(ctx)
    if ctx.route.operation == "get":
        return _get_model(ctx)
    body = await _json_body(ctx.request)
    if ctx.route.operation == "countTokens":
        return _count_tokens(ctx, body)
    files = await fetch_files(ctx.state, ctx.route, body)
    if ctx.kind == "image":
        return await _generate_image(ctx, parse_generate(ctx.route, body, files))
    if ctx.kind == "text":
        return await _generate_text(ctx, parse_generate(ctx.route, body, files))
    return await _upscale(ctx, body)


# ---------------------------------------------------------------------------- checks


def _authenticate(ctx: Ctx) -> None:
    route, request, entry = ctx.route, ctx.request, ctx.call.entry
    token = bearer_of(request) if route.backend == "vertex" else None
    if route.backend == "aistudio" or (route.express and token is None):
        key = api_key_of(request)
        entry["auth"] = "api_key" if key else None
        entry["key_in_url"] = "key" in request.query_params
        if key is None:
            if route.backend == "vertex":
                raise msg.unauthenticated("CREDENTIALS_MISSING", _method(route))
            raise msg.missing_key()
        if key not in ctx.settings.api_keys:
            service = msg.AISTUDIO_SERVICE if route.backend == "aistudio" else msg.VERTEX_SERVICE
            raise msg.invalid_key(service)
        return
    entry["auth"] = "bearer" if token else None
    if token is None:
        raise msg.unauthenticated("CREDENTIALS_MISSING", _method(route))
    reason = ctx.state.tokens.check(token)
    if reason is not None:
        raise msg.unauthenticated(reason or None, _method(route))
    if route.operation in READ_OPS:
        return  # model reads take no forced or random fault (see the module docstring)
    forced = ctx.state.faults.take("auth", route.backend, route.operation)
    name = forced.fault if forced is not None else None
    if (
        name is None
        and ctx.kind == "image"
        and ctx.state.tokens.age(token) >= RANDOM_EXPIRY_MIN_AGE_S * ctx.scale
        and roll(ctx.state, "token_expired")
    ):
        name = "random:token_expired"
    if name is not None:
        ctx.state.tokens.revoke(token)
        ctx.state.note_fault(ctx.call, name)
        raise msg.unauthenticated("ACCESS_TOKEN_EXPIRED", _method(route))


def roll(state: EmulatorState, fault: str, backend: str = "vertex") -> bool:
    """One seeded draw against ``profiles[backend].fault_rates[fault]`` (no draw at rate 0).

    Token faults belong to Vertex (the only bearer-token platform), so their rates are read
    from the Vertex profile; skipping the draw at rate 0 keeps older seeded runs identical.
    """
    profile = state.settings.profiles.get(backend)  # type: ignore[call-overload]
    rate = profile.fault_rates.get(fault, 0.0) if profile is not None else 0.0
    return rate > 0 and state.rng.random() < rate


def _method(route: Route) -> str:
    names = {"get": "GetPublisherModel", "list": "ListPublisherModels"}
    return names.get(route.operation) or route.operation[0].upper() + route.operation[1:]


def _check_project(ctx: Ctx) -> None:
    """Vertex answers 403 for a project the caller has no access to; only ours exists here."""
    r = ctx.route
    if r.project is not None and r.project != ctx.settings.project:
        raise msg.permission_denied(r.project, r.location or "global", r.model)


def _check_model(ctx: Ctx) -> None:
    """404 for unknown and retired ids, and for a method the model does not serve."""
    r = ctx.route
    if r.operation == "list":
        return
    ok = (
        (ctx.kind in ("image", "text") and r.operation in GENERATE_OPS | {"countTokens"})
        or (ctx.kind == "upscale" and r.operation == "predict" and r.backend == "vertex")
        or (ctx.kind is not None and r.operation == "get")
    )
    spec = image_model(r.model)
    if (
        ok
        and spec is not None
        and spec.vertex_global_only
        and r.backend == "vertex"
        and r.location not in (None, "global")
    ):
        ok = False  # a global-only model asked for in a region (§4.1): Vertex has none there
    if not ok:
        raise msg.model_not_found(r.backend, r.version, r.model, r.operation, r.resource)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        snippet = raw[:40].decode("utf-8", "replace")
        raise msg.invalid_json(f"Unexpected token.\n{snippet}\n^") from None


# ---------------------------------------------------------------------------- model reads


def _json(ctx: Ctx, body: Any) -> Response:
    ctx.state.decide(ctx.call, 200, "ok")
    return Response(resp.dumps(body), 200, media_type="application/json; charset=UTF-8")


def _describe(route: Route, model: ImageModel | OtherModel, name: str) -> dict[str, Any]:
    if route.backend == "aistudio":
        return resp.aistudio_model(model, name)
    return resp.vertex_model(model, name)


def _get_model(ctx: Ctx) -> Response:
    name = ctx.route.model
    model: ImageModel | OtherModel | None = image_model(name) or other_model(name)
    assert model is not None  # _check_model answered 404 otherwise
    return _json(ctx, _describe(ctx.route, model, name))


def _page_token(backend: str, offset: int) -> str:
    raw = f"{backend}:{offset}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _page_offset(backend: str, token: str) -> int:
    """Page tokens are opaque to clients; a forged or foreign one is a 400, as at Google."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, _, offset = raw.partition(":")
        if prefix == backend and offset.isdigit():
            return int(offset)
    except (ValueError, UnicodeDecodeError):
        pass
    raise msg.bad_request("Invalid page token.")


def _list_models(ctx: Ctx) -> Response:
    """``models.list``: pageSize/pageToken in, nextPageToken out only while more remain."""
    backend = ctx.route.backend
    params = ctx.request.query_params
    if params.get("filter"):  # the SDK's tuned-model listing: this emulator has none
        return _json(ctx, {})
    size_text = params.get("pageSize", "")
    try:
        size = int(size_text) if size_text else 0
    except ValueError:
        raise msg.bad_request(
            f"Invalid value at 'page_size' (TYPE_INT32), \"{size_text}\""
        ) from None
    if size < 0:
        raise msg.bad_request("page_size must not be negative.")
    size = min(size or DEFAULT_PAGE_SIZE[backend], MAX_PAGE_SIZE)
    token = params.get("pageToken", "")
    offset = _page_offset(backend, token) if token else 0
    models = listed(backend)
    page = models[offset : offset + size]
    key = "models" if backend == "aistudio" else "publisherModels"
    body: dict[str, Any] = {key: [_describe(ctx.route, m, m.id) for m in page]}
    if offset + size < len(models):
        body["nextPageToken"] = _page_token(backend, offset + size)
    return _json(ctx, body)


def _count_tokens(ctx: Ctx, body: Any) -> Response:
    """The prompt tokens generateContent would bill for the same contents."""
    count = parse_count_tokens(ctx.route, body)
    spec = image_model(ctx.route.model)
    per_image = spec.input_image_tokens if spec is not None else PRO.input_image_tokens
    details = [{"modality": "TEXT", "tokenCount": count.text_tokens}]
    if count.image_count:
        details.append({"modality": "IMAGE", "tokenCount": count.image_count * per_image})
    out: dict[str, Any] = {"totalTokens": count.text_tokens + count.image_count * per_image}
    if ctx.route.backend == "vertex":
        out["totalBillableCharacters"] = count.characters
    out["promptTokensDetails"] = details
    return _json(ctx, out)


# ---------------------------------------------------------------------------- fates


def _service_tier(ctx: Ctx, requested: str | None) -> str:
    """The tier that serves the call: the one asked for, unless the model has no such tier
    (Lite: standard only), in which case it runs as standard, as a priority overflow does."""
    spec = image_model(ctx.route.model)
    tiers = spec.service_tiers if spec is not None else PRO.service_tiers
    return requested if requested in tiers else "standard"


def _requested_tier(ctx: Ctx, body_tier: str | None, *, image: bool = False) -> str:
    """The tier a call asks for and the model offers: the body's ``serviceTier`` (the SDK sends
    it on both platforms) or, on Vertex, the request-type headers, which win.

    Vertex routes an image call to the project's Provisioned Throughput order
    (``provisioned_images_per_min``) first unless ``shared`` says PayGo only; over the order it
    spills over to the PayGo tier asked for, except ``dedicated`` (PT only): 429, the documented
    PT text. Text calls and batch lines have no order.
    """
    requested = body_tier
    if ctx.route.backend == "vertex":
        headers = ctx.request.headers
        pool = headers.get(REQUEST_TYPE_HEADER, "").lower()
        from_order = image and not ctx.batch_line and pool != "shared"
        if from_order and ctx.state.provisioned.take():
            return "provisioned"
        if pool == "dedicated":
            raise msg.provisioned_throughput_exceeded()
        shared = headers.get(SHARED_REQUEST_TYPE_HEADER, "").lower()
        if shared in PAYGO_TIERS:
            requested = shared
    return _service_tier(ctx, requested)


def _traffic_type(ctx: Ctx, tier: str) -> str:
    """Vertex's billing pool for the tier that served the call; AI Studio has none."""
    return TRAFFIC_OF_TIER.get(tier, "ON_DEMAND") if ctx.route.backend == "vertex" else ""


def _tier_fate(ctx: Ctx, tier: str) -> str:
    """Seeded tier behaviour: a flex call shed, a priority call served as standard.

    No draw at rate 0, so seeded runs without tier simulation see the same faults as before.
    """
    p = ctx.profile
    if tier == "flex" and p.flex_shed_rate > 0 and ctx.state.rng.random() < p.flex_shed_rate:
        ctx.state.note_fault(ctx.call, "random:flex_shed")
        _shed(ctx, p.flex_shed_status)
    if (
        tier == "priority"
        and p.priority_downgrade_rate > 0
        and ctx.state.rng.random() < p.priority_downgrade_rate
    ):
        ctx.state.note_fault(ctx.call, "random:priority_downgrade")
        return "standard"
    return tier


def _shed(ctx: Ctx, status: int) -> None:
    """A flex call turned away for lack of capacity (Google's exact answer is unverified)."""
    if status == 503:
        raise msg.unavailable()
    if ctx.route.backend == "vertex":
        raise msg.vertex_quota()
    raise msg.aistudio_busy(30.0 * ctx.scale)


def _admit(ctx: Ctx) -> None:
    """Take a quota slot or answer 429 the way this backend does."""
    quota = ctx.state.quotas.get(ctx.route.backend)
    if quota is None or ctx.batch_line:
        return
    rejection = quota.admit()
    if rejection is None:
        ctx.holds_slot = True
        return
    ctx.call.entry["quota"] = rejection.kind
    if ctx.route.backend == "vertex":
        raise msg.vertex_quota()
    if rejection.kind == "concurrency":
        raise msg.aistudio_busy(rejection.retry_after_s or 0.0)
    raise msg.aistudio_quota(
        ctx.route.model,
        rejection.limit,
        rejection.retry_after_s,
        per_day=rejection.kind == "day",
    )


# Random fault classes an image request can draw, in draw order (the token faults are drawn
# where they happen: in authentication and at /token).
RANDOM_IMAGE_FAULTS: tuple[str, ...] = tuple(
    sorted((flt.GENERIC | flt.IMAGE_BODY | flt.GENERATION) - {"prompt_blocked"})
)


def _roll_random_fault(ctx: Ctx) -> str | None:
    """The profile's background failure rates (seeded, so a run is reproducible).

    ``hang_rate`` and ``error_rates`` are the measured platform behaviour; ``fault_rates`` adds
    every other fault class for fault-matrix runs. The first class that hits wins.
    """
    rng, p = ctx.state.rng, ctx.profile
    if p.hang_rate > 0 and rng.random() < p.hang_rate:
        return "hang"
    for code, rate in sorted(p.error_rates.items()):
        if rate > 0 and rng.random() < rate:
            return str(code)
    for name in RANDOM_IMAGE_FAULTS:
        rate = p.fault_rates.get(name, 0.0)
        if rate > 0 and rng.random() < rate:
            return name
    return None


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


async def _hang(ctx: Ctx, seconds: float) -> None:
    """Hold the request open without answering; stop early if the client gave up."""
    ctx.state.decide(ctx.call, 504, "hang")
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(0.05, remaining))
        if await ctx.request.is_disconnected():
            break
    raise msg.deadline()


async def _error_fault(ctx: Ctx, name: str, params: dict[str, Any]) -> None:
    """Raise the error answer for a forced or random fault (``hang`` first holds the call)."""
    backend, model, p = ctx.route.backend, ctx.route.model, ctx.profile
    if name == "hang":
        await _hang(ctx, float(params.get("hang_s", p.hang_s)) * ctx.scale)
    if name == "quota":
        if backend == "vertex":
            raise msg.vertex_quota()
        delay = float(params.get("retry_delay_s", 34.0)) * ctx.scale
        raise msg.aistudio_quota(model, p.requests_per_minute or 60, delay)
    if name == "quota_daily":
        if backend == "vertex":
            raise msg.vertex_quota()
        raise msg.aistudio_quota(model, p.requests_per_day or 1500, None, per_day=True)
    if name == "quota_billing":
        raise msg.billing_quota()
    if name == "500":
        raise msg.internal(backend)
    if name == "502":
        raise msg.bad_gateway()
    if name == "503":
        raise msg.unavailable()
    if name == "504":
        raise msg.deadline()
    if name == "flex_shed":
        _shed(ctx, int(params.get("status", p.flex_shed_status)))
    code = int(name)
    if code in msg.STATUS_NAMES:
        raise msg.error(code, str(params.get("message", "Emulated failure.")))
    raise msg.ApiError(code, {"error": {"code": code, "message": "Emulated failure."}})


async def _take_fault(
    ctx: Ctx, kind: flt.RequestKind, tier: str | None = None
) -> flt.ForcedFault | None:
    """Consume a forced fault; error faults are answered right here."""
    forced = ctx.state.faults.take(kind, ctx.route.backend, ctx.route.operation, tier)
    if forced is None:
        return None
    ctx.state.note_fault(ctx.call, forced.fault)
    if forced.fault in ERROR_FAULTS:
        await _error_fault(ctx, forced.fault, forced.params)
    return forced


def _latency(ctx: Ctx, size: str, factor: float = 1.0) -> float:
    if ctx.scale <= 0 or ctx.batch_line:
        return 0.0
    table: dict[str, tuple[float, float]] = dict(ctx.profile.latency_s)
    bounds = table.get(size) or table.get("1K")
    if bounds is None:
        return 0.0
    return ctx.state.rng.uniform(*bounds) * ctx.scale * factor


def _refusal_for(ctx: Ctx, req: GenerateRequest) -> str | None:
    r = ctx.settings.refusals
    text = req.prompt.lower()
    if any(w.lower() in text for w in r.blocked_prompt_words):
        return "PROMPT_BLOCKED"
    if any(w.lower() in text for w in r.image_safety_words):
        return "IMAGE_SAFETY"
    if any(w.lower() in text for w in r.no_image_words):
        return "NO_IMAGE"
    if not req.prompt.strip() and not req.reference_count:
        return "NO_IMAGE"  # as observed for an empty prompt
    rng = ctx.state.rng
    if r.image_safety_rate > 0 and rng.random() < r.image_safety_rate:
        return "IMAGE_SAFETY"
    if r.no_image_rate > 0 and rng.random() < r.no_image_rate:
        return "NO_IMAGE"
    return None


def _response_id(ctx: Ctx) -> str:
    raw = ctx.state.rng.getrandbits(136).to_bytes(17, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _thoughts(model: str, prompt: str) -> int:
    if not thinks(model):
        return 0
    return 136 + int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:2], "big") % 85


async def _respond(
    ctx: Ctx,
    body: dict[str, Any],
    forced: flt.ForcedFault | None,
    outcome: str = "ok",
    tier: str = "standard",
) -> Response:
    """Serialize (off the loop: bodies reach tens of MB) and apply any body fault."""
    name = forced.fault if forced else None
    if name == "bad_base64":
        body = flt.corrupt_base64(body)
    elif name == "lying_mime":
        body = flt.lie_about_mime(body)
    payload, media = await anyio.to_thread.run_sync(
        functools.partial(resp.frame, body, stream=ctx.stream, sse=ctx.sse)
    )
    if name == "truncated_json":
        payload = flt.truncate(payload)
    elif name == "malformed_json":
        payload = flt.malform(payload)
    ctx.call.entry["bytes"] = len(payload)
    if name == "reset":
        ctx.state.decide(ctx.call, 200, "reset")
        return DroppedResponse(payload, media)
    ctx.state.decide(ctx.call, 200, outcome)
    headers = {"x-gemini-service-tier": tier} if ctx.route.backend == "aistudio" else {}
    return Response(payload, 200, headers=headers, media_type=media)


# ---------------------------------------------------------------------------- handlers


def _image_spec(ctx: Ctx, req: GenerateRequest) -> ImageSpec:
    p = ctx.profile
    fmt, quality = p.image_format, p.jpeg_quality
    spec = image_model(ctx.route.model)
    if ctx.route.backend == "aistudio" and spec is not None and spec.aistudio_mime:
        fmt = FORMAT_OF_MIME[spec.aistudio_mime]  # e.g. 2.5 Flash answers PNG on AI Studio
    if req.output_mime is not None:
        fmt = FORMAT_OF_MIME[req.output_mime]
    if fmt == "jpeg" and req.output_quality is not None:
        quality = max(1, req.output_quality)
    elif fmt == "jpeg" and req.output_mime is not None:
        quality = VERTEX_JPEG_DEFAULT_QUALITY
    width, height = output_pixels(ctx.route.model, req.aspect_ratio, req.image_size)
    return ImageSpec(
        prompt=req.prompt,
        width=width,
        height=height,
        fmt=fmt,
        quality=quality,
        detail=p.detail,
        reference_digest=req.reference_digest,
        label=f"{ctx.route.backend} {ctx.route.model}",
        seed=req.seed,
        reference_count=req.reference_count,
        turn=req.user_turns,
    )


def _draft_spec(final: ImageSpec) -> ImageSpec:
    """The interim thought image for ``final``: same scene, a quarter of each side, PNG."""
    return ImageSpec(
        prompt=final.prompt,
        width=max(64, final.width // DRAFT_SCALE),
        height=max(64, final.height // DRAFT_SCALE),
        fmt="png",
        detail=0.0,
        reference_digest=final.reference_digest,
        label=final.label,
        seed=final.seed,
        reference_count=final.reference_count,
        turn=final.turn,
        draft=True,
    )


def _meta(ctx: Ctx, req: GenerateRequest, thoughts: int, tier: str) -> resp.Meta:
    spec = image_model(ctx.route.model)
    return resp.Meta(
        ctx.route,
        _response_id(ctx),
        req.text_tokens,
        thoughts,
        req.reference_count,
        spec.input_image_tokens if spec is not None else PRO.input_image_tokens,
        _traffic_type(ctx, tier),
        tier,
    )


async def _generate_image(ctx: Ctx, req: GenerateRequest) -> Response:
    return await _respond(ctx, *await image_answer(ctx, req))


async def image_answer(
    ctx: Ctx, req: GenerateRequest
) -> tuple[dict[str, Any], flt.ForcedFault | None, str, str]:
    """The answer body of one image call, its forced fault, outcome and tier.

    Provider batches answer each of their lines through here too, so a batch line gets the
    same validation, refusals, faults and pixels as a generateContent call.
    """
    entry = ctx.call.entry
    entry.update(prompt=req.prompt, aspect_ratio=req.aspect_ratio, image_size=req.image_size)
    if req.seed is not None:
        entry["seed"] = req.seed
    if len(req.roles) > 1:  # a conversation (edit steps): what it carried, for tests to read
        entry.update(roles=list(req.roles), signatures=list(req.signatures))
    if req.file_uris:  # references sent by file, not inline
        entry["file_uris"] = list(req.file_uris)
    tier = _requested_tier(ctx, req.service_tier, image=True)
    forced = await _take_fault(ctx, "image", tier)
    if forced is None:
        _admit(ctx)
        tier = _tier_fate(ctx, tier)
        random_fault = _roll_random_fault(ctx)
        if random_fault is not None:
            ctx.state.note_fault(ctx.call, f"random:{random_fault}")
            if random_fault in ERROR_FAULTS or random_fault.isdigit():
                await _error_fault(ctx, random_fault, {})
            # Body faults and refusals take the same path as their forced twins.
            forced = flt.ForcedFault(random_fault, 1)
        refusal = _refusal_for(ctx, req)
        if forced is not None and forced.fault in FORCED_REFUSALS:
            refusal = FORCED_REFUSALS[forced.fault]
    else:
        refusal = FORCED_REFUSALS.get(forced.fault)
        if forced.fault == "priority_downgrade":
            tier = "standard"
    entry["service_tier"] = tier
    if ctx.route.backend == "vertex" and not ctx.batch_line:
        ctx.state.traffic_types[_traffic_type(ctx, tier)] += 1
    seed = f"{req.prompt}\x00{req.aspect_ratio}\x00{req.image_size}\x00{ctx.route.backend}"
    if req.seed is not None:
        seed += f"\x00{req.seed}"
    blocked = refusal == "PROMPT_BLOCKED"  # blocked before the model runs: no thoughts
    thoughts = 0 if blocked else _thoughts(ctx.route.model, req.prompt)
    meta = _meta(ctx, req, thoughts, tier)
    if blocked:  # ... and no latency
        return resp.refusal_body(meta, "PROMPT_BLOCKED"), forced, "refused", tier
    slower = ctx.profile.flex_latency_factor if tier == "flex" else 1.0
    latency = _latency(ctx, req.image_size, slower)
    if refusal is not None:
        await _sleep(latency)
        return resp.refusal_body(meta, refusal), forced, "refused", tier
    if forced is not None and forced.fault == "no_image":
        await _sleep(latency)
        return resp.no_image_text_body(meta, seed), forced, "ok", tier
    spec = _image_spec(ctx, req)
    renderer = functools.partial(render, references=req.references)
    specs = [spec]
    model = image_model(ctx.route.model)
    if model is not None and model.thought_images:
        specs.append(_draft_spec(spec))
    # Drafts have their own cache: they must not evict final images nor count as renders.
    caches = [ctx.state.cache, ctx.state.draft_cache]
    renders = [
        asyncio.ensure_future(cache.get(s, renderer))
        for cache, s in zip(caches, specs, strict=False)
    ]
    try:
        await _sleep(latency)
        data, *drafts = [await r for r in renders]
    finally:
        for r in renders:
            if not r.done():
                r.cancel()
    image_b64 = await anyio.to_thread.run_sync(lambda: base64.b64encode(data).decode("ascii"))
    thought_images = tuple(
        (base64.b64encode(d).decode("ascii"), s.mime)
        for d, s in zip(drafts, specs[1:], strict=True)
    )
    body = resp.image_body(
        meta,
        image_b64=image_b64,
        mime=spec.mime,
        output_tokens=output_tokens(ctx.route.model, req.image_size),
        want_text=req.want_text,
        include_thoughts=req.include_thoughts,
        seed=seed,
        thought_images=thought_images,
    )
    return body, forced, "ok", tier


async def _generate_text(ctx: Ctx, req: GenerateRequest) -> Response:
    ctx.call.entry["prompt"] = req.prompt
    tier = _requested_tier(ctx, req.service_tier)
    forced = await _take_fault(ctx, "text")
    await _sleep(_latency(ctx, "1K", factor=0.25))
    text = rewrite(req.prompt)
    meta = _meta(ctx, req, 0, tier)
    body = resp.text_body(meta, text, count_tokens(text))
    return await _respond(ctx, body, forced, tier=tier)


async def _upscale(ctx: Ctx, body: Any) -> Response:
    up = parse_upscale(body)
    try:
        width, height, _ = probe(up.image)
    except ValueError:
        raise msg.bad_request("Unable to decode the input image; send a PNG or JPEG.") from None
    out_w, out_h = width * up.factor, height * up.factor
    ctx.call.entry.update(input_size=[width, height], output_size=[out_w, out_h])
    if out_w * out_h > MAX_UPSCALE_PIXELS:
        raise msg.bad_request(
            f"The upscaled image would be {out_w}x{out_h} ({out_w * out_h / 1e6:.1f} megapixels), "
            f"over the 17 megapixel output limit. Use a smaller factor or a smaller input."
        )
    forced = await _take_fault(ctx, "upscale")
    await _sleep(_latency(ctx, "1K"))
    data = await anyio.to_thread.run_sync(
        upscale, up.image, up.factor, up.output_mime, up.output_quality
    )
    image_b64 = base64.b64encode(data).decode("ascii")
    return await _respond(ctx, resp.upscale_body(image_b64, up.output_mime), forced)
