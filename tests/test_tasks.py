"""Task-level policies that only show up under Prefect's async engine."""

from __future__ import annotations

import asyncio

from prefect.states import Failed

from bananaflow.storage import StorageConflict
from tasks.upload import _worth_retrying


def test_upload_retries_outages_but_not_conflicts_inside_the_async_engine() -> None:
    async def verdicts() -> tuple[bool, bool]:
        # Called from a running event loop, as Prefect's async task engine calls it: a plain
        # state.result() would hand back an un-awaited coroutine and never raise.
        conflict = Failed(data=StorageConflict("file:///out/images/ab/x.webp", 10, 12))
        outage = Failed(data=OSError("connection reset"))
        return _worth_retrying(None, None, conflict), _worth_retrying(None, None, outage)

    assert asyncio.run(verdicts()) == (False, True)
