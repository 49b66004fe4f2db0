"""upscale_image (optional): Vertex's upscaler within its limits, else a local Lanczos resample."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from bananaflow.chain import ChainContext, upscale_master
from bananaflow.records import MasterRef


@task(name="upscale_image", cache_policy=NO_CACHE)
async def upscale_image(ctx: ChainContext, master: MasterRef) -> MasterRef:
    return await upscale_master(ctx, master)
