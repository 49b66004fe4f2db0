"""The durable record of every submitted provider batch, beside the job ledger.

``ledger/batches/<id>.json`` holds what a later process needs to finish a batch without the
run that submitted it: the provider's name, the jobs (whole, so the chain can run on them),
their routes, the expected cost, and whether it was collected. It is written right after the
provider accepted the batch, before the first poll; each job's ledger claim also names the
batch, so a second run of the same jobs joins it instead of submitting again.
"""

from __future__ import annotations

import hashlib
import logging

from pydantic import BaseModel, Field, ValidationError

from bananaflow.batch.states import BatchState
from bananaflow.expand import ImageJob
from bananaflow.generation import BackendName
from bananaflow.records import utcnow
from bananaflow.routing import RouteDecision
from bananaflow.storage import Store

log = logging.getLogger("bananaflow")

PREFIX = "ledger/batches"


class BatchRecord(BaseModel):
    """One provider batch and the jobs it pays for."""

    name: str  # batches/<id> (Gemini) or projects/…/batchPredictionJobs/<id> (Vertex)
    backend: BackendName
    model: str
    run_id: str
    display_name: str
    input: str = Field(description="files/<id>, gs://… or 'inline'.")
    jobs: list[ImageJob]
    decisions: list[RouteDecision]
    keys: dict[str, str] = Field(description="Job id → ledger master key.")
    expected_usd: float = 0.0
    created_at: str = Field(default_factory=utcnow)
    state: BatchState = "pending"
    collected: bool = False
    note: str = ""

    @property
    def record_id(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()[:24]


class BatchBook:
    """Read and write batch records in one store."""

    def __init__(self, store: Store):
        self.store = store

    @staticmethod
    def _path(record: BatchRecord) -> str:
        return f"{PREFIX}/{record.record_id}.json"

    def save(self, record: BatchRecord) -> None:
        self.store.write_text(self._path(record), record.model_dump_json())

    def all(self) -> list[BatchRecord]:
        out = []
        for path in self.store.list(PREFIX):
            try:
                out.append(BatchRecord.model_validate_json(self.store.get(path)))
            except (FileNotFoundError, ValidationError) as err:
                log.warning("batch book: unreadable %s (%s)", path, err.__class__.__name__)
        return out

    def find(self, name: str) -> BatchRecord | None:
        return next((r for r in self.all() if r.name == name), None)

    def pending(self, run_id: str | None = None) -> list[BatchRecord]:
        """Batches not collected yet (of one run, or all)."""
        return [r for r in self.all() if not r.collected and (run_id is None or r.run_id == run_id)]
