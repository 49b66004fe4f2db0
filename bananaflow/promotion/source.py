"""Which dev run to promote, given as a run id, a manifest URI or a Prefect flow-run id.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr

from bananaflow import runid
from bananaflow.errors import InputError
from bananaflow.manifest import read_manifest, run_ids
from bananaflow.records import ManifestRow
from bananaflow.storage import Store, check_relative

_MANIFEST_URI = re.compile(r"^(?P<root>.+?)/runs/(?P<run>[^/]+)/manifest\.jsonl$")
_FLOW_RUN_RESOURCE = "prefect.flow-run."


class SourceRef(BaseModel):
    """What ``source_run`` named, before it is resolved to a run id in a store.

    ``run_id``: our run id. ``manifest``: a manifest URI, which also names the store.
    ``flow_run``: a Prefect flow-run id (what a deployment trigger can template), resolved by our
    run-id convention: a run id ends with the first 8 characters of its flow run's id.
    """

    kind: Literal["run_id", "manifest", "flow_run"]
    run_id: str | None = None
    store_url: str | None = None
    flow_run_id: uuid.UUID | None = None


def parse_source_run(value: str) -> SourceRef:
    text = value.strip()
    if not text:
        raise InputError(
            "source_run", "is empty", fix="give a dev run id, a manifest URI or a flow-run id"
        )
    match = _MANIFEST_URI.match(text)
    if match:
        run_id = _run_segment(match["run"])
        return SourceRef(kind="manifest", run_id=run_id, store_url=match["root"])
    flow_run = text.removeprefix(_FLOW_RUN_RESOURCE)
    try:
        return SourceRef(kind="flow_run", flow_run_id=uuid.UUID(flow_run))
    except ValueError:
        if text.startswith(_FLOW_RUN_RESOURCE):
            raise InputError(
                "source_run", f"{text!r} is not a flow-run id", fix="use prefect.flow-run.<uuid>"
            ) from None
    if "/" in text or text.endswith(".jsonl"):
        raise InputError(
            "source_run",
            f"{text!r} is neither a run id nor a manifest URI",
            fix="use <run id>, or a URI ending in /runs/<run id>/manifest.jsonl",
        )
    return SourceRef(kind="run_id", run_id=_run_segment(text))


def _run_segment(run_id: str) -> str:
    try:
        return check_relative(run_id, field="source_run")
    except InputError:
        raise InputError(
            "source_run", f"{run_id!r} is not a run id", fix="copy the id from runs/<run id>/"
        ) from None


def find_run_for_flow_run(store: Store, flow_run_id: uuid.UUID) -> str:
    """Our run id of a Prefect flow run, by the run-id convention (``bananaflow.runid``)."""
    found = runid.latest_of(run_ids(store), flow_run_id)
    if found is None:
        raise InputError(
            "source_run",
            f"no run of flow run {flow_run_id} under {store.uri('runs')}",
            fix="set source_config (or the dev run's output) to where the dev run wrote, "
            "or pass the manifest URI",
        )
    return found


def load_dev_rows(store: Store, run_id: str) -> list[ManifestRow]:
    rows = read_manifest(store, run_id)
    if not rows:
        raise InputError(
            "source_run",
            f"run {run_id} has no manifest rows in {store.uri('runs/' + run_id)}",
            fix="check source_config / the manifest URI points at the dev run's storage",
        )
    return rows


class DevRun(BaseModel):
    """A resolved dev run: where it lives and its rows (small: one row per job)."""

    run_id: str
    store_url: str
    store_options: dict[str, Any] = Field(default_factory=dict)
    store_credentials: SecretStr | None = None
    manifest_uri: str
    rows: list[ManifestRow]

    def store(self) -> Store:
        return Store(self.store_url, self.store_options, credentials=self.store_credentials)
