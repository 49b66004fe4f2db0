"""Faults: the queue tests fill through ``POST /_emulator/faults``, and their effects on bodies.

A forced fault is consumed by the next ``count`` requests it matches (backend and operation when
given, and a request the fault can apply to: ``bad_base64`` needs an image in the answer,
``token_error`` needs a ``/token`` call), after letting ``after`` matching requests through
untouched (e.g. the third step of an edit chain fails, its first two are answered). Unmatched
requests leave it queued.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

RequestKind = Literal["image", "text", "upscale", "token", "auth", "batch", "batch_create"]

# Faults any API call can suffer.
GENERIC = frozenset(
    {
        "quota", "quota_daily", "quota_billing", "500", "502", "503", "504", "hang", "reset",
        "truncated_json", "malformed_json",
    }
)
# Faults that corrupt an image in the answer.
IMAGE_BODY = frozenset({"bad_base64", "lying_mime"})
# Faults only image generation can show (refusals and the missing image).
GENERATION = frozenset({"no_image", "image_safety", "no_image_refusal", "prompt_blocked"})
TOKEN = frozenset({"token_error"})
AUTH = frozenset({"token_expired"})
# Faults of a whole provider batch, taken when it is created: it ends EXPIRED or FAILED, or
# ``params.lines`` of its lines answer with an error or are left out of the output.
BATCH = frozenset({"batch_expired", "batch_failed", "batch_line_error", "batch_line_missing"})
# A batch create refused with 429 RESOURCE_EXHAUSTED (too many batch jobs enqueued): no batch
# is made, so the client may ask again.
BATCH_CREATE = frozenset({"batch_quota"})
# Faults of a service tier, taken only by a call served at that tier: a flex call shed, a
# priority call served (and billed) as standard. Their random rates are profile fields
# (``flex_shed_rate``, ``priority_downgrade_rate``), not ``fault_rates``.
TIER_OF_FAULT: dict[str, str] = {"flex_shed": "flex", "priority_downgrade": "priority"}
TIER = frozenset(TIER_OF_FAULT)
ALL_FAULTS = GENERIC | IMAGE_BODY | GENERATION | TOKEN | AUTH | BATCH | BATCH_CREATE | TIER

APPLICABLE: dict[str, frozenset[str]] = {
    "image": GENERIC | IMAGE_BODY | GENERATION | TIER,
    "text": GENERIC,
    "upscale": GENERIC | IMAGE_BODY,
    "token": TOKEN,
    "auth": AUTH,
    "batch": BATCH,
    "batch_create": BATCH_CREATE,
}

BAD_BASE64 = "!!! not base64: the emulator's bad_base64 fault !!!"


@dataclass
class ForcedFault:
    fault: str
    remaining: int
    backend: str | None = None
    operation: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    after: int = 0

    def matches(
        self, kind: RequestKind, backend: str, operation: str, tier: str | None = None
    ) -> bool:
        return (
            self.fault in APPLICABLE[kind]
            and self.backend in (None, backend)
            and self.operation in (None, operation)
            and TIER_OF_FAULT.get(self.fault, tier) == tier
        )

    def describe(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "remaining": self.remaining,
            "backend": self.backend,
            "operation": self.operation,
            "params": dict(self.params),
            "after": self.after,
        }


class FaultQueue:
    def __init__(self) -> None:
        self._queue: list[ForcedFault] = []

    def add(self, fault: ForcedFault) -> None:
        if fault.fault not in ALL_FAULTS:
            known = ", ".join(sorted(ALL_FAULTS))
            raise ValueError(f"unknown fault {fault.fault!r}; known: {known}")
        if fault.remaining < 1:
            raise ValueError("count must be at least 1")
        if fault.after < 0:
            raise ValueError("after must be 0 or more")
        self._queue.append(fault)

    def take(
        self, kind: RequestKind, backend: str, operation: str, tier: str | None = None
    ) -> ForcedFault | None:
        """Consume one use of the oldest matching fault (``tier``: the call's service tier)."""
        for i, f in enumerate(self._queue):
            if f.matches(kind, backend, operation, tier):
                if f.after:  # this request passes untouched; later faults wait their turn
                    f.after -= 1
                    return None
                f.remaining -= 1
                if f.remaining == 0:
                    del self._queue[i]
                return ForcedFault(f.fault, 1, f.backend, f.operation, dict(f.params))
        return None

    def clear(self) -> None:
        self._queue.clear()

    def pending(self) -> list[dict[str, Any]]:
        return [f.describe() for f in self._queue]


def truncate(body: bytes) -> bytes:
    """A valid answer cut in half, as a dropped proxy connection would leave it."""
    return body[: max(1, len(body) // 2)]


def malform(body: bytes) -> bytes:
    """Complete but not JSON: the first ``":`` becomes ``"=``."""
    i = body.find(b'":')
    if i < 0:
        return b"{" + body
    return body[: i + 1] + b"=" + body[i + 2 :]


def _image_holders(resp: dict[str, Any]) -> list[dict[str, Any]]:
    """The dicts carrying image bytes: inlineData blobs, or Imagen predictions."""
    holders = [p for p in resp.get("predictions", []) if "bytesBase64Encoded" in p]
    for cand in resp.get("candidates", []):
        for part in cand.get("content", {}).get("parts", []):
            if "inlineData" in part and not part.get("thought"):
                holders.append(part["inlineData"])
    return holders


def corrupt_base64(resp: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(resp)
    for holder in _image_holders(out):
        key = "data" if "data" in holder else "bytesBase64Encoded"
        holder[key] = BAD_BASE64
    return out


def lie_about_mime(resp: dict[str, Any]) -> dict[str, Any]:
    """Declare PNG for JPEG bytes and vice versa; the bytes themselves stay a valid image."""
    out = copy.deepcopy(resp)
    for holder in _image_holders(out):
        holder["mimeType"] = "image/png" if holder["mimeType"] == "image/jpeg" else "image/jpeg"
    return out
