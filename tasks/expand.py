"""expand_prompts / rewrite_prompts: prompt specs → concrete, stable-id jobs."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from bananaflow.backends.base import ImageBackend
from bananaflow.config import ExpandSettings, GenerateSettings, StorageSettings
from bananaflow.expand import ImageJob, ReferenceResolver, expand, rewrite_jobs
from bananaflow.preflight import collect_specs


@task(name="expand_prompts", cache_policy=NO_CACHE)
async def expand_prompts(
    prompts: list[str],
    batch_file: str | None,
    settings: ExpandSettings,
    defaults: GenerateSettings,
    storage: StorageSettings | None = None,
    references: list[str] | None = None,
) -> list[ImageJob]:
    """``storage`` is where ``{run, job}`` references are read; ``references`` go with
    every prompt given inline (the CLI's ``--reference``)."""
    resolver = ReferenceResolver(storage or StorageSettings())
    return expand(collect_specs(prompts, batch_file, references), settings, defaults, resolver)


@task(name="rewrite_prompts", cache_policy=NO_CACHE)
async def rewrite_prompts(jobs: list[ImageJob], backend: ImageBackend) -> list[ImageJob]:
    return await rewrite_jobs(jobs, backend.rewrite_prompt)
