"""compress_image: the web derivative and thumbnails; the master is never modified."""

from __future__ import annotations

import asyncio

from prefect import task
from prefect.cache_policies import NO_CACHE

from bananaflow.chain import ChainContext, compress_master
from bananaflow.records import CompressedRef, MasterRef


@task(name="compress_image", cache_policy=NO_CACHE)
async def compress_image(ctx: ChainContext, master: MasterRef) -> CompressedRef:
    # CPU-bound encodes run in a thread so the event loop keeps other jobs' requests moving.
    return await asyncio.to_thread(compress_master, ctx, master)
