"""Everything that can be checked before a cent is spent, in one place.

The CLI runs it before starting Prefect (so bad input is one line, not a flow-run traceback)
and the flow runs the same checks through its tasks, so a UI-started run fails just as early.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bananaflow.backends import create_backend
from bananaflow.chain import check_upload_names, model_for
from bananaflow.config import Settings
from bananaflow.expand import ImageJob, PromptSpec, ReferenceResolver, expand, load_batch
from bananaflow.expand.references import absolute
from bananaflow.generation import BackendName, Delivery
from bananaflow.pricing import price_for
from bananaflow.provisioned import check_routes
from bananaflow.routing import RouteDecision, route
from bananaflow.storage import open_store
from bananaflow.tiers import check_jobs, fallback_models


def collect_specs(
    prompts: list[str], batch_file: str | None, references: list[str] | None = None
) -> list[PromptSpec]:
    """Prompts given inline come first (with ``references``, paths from here), then the batch
    file's specs."""
    refs = [absolute(r, Path.cwd()) for r in references or []]
    specs = [PromptSpec(text=p, references=refs) for p in prompts]
    if batch_file:
        specs += load_batch(Path(batch_file))
    return specs


def plan_jobs(
    settings: Settings,
    prompts: list[str],
    batch_file: str | None,
    override: BackendName | None = None,
    references: list[str] | None = None,
    delivery_override: Delivery | None = None,
) -> tuple[list[ImageJob], list[RouteDecision]]:
    jobs = expand(
        collect_specs(prompts, batch_file, references),
        settings.expand,
        settings.generate,
        ReferenceResolver(settings.storage),
    )
    decisions = [
        route(
            job,
            settings.stage,
            settings.route,
            override,
            delivery=settings.generate.delivery,
            delivery_override=delivery_override,
        )
        for job in jobs
    ]
    return jobs, decisions


def check_prices(settings: Settings, jobs: list[ImageJob], decisions: list[RouteDecision]) -> None:
    """An unpriced model, size or delivery is a config error now, not N failed rows later; and
    every job is one its models can render (``tiers.check_jobs``), checked in the same breath
    because every path that prices jobs is about to pay for them."""
    check_jobs(settings, jobs, decisions)
    check_routes(settings, decisions)  # Provisioned Throughput only where Vertex sells it
    for job, decision in zip(jobs, decisions, strict=True):
        deliveries = [decision.delivery.delivery]
        if decision.delivery.fallback is not None:
            deliveries.append(decision.delivery.fallback)
        for name in decision.backends:
            model = model_for(job, name, settings)
            for delivery in deliveries:
                price_for(settings, model, job.image_size, delivery)
                for other in fallback_models(settings, job, model):
                    price_for(settings, other, job.image_size, delivery)


def _from_blocks(settings: Settings) -> set[BackendName]:
    """Backends whose credentials a Prefect block holds: the flow reads and checks those (this
    module cannot reach Prefect), still before anything is paid for."""
    named: set[BackendName] = set()
    if settings.backends.aistudio.api_key_block:
        named.add("aistudio")
    if settings.backends.vertex.credentials_block:
        named.add("vertex")
    return named


def preflight(
    settings: Settings,
    prompts: list[str],
    batch_file: str | None,
    override: BackendName | None = None,
    references: list[str] | None = None,
    delivery_override: Delivery | None = None,
) -> list[ImageJob]:
    """Raise the first problem as a readable error; return the planned jobs when all is well.

    Storage and backends whose credentials come from Prefect blocks are left to the flow.
    """
    jobs, decisions = plan_jobs(
        settings, prompts, batch_file, override, references, delivery_override
    )
    check_upload_names(settings)  # names are otherwise first built after the image is paid for
    check_prices(settings, jobs, decisions)
    if not settings.storage.credentials_block:
        open_store(settings.storage).check_writable()
    if not settings.emulator.embedded:  # the embedded emulator supplies its own credentials
        for name in sorted({b for d in decisions for b in d.backends} - _from_blocks(settings)):
            asyncio.run(create_backend(name, settings).aclose())
    return jobs
