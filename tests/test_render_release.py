"""A run lets each job go as it ends (issue 14, item 6: peak memory flat from 100 to 10,000).

Core level: ``render_into`` over the plain chain functions against the in-process emulator
(``httpx.ASGITransport``, ``time_scale`` 0). The jobs are handed over in a deque with no other
reference left, and weak references say which are still alive each time a row becomes final:
a job whose row is final must be gone (per step), or at most the groups still open may hold
theirs (grouped), never the whole run.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections import deque
from dataclasses import replace
from pathlib import Path

import pytest
from fixtures.emulator import emulator_test_settings
from fixtures.inprocess import KEY, STEPS, URL, Bar, opened

from bananaflow import progress
from bananaflow.chain import ChainContext
from bananaflow.config import Settings
from bananaflow.emulator.app import create_app
from bananaflow.expand import PromptSpec, expand
from bananaflow.records import ManifestRow
from bananaflow.render import Finished, Pending, render_into, run_steps
from bananaflow.routing import route
from bananaflow.tally import RunTally

JOBS = 9
SLOTS = 2
FLASH = "gemini-3.1-flash-image"  # 512 px images: the fastest to render and compress


async def _jobs_in_one_call(
    ctx: ChainContext, items: list[Pending], gate: asyncio.Semaphore, finished: Finished
) -> None:
    """``Steps.jobs`` as ``tasks/job.py`` runs it, minus Prefect."""

    async def one(item: Pending) -> None:
        async with gate:
            done = await run_steps(ctx, *item, STEPS)
        await finished(done)

    await asyncio.gather(*map(one, items))


@pytest.mark.parametrize(
    ("task_runs", "group", "held"),
    [
        ("per_step", 1, 0),  # a finished job is gone at once
        ("grouped", 3, (-(-SLOTS // 3) + 1) * 3),  # only the open groups' jobs
    ],
)
def test_a_finished_job_is_let_go_while_the_run_goes_on(
    task_runs: str, group: int, held: int, tmp_path: Path
) -> None:
    app = create_app(emulator_test_settings(time_scale=0))
    settings = Settings.model_validate(
        {
            "backends": {"aistudio": {"base_url": URL, "api_key": KEY}},
            "route": {"fallback": []},
            "compress": {"thumbnails": []},
            "generate": {
                "concurrency": SLOTS,
                "task_runs": task_runs,
                "jobs_per_task_run": group,
            },
        }
    )
    specs = [PromptSpec(text=f"kite {i}", image_sizes=["512"], model=FLASH) for i in range(JOBS)]
    jobs = expand(specs, settings.expand, settings.generate)
    pending = deque((job, route(job, "dev", settings.route)) for job in jobs)
    refs = {job.job_id: weakref.ref(job) for job in jobs}
    order = [job.job_id for job in jobs]
    del jobs, specs  # the deque holds the only reference, as in the generate flow
    done: list[str] = []
    alive_after: list[int] = []

    def on_row(row: ManifestRow) -> None:
        alive_after.append(sum(refs[job_id]() is not None for job_id in done))
        done.append(row.job_id)

    steps = replace(STEPS, jobs=_jobs_in_one_call if task_runs == "grouped" else None)

    async def go() -> RunTally:
        tally = RunTally(order)
        async with opened(app, tmp_path, "release-1", settings) as (ctx, _api):
            with progress.subscribed(on_row):
                await render_into(ctx, pending, steps, Bar(), tally)
        return tally

    tally = asyncio.run(go())
    assert tally.counts == {"uploaded": JOBS} and [r.job_id for r in tally.rows] == order
    assert not pending  # the renderer took every job off the deque
    assert len(alive_after) == JOBS
    assert max(alive_after) <= held  # not one per finished job: the run does not keep them
    gc.collect()
    assert all(ref() is None for ref in refs.values())
