"""upload_image: create-only, content-addressed writes to any fsspec URL."""

from __future__ import annotations

import asyncio

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State

from bananaflow.chain import ChainContext, upload_derivative
from bananaflow.expand import ImageJob
from bananaflow.records import CompressedRef, MasterRef
from bananaflow.storage import StorageConflict, StorageFull


def _worth_retrying(task: object, task_run: object, state: State) -> bool:
    """A conflict (different bytes under the name) or a full store is an answer, not an outage."""
    # _sync: this is called inside the async engine, where State.result returns a coroutine.
    outcome = state.result(raise_on_failure=False, _sync=True)  # type: ignore[call-arg]
    return isinstance(outcome, Exception) and not isinstance(outcome, StorageConflict | StorageFull)


@task(
    name="upload_image",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=_worth_retrying,
)
async def upload_image(
    ctx: ChainContext, job: ImageJob, master: MasterRef, compressed: CompressedRef
) -> tuple[str, list[str]]:
    # Safe to retry: writes are create-only and an identical existing object counts as success.
    return await asyncio.to_thread(upload_derivative, ctx, job, master, compressed)
