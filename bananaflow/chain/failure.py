"""How a job ends without an image: the status and reason the manifest must say."""

from __future__ import annotations

from bananaflow.errors import BananaflowError
from bananaflow.records import (
    JobStatus,
    ManifestRow,
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


class JobsEnded(BananaflowError):
    """Jobs run as one task ended without an image: raised so the task run shows as failed in
    the UI, with each job's reason as its message (the rows already went to the manifest)."""

    def __init__(self, ended: list[ManifestRow]):
        reasons = "; ".join(f"job {r.job_id}: {r.status}: {r.error or ''}"[:200] for r in ended)
        super().__init__(f"{len(ended)} job(s) ended without an image: {reasons}")
        self.rows = ended
