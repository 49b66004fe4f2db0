"""Run the real ``generate_images`` flow in this process and get its summary and flow-run id."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any
from uuid import UUID

from bananaflow.records import RunSummary


async def _run(params: Any) -> tuple[RunSummary, UUID | None]:
    from bananaflow.flows.generate import generate_images

    state = await generate_images(params, return_state=True)
    result = state.result()
    if inspect.isawaitable(result):
        result = await result
    return result, state.state_details.flow_run_id


def run_flow(
    config: Path | str, *, batch_file: Path | str | None = None, prompts: list[str] | None = None
) -> tuple[RunSummary, UUID | None]:
    """``generate_images`` as ``bananaflow generate`` runs it; raises what the flow raised."""
    from bananaflow.parameters import GenerateParameters

    params = GenerateParameters(
        config=str(config),
        batch_file=str(batch_file) if batch_file else None,
        prompts=prompts or [],
    )
    return asyncio.run(_run(params))
