"""Provider batch states, one vocabulary for both platforms.

Gemini's wire says ``BATCH_STATE_*`` (the SDK rewrites it to ``JOB_STATE_*``); Vertex says
``JOB_STATE_*`` and has ``PARTIALLY_SUCCEEDED``, which the SDK's ``done`` misses, ``QUEUED``
(over Vertex's concurrent-job limit) and ``CANCELLING`` (cancel asked, not yet done: keep
polling). A state this table does not know is treated as still running: a new provider state
must not end jobs.
"""

from __future__ import annotations

from typing import Literal

BatchState = Literal[
    "queued",
    "pending",
    "running",
    "cancelling",
    "succeeded",
    "partial",
    "failed",
    "cancelled",
    "expired",
]
TERMINAL: frozenset[BatchState] = frozenset(
    {"succeeded", "partial", "failed", "cancelled", "expired"}
)
# States whose output holds answers to collect.
WITH_OUTPUT: frozenset[BatchState] = frozenset({"succeeded", "partial"})

_NAMES: dict[str, BatchState] = {
    "PENDING": "pending",
    "QUEUED": "queued",
    "RUNNING": "running",
    "CANCELLING": "cancelling",
    "UPDATING": "running",
    "PAUSED": "running",
    "SUCCEEDED": "succeeded",
    "PARTIALLY_SUCCEEDED": "partial",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "EXPIRED": "expired",
}


def normalize(raw: object) -> BatchState:
    """``BATCH_STATE_X`` or ``JOB_STATE_X`` → one state; unknown → ``running``."""
    text = str(raw or "")
    for prefix in ("BATCH_STATE_", "JOB_STATE_"):
        if text.startswith(prefix):
            return _NAMES.get(text[len(prefix) :], "running")
    return "running"
