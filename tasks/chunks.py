"""The chunk runs of a scale-out batch: started on the work pool, and listed in the UI."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.deployments.flow_runs import arun_deployment

from bananaflow.chunking import Chunk, ChunkRun
from bananaflow.parameters import GenerateParameters
from bananaflow.records import ManifestRow

CHUNK_POLL_S = 2.0


async def run_chunk(
    deployment: str, batch: GenerateParameters, chunk: Chunk, parent_run_id: str
) -> ChunkRun:
    """One chunk as a deployment run (a subflow of this run in the UI); waits for its end."""
    child = batch.model_copy(
        update={"prompts": [], "batch_file": None, "jobs": chunk.jobs, "max_usd": chunk.max_usd}
    )
    flow_run: FlowRun = await arun_deployment(
        deployment,
        parameters={"params": child.model_dump(mode="json")},
        flow_run_name=f"{parent_run_id}-chunk-{chunk.index:03d}",
        timeout=None,
        poll_interval=CHUNK_POLL_S,
        as_subflow=True,
    )
    state = flow_run.state
    return ChunkRun(
        index=chunk.index,
        flow_run_id=str(flow_run.id),
        flow_run_name=flow_run.name,
        state=state.type.value if state else "UNKNOWN",
        message=state.message if state else None,
    )


@task(name="publish_chunks", cache_policy=NO_CACHE)
async def publish_chunks(run_id: str, runs: list[ChunkRun], rows: list[ManifestRow]) -> None:
    """A table of the chunk runs next to the usual results table, for finding a chunk's logs."""
    by_chunk: dict[str, dict[str, int]] = {}
    for row in rows:
        counts = by_chunk.setdefault(row.lineage.get("chunk_flow_run", ""), {})
        counts[row.status] = counts.get(row.status, 0) + 1
    await acreate_table_artifact(
        table=[
            {
                "chunk": r.index,
                "flow_run": r.flow_run_name,
                "state": r.state,
                "run_id": r.run_id or "",
                "jobs": ", ".join(
                    f"{k}: {v}" for k, v in sorted(by_chunk.get(r.flow_run_name, {}).items())
                ),
                "message": (r.message or "")[:200],
            }
            for r in runs
        ],
        key="bananaflow-chunks",
        description=f"run {run_id}: chunk runs",
    )
