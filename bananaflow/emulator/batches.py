"""The Gemini Batch API: create (file or inline), get, list, cancel, delete.

A batch is a ``google.longrunning`` Operation named ``batches/<id>`` whose ``metadata.state``
walks ``BATCH_STATE_PENDING → RUNNING → SUCCEEDED|FAILED|CANCELLED|EXPIRED`` on the emulator's
clock (``emulator.batch``, scaled by ``time_scale``); ``done`` appears only at the end, and the
output is written twice (``metadata.output`` and ``response``), as Google does
(batch-and-model-tiers.md §1.4). The clock is read lazily: a batch moves on when someone looks
at it, so nothing runs in the background and a test's event loop owns every render.

Each line is answered by :func:`render_line`, i.e. the generateContent pipeline itself (same
validation, refusals, forced faults and pixels), without the online quota or latency. Whole-
batch faults (``batch_expired``, ``batch_failed``, ``batch_line_error``,
``batch_line_missing``) are queued through the control plane and taken when a batch is created;
``batch_quota`` refuses the create itself with 429 (no batch is made), as does a create while
``max_concurrent_batches`` batches are unfinished (Google's concurrent batch quota).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bananaflow.emulator import messages as msg
from bananaflow.emulator.asynccall import logged_call, state_of
from bananaflow.emulator.batchstate import BatchLine, EmulatedBatch, StoredFile, rfc3339
from bananaflow.emulator.catalog import model_kind
from bananaflow.emulator.filedata import fetch_files
from bananaflow.emulator.files_api import (
    camel_or_snake,
    check_key,
    check_version,
    json_response,
    page_params,
)
from bananaflow.emulator.pipeline import Ctx, image_answer
from bananaflow.emulator.routing import Route
from bananaflow.emulator.state import EmulatorState
from bananaflow.emulator.validation import parse_generate

BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
LINE_RENDERS = 4  # lines rendered at once (renders run in worker threads)
LINE_ERROR = {"code": 13, "message": "Internal error encountered.", "status": "INTERNAL"}


# ---------------------------------------------------------------------------- the clock


def _scaled(state: EmulatorState, wall_s: float) -> float:
    """Wall seconds as the emulator's own (time-scaled) seconds."""
    scale = state.settings.time_scale
    return float("inf") if scale <= 0 else wall_s / scale


def emulated_age(state: EmulatorState, batch: EmulatedBatch) -> float:
    return _scaled(state, time.time() - batch.created_wall)


def unfinished(state: EmulatorState, platform: str) -> int:
    """The platform's batches not ended by the clock (not all looked at since, so not by
    their recorded state alone): what the concurrent-batch quota counts."""
    cfg = state.settings.batch
    queued = cfg.vertex_queued_s if platform == "vertex" else 0.0
    span = min(queued + cfg.pending_s + cfg.running_s, cfg.expire_after_s)
    return sum(
        1
        for b in state.asyncs.batches.values()
        if b.platform == platform and not b.terminal and emulated_age(state, b) < span
    )


Runner = Callable[[EmulatorState, EmulatedBatch], Awaitable[None]]


async def advance(state: EmulatorState, batch: EmulatedBatch, runner: Runner | None = None) -> None:
    """Move the batch along its life as far as the clock says; ``runner`` (default: Gemini's
    ``run_lines``) answers its lines at the end."""
    if batch.terminal:
        return
    cfg = state.settings.batch
    if batch.state == "CANCELLING":
        since = batch.cancel_wall or batch.created_wall
        if _scaled(state, time.time() - since) >= cfg.vertex_cancelling_s:
            end(batch, "CANCELLED", {"code": 1, "message": "CANCELED"})
        return
    age = emulated_age(state, batch)
    run_age = age
    if batch.platform == "vertex" and age < cfg.expire_after_s:
        if batch.started_wall is None:
            await _start_queued(state, runner)
        if batch.started_wall is None:
            batch.state = "QUEUED"
            return
        run_age = _scaled(state, time.time() - batch.started_wall)
    if run_age < cfg.pending_s:
        batch.state = "PENDING"
        return
    batch.state = "RUNNING"
    if run_age < cfg.pending_s + cfg.running_s and age < cfg.expire_after_s:
        return
    async with batch.lock:
        if batch.terminal:
            return
        if age >= cfg.expire_after_s or batch.forced_fault("batch_expired") is not None:
            end(batch, "EXPIRED", {"code": 4, "message": "Batch expired: not run within 48 h."})
        elif batch.forced_fault("batch_failed") is not None:
            end(batch, "FAILED", {"code": 13, "message": "Batch failed: emulated internal error."})
        else:
            await (runner or run_lines)(state, batch)


async def _start_queued(state: EmulatorState, runner: Runner | None) -> None:
    """Start the oldest queued Vertex jobs that fit under ``vertex_max_running_jobs``.

    A Vertex job leaves ``JOB_STATE_QUEUED`` when it has sat ``vertex_queued_s`` and a running
    job has ended. The running ones are moved along first (the clock is lazy: a job nobody
    polls would otherwise hold its slot forever); the pending/running clock of a job starts
    when it leaves the queue.
    """
    cfg = state.settings.batch
    jobs = [b for b in state.asyncs.batches.values() if b.platform == "vertex"]
    for job in jobs:
        if job.started_wall is not None:
            await advance(state, job, runner)
    running = sum(1 for b in jobs if b.started_wall is not None and not b.terminal)
    waiting = sorted(
        (
            b
            for b in jobs
            if b.started_wall is None
            and b.state != "CANCELLING"
            and not b.terminal
            and emulated_age(state, b) >= cfg.vertex_queued_s
        ),
        key=lambda b: b.created_wall,
    )
    now = time.time()
    for job in waiting[: max(0, cfg.vertex_max_running_jobs - running)]:
        job.started_wall = now


def end(batch: EmulatedBatch, state: str, error: dict[str, Any] | None = None) -> None:
    batch.state = state
    batch.error = error
    batch.end_wall = time.time()


# ---------------------------------------------------------------------------- lines


def _line_request() -> Request:
    """The request a batch line is answered for: no headers, no client connection."""
    return Request(
        {"type": "http", "method": "POST", "path": "/batch", "headers": [], "query_string": b""}
    )


async def render_line(state: EmulatorState, route: Route, body: Any) -> tuple[Any, Any]:
    """(response, None) or (None, error status) for one batch line, via the online pipeline."""
    call = state.begin(
        method="POST",
        url=f"batch-line:{route.model}",
        backend=route.backend,
        operation="batchLine",
        model=route.model,
        generation=False,
        api=False,
    )
    kind = model_kind(route.model, route.backend)
    ctx = Ctx(state, _line_request(), route, kind, call, False, False, batch_line=True)
    try:
        if not isinstance(body, dict):
            raise msg.bad_request("Each batch line needs a 'request' object.")
        files = await fetch_files(state, route, body)
        answer, _forced, outcome, _tier = await image_answer(
            ctx, parse_generate(route, body, files)
        )
        state.decide(call, 200, outcome)
        return answer, None
    except msg.ApiError as err:
        state.decide(call, err.status, str(err.status))
        status = err.body.get("error") if isinstance(err.body, dict) else None
        return None, status or {"code": err.status, "message": str(err.body)[:200]}
    finally:
        state.end(call)


async def answer_lines(
    state: EmulatorState, batch: EmulatedBatch, route: Route
) -> list[tuple[BatchLine, Any, Any]]:
    # Forced line faults: the first ``lines`` lines fail, the last ``lines`` are left out.
    """Every kept line's (line, response, error), in output order (shuffled when configured)."""
    errors = int((batch.forced_fault("batch_line_error") or {}).get("lines", 0))
    missing = int((batch.forced_fault("batch_line_missing") or {}).get("lines", 0))
    lines = batch.lines[: len(batch.lines) - missing] if missing else list(batch.lines)
    slots = asyncio.Semaphore(LINE_RENDERS)

    async def one(i: int, line: BatchLine) -> tuple[BatchLine, Any, Any]:
        if i < errors:
            return line, None, dict(LINE_ERROR)
        async with slots:
            response, error = await render_line(state, route, line.request)
        return line, response, error

    answered = list(await asyncio.gather(*(one(i, ln) for i, ln in enumerate(lines))))
    batch.succeeded = sum(1 for _, r, _e in answered if r is not None)
    batch.failed = len(batch.lines) - batch.succeeded
    if state.settings.batch.shuffle_output:
        state.rng.shuffle(answered)
    return answered


async def run_lines(state: EmulatorState, batch: EmulatedBatch) -> None:
    route = Route("aistudio", "batchGenerateContent", batch.model, "v1beta")
    answered = await answer_lines(state, batch, route)
    if batch.input_file is None:
        for line, response, error in answered:
            item: dict[str, Any] = (
                {"response": response} if response is not None else {"error": error}
            )
            if line.metadata is not None:
                item["metadata"] = line.metadata
            batch.outputs.append(item)
    else:
        out = []
        for line, response, error in answered:
            row: dict[str, Any] = {"key": line.key} if line.key is not None else {}
            row.update({"response": response} if response is not None else {"error": error})
            out.append(json.dumps(row, separators=(",", ":")))
        fid = f"batch-{batch.name.split('/', 1)[1]}"
        batch.output_file = f"files/{fid}"
        state.asyncs.files[batch.output_file] = _generated(state, batch.output_file, out)
    end(batch, "SUCCEEDED")


def _generated(state: EmulatorState, name: str, lines: list[str]) -> StoredFile:
    now = time.time()
    data = ("\n".join(lines) + "\n").encode() if lines else b""
    return StoredFile(
        name,
        name,
        "application/jsonl",
        data,
        now,
        now + state.settings.batch.file_ttl_s,
        "GENERATED",
    )


# ---------------------------------------------------------------------------- resource


def _stats(batch: EmulatedBatch) -> dict[str, str]:
    stats = {"requestCount": str(len(batch.lines))}
    if not batch.terminal:
        stats["pendingRequestCount"] = str(len(batch.lines))
    elif batch.state == "SUCCEEDED":
        if batch.succeeded:
            stats["successfulRequestCount"] = str(batch.succeeded)
        if batch.failed:
            stats["failedRequestCount"] = str(batch.failed)
    return stats


def operation(batch: EmulatedBatch, *, with_output: bool = True) -> dict[str, Any]:
    update = batch.end_wall or batch.created_wall
    meta: dict[str, Any] = {
        "@type": BATCH_TYPE,
        "model": f"models/{batch.model}",
        "displayName": batch.display_name,
        "createTime": rfc3339(batch.created_wall),
        "updateTime": rfc3339(update),
        "batchStats": _stats(batch),
        "state": f"BATCH_STATE_{batch.state}",
        "name": batch.name,
    }
    op: dict[str, Any] = {"name": batch.name, "metadata": meta}
    if not batch.terminal:
        return op
    meta["endTime"] = rfc3339(update)
    op["done"] = True
    if batch.error is not None:
        op["error"] = batch.error
    if batch.state == "SUCCEEDED" and with_output:
        if batch.output_file is not None:
            output: dict[str, Any] = {"responsesFile": batch.output_file}
        else:
            output = {"inlinedResponses": {"inlinedResponses": batch.outputs}}
        meta["output"] = output
        op["response"] = {"@type": OUTPUT_TYPE, **output}
    return op


# ---------------------------------------------------------------------------- handlers


async def _logged(
    request: Request,
    operation_name: str,
    model: str | None,
    handler: Callable[[], Awaitable[Response]],
) -> Response:
    def check() -> None:
        check_key(request)
        check_version(request.path_params["version"])

    return await logged_call(
        request,
        backend="aistudio",
        operation=operation_name,
        check=check,
        handler=handler,
        model=model,
    )


def _file_lines(data: bytes) -> list[BatchLine]:
    lines = []
    for n, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            raise msg.bad_request(f"Invalid JSON on line {n} of the input file.") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("request"), dict):
            raise msg.bad_request(f"Line {n} of the input file has no 'request' object.")
        key = obj.get("key")
        lines.append(BatchLine(str(key) if key is not None else None, obj["request"]))
    return lines


def _inline_lines(requests: Any) -> list[BatchLine]:
    items = requests.get("requests") if isinstance(requests, dict) else None
    if not isinstance(items, list) or not items:
        raise msg.bad_request("inputConfig.requests.requests must be a non-empty list.")
    lines = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("request"), dict):
            raise msg.bad_request("Each inlined request needs a 'request' object.")
        meta = item.get("metadata")
        if meta is not None and (
            not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values())
        ):
            raise msg.bad_request("metadata values must be strings.")
        key = meta.get("key") if isinstance(meta, dict) else None
        lines.append(BatchLine(key, item["request"], meta))
    return lines


async def create(request: Request) -> Response:
    """``POST /{version}/models/{model}:batchGenerateContent``."""
    model = request.path_params["model"]
    state = state_of(request)

    async def handle() -> Response:
        if model_kind(model, "aistudio") not in ("image", "text"):
            raise msg.model_not_found(
                "aistudio", request.path_params["version"], model, "batchGenerateContent", model
            )
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            raise msg.invalid_json("Unexpected token.") from None
        batch = body.get("batch") if isinstance(body, dict) else None
        if not isinstance(batch, dict):
            raise msg.bad_request("Missing required field 'batch'.")
        config = camel_or_snake(batch, "inputConfig", "input_config")
        if not isinstance(config, dict):
            raise msg.bad_request("batch.inputConfig is required.")
        file_name = camel_or_snake(config, "fileName", "file_name")
        if file_name is not None:
            f = state.asyncs.live_file(str(file_name))
            if f is None:
                raise msg.error(404, f"File {file_name} not found.")
            lines = _file_lines(f.data)
            if not lines:
                raise msg.bad_request("The input file has no requests.")
        elif config.get("requests") is not None:
            if len(raw) > state.settings.batch.max_inline_mb * 1024 * 1024:
                raise msg.bad_request("Inline batch requests exceed 20 MB; use a file.")
            lines = _inline_lines(config["requests"])
        else:
            raise msg.bad_request("batch.inputConfig needs fileName or requests.")
        limit = state.settings.batch.max_concurrent_batches
        if state.faults.take("batch_create", "aistudio", "batchGenerateContent") is not None or (
            limit is not None and unfinished(state, "aistudio") >= limit
        ):
            raise msg.batch_quota("aistudio", model)
        forced = []
        while (fault := state.faults.take("batch", "aistudio", "batchGenerateContent")) is not None:
            forced.append((fault.fault, fault.params))
        name = f"batches/{secrets.token_hex(16)}"
        created = EmulatedBatch(
            name=name,
            platform="aistudio",
            model=model,
            display_name=str(camel_or_snake(batch, "displayName", "display_name") or ""),
            lines=lines,
            created_wall=time.time(),
            input_file=str(file_name) if file_name is not None else None,
            forced=forced,
        )
        state.asyncs.batches[name] = created
        state.asyncs.creates += 1
        await advance(state, created)
        return json_response(operation(created))

    return await _logged(request, "batchGenerateContent", model, handle)


async def list_batches(request: Request) -> Response:
    """``GET /{version}/batches``: operations without their outputs, paged."""
    state = state_of(request)

    async def handle() -> Response:
        size, start = page_params(request, 50)
        mine = [b for b in state.asyncs.batches.values() if b.platform == "aistudio"]
        page = mine[start : start + size]
        for b in page:
            await advance(state, b)
        body: dict[str, Any] = {"operations": [operation(b, with_output=False) for b in page]}
        if start + size < len(mine):
            body["nextPageToken"] = str(start + size)
        return json_response(body)

    return await _logged(request, "batches.list", None, handle)


async def batch_item(request: Request) -> Response:
    """``GET|DELETE batches/{id}``, ``POST batches/{id}:cancel`` and ``POST …:delete``."""
    bid, _, verb = request.path_params["bid"].partition(":")
    name = f"batches/{bid}"
    state = state_of(request)
    action = {"GET": "get", "DELETE": "delete"}.get(
        request.method, verb if request.method == "POST" else ""
    )

    async def handle() -> Response:
        if action not in ("get", "delete", "cancel") or (request.method == "GET" and verb):
            raise msg.route_not_found()
        batch = state.asyncs.batches.get(name)
        if batch is None or batch.platform != "aistudio":
            raise msg.error(404, f"Batch {name} not found.")
        if action == "delete":
            del state.asyncs.batches[name]
            return json_response({})
        await advance(state, batch)
        if action == "cancel":
            if batch.terminal:
                raise msg.error(400, f"Batch {name} is already in a terminal state.")
            end(batch, "CANCELLED", {"code": 1, "message": "Batch was cancelled."})
            return json_response({})
        return json_response(operation(batch))

    return await _logged(request, f"batches.{action or 'unknown'}", None, handle)
