"""Run artifacts in the Prefect UI: progress, results table, summary, contact sheet."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar
from uuid import UUID

from prefect import task
from prefect.artifacts import (
    Artifact,
    acreate_image_artifact,
    acreate_markdown_artifact,
    acreate_progress_artifact,
    aupdate_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from bananaflow import progress
from bananaflow.chain import ChainContext
from bananaflow.errors import BananaflowError
from bananaflow.manifest import iter_manifest
from bananaflow.records import ManifestRow, RunSummary
from bananaflow.sheet import write_contact_sheet
from bananaflow.tally import RunTally

log = logging.getLogger("bananaflow")
T = TypeVar("T")

# Data URIs are stored in Prefect's database: keep the inline preview small.
MAX_INLINE_SHEET = 1_500_000


class ProgressArtifact:
    """A progress bar that follows jobs as they finish, and always ends at the true count.

    Updates are sent one at a time under a lock, each carrying the count at the moment it is
    sent: concurrent jobs used to race their REST calls, and an older "50 %" could land after
    "100 %", so a finished run showed half done in the UI.
    """

    def __init__(
        self,
        total: int,
        min_interval_s: float = 1.0,
        send: Callable[..., Awaitable[object]] = aupdate_progress_artifact,
    ):
        self.total = max(total, 1)
        self._update = send
        self.done = 0
        self.id: UUID | None = None
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._sent = -1
        self._lock = asyncio.Lock()

    async def start(self, run_id: str) -> None:
        self.id = await _quietly(
            acreate_progress_artifact(
                progress=0.0, key="bananaflow-progress", description=f"run {run_id}: jobs finished"
            ),
            "progress artifact",
        )

    async def advance(self) -> None:
        """One more job finished; the server hears of it at most once per ``min_interval_s``.

        Each update is a REST call and a database write on the Prefect server; one per image
        cost the server more CPU than the image's own compress step.
        """
        self.done += 1
        if time.monotonic() - self._last >= self.min_interval_s:
            await self._send()

    async def finish(self) -> None:
        """The last word: the count of every job that finished, sent even if throttled."""
        await self._send()

    async def _send(self) -> None:
        if self.id is None:
            return
        async with self._lock:
            done = self.done
            # Re-read under the lock: jobs that queued behind a failed send must not each
            # wait out the dead API again (one retry cycle per waiting job, seconds each).
            if self.id is None or done == self._sent:
                return
            self._last = time.monotonic()
            sent = await _quietly(
                self._sent_ok(self._update(self.id, progress=100.0 * done / self.total)),
                "progress",
            )
            if sent is None:  # the API is gone: no job should wait on it again
                self.id = None
                return
            self._sent = done

    @staticmethod
    async def _sent_ok(call: Awaitable[object]) -> bool:
        await call
        return True


# Prefect's client retries a dead API for minutes; an artifact is not worth that wait.
ARTIFACT_TIMEOUT_S = 30.0


async def _quietly(call: Awaitable[T], what: str) -> T | None:
    """The UI's view of a run is not worth the run: a Prefect API that stops answering costs
    the artifact, never the images (they and the manifest live in the store)."""
    try:
        return await asyncio.wait_for(call, ARTIFACT_TIMEOUT_S)
    except Exception as err:
        log.warning("%s not sent to Prefect (%s: %s)", what, err.__class__.__name__, err)
        return None


def summary_markdown(summary: RunSummary) -> str:
    saved = summary.bytes_raw - summary.bytes_final
    pct = 100.0 * saved / summary.bytes_raw if summary.bytes_raw else 0.0
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(summary.counts.items()))
    lines = [
        f"# bananaflow run `{summary.run_id}` ({summary.stage})",
        "",
        f"- jobs: {summary.jobs} ({counts})",
        f"- estimated cost: ${summary.estimated_usd:.3f} ({_by_delivery(summary.billed)})",
        f"- bytes: {summary.bytes_raw:,} raw → {summary.bytes_final:,} published "
        f"({pct:.0f} % saved)",
        f"- manifest: `{summary.manifest_uri}`",
    ]
    if summary.contact_sheet_uri:
        lines.append(f"- contact sheet: `{summary.contact_sheet_uri}`")
    failed = [r for r in summary.rows if r.status != "uploaded"]
    if failed:
        lines += ["", "| job | status | error |", "|---|---|---|"]
        lines += [f"| {r.job_id} | {r.status} | {(r.error or '')[:160]} |" for r in failed]
    return "\n".join(lines)


@task(name="publish_report", cache_policy=NO_CACHE)
async def publish_report(ctx: ChainContext, rows: list[ManifestRow] | RunTally) -> RunSummary:
    """``rows``: every row, or a large run's tally (the results table then reads the manifest
    a row at a time)."""
    if isinstance(rows, RunTally):
        tally = rows
    else:
        tally = RunTally([r.job_id for r in rows])
        tally.extend(rows)
    written = True
    try:
        manifest_uri = await asyncio.to_thread(ctx.manifest.close)
    except BananaflowError as err:  # storage full or gone: the summary still says what happened
        log.warning("%s", err)
        manifest_uri = f"(not written: {ctx.manifest.path} in {ctx.store.url})"
        written = False
    kept = tally.rows
    try:
        sheet = await asyncio.to_thread(
            write_contact_sheet, ctx.store, ctx.run_id, kept, ctx.sheet
        )
    except (OSError, BananaflowError) as err:
        log.warning("contact sheet not written (%s)", err)
        sheet = None
    summary = tally.summary(
        ctx.run_id, ctx.settings.stage, manifest_uri, sheet[0] if sheet else None
    )
    progress.summarised(summary)  # final now: the terminal need not wait for the UI's copy
    every: Iterable[ManifestRow] = kept
    if not tally.keep_all and written:
        every = iter_manifest(ctx.store, ctx.run_id)
    await _quietly(_publish_artifacts(ctx, every, summary, sheet), "run artifacts")
    return summary


def _by_delivery(billed: dict[str, int]) -> str:
    """Jobs per delivery as billed (a shed flex job bought online counts as online)."""
    return ", ".join(f"{name} {n}" for name, n in sorted(billed.items()))


def _table_row(r: ManifestRow) -> dict[str, object]:
    return {  # what a person reads first comes first: the UI cuts the table at ~850 px
        "job": r.job_id,
        "status": r.status,
        "uri": r.uri,
        "error": r.error or "",
        "backend": r.backend or "",
        "delivery": r.delivery,
        "billed": r.billed_delivery or "",
        "size": f"{r.width}x{r.height}",
        "attempts": r.attempts,
        "usd": r.estimated_usd,
        "bytes_raw": r.bytes_raw,
        "bytes_final": r.bytes_final,
    }


def _table_json(rows: Iterable[ManifestRow]) -> str:
    """The results table as Prefect stores it (``json.dumps`` of a list of rows), built a row
    at a time."""
    return "[" + ", ".join(json.dumps(_table_row(r)) for r in rows) + "]"


class TableJson(Artifact):
    """A table artifact from its JSON. ``acreate_table_artifact`` validates the table and
    copies it twice (NaN sanitising) before dumping it: at 10,000 rows that was about 30 MB
    at the end of the run, the largest step of the flow process's peak memory."""

    type: str | None = "table"

    async def aformat(self) -> str:
        return str(self.data)


async def _publish_artifacts(
    ctx: ChainContext,
    rows: Iterable[ManifestRow],
    summary: RunSummary,
    sheet: tuple[str, bytes] | None,
) -> None:
    """The contact sheet goes up beside the table and the summary, not after them: its data
    URI (up to 1.5 MB) is the slowest of the three for the server, a fixed cost of every run."""

    async def table_and_summary() -> None:
        table = await asyncio.to_thread(_table_json, rows)
        await TableJson(
            key="bananaflow-results", description=f"run {ctx.run_id}", data=table
        ).acreate()
        del table  # a 10,000-row table: not kept alive through the summary
        await acreate_markdown_artifact(summary_markdown(summary), key="bananaflow-summary")

    async def contact_sheet() -> None:
        if sheet and len(sheet[1]) <= MAX_INLINE_SHEET:
            data_uri = "data:image/jpeg;base64," + base64.b64encode(sheet[1]).decode()
            await acreate_image_artifact(
                data_uri, key="bananaflow-contact-sheet", description=sheet[0]
            )

    await asyncio.gather(table_and_summary(), contact_sheet())
