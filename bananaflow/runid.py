"""The run-id convention, written and read in one place: ``<UTC stamp>-<8 hex of the flow run>``.

The stamp sorts runs by start time in a bucket listing; the suffix ties a run's folder to the
Prefect flow run that made it, which is how a trigger's ``prefect.flow-run.<uuid>`` and the
scale-out parent's chunk runs find their manifests without asking Prefect.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

SUFFIX_LEN = 8


def new_run_id(flow_run_id: object | None = None) -> str:
    """A fresh run id; ``flow_run_id`` is the Prefect flow run (None outside one)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run = str(flow_run_id) if flow_run_id else uuid.uuid4().hex
    return f"{stamp}-{run[:SUFFIX_LEN]}"


def belongs_to(run_id: str, flow_run_id: object) -> bool:
    """Whether ``run_id`` was made by the flow run ``flow_run_id`` (by its suffix)."""
    return run_id.endswith("-" + str(flow_run_id)[:SUFFIX_LEN])


def latest_of(run_ids: list[str], flow_run_id: object) -> str | None:
    """The newest run of a flow run: Prefect's retry of a flow run starts a new run id with the
    same suffix, and the latest one is the run that finished."""
    matches = sorted(r for r in run_ids if belongs_to(r, flow_run_id))
    return matches[-1] if matches else None
