"""Every job of a run through the chain, concurrently; one job's failure never touches another.

The loop is per-job logic that several flows share (generate, promote, compare), so it lives
in the core. The steps themselves are injected (``Steps``): flows pass their Prefect tasks, so
each step stays a task in the UI with its own policy, and the core never imports Prefect.

Granularity: every Prefect task run costs the flow process and the server more CPU than a 1K
image's own HTTP and parsing (its run creation, three state events, their database rows). So
above ``generate.per_step_max_jobs`` jobs (``generate.task_runs``), a job, or a group of
``generate.jobs_per_task_run`` jobs, is one task run (``Steps.jobs``) that runs the same steps
in order; the manifest records each step's time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from bananaflow import progress
from bananaflow.chain import (
    ChainContext,
    JobFailed,
    JobsEnded,
    base_row,
    failed_row,
    reserve_budget,
    reused_row,
    uploaded_row,
)
from bananaflow.config import Settings
from bananaflow.expand import ImageJob
from bananaflow.records import CompressedRef, ManifestRow, MasterRef, utcnow
from bananaflow.routing import RouteDecision
from bananaflow.shutdown import draining
from bananaflow.tally import RunTally

T = TypeVar("T")


class Progress(Protocol):
    """Where a run reports finished jobs (the UI's progress artifact)."""

    async def start(self, run_id: str) -> None: ...
    async def advance(self) -> None: ...
    async def finish(self) -> None: ...


Pending = tuple[ImageJob, RouteDecision, ManifestRow]
"""A job that will run its steps, with the row it started."""
Finished = Callable[[ManifestRow], Awaitable[ManifestRow]]
"""Where a finished job's row goes at once (manifest, ledger, progress); returns it final."""


@dataclass(frozen=True)
class Steps:
    """The chain's steps for one job, in order.

    ``jobs``, when given, runs them for a group of jobs as one call (one Prefect task run per
    group), each job under ``gate`` and handed to ``finished`` as it ends; used for runs above
    the per-step size. It raises ``JobsEnded`` (with every row) when a job failed, and
    returns nothing: a returned row would stay in Prefect's memory to the end of the flow run
    (its link from result to task-run state), so rows leave only through ``finished``.
    """

    generate: Callable[[ChainContext, ImageJob, RouteDecision], Awaitable[MasterRef]]
    upscale: Callable[[ChainContext, MasterRef], Awaitable[MasterRef]]
    compress: Callable[[ChainContext, MasterRef], Awaitable[CompressedRef]]
    upload: Callable[
        [ChainContext, ImageJob, MasterRef, CompressedRef], Awaitable[tuple[str, list[str]]]
    ]
    jobs: (
        Callable[
            [ChainContext, list[Pending], asyncio.Semaphore, Finished],
            Awaitable[None],
        ]
        | None
    ) = None


async def render_all(
    ctx: ChainContext,
    jobs: list[ImageJob],
    decisions: list[RouteDecision],
    steps: Steps,
    bar: Progress,
    lineage: dict[str, dict[str, str]] | None = None,
) -> list[ManifestRow]:
    """Render every job; every row in job order (``render_into`` for a large run)."""
    tally = RunTally([job.job_id for job in jobs])
    await render_into(ctx, deque(zip(jobs, decisions, strict=True)), steps, bar, tally, lineage)
    return tally.rows


async def render_into(
    ctx: ChainContext,
    pending: deque[tuple[ImageJob, RouteDecision]],
    steps: Steps,
    bar: Progress,
    tally: RunTally,
    lineage: dict[str, dict[str, str]] | None = None,
) -> None:
    """Render every job of ``pending``, each row into ``tally`` as it ends; ``lineage`` (job id
    → links) is written into each row first.

    Jobs are taken off ``pending`` as they start, by as many workers as can run at once, so a
    job (and its row) is let go when it ends: nothing here holds what a large run has done, and
    a caller that hands over its only reference keeps no job to the end of the run.
    """
    await bar.start(ctx.run_id)
    limit = jobs_in_flight(ctx.settings, [decision for _, decision in pending])
    in_flight = asyncio.Semaphore(limit)
    group = jobs_per_task_run(ctx.settings, len(pending)) if steps.jobs is not None else 0

    async def finished(row: ManifestRow) -> ManifestRow:
        if lineage and row.job_id in lineage:
            row = row.model_copy(update={"lineage": {**row.lineage, **lineage[row.job_id]}})
        await asyncio.to_thread(ctx.manifest.append, row)
        if row.status == "uploaded" and row.reused_from_run is None:
            await asyncio.to_thread(ctx.ledger.put_done, row)
        ctx.sheet.offer(row)
        await bar.advance()
        progress.notify(row)
        tally.add(row)
        return row

    # Edit steps: step k starts when step k-1 of its chain has ended (its image is then in
    # the ledger, or its failure makes step k a row saying so); chains run side by side, each
    # step waiting outside the slots, so they keep a coroutine (and a task run) each.
    edits = take_edits(pending)
    ended = {job.job_id: asyncio.Event() for job, _ in edits}

    async def one(job: ImageJob, decision: RouteDecision) -> None:
        parent = ended.get(job.edit.parent_job_id or "") if job.edit is not None else None
        try:
            if parent is not None:
                await parent.wait()  # outside the slot: a waiting step holds none
            async with in_flight:
                row = await render_one(ctx, job, decision, steps)
            await finished(row)
        finally:
            if job.job_id in ended:
                ended[job.job_id].set()

    async def worker() -> None:
        while pending:
            await one(*pending.popleft())

    async def group_worker() -> None:
        while pending:
            pairs = [pending.popleft() for _ in range(min(group, len(pending)))]
            await render_group(ctx, pairs, steps, in_flight, finished)

    if not group:
        workers = [worker() for _ in range(limit)]  # a worker per slot
    else:  # enough groups open to fill every slot while one drains its last jobs
        workers = [group_worker() for _ in range(-(-limit // group) + 1)]
    workers += [one(j, d) for j, d in edits]
    edits.clear()  # each edit step's coroutine holds its job until the step ends
    try:
        await asyncio.gather(*workers)
    finally:
        await bar.finish()


def take_edits(
    pending: deque[tuple[ImageJob, RouteDecision]],
) -> list[tuple[ImageJob, RouteDecision]]:
    """The edit steps of ``pending``, taken out of it in place, so the caller's deque does not
    keep them to the end of the run."""
    edits = [(j, d) for j, d in pending if j.edit is not None]
    if edits:
        plain = [(j, d) for j, d in pending if j.edit is None]
        pending.clear()
        pending.extend(plain)
    return edits


def jobs_in_flight(settings: Settings, decisions: list[RouteDecision]) -> int:
    """Enough jobs to keep every backend's quota busy while others compress and upload."""
    if settings.generate.concurrency:
        return settings.generate.concurrency
    backends = {d.backends[0] for d in decisions} or {"aistudio"}
    cfg = {"aistudio": settings.backends.aistudio, "vertex": settings.backends.vertex}
    return max(2, 2 * sum(cfg[b].concurrency for b in backends))


def jobs_per_task_run(settings: Settings, n_jobs: int) -> int:
    """0 for a task run per step; else how many jobs share one task run (``generate``'s
    ``task_runs``, ``per_step_max_jobs`` and ``jobs_per_task_run`` against the run's size)."""
    cfg = settings.generate
    if cfg.task_runs == "per_step" or (cfg.task_runs == "auto" and n_jobs <= cfg.per_step_max_jobs):
        return 0
    return cfg.jobs_per_task_run


async def settle(
    ctx: ChainContext, job: ImageJob, decision: RouteDecision
) -> Pending | ManifestRow:
    """A job's row when it ends before any step (reused, stopping, over budget), else the job
    ready to run. No task run is made for the former: a re-run of a finished batch has none."""
    row = base_row(ctx, job, decision, utcnow())
    done = await asyncio.to_thread(ctx.ledger.get_done, row.output_key) if ctx.reuse else None
    if done is not None:
        return reused_row(done, ctx)
    if draining.is_set():
        return failed_row(row, JobFailed("interrupted", "stopped before it started", kind="stop"))
    skip = await asyncio.to_thread(reserve_budget, ctx, job, decision)
    if skip is not None:
        return failed_row(row, JobFailed("skipped_budget", skip, kind="budget"))
    return job, decision, row


async def render_one(
    ctx: ChainContext, job: ImageJob, decision: RouteDecision, steps: Steps
) -> ManifestRow:
    ready = await settle(ctx, job, decision)
    if isinstance(ready, ManifestRow):
        return ready
    return await run_steps(ctx, *ready, steps)


async def render_group(
    ctx: ChainContext,
    pairs: list[tuple[ImageJob, RouteDecision]],
    steps: Steps,
    gate: asyncio.Semaphore,
    finished: Finished,
) -> list[ManifestRow]:
    """A group of jobs: those that end before any step directly, the rest as one call of
    ``steps.jobs``. Rows come back in the order of ``pairs``, each passed to ``finished`` once."""
    assert steps.jobs is not None
    rows: dict[str, ManifestRow] = {}
    todo: list[Pending] = []
    for job, decision in pairs:
        ready = await settle(ctx, job, decision)
        if isinstance(ready, ManifestRow):
            rows[job.job_id] = await finished(ready)
        else:
            todo.append(ready)

    async def once(row: ManifestRow) -> ManifestRow:
        rows[row.job_id] = await finished(row)
        return rows[row.job_id]

    if todo:
        try:
            await steps.jobs(ctx, todo, gate, once)
        except JobsEnded:  # the task run failed, so the UI shows it; the rows say why
            pass
        except Exception as err:  # the task machinery itself broke: still a row per job
            for _job, _decision, row in todo:
                if row.job_id not in rows:
                    await once(failed_row(row, err))
    return [rows[job.job_id] for job, _ in pairs]


async def run_steps(
    ctx: ChainContext, job: ImageJob, decision: RouteDecision, row: ManifestRow, steps: Steps
) -> ManifestRow:
    """generate → [upscale] → compress → upload, each step timed into the row."""
    timings: dict[str, float] = {}

    async def timed(name: str, call: Awaitable[T]) -> T:
        t0 = time.perf_counter()
        try:
            return await call
        finally:
            timings[name] = round(time.perf_counter() - t0, 4)

    try:
        master = await timed("generate", steps.generate(ctx, job, decision))
        if ctx.settings.upscale.enabled:
            master = await timed("upscale", steps.upscale(ctx, master))
        compressed = await timed("compress", steps.compress(ctx, master))
        uri, thumbs = await timed("upload", steps.upload(ctx, job, master, compressed))
    except Exception as err:  # one job's failure (or bug) must not sink the batch
        return failed_row(row, err).model_copy(update={"step_s": timings})
    done = uploaded_row(row, master, compressed, uri, thumbs, ctx)
    return done.model_copy(update={"step_s": timings})
