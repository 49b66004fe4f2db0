"""The emulator as one Starlette app: both Google APIs, the token endpoint, the control plane.

No lifespan and no global state: everything lives on ``app.state.emulator``, so several apps
(one per test, or one in-process via ``httpx.ASGITransport``) never share quotas or faults.

Google answers every miss with a JSON ``google.rpc.Status`` body, and SDKs parse error bodies
as JSON, so Starlette's plain-text "Not Found"/"Method Not Allowed" pages never reach a client:
the API catch-all takes every method and sorts 404 from 405 itself, and the handlers below
cover the fixed routes (``/token``, the control plane).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bananaflow.config import EmulatorSettings
from bananaflow.emulator import batches, control_api, files_api, vertex_batch
from bananaflow.emulator import messages as msg
from bananaflow.emulator.pipeline import api_endpoint, error_response
from bananaflow.emulator.state import EmulatorState

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (and any other HTTPException) as a Google error envelope."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        return error_response(msg.method_not_allowed(tuple(a.strip() for a in allow.split(","))))
    if exc.status_code in msg.STATUS_NAMES:
        return error_response(msg.error(exc.status_code, str(exc.detail)))
    return error_response(msg.route_not_found())


def create_app(settings: EmulatorSettings) -> Starlette:
    p = control_api.PREFIX
    fixed = [
        Route(f"{p}/stats", control_api.stats, methods=["GET"]),
        Route(f"{p}/requests", control_api.requests_log, methods=["GET"]),
        Route(f"{p}/reset", control_api.reset, methods=["POST"]),
        Route(f"{p}/faults", control_api.add_fault, methods=["POST"]),
        Route(f"{p}/faults", control_api.list_faults, methods=["GET"]),
        Route(f"{p}/health", control_api.health, methods=["GET"]),
        Route(f"{p}/token-prefix", control_api.token_prefix, methods=["POST"]),
        Route("/token", control_api.token, methods=["POST"]),
    ]
    allowed: dict[str, set[str]] = {}
    for route in fixed:
        allowed.setdefault(route.path, set()).update(route.methods or ())

    async def api_or_wrong_method(request: Request) -> Response:
        # A fixed path reached the catch-all only because its method did not match.
        methods = allowed.get(request.url.path)
        if methods is not None:
            return error_response(msg.method_not_allowed(tuple(sorted(methods - {"HEAD"}))))
        return await api_endpoint(request)

    # The asynchronous APIs (Files, Gemini Batch, Vertex batch prediction); a path param also
    # takes ":verb" suffixes.
    jobs = "/{version}/projects/{project}/locations/{location}/batchPredictionJobs"
    asynchronous = [
        Route("/upload/{version}/files", files_api.upload, methods=["POST"]),
        Route("/{version}/files", files_api.list_files, methods=["GET"]),
        Route("/{version}/files/{fid}", files_api.file_item, methods=["GET", "DELETE"]),
        Route("/download/{version}/files/{fid}", files_api.download, methods=["GET"]),
        Route("/{version}/models/{model}:batchGenerateContent", batches.create, methods=["POST"]),
        Route("/{version}/batches", batches.list_batches, methods=["GET"]),
        Route("/{version}/batches/{bid}", batches.batch_item, methods=["GET", "POST", "DELETE"]),
        Route(jobs, vertex_batch.collection, methods=["GET", "POST"]),
        Route(f"{jobs}/{{jid}}", vertex_batch.item, methods=["GET", "POST", "DELETE"]),
    ]
    # Google's "models/{m}:generateContent" colon form defeats Starlette's path params, so
    # one catch-all hands every other request to the pipeline's own parser.
    routes = [
        *fixed,
        *asynchronous,
        Route("/{rest:path}", api_or_wrong_method, methods=ALL_METHODS),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.emulator = EmulatorState(settings)
    return app
