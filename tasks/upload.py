"""upload_image: create-only, content-addressed writes to any fsspec URL."""

from __future__ import annotations

import asyncio

from prefect import task
from prefect.cache_policies import NO_CACHE

from bananaflow.chain import ChainContext, upload_derivative
from bananaflow.expand import ImageJob
from bananaflow.records import CompressedRef, MasterRef


@task(name="upload_image", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
async def upload_image(
    ctx: ChainContext, job: ImageJob, master: MasterRef, compressed: CompressedRef
) -> tuple[str, list[str]]:
    # Safe to retry: writes are create-only and an identical existing object counts as success.
    return await asyncio.to_thread(upload_derivative, ctx, job, master, compressed)
