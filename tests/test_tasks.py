"""Task-level policies that only show up under Prefect's async engine."""

from __future__ import annotations

import asyncio

from prefect.states import Failed

from bananaflow.storage import StorageConflict
from bananaflow.tasks.upload import _worth_retrying


def test_upload_retries_outages_but_not_conflicts_inside_the_async_engine() -> None:
    async def verdicts() -> tuple[bool, bool]:
        # Called from a running event loop, as Prefect's async task engine calls it: a plain
        # state.result() would hand back an un-awaited coroutine and never raise.
        conflict = Failed(data=StorageConflict("file:///out/images/ab/x.webp", 10, 12))
        outage = Failed(data=OSError("connection reset"))
        return _worth_retrying(None, None, conflict), _worth_retrying(None, None, outage)

    assert asyncio.run(verdicts()) == (False, True)


def test_progress_ends_at_the_true_count_even_when_an_early_update_is_slow() -> None:
    """Concurrent jobs used to race their updates, so a late "50 %" overwrote "100 %"."""
    from uuid import uuid4

    from bananaflow.tasks.report import ProgressArtifact

    sent: list[float] = []
    first_may_finish = asyncio.Event()

    async def send(_artifact_id: object, *, progress: float) -> None:
        if not sent and progress < 100.0:
            await first_may_finish.wait()  # the first update is stuck on a slow connection
        sent.append(progress)

    async def scenario() -> None:
        bar = ProgressArtifact(2, min_interval_s=0.0, send=send)
        bar.id = uuid4()
        slow = asyncio.create_task(bar.advance())  # job 1 of 2: its update hangs
        await asyncio.sleep(0)
        second = asyncio.create_task(bar.advance())  # job 2 of 2 finishes meanwhile
        await asyncio.sleep(0)
        first_may_finish.set()
        await asyncio.gather(slow, second)
        await bar.finish()

    asyncio.run(scenario())
    assert sent[-1] == 100.0
    assert sent == sorted(sent)  # never goes backwards


def test_a_dead_api_is_tried_once_not_once_per_job_waiting_behind_it() -> None:
    """Each try at a dead API costs seconds of Prefect's retries; jobs that queued behind the
    failed update used to try again, one after another, stalling the run by that much each."""
    from uuid import uuid4

    from bananaflow.tasks.report import ProgressArtifact

    calls: list[float] = []
    fail_now = asyncio.Event()

    async def send(_artifact_id: object, *, progress: float) -> None:
        calls.append(progress)
        await fail_now.wait()
        raise ConnectionError("the Prefect API is gone")

    async def scenario() -> None:
        bar = ProgressArtifact(5, min_interval_s=0.0, send=send)
        bar.id = uuid4()
        jobs = [asyncio.create_task(bar.advance()) for _ in range(5)]  # all queue on the lock
        await asyncio.sleep(0)
        fail_now.set()
        await asyncio.gather(*jobs)
        await bar.finish()

    asyncio.run(scenario())
    assert len(calls) == 1


def test_prefect_does_not_walk_into_the_chain_context(tmp_path) -> None:
    """Every task's first argument; other jobs' threads change it while Prefect looks."""
    from prefect.utilities.collections import visit_collection

    from bananaflow.chain import ChainContext
    from bananaflow.config import Settings
    from bananaflow.ledger import Ledger
    from bananaflow.manifest import ManifestWriter
    from bananaflow.pricing import Budget
    from bananaflow.spool import Spool
    from bananaflow.storage import Store

    class Untouchable(dict):
        def __iter__(self):
            raise AssertionError("Prefect walked into ChainContext")

        def items(self):
            raise AssertionError("Prefect walked into ChainContext")

    store = Store(f"file://{tmp_path}")
    ctx = ChainContext(
        settings=Settings(),
        run_id="r1",
        store=store,
        ledger=Ledger(store, "r1", claim_ttl_s=60),
        spool=Spool(store.url, tmp_path),
        manifest=ManifestWriter(store, "r1"),
        budget=Budget(None),
        backends=Untouchable(),
        work_dir=tmp_path,
    )
    ctx.reserved = Untouchable()
    seen: list[object] = []
    visit_collection({"ctx": ctx}, visit_fn=seen.append, return_data=False)
    assert ctx in seen  # visited as one opaque value, its insides untouched
