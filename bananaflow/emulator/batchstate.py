"""What the emulator keeps for the asynchronous APIs: Files API objects and provider batches.

Plain records on ``EmulatorState``; the handlers that fill them are ``files_api``,
``batches`` (Gemini Batch API) and ``vertex_batch`` (Vertex batch prediction).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import pickle
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The four states a Gemini batch ends in (the Operation gets ``done`` only then).
GEMINI_TERMINAL = frozenset(
    {"BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"}
)
VERTEX_TERMINAL = frozenset(
    {
        "JOB_STATE_SUCCEEDED",
        "JOB_STATE_FAILED",
        "JOB_STATE_CANCELLED",
        "JOB_STATE_EXPIRED",
        "JOB_STATE_PARTIALLY_SUCCEEDED",
    }
)


def rfc3339(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class StoredFile:
    """A Files API object: uploaded (batch input) or generated (batch output)."""

    name: str  # files/<id>
    display_name: str
    mime_type: str
    data: bytes
    created: float  # wall clock
    expires: float  # wall clock
    source: str = "UPLOADED"

    def resource(self, base: str, version: str = "v1beta") -> dict[str, Any]:
        fid = self.name.split("/", 1)[1]
        out: dict[str, Any] = {
            "name": self.name,
            "displayName": self.display_name,
            "mimeType": self.mime_type,
            "sizeBytes": str(len(self.data)),
            "createTime": rfc3339(self.created),
            "updateTime": rfc3339(self.created),
            "expirationTime": rfc3339(self.expires),
            "sha256Hash": base64.b64encode(hashlib.sha256(self.data).digest()).decode(),
            "uri": f"{base}/{version}/{self.name}",
            "state": "ACTIVE",
            "source": self.source,
        }
        if self.source == "GENERATED":
            out["downloadUri"] = f"{base}/download/{version}/files/{fid}:download?alt=media"
        return out


@dataclass
class UploadSession:
    """A resumable upload between its ``start`` and its ``finalize``."""

    display_name: str
    mime_type: str
    size: int
    file_id: str | None
    received: bytearray = field(default_factory=bytearray)


@dataclass
class BatchLine:
    """One request of a batch, with the caller's key (file: top-level ``key``; inline:
    ``metadata``)."""

    key: str | None
    request: Any
    metadata: dict[str, Any] | None = None


@dataclass
class EmulatedBatch:
    """One provider batch (Gemini or Vertex) on the emulator's clock."""

    name: str
    platform: str  # "aistudio" | "vertex"
    model: str
    display_name: str
    lines: list[BatchLine]
    created_wall: float
    input_file: str | None = None  # Gemini file mode: files/<id>
    output_uri_prefix: str | None = None  # Vertex: gs://bucket/prefix
    input_uri: str | None = None  # Vertex: gs://bucket/in.jsonl
    state: str = "PENDING"  # QUEUED | PENDING | RUNNING | CANCELLING | SUCCEEDED | FAILED | ...
    end_wall: float | None = None
    started_wall: float | None = None  # Vertex: when it left JOB_STATE_QUEUED
    cancel_wall: float | None = None  # Vertex: when cancel was asked (CANCELLING until then)
    forced: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    succeeded: int = 0
    failed: int = 0
    outputs: list[dict[str, Any]] = field(default_factory=list)  # inline mode answers
    output_file: str | None = None  # Gemini file mode: files/batch-<id>
    output_dir: str | None = None  # Vertex: gs://…/prediction-model-<ts>
    error: dict[str, Any] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, data: dict[str, Any]) -> None:
        self.__dict__.update(data)
        self.lock = asyncio.Lock()

    @property
    def terminal(self) -> bool:
        return self.state in ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED", "PARTIALLY_SUCCEEDED")

    def forced_fault(self, name: str) -> dict[str, Any] | None:
        for fault, params in self.forced:
            if fault == name:
                return params
        return None


@dataclass
class AsyncStore:
    """Files, upload sessions and batches of one emulator app.

    With ``path`` (``emulator.batch.state_dir``) they outlive the process, as Google's do:
    the embedded emulator dies with the CLI, and a re-run must find the batch it submitted.
    """

    files: dict[str, StoredFile] = field(default_factory=dict)
    uploads: dict[str, UploadSession] = field(default_factory=dict)
    batches: dict[str, EmulatedBatch] = field(default_factory=dict)
    creates: int = 0  # batch creations accepted (tests count them: never twice)
    uploaded: int = 0  # files uploaded (tests count them: a reference once)
    path: Path | None = None

    @classmethod
    def load(cls, state_dir: str | None) -> AsyncStore:
        if not state_dir:
            return cls()
        path = Path(state_dir) / "async-store.pickle"
        if path.exists():
            # The emulator's own file, written by save() below; never a user's input.
            loaded: AsyncStore = pickle.loads(path.read_bytes())
            loaded.path = path
            return loaded
        return cls(path=path)

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(self))
        os.replace(tmp, self.path)

    def live_file(self, name: str) -> StoredFile | None:
        f = self.files.get(name)
        if f is not None and f.expires <= time.time():
            del self.files[name]
            return None
        return f
