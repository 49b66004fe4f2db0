"""A job as a batch request line, and a batch's answers matched back to jobs by key.

A line is built by the online request builder (``chain.request``): reference images travel
inline (``inlineData``), or by file above ``references.upload_above_bytes`` (``fileData``,
``chain.uploads``), in the AI Studio JSONL as in Vertex's; Vertex lines ask for the JPEG
the compress step wants (``imageOutputOptions``), exactly as an online call would.

Answers are matched by key, never by position: Gemini file output carries the top-level
``key`` we sent (any line order), inline output echoes ``metadata.key``. They are matched in
local files (downloaded in chunks), one line in memory at a time. A key answered twice
keeps its first answer and is reported; a key never answered is reported missing. Each answer
is read by the same parser as an online ``generateContent`` answer, so a refusal in a batch is
a refusal (final, never resubmitted) exactly as online.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bananaflow.backends.wire import build_generate_body, parse_generate_response
from bananaflow.chain import request
from bananaflow.chain.request import provider_encoding
from bananaflow.config import Settings
from bananaflow.errors import BackendError, MalformedResponse
from bananaflow.expand import ImageJob
from bananaflow.generation import BackendName, GeneratedImage, ImageRequest, ReferenceImage

log = logging.getLogger("bananaflow")

LABEL = "bananaflow_job"  # the Vertex request label carrying the job key


def image_request(
    job: ImageJob,
    model: str,
    backend: BackendName,
    settings: Settings,
    references: list[ReferenceImage] | None = None,
) -> ImageRequest:
    """What the line asks, built as an online call's (``chain.request``), without a tier."""
    encoding = provider_encoding(backend, settings)
    return request.image_request(job, model, references or [], "online", encoding)


def request_line(
    job: ImageJob,
    model: str,
    backend: BackendName,
    settings: Settings,
    references: list[ReferenceImage] | None = None,
) -> dict[str, Any]:
    """The job's generateContent body under its key (the job id), references inline.

    Vertex JSONL has no documented key field, so there the key also rides inside the request
    as a label (``labels`` is a GenerateContentRequest field, and Vertex echoes the request
    on each output line); ``request_digest`` is the fallback when labels do not come back.
    """
    vertex = backend == "vertex"
    body = build_generate_body(
        image_request(job, model, backend, settings, references), vertex=vertex
    )
    if vertex:
        body["labels"] = {LABEL: job.job_id}
        return {"request": body}
    return {"key": job.job_id, "request": body}


def _pruned(value: Any) -> Any:
    """Canonical form of an echoed request: no nulls (Vertex echoes ``"fileData": null``), and
    no reference images, inline or by file (megabytes to hash, and the job's seed already
    tells two jobs that differ only by their references apart)."""
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in sorted(value.items()) if v is not None and k != "labels"}
    if isinstance(value, list):
        return [
            _pruned(v)
            for v in value
            if not (isinstance(v, dict) and ("inlineData" in v or v.get("fileData")))
        ]
    return value


def request_digest(request: Any) -> str:
    """What a request asked for, whatever the key: contents and generationConfig, canonical."""
    pruned = _pruned(request) if isinstance(request, dict) else {}
    wanted = {k: pruned.get(k) for k in ("contents", "generationConfig")}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()


def to_jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()


@dataclass(frozen=True)
class Location:
    """Where one answer line sits in a local answer file."""

    path: Path
    offset: int
    length: int


@dataclass
class Matched:
    """The answers by key (where to read each), and what did not match."""

    answers: dict[str, Location] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def row_key(row: dict[str, Any], digests: dict[str, str]) -> str:
    """The job key of an answer row: Gemini ``key`` / ``metadata.key``, Vertex's echoed label,
    else the digest of the echoed request (``digests``: request digest → key)."""
    meta = row.get("metadata")
    request = row.get("request")
    labels = request.get("labels") if isinstance(request, dict) else None
    for key in (
        row.get("key"),
        meta.get("key") if isinstance(meta, dict) else None,
        labels.get(LABEL) if isinstance(labels, dict) else None,
    ):
        if key is not None:
            return str(key)
    if isinstance(request, dict):
        return digests.get(request_digest(request), "")
    return ""


def match(paths: list[Path], expected: list[str], digests: dict[str, str] | None = None) -> Matched:
    """Pair each answer line of the files with the job whose key it carries.

    The files are read one line at a time and only each line's place is kept: a 4K image line
    is tens of MB of base64, so a batch's answers are never all in memory. An unreadable line
    is logged and skipped (its job then shows up as missing, with a reason).
    """
    wanted = set(expected)
    out = Matched()
    for path in paths:
        with path.open("rb") as f:
            offset = 0
            for n, raw in enumerate(f, 1):
                start, offset = offset, offset + len(raw)
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw)
                except ValueError:
                    log.warning("batch output line %d of %s is not JSON; skipped", n, path.name)
                    continue
                key = row_key(row, digests or {}) if isinstance(row, dict) else ""
                if key not in wanted:
                    out.unknown.append(key)
                elif key in out.answers:
                    out.duplicates.append(key)
                else:
                    out.answers[key] = Location(path, start, len(raw))
    out.missing = [k for k in expected if k not in out.answers]
    if out.duplicates or out.unknown:
        log.warning(
            "batch output: %d duplicate and %d unknown keys ignored",
            len(out.duplicates),
            len(out.unknown),
        )
    return out


def read_answer(where: Location) -> dict[str, Any]:
    """One answer line, read back from its file."""
    with where.path.open("rb") as f:
        f.seek(where.offset)
        row = json.loads(f.read(where.length))
    return row if isinstance(row, dict) else {}


def answer_image(
    row: dict[str, Any], job: ImageJob, backend: BackendName, model: str, settings: Settings
) -> GeneratedImage:
    """The image of one answer row, or the typed error an online call would have raised."""
    response = row.get("response")
    if isinstance(response, dict) and response:
        asked = image_request(job, model, backend, settings)
        return parse_generate_response(response, backend=backend, model=model, request=asked)
    status = row.get("status")
    if isinstance(status, str) and status:  # Vertex: "Bad Request: {…}"
        raise BackendError(f"batch line failed: {status[:300]}", backend=backend)
    error = row.get("error")
    if isinstance(error, dict):
        raise BackendError(
            f"batch line failed: {error.get('code', '?')} {str(error.get('message', ''))[:200]}",
            backend=backend,
        )
    raise MalformedResponse("batch line has neither response nor error", backend=backend)
