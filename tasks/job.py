"""render_jobs: one task run for a job (or a group of jobs), running the chain's steps in order.

Large runs use it (``generate.task_runs``): a task run per step costs Prefect more than the
image's own work. The steps are the same functions as the per-step tasks (``Task.fn``), with
the one policy that lives in Prefect's decorator carried over: ``upload_image``'s retries,
delays and condition. The UI keeps a task run per job (per group with ``jobs_per_task_run`` >
1), failed with each job's reason when a job failed, plus the progress bar and the results
table; the manifest row has each step's time.
"""

from __future__ import annotations

import asyncio

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from bananaflow.chain import ChainContext, JobsEnded
from bananaflow.expand import ImageJob
from bananaflow.records import CompressedRef, ManifestRow, MasterRef
from bananaflow.render import Finished, Pending, Steps, run_steps
from bananaflow.routing import RouteDecision
from bananaflow.storage import StorageConflict, StorageFull
from bananaflow.tasks.compress import compress_image
from bananaflow.tasks.generate import generate_image
from bananaflow.tasks.upload import upload_image
from bananaflow.tasks.upscale import upscale_image


async def _upload(
    ctx: ChainContext, job: ImageJob, master: MasterRef, compressed: CompressedRef
) -> tuple[str, list[str]]:
    """``upload_image``'s body under its own retry policy (see ``tasks/upload.py``)."""
    delays = upload_image.retry_delay_seconds
    waits = list(delays) if isinstance(delays, list) else [delays or 0] * upload_image.retries
    for attempt in range(upload_image.retries + 1):
        try:
            return await upload_image.fn(ctx, job, master, compressed)
        except (StorageConflict, StorageFull):
            raise
        except Exception:
            if attempt >= upload_image.retries:
                raise
            await asyncio.sleep(float(waits[min(attempt, len(waits) - 1)]))
    raise AssertionError("unreachable: the last attempt returns or raises")


STEPS_IN_ONE_TASK = Steps(
    generate=generate_image.fn,
    upscale=upscale_image.fn,
    compress=compress_image.fn,
    upload=_upload,
)


def _run_name() -> str:
    items = task_run.parameters["items"]
    first = items[0][0].job_id
    return f"job-{first}" if len(items) == 1 else f"jobs-{first}-and-{len(items) - 1}-more"


@task(name="render_jobs", cache_policy=NO_CACHE, task_run_name=_run_name)
async def render_jobs(
    ctx: ChainContext, items: list[Pending], gate: asyncio.Semaphore, finished: Finished
) -> None:
    """Returns nothing: each row leaves through ``finished`` as its job ends (Prefect keeps a
    task's return value linked to its state until the flow run ends)."""

    async def one(job: ImageJob, decision: RouteDecision, row: ManifestRow) -> ManifestRow:
        async with gate:
            done = await run_steps(ctx, job, decision, row, STEPS_IN_ONE_TASK)
        return await finished(done)

    rows = await asyncio.gather(*(one(*item) for item in items))
    ended = [r for r in rows if r.status in ("failed", "refused")]
    if ended:
        raise JobsEnded(ended)
