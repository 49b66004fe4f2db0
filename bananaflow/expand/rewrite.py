"""Optional prompt rewriting by the backend's text model, recorded beside the original.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bananaflow.expand.expansion import normalise, unique
from bananaflow.expand.specs import MAX_PROMPT_CHARS, ImageJob


async def rewrite_jobs(
    jobs: list[ImageJob],
    rewrite: Callable[[str], Awaitable[str]],
    *,
    concurrency: int = 4,
) -> list[ImageJob]:
    """Model-assisted prompt rewriting that never changes a job's identity.

    The id stays the hash of the user's spec so a re-run skips what it already rendered even
    though a model's rewrite is not deterministic. Each distinct prompt is rewritten once, so a
    ratio matrix compares one rewritten prompt across ratios rather than several. A blank (or
    over-long) rewrite keeps the original; a failing ``rewrite`` raises, because silently
    rendering un-rewritten prompts would defeat a run that asked for rewriting. Jobs already
    rewritten are left alone, so calling this twice is harmless. Edit instructions are left
    alone too: "add a soft shadow" is an edit, not a scene to enrich, and a step's earlier
    instructions go back to the model as they were written.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    todo = unique(job.prompt for job in jobs if not job.rewritten and job.edit is None)
    gate = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> str:
        async with gate:
            return await rewrite(prompt)

    tasks = [asyncio.ensure_future(one(p)) for p in todo]
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    new_prompts: dict[str, str] = {}
    for prompt, result in zip(todo, results, strict=True):
        if not isinstance(result, str):
            raise TypeError(f"rewrite returned {type(result).__name__}, expected str")
        new = normalise(result)
        if new and new != prompt and len(new) <= MAX_PROMPT_CHARS:
            new_prompts[prompt] = new
    out: list[ImageJob] = []
    for job in jobs:
        new = None if job.rewritten or job.edit else new_prompts.get(job.prompt)
        out.append(
            job if new is None else job.model_copy(update={"prompt": new, "rewritten": True})
        )
    return out
