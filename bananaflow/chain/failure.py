"""How a job ends without an image: the status and reason the manifest must say.
"""

from __future__ import annotations

from bananaflow.errors import BananaflowError
from bananaflow.records import (
    JobStatus,
    RouteAttempt,
)


class JobFailed(BananaflowError):
    """A job ended without an uploaded image; carries what the manifest must say."""

    def __init__(
        self, status: JobStatus, error: str, *, kind: str, routes: list[RouteAttempt] | None = None
    ):
        super().__init__(error)
        self.status = status
        self.kind = kind
        self.routes = routes or []
