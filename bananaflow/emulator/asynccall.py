"""One request to the long-running APIs (Files, Gemini batches, Vertex batch prediction).

Logged in the request log like every emulator call (tests count them), checked, answered,
and the emulated batches and files saved before the answer leaves, so an emulator restarted
after a reply still knows what it promised.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from bananaflow.emulator import messages as msg
from bananaflow.emulator.pipeline import error_response, received_url
from bananaflow.emulator.state import EmulatorState


def state_of(request: Request) -> EmulatorState:
    return request.app.state.emulator


async def logged_call(
    request: Request,
    *,
    backend: str,
    operation: str,
    check: Callable[[], None],
    handler: Callable[[], Awaitable[Response]],
    model: str | None = None,
) -> Response:
    """``check`` (auth, path) then ``handler``; an ``ApiError`` from either is the answer."""
    state = state_of(request)
    call = state.begin(
        method=request.method,
        url=received_url(request),
        backend=backend,
        operation=operation,
        model=model,
        generation=False,
        api=False,
    )
    try:
        check()
        out = await handler()
        state.asyncs.save()
        state.decide(call, 200, "ok")
        return out
    except msg.ApiError as err:
        state.decide(call, err.status, str(err.status))
        return error_response(err)
    finally:
        state.end(call)
