"""generate_image: one billed request per image (plus retries), master stored before return.

Retries live in the core policy, not in Prefect's ``retries``: only the core sees the server's
``RetryInfo.retryDelay`` and the per-day/billing verdicts, and a Prefect retry on top would
multiply requests. Timeouts live on the httpx client; a Prefect task timeout cannot interrupt
a blocked socket read.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from bananaflow.chain import ChainContext, generate_master
from bananaflow.expand import ImageJob
from bananaflow.records import MasterRef
from bananaflow.routing import RouteDecision


@task(name="generate_image", cache_policy=NO_CACHE, task_run_name="generate-{job.job_id}")
async def generate_image(ctx: ChainContext, job: ImageJob, decision: RouteDecision) -> MasterRef:
    return await generate_master(ctx, job, decision)
