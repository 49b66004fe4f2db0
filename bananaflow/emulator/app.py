"""The emulator as one Starlette app: both Google APIs, the token endpoint, the control plane.

No lifespan and no global state: everything lives on ``app.state.emulator``, so several apps
(one per test, or one in-process via ``httpx.ASGITransport``) never share quotas or faults.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from bananaflow.config import EmulatorSettings
from bananaflow.emulator import control_api
from bananaflow.emulator.pipeline import api_endpoint
from bananaflow.emulator.state import EmulatorState


def create_app(settings: EmulatorSettings) -> Starlette:
    p = control_api.PREFIX
    routes = [
        Route(f"{p}/stats", control_api.stats, methods=["GET"]),
        Route(f"{p}/requests", control_api.requests_log, methods=["GET"]),
        Route(f"{p}/reset", control_api.reset, methods=["POST"]),
        Route(f"{p}/faults", control_api.add_fault, methods=["POST"]),
        Route(f"{p}/faults", control_api.list_faults, methods=["GET"]),
        Route(f"{p}/health", control_api.health, methods=["GET"]),
        Route(f"{p}/token-prefix", control_api.token_prefix, methods=["POST"]),
        Route("/token", control_api.token, methods=["POST"]),
        # Google's "models/{m}:generateContent" colon form defeats Starlette's path params, so
        # one catch-all hands every other POST to the pipeline's own parser.
        Route("/{rest:path}", api_endpoint, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.emulator = EmulatorState(settings)
    return app
