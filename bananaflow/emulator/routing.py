"""Turning a Google API method and path into (backend, operation, model).

Both services share one port, as they share path shapes: ``/v1/models/...`` is the Gemini API,
``/v1/projects/...`` and ``/v1/publishers/...`` are Vertex. Starlette can't route on the
``models/{m}:generateContent`` colon form, so one catch-all route hands every request to
``parse``, which also tells an unknown path (404) from a known one asked with the wrong HTTP
method (405): Google answers both with a JSON ``google.rpc.Status``, never a plain-text page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Backend = Literal["aistudio", "vertex"]
# Model operations: ``POST models/{m}:{op}``.
POST_OPERATIONS: frozenset[str] = frozenset(
    {"generateContent", "streamGenerateContent", "predict", "countTokens"}
)
# Resource reads: ``GET models/{m}`` is "get", ``GET models`` is "list".
GET_OPERATIONS: frozenset[str] = frozenset({"get", "list"})
OPERATIONS: frozenset[str] = POST_OPERATIONS | GET_OPERATIONS

_AISTUDIO_VERSIONS = "v1|v1beta"
_VERTEX_VERSIONS = "v1|v1beta1"
_AISTUDIO = re.compile(
    rf"^/(?P<version>{_AISTUDIO_VERSIONS})/models(?:/(?P<model>[^/:]+)(?::(?P<op>[A-Za-z]+))?)?$"
)
_VERTEX = re.compile(
    rf"^/(?P<version>{_VERTEX_VERSIONS})"
    r"(?:/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+))?"
    r"/publishers/google/models(?:/(?P<model>[^/:]+)(?::(?P<op>[A-Za-z]+))?)?$"
)


@dataclass(frozen=True)
class Route:
    backend: Backend
    operation: str
    model: str
    version: str
    project: str | None = None
    location: str | None = None

    @property
    def express(self) -> bool:
        """Vertex without a project in the path: express mode (API key) or a publisher read."""
        return self.backend == "vertex" and self.project is None

    @property
    def resource(self) -> str:
        """The model's resource name as Vertex quotes it in 404 texts."""
        if self.backend == "aistudio":
            return f"models/{self.model}"
        if self.project is None:
            return f"publishers/google/models/{self.model}"
        return (
            f"projects/{self.project}/locations/{self.location}"
            f"/publishers/google/models/{self.model}"
        )

    @property
    def key(self) -> str:
        return f"{self.backend}:{self.operation}"


@dataclass(frozen=True)
class NoRoute:
    """Why a request has no route: 404 (no such path) or 405 (path exists, other methods)."""

    status: Literal[404, 405]
    allowed: tuple[str, ...] = ()


def parse(method: str, path: str) -> Route | NoRoute:
    """The route for a request, or the 404/405 Google answers when there is none."""
    m = _AISTUDIO.match(path)
    backend: Backend = "aistudio"
    if m is None:
        m = _VERTEX.match(path)
        backend = "vertex"
    if m is None:
        return NoRoute(404)
    model, op = m["model"], m["op"]
    groups = m.groupdict()
    project, location = groups.get("project"), groups.get("location")
    if op is not None:
        if op not in POST_OPERATIONS:
            return NoRoute(404)
        if method != "POST":
            return NoRoute(405, ("POST",))
        return Route(backend, op, model, m["version"], project, location)
    if method != "GET":
        return NoRoute(405, ("GET",))
    return Route(backend, "get" if model else "list", model or "", m["version"], project, location)
