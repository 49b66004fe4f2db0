"""A job as a batch request line, and a batch's answers matched back to jobs by key.

Answers are matched by key, never by position: Gemini file output carries the top-level
``key`` we sent (any line order), inline output echoes ``metadata.key``. A key answered twice
keeps its first answer and is reported; a key never answered is reported missing. Each answer
is read by the same parser as an online ``generateContent`` answer, so a refusal in a batch is
a refusal (final, never resubmitted) exactly as online.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from bananaflow.backends.wire import build_generate_body, parse_generate_response
from bananaflow.errors import BackendError, InputError, MalformedResponse
from bananaflow.expand import ImageJob
from bananaflow.generation import BackendName, GeneratedImage, ImageRequest

log = logging.getLogger("bananaflow")

LABEL = "bananaflow_job"  # the Vertex request label carrying the job key


def image_request(job: ImageJob, model: str) -> ImageRequest:
    if job.references:
        # A batch line would have to carry (or upload) the reference bytes; until it does, a
        # reference job must not be bought without its references.
        raise InputError(
            f"job {job.job_id[:8]} references",
            "batch delivery does not send reference images yet",
            fix="render jobs with references with --delivery online",
        )
    return ImageRequest(
        prompt=job.prompt,
        aspect_ratio=job.aspect_ratio,
        image_size=job.image_size,
        model=model,
        seed=job.seed,
    )


def request_line(job: ImageJob, model: str, *, vertex: bool = False) -> dict[str, Any]:
    """The job's generateContent body under its key (the job id).

    Vertex JSONL has no documented key field, so there the key also rides inside the request
    as a label (``labels`` is a GenerateContentRequest field, and Vertex echoes the request
    on each output line); ``request_digest`` is the fallback when labels do not come back.
    """
    body = build_generate_body(image_request(job, model), vertex=vertex)
    if vertex:
        body["labels"] = {LABEL: job.job_id}
        return {"request": body}
    return {"key": job.job_id, "request": body}


def _pruned(value: Any) -> Any:
    """Canonical form of an echoed request: no nulls (Vertex echoes ``"fileData": null``)."""
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in sorted(value.items()) if v is not None and k != "labels"}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def request_digest(request: Any) -> str:
    """What a request asked for, whatever the key: contents and generationConfig, canonical."""
    pruned = _pruned(request) if isinstance(request, dict) else {}
    wanted = {k: pruned.get(k) for k in ("contents", "generationConfig")}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()


def to_jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()


def read_jsonl(data: bytes) -> list[dict[str, Any]]:
    """Output lines, one JSON object each; an unreadable line is logged and skipped (its job
    then shows up as missing, with a reason)."""
    out = []
    for n, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            log.warning("batch output line %d is not JSON; skipped", n)
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


@dataclass
class Matched:
    """The answers by key, and what did not match."""

    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
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


def match(
    rows: list[dict[str, Any]], expected: list[str], digests: dict[str, str] | None = None
) -> Matched:
    """Pair each output row with the job whose key it carries."""
    wanted = set(expected)
    out = Matched()
    for row in rows:
        key = row_key(row, digests or {})
        if key not in wanted:
            out.unknown.append(key)
        elif key in out.answers:
            out.duplicates.append(key)
        else:
            out.answers[key] = row
    out.missing = [k for k in expected if k not in out.answers]
    if out.duplicates or out.unknown:
        log.warning(
            "batch output: %d duplicate and %d unknown keys ignored",
            len(out.duplicates),
            len(out.unknown),
        )
    return out


def answer_image(
    row: dict[str, Any], job: ImageJob, backend: BackendName, model: str
) -> GeneratedImage:
    """The image of one answer row, or the typed error an online call would have raised."""
    response = row.get("response")
    if isinstance(response, dict) and response:
        return parse_generate_response(
            response, backend=backend, model=model, request=image_request(job, model)
        )
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
