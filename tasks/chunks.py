"""The chunk runs of a scale-out batch: started on the work pool, and listed in the UI."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.deployments.flow_runs import arun_deployment

from bananaflow.chunking import Chunk, ChunkRun
from bananaflow.parameters import GenerateParameters
from bananaflow.records import ManifestRow

CHUNK_POLL_S = 2.0
CHUNK_RESTARTS = 2  # a chunk whose run crashed is started again at most this often


async def run_chunk(
    deployment: str, batch: GenerateParameters, chunk: Chunk, parent_run_id: str
) -> ChunkRun:
    """One chunk as a deployment run (a subflow of this run in the UI); waits for its end.

    A chunk run that ends Crashed lost its infrastructure: its worker or machine died (the
    automation of ``bananaflow setup`` marks a chunk run whose heartbeats stopped). The chunk is
    started again as a new run, which any live worker picks up; the ledger hands it every image
    the lost run already paid for, so only the jobs that were in flight are rendered again.
    Failed is not retried: that is the chunk's own answer, and its rows say why.
    """
    child = batch.model_copy(
        update={"prompts": [], "batch_file": None, "jobs": chunk.jobs, "max_usd": chunk.max_usd}
    )
    name = f"{parent_run_id}-chunk-{chunk.index:03d}"
    for attempt in range(CHUNK_RESTARTS + 1):
        flow_run: FlowRun = await arun_deployment(
            deployment,
            parameters={"params": child.model_dump(mode="json")},
            flow_run_name=f"{name}-restart-{attempt}" if attempt else name,
            timeout=None,
            poll_interval=CHUNK_POLL_S,
            as_subflow=True,
        )
        if not (flow_run.state and flow_run.state.is_crashed()) or attempt == CHUNK_RESTARTS:
            break
        get_run_logger().warning(
            "chunk run %s crashed (%s); starting the chunk again",
            flow_run.name,
            flow_run.state.message,
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
