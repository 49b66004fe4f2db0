"""Vertex AI batch prediction: ``batchPredictionJobs`` create, get, list, cancel, delete.

Input and output live in Cloud Storage, reached through its JSON API at
``emulator.batch.gcs_endpoint`` (a GCS emulator in tests; ``file://`` URIs are read and written
directly, so the embedded emulator works with a local store): the input JSONL is read when the
job is created, and the answers are written to
``<outputUriPrefix>/prediction-model-<create time>/predictions.jsonl`` with Vertex's line shape
(``status`` "" or "Bad Request: {…}", ``processed_time``, the echoed ``request``,
``response``; batch-and-model-tiers.md §3.4). States are ``JOB_STATE_*``: a new job sits
``QUEUED`` while ``vertex_max_running_jobs`` jobs are unfinished (and at least
``vertex_queued_s``) before ``PENDING``, a cancel passes through ``CANCELLING``
(``vertex_cancelling_s``) to ``CANCELLED``, and some failed lines end the job
``JOB_STATE_PARTIALLY_SUCCEEDED``. Lines are answered by the same pipeline as
online calls (``batches.answer_lines``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio.to_thread
import httpx
from starlette.requests import Request
from starlette.responses import Response

from bananaflow.emulator import messages as msg
from bananaflow.emulator.asynccall import logged_call, state_of
from bananaflow.emulator.auth import bearer_of
from bananaflow.emulator.batches import advance, answer_lines, end
from bananaflow.emulator.batchstate import BatchLine, EmulatedBatch, rfc3339
from bananaflow.emulator.catalog import model_kind
from bananaflow.emulator.files_api import json_response
from bananaflow.emulator.routing import Route
from bananaflow.emulator.state import EmulatorState

VERSIONS = ("v1", "v1beta1")
PUBLISHER = "publishers/google/models/"


def project_number(project: str) -> str:
    """Vertex names resources by project number; the emulator derives a stable one."""
    return str(int(hashlib.sha256(project.encode()).hexdigest()[:10], 16) % 10**12).rjust(12, "1")


def _split_gs(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://") or "/" not in uri[5:]:
        raise msg.bad_request(f"Invalid Cloud Storage URI: {uri}")
    bucket, _, obj = uri[5:].partition("/")
    return bucket, obj


def _local(uri: str) -> Path | None:
    """The embedded emulator stands in for Cloud Storage with ``file://`` URIs as well."""
    return Path(uri.removeprefix("file://")) if uri.startswith("file://") else None


async def _gcs_read(state: EmulatorState, uri: str) -> bytes:
    local = _local(uri)
    if local is not None:
        try:
            return await anyio.to_thread.run_sync(local.read_bytes)
        except OSError:
            raise msg.bad_request(f"Input file {uri} not found.") from None
    endpoint = state.settings.batch.gcs_endpoint
    if not endpoint:
        raise msg.bad_request("The emulator has no Cloud Storage (emulator.batch.gcs_endpoint).")
    bucket, obj = _split_gs(uri)
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.get(
            f"{endpoint}/storage/v1/b/{bucket}/o/{quote(obj, safe='')}", params={"alt": "media"}
        )
    if r.status_code == 404:
        raise msg.bad_request(f"Input file {uri} not found.")
    if not r.is_success:
        raise msg.error(500, f"Cannot read {uri}: HTTP {r.status_code}.")
    return r.content


async def _gcs_write(state: EmulatorState, uri: str, data: bytes) -> None:
    local = _local(uri)
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
        await anyio.to_thread.run_sync(local.write_bytes, data)
        return
    bucket, obj = _split_gs(uri)
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(
            f"{state.settings.batch.gcs_endpoint}/upload/storage/v1/b/{bucket}/o",
            params={"uploadType": "media", "name": obj},
            content=data,
            headers={"content-type": "application/jsonl"},
        )
    r.raise_for_status()


def _authenticate(request: Request, state: EmulatorState) -> None:
    token = bearer_of(request)
    if token is None:
        raise msg.unauthenticated("CREDENTIALS_MISSING", "BatchPredictionJob")
    reason = state.tokens.check(token)
    if reason is not None:
        raise msg.unauthenticated(reason or None, "BatchPredictionJob")


def _check_path(request: Request, state: EmulatorState) -> None:
    p = request.path_params
    if p["version"] not in VERSIONS:
        raise msg.route_not_found()
    project = state.settings.project
    if p["project"] not in (project, project_number(project)):
        raise msg.permission_denied(p["project"], p["location"], "batchPredictionJobs")


async def _answer(
    request: Request, operation: str, handler: Callable[[], Awaitable[Response]]
) -> Response:
    state = state_of(request)

    def check() -> None:
        _authenticate(request, state)
        _check_path(request, state)

    return await logged_call(
        request, backend="vertex", operation=operation, check=check, handler=handler
    )


# ---------------------------------------------------------------------------- running


async def run_lines(state: EmulatorState, batch: EmulatedBatch) -> None:
    project, location = batch.labels["project"], batch.labels["location"]
    route = Route("vertex", "batchPredictionJobs", batch.model, "v1", project, location)
    answered = await answer_lines(state, batch, route)
    rows = []
    for line, response, error in answered:
        status = "" if response is not None else f"Bad Request: {json.dumps({'error': error})}"
        rows.append(
            json.dumps(
                {
                    "status": status,
                    "processed_time": rfc3339(time.time()),
                    "request": line.request,
                    "response": response if response is not None else {},
                },
                separators=(",", ":"),
            )
        )
    folder = f"{batch.output_uri_prefix}/prediction-model-{rfc3339(batch.created_wall)}"
    try:
        await _gcs_write(state, f"{folder}/predictions.jsonl", ("\n".join(rows) + "\n").encode())
    except (httpx.HTTPError, OSError) as err:
        end(batch, "FAILED", {"code": 13, "message": f"Cannot write output: {err}"})
        return
    batch.output_dir = folder
    if batch.succeeded == 0:
        end(batch, "FAILED", {"code": 3, "message": "Every request of the batch failed."})
    elif batch.failed:
        end(batch, "PARTIALLY_SUCCEEDED")
    else:
        end(batch, "SUCCEEDED")


def job_json(batch: EmulatedBatch) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": batch.name,
        "displayName": batch.display_name,
        "model": f"{PUBLISHER}{batch.model}",
        "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": [batch.input_uri]}},
        "outputConfig": {
            "predictionsFormat": "jsonl",
            "gcsDestination": {"outputUriPrefix": batch.output_uri_prefix},
        },
        "state": f"JOB_STATE_{batch.state}",
        "createTime": rfc3339(batch.created_wall),
        "updateTime": rfc3339(batch.end_wall or batch.created_wall),
        "modelVersionId": "1",
    }
    if batch.state not in ("QUEUED", "PENDING"):
        out["startTime"] = rfc3339(batch.started_wall or batch.created_wall)
    if batch.terminal:
        out["endTime"] = rfc3339(batch.end_wall or batch.created_wall)
        stats = {"successfulCount": str(batch.succeeded)}
        if batch.failed:
            stats["failedCount"] = str(batch.failed)
        out["completionStats"] = stats
    if batch.output_dir is not None:
        out["outputInfo"] = {"gcsOutputDirectory": batch.output_dir}
    if batch.error is not None:
        out["error"] = batch.error
    return out


# ---------------------------------------------------------------------------- handlers


async def collection(request: Request) -> Response:
    """``POST …/batchPredictionJobs`` (create) and ``GET …/batchPredictionJobs`` (list)."""
    state = state_of(request)
    p = request.path_params

    async def create() -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise msg.invalid_json("Unexpected token.") from None
        if not isinstance(body, dict):
            raise msg.bad_request("Body must be a BatchPredictionJob.")
        model = str(body.get("model", "")).removeprefix(PUBLISHER)
        if model_kind(model, "vertex") not in ("image", "text"):
            raise msg.bad_request(f"Do not support publisher model {model}")
        source = (body.get("inputConfig") or {}).get("gcsSource") or {}
        uris = source.get("uris")
        uris = [uris] if isinstance(uris, str) else uris
        prefix = ((body.get("outputConfig") or {}).get("gcsDestination") or {}).get(
            "outputUriPrefix"
        )
        if not isinstance(uris, list) or not uris or not isinstance(prefix, str):
            raise msg.bad_request("inputConfig.gcsSource.uris and outputUriPrefix are required.")
        lines = []
        for uri in uris:
            for n, raw in enumerate((await _gcs_read(state, str(uri))).splitlines(), 1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except ValueError:
                    raise msg.bad_request(f"Invalid JSON on line {n} of {uri}.") from None
                request_body = obj.get("request") if isinstance(obj, dict) else None
                if not isinstance(request_body, dict):
                    raise msg.bad_request(f"Line {n} of {uri} has no 'request' object.")
                lines.append(BatchLine(None, request_body))
        if state.faults.take("batch_create", "vertex", "batchPredictionJobs") is not None:
            raise msg.batch_quota("vertex", model)
        forced = []
        while (f := state.faults.take("batch", "vertex", "batchPredictionJobs")) is not None:
            forced.append((f.fault, f.params))
        number = project_number(state.settings.project)
        jid = str(secrets.randbits(62))
        batch = EmulatedBatch(
            name=f"projects/{number}/locations/{p['location']}/batchPredictionJobs/{jid}",
            platform="vertex",
            model=model,
            display_name=str(body.get("displayName") or ""),
            lines=lines,
            created_wall=time.time(),
            input_uri=str(uris[0]),
            output_uri_prefix=prefix.rstrip("/"),
            forced=forced,
            labels={"project": p["project"], "location": p["location"]},
        )
        state.asyncs.batches[batch.name] = batch
        state.asyncs.creates += 1
        await advance(state, batch, run_lines)  # QUEUED while the running slots are full
        return json_response(job_json(batch))

    async def listing() -> Response:
        jobs = [b for b in state.asyncs.batches.values() if b.platform == "vertex"]
        for b in jobs:
            await advance(state, b, run_lines)
        return json_response({"batchPredictionJobs": [job_json(b) for b in jobs]})

    if request.method == "POST":
        return await _answer(request, "batchPredictionJobs", create)
    return await _answer(request, "batchPredictionJobs.list", listing)


async def item(request: Request) -> Response:
    """``GET|DELETE …/batchPredictionJobs/{id}`` and ``POST …/{id}:cancel``."""
    state = state_of(request)
    p = request.path_params
    jid, _, verb = p["jid"].partition(":")
    number = project_number(state.settings.project)
    name = f"projects/{number}/locations/{p['location']}/batchPredictionJobs/{jid}"
    action = {"GET": "get", "DELETE": "delete"}.get(request.method, verb)

    async def handle() -> Response:
        batch = state.asyncs.batches.get(name)
        if action not in ("get", "delete", "cancel") or (request.method != "POST" and verb):
            raise msg.route_not_found()
        if batch is None:
            raise msg.error(404, f"BatchPredictionJob {name} not found.")
        if action == "delete":
            del state.asyncs.batches[name]
            return json_response({"name": f"{name}/operations/{jid}", "done": True})
        await advance(state, batch, run_lines)
        if action == "cancel":
            if batch.terminal:
                raise msg.error(400, f"BatchPredictionJob {name} is already in a final state.")
            if batch.state != "CANCELLING":  # asked twice: still the one cancel
                batch.state, batch.cancel_wall = "CANCELLING", time.time()
                await advance(state, batch, run_lines)  # vertex_cancelling_s 0: CANCELLED now
            return json_response({})
        return json_response(job_json(batch))

    return await _answer(request, f"batchPredictionJobs.{action or 'unknown'}", handle)
