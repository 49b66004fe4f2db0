"""Turning a Google API path into (backend, operation, model).

Both services share one port, as they share path shapes: ``/v1/models/...`` is the Gemini API,
``/v1/projects/...`` and ``/v1/publishers/...`` are Vertex. Starlette can't route on the
``models/{m}:generateContent`` colon form, so one catch-all route hands the path to ``parse``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Backend = Literal["aistudio", "vertex"]
OPERATIONS: frozenset[str] = frozenset({"generateContent", "streamGenerateContent", "predict"})

_AISTUDIO = re.compile(r"^/(?P<version>v1|v1beta)/models/(?P<model>[^/:]+):(?P<op>[A-Za-z]+)$")
_VERTEX = re.compile(
    r"^/(?P<version>v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/publishers/google/models/(?P<model>[^/:]+):(?P<op>[A-Za-z]+)$"
)
_EXPRESS = re.compile(
    r"^/(?P<version>v1|v1beta1)/publishers/google/models/(?P<model>[^/:]+):(?P<op>[A-Za-z]+)$"
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
        """Vertex express mode: no project in the path, authenticated by API key."""
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


def parse(path: str) -> Route | None:
    """The route for a POST path, or None when no Google API has that path."""
    m = _AISTUDIO.match(path)
    if m:
        return Route("aistudio", m["op"], m["model"], m["version"])
    m = _VERTEX.match(path)
    if m:
        return Route(
            "vertex", m["op"], m["model"], m["version"], m["project"], m["location"]
        )
    m = _EXPRESS.match(path)
    if m:
        return Route("vertex", m["op"], m["model"], m["version"])
    return None
