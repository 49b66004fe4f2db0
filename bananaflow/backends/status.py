"""``google.rpc.Status`` error envelopes → typed errors (reference §5).

The retry verdict is decided here, once, from what Google actually sends:

* 429 with ``RetryInfo.retryDelay`` → :class:`QuotaExceeded` waiting exactly that long (a
  ``Retry-After`` header, if some proxy adds one, is honoured too; the longer of the two wins);
* 429 whose ``QuotaFailure`` names a ``…PerDay…`` quota → not retryable (resets at midnight PT);
* 429 with no details at all on **AI Studio** → billing (prepaid credits gone), not retryable.
  The same bare 429 on **Vertex** is the normal dynamic-shared-quota answer ("Resource exhausted,
  please try again later") and *is* retryable, so the backend name decides;
* 500/502/503/504 (and 499/408) → transient; 400 → :class:`BadRequest` carrying the server's
  words; 401/403 → :class:`AuthError`; 404 → :class:`NotFound`.

Messages carry the server's message, the backend and the status. Every string taken from the
answer (message, status name, reason phrase, quota id) goes through :func:`bananaflow.redact.redact`
with the caller's secrets (API key, bearer token) in case a proxy echoes a header back.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from bananaflow.errors import (
    AuthError,
    BackendError,
    BadRequest,
    NotFound,
    QuotaExceeded,
    RequestTimedOut,
    Unavailable,
)
from bananaflow.redact import redact

_TYPE_PREFIX = "type.googleapis.com/google.rpc."
_MAX_MESSAGE = 2000
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*s?\s*$")

__all__ = [
    "error_from_payload",
    "error_from_response",
    "parse_duration",
    "parse_retry_after",
    "unwrap_envelope",
]


def parse_duration(value: Any) -> float | None:
    """A proto ``Duration`` in JSON form: ``"34s"``, ``"0.34s"`` (also a bare number)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if value >= 0 else None
    if isinstance(value, dict):  # {"seconds": "34", "nanos": 0} from some transcoders
        try:
            return float(value.get("seconds", 0) or 0) + float(value.get("nanos", 0) or 0) / 1e9
        except (TypeError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    m = _DURATION_RE.match(value)
    return float(m.group(1)) if m else None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After``: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(seconds, 0.0)


def unwrap_envelope(payload: Any) -> dict[str, Any] | None:
    """The inner status object from ``{"error": {...}}``, a bare status, or a 1-element list."""
    if isinstance(payload, list) and len(payload) == 1:
        payload = payload[0]
    if not isinstance(payload, dict):
        return None
    inner = payload.get("error")
    if isinstance(inner, dict):
        return inner
    if "code" in payload or "status" in payload or "message" in payload:
        return payload
    return None


def _details(err: Mapping[str, Any]) -> list[dict[str, Any]]:
    details = err.get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _detail_type(detail: Mapping[str, Any]) -> str:
    return str(detail.get("@type", "")).removeprefix(_TYPE_PREFIX)


def _quota_facts(details: list[dict[str, Any]]) -> tuple[float | None, bool, str | None]:
    """(retryDelay seconds, per-day?, quota id) from RetryInfo / QuotaFailure / ErrorInfo."""
    retry_after: float | None = None
    per_day = False
    quota_id: str | None = None
    for detail in details:
        kind = _detail_type(detail)
        if kind == "RetryInfo":
            delay = parse_duration(detail.get("retryDelay"))
            if delay is not None:
                retry_after = delay
        elif kind == "QuotaFailure":
            for violation in detail.get("violations") or []:
                if not isinstance(violation, dict):
                    continue
                qid = violation.get("quotaId") or violation.get("quota_id")
                if qid:
                    quota_id = quota_id or str(qid)
                    if "PerDay" in str(qid):
                        per_day = True
                        quota_id = str(qid)
        elif kind == "ErrorInfo":
            meta = detail.get("metadata") or {}
            limit = meta.get("quota_limit") if isinstance(meta, dict) else None
            if limit:
                quota_id = quota_id or str(limit)
                if "PerDay" in str(limit):
                    per_day = True
    return retry_after, per_day, quota_id


def _error_info_reason(details: list[dict[str, Any]]) -> str | None:
    for detail in details:
        if _detail_type(detail) == "ErrorInfo" and detail.get("reason"):
            return str(detail["reason"])
    return None


def error_from_payload(
    err: Mapping[str, Any],
    *,
    http_status: int | None,
    backend: str,
    headers: Mapping[str, str] | None = None,
    reason_phrase: str = "",
    secrets: Iterable[str | None] = (),
) -> BackendError:
    """Map one decoded ``google.rpc.Status`` (plus the HTTP status and headers) to an error."""
    code = http_status
    if code is None:
        try:
            code = int(err.get("code"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            code = None
    secrets = list(secrets)
    reason_phrase = redact(reason_phrase, secrets)
    raw_status = err.get("status")
    status_name = redact(str(raw_status), secrets) if raw_status else reason_phrase or None
    raw_message = err.get("message")
    message = str(raw_message).strip() if raw_message else (reason_phrase or "no message")
    message = redact(message, secrets)
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "…"
    details = _details(err)
    header_delay = parse_retry_after((headers or {}).get("retry-after"))
    kw: dict[str, Any] = {"backend": backend, "status": code, "status_name": status_name}

    if code == 429 or status_name == "RESOURCE_EXHAUSTED":
        retry_after, per_day, quota_id = _quota_facts(details)
        quota_id = redact(quota_id, secrets) if quota_id else None
        if header_delay is not None:
            retry_after = max(retry_after or 0.0, header_delay)
        billing = backend == "aistudio" and not details and header_delay is None
        return QuotaExceeded(
            message,
            retry_after=retry_after,
            per_day=per_day,
            billing=billing,
            quota_id=quota_id,
            **kw,
        )
    if code in (500, 502, 503, 504, 499):
        return Unavailable(message, retry_after=header_delay, **kw)
    if code == 408:
        return RequestTimedOut(message, **kw)
    if code in (401, 403):
        return AuthError(message, **kw)
    if code == 400:
        if _error_info_reason(details) in ("API_KEY_INVALID", "API_KEY_EXPIRED"):
            return AuthError(message, **kw)
        return BadRequest(message, **kw)
    if code == 404:
        return NotFound(message, **kw)
    return BackendError(message, **kw)


def error_from_response(
    status_code: int,
    content: bytes,
    *,
    backend: str,
    headers: Mapping[str, str] | None = None,
    reason_phrase: str = "",
    secrets: Iterable[str | None] = (),
) -> BackendError:
    """Map a non-2xx HTTP response; a non-JSON body (a proxy's HTML page) keeps the reason."""
    try:
        payload = json.loads(content) if content else None
    except (ValueError, UnicodeDecodeError):
        payload = None
    err = unwrap_envelope(payload)
    if err is None:
        err = {"message": reason_phrase or f"HTTP {status_code}", "status": reason_phrase or None}
    return error_from_payload(
        err,
        http_status=status_code,
        backend=backend,
        headers=headers,
        reason_phrase=reason_phrase,
        secrets=secrets,
    )
