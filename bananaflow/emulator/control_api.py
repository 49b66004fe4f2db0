"""Server side of the control plane (``/_emulator/...``) and the OAuth ``/token`` endpoint.

The control prefix is one no Google API uses, so a client pointed at the emulator can never hit
it by accident. These endpoints carry no credentials and return none (tokens are never listed).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bananaflow.emulator.auth import TOKEN_LIFETIME_S, TokenGrantError, check_jwt_grant
from bananaflow.emulator.faults import ForcedFault
from bananaflow.emulator.pipeline import received_url, roll
from bananaflow.emulator.state import EmulatorState

PREFIX = "/_emulator"
FAULT_BACKENDS = (None, "aistudio", "vertex", "auth")
FAULT_OPERATIONS = (
    None,
    "generateContent",
    "streamGenerateContent",
    "predict",
    "token",
    "batchGenerateContent",
    "batchPredictionJobs",
)


def _state(request: Request) -> EmulatorState:
    return request.app.state.emulator


async def stats(request: Request) -> Response:
    return JSONResponse(_state(request).stats())


async def requests_log(request: Request) -> Response:
    return JSONResponse(_state(request).requests())


async def reset(request: Request) -> Response:
    _state(request).reset()
    return JSONResponse({"ok": True})


async def health(request: Request) -> Response:
    return JSONResponse({"ok": True})


_TOKEN_PREFIX = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


async def token_prefix(request: Request) -> Response:
    """Set the prefix of tokens issued from now on (a canary marker for secret scans).

    Answers with the prefix only: issued tokens are never returned by the control plane.
    """
    try:
        spec: Any = await request.json()
    except ValueError:
        return _bad("body must be JSON")
    prefix = spec.get("prefix") if isinstance(spec, dict) else None
    if not isinstance(prefix, str) or not _TOKEN_PREFIX.match(prefix):
        return _bad('body must be {"prefix": "<1-64 chars of A-Z a-z 0-9 . _ ->"}')
    _state(request).tokens.prefix = prefix
    return JSONResponse({"prefix": prefix})


async def list_faults(request: Request) -> Response:
    return JSONResponse(_state(request).faults.pending())


def _bad(message: str) -> Response:
    return JSONResponse({"error": message}, status_code=400)


async def add_fault(request: Request) -> Response:
    try:
        spec: Any = await request.json()
    except ValueError:
        return _bad("body must be JSON")
    if not isinstance(spec, dict) or not isinstance(spec.get("fault"), str):
        return _bad('body must be {"fault": str, "count": int, ...}')
    backend, operation = spec.get("backend"), spec.get("operation")
    if backend not in FAULT_BACKENDS:
        return _bad(f"backend must be one of {FAULT_BACKENDS}")
    if operation not in FAULT_OPERATIONS:
        return _bad(f"operation must be one of {FAULT_OPERATIONS}")
    count, after = spec.get("count", 1), spec.get("after", 0)
    params = spec.get("params") or {}
    if any(isinstance(n, bool) or not isinstance(n, int) for n in (count, after)):
        return _bad("count and after must be ints")
    if not isinstance(params, dict):
        return _bad("params must be an object")
    fault = ForcedFault(spec["fault"], count, backend, operation, params, after)
    try:
        _state(request).faults.add(fault)
    except ValueError as e:
        return _bad(str(e))
    return JSONResponse({"queued": fault.describe()})


def _oauth_error(status: int, code: str, description: str) -> Response:
    return JSONResponse({"error": code, "error_description": description}, status_code=status)


async def token(request: Request) -> Response:
    """OAuth 2.0 JWT-bearer grant, as google-auth's service-account refresh sends it."""
    state = _state(request)
    call = state.begin(
        method=request.method,
        url=received_url(request),
        backend="auth",
        operation="token",
        model=None,
        generation=False,
        api=False,
    )
    try:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        try:
            claims = check_jwt_grant(
                form.get("grant_type", [None])[0], form.get("assertion", [None])[0]
            )
        except TokenGrantError as e:
            state.decide(call, 400, "400")
            return _oauth_error(400, e.code, e.description)
        call.entry["client_email"] = claims.get("iss")
        forced = state.faults.take("token", "auth", "token")
        name = forced.fault if forced is not None else None
        if name is None and roll(state, "token_error"):
            name = "random:token_error"
        if name is not None:
            state.note_fault(call, name)
            state.decide(call, 500, "500")
            return _oauth_error(500, "internal_failure", "Emulated token endpoint failure.")
        state.decide(call, 200, "ok")
        return JSONResponse(
            {
                "access_token": state.tokens.issue(),
                "expires_in": TOKEN_LIFETIME_S,
                "token_type": "Bearer",
            },
            headers={"cache-control": "no-cache, no-store, max-age=0, must-revalidate"},
        )
    finally:
        state.end(call)
