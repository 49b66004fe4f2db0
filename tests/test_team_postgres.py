"""Prefect as a team runs it: a PostgreSQL-backed server, workers on separate "machines".

- the real generate flow, run against a Prefect server whose database is PostgreSQL: the run,
  its artifacts and its state are rows in that PostgreSQL database (read with asyncpg directly);
- two ``prefect worker start --type process`` processes, each with its own working directory,
  PREFECT_HOME and TMPDIR, sharing only the API and a ``gs://`` bucket (fake-gcs-server), run
  the scale-out ``generate-batch`` deployment on 200 jobs: each job is rendered exactly once
  (counted at the emulator) and listed exactly once in the parent's manifest;
- two runs on two workers with ``limits.mode: global`` stay inside one shared quota (here, not
  on test_deployments' SQLite server, where the workers' slot polling meets "database is
  locked" and Prefect's client backs off for up to a minute);
- a worker killed mid-batch: the batch still finishes on the other worker (heartbeats, the
  dead-chunk automation of ``bananaflow setup``, the parent restarting the crashed chunks),
  paying again only for what was in flight (opt-in: TEAM_DEAD_WORKER=1, several minutes).

Select with ``-m team``. Runs on the test run's shared server, which runs on PostgreSQL
(``tests/fixtures/prefect.py``: a cluster from ``scripts/postgres.sh``, or
``BANANAFLOW_TEST_POSTGRES_URL``); where that server is on SQLite, on a PostgreSQL-backed server
of its own, or skipped where there is no PostgreSQL (failed under CI=true).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from fixtures.emulator import EmulatorHandle
from fixtures.prefect import artifacts, rest

from bananaflow.config import load_settings
from bananaflow.deployments.setup import limit_specs
from bananaflow.emulator.control import EmulatorControl
from bananaflow.manifest import read_manifest
from bananaflow.storage import Store

if TYPE_CHECKING:
    from fixtures.postgres import TeamServer

pytest_plugins = ["fixtures.postgres"]
pytestmark = pytest.mark.team

RUN_TIMEOUT_S = 240  # hang guards, not timing assertions
# No quota, and small JPEGs (grain-free, the test emulator's default) instead of 2 MB PNGs:
# rendering 200 of those cost the emulator ~60 s of CPU on 2 cores; this way ~5 s. The images
# are still real and decoded.
CHEAP_UNCAPPED = {
    "concurrency": None,
    "requests_per_minute": None,
    "image_format": "jpeg",
}
BATCH_JOBS, CHUNK_SIZE = 200, 50


def _our_run(store: Store, flow_run_id: str) -> str:
    """Our run id of a flow run: ``<UTC stamp>-<first 8 of the flow-run id>``."""
    runs = {p.split("/")[1] for p in store.list("runs") if p.count("/") >= 2}
    (run_id,) = [r for r in runs if r.endswith("-" + flow_run_id[:8])]
    return run_id


def _artifacts(api_url: str, flow_run_id: str) -> dict[str, dict[str, Any]]:
    """The latest artifact per key of one flow run, over the REST API (what the UI reads)."""
    body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "UPDATED_DESC"}
    found = artifacts(body, api_url)
    latest: dict[str, dict[str, Any]] = {}
    for a in found:
        latest.setdefault(a["key"], a)
    return latest


# ------------------------------------------------------------------ one flow run, in-process


def test_generate_flow_runs_on_a_postgresql_backed_server(
    on_postgres_api: TeamServer, emu: Any, tmp_path: Path
) -> None:
    from fixtures.postgres import import_flow, write_emulator_config

    generate_images = import_flow("generate_images")
    prompts = ["a teal teapot on postgres", "a brass lamp on postgres", "a paper crane"]
    out = f"file://{tmp_path}/out"
    config = write_emulator_config(emu, tmp_path, out)

    state = asyncio.run(
        generate_images(params={"config": config, "prompts": prompts}, return_state=True)
    )

    assert state.is_completed(), state.message
    flow_run_id = str(state.state_details.flow_run_id)
    summary = state.result()
    assert summary.counts == {"uploaded": 3}
    store = Store(out)
    rows = read_manifest(store, _our_run(store, flow_run_id))
    assert sorted(r.prompt for r in rows) == sorted(prompts)
    assert emu.control.stats()["generation_requests"] == {"aistudio": 3, "vertex": 0}

    # What Prefect's API says about the run (the UI reads the same).
    run = rest("GET", f"{on_postgres_api.api_url}/flow_runs/{flow_run_id}")
    assert run["state"]["type"] == "COMPLETED"
    artifacts = _artifacts(on_postgres_api.api_url, flow_run_id)
    assert {
        "bananaflow-progress",
        "bananaflow-results",
        "bananaflow-summary",
        "bananaflow-contact-sheet",
    } <= set(artifacts)
    assert float(artifacts["bananaflow-progress"]["data"]) == 100.0
    table = artifacts["bananaflow-results"]["data"]
    table = table if isinstance(table, list) else json.loads(table)
    assert sorted(r["job"] for r in table) == sorted(r.job_id for r in rows)
    assert str(artifacts["bananaflow-contact-sheet"]["data"]).startswith("data:image/jpeg;base64,")

    # ... and that it really lives in PostgreSQL: the same rows, read without Prefect.
    query = on_postgres_api.query
    (version,) = query("SELECT version() AS v")
    assert version["v"].startswith("PostgreSQL ")
    (row,) = query("SELECT state_type::text AS s FROM flow_run WHERE id = $1::uuid", flow_run_id)
    assert row["s"] == "COMPLETED"
    keys = {r["key"] for r in query("SELECT key FROM artifact WHERE flow_run_id = $1::uuid",
                                  flow_run_id)}  # fmt: skip
    assert set(artifacts) <= keys
    # The server holds open connections to this very database (Prefect's asyncpg pool).
    (conns,) = query(
        "SELECT count(*) AS n FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    assert conns["n"] >= 1


# ------------------------------------------------------------------ two workers, one bucket


def _worker_env(emu: Any, gcs: tuple[str, dict[str, Any]], prefix: str, **extra: str) -> dict:
    """What each worker machine is given: the same config name (``dev``) plus env overrides,
    Google's credential variable, and the shared bucket. Nothing on disk is shared."""
    url, options = gcs
    return {
        "GEMINI_API_KEY": emu.settings.api_keys[0],
        "BANANAFLOW_BACKENDS__AISTUDIO__BASE_URL": emu.url,
        "BANANAFLOW_STORAGE__URL": f"{url}/{prefix}",
        "BANANAFLOW_STORAGE__OPTIONS__ENDPOINT_URL": options["endpoint_url"],
        "BANANAFLOW_STORAGE__OPTIONS__TOKEN": options["token"],
        "BANANAFLOW_STORAGE__OPTIONS__PROJECT": options["project"],
        "BANANAFLOW_BUDGET__MAX_USD": "1000",
        "BANANAFLOW_COMPRESS__FORMAT": "jpeg",
        "BANANAFLOW_COMPRESS__THUMBNAILS": "[]",
        # gcsfs probes gRPC for ~60 s per call unless told not to (conftest sets it here).
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        **extra,
    }


async def _start_run(deployment: str, params: dict[str, Any]) -> str:
    """What the UI's Run button does: a flow run of the deployment, scheduled for now."""
    from prefect.deployments.flow_runs import arun_deployment

    flow_run = await arun_deployment(deployment, parameters={"params": params}, timeout=0)
    return str(flow_run.id)


async def _read_run(flow_run_id: str) -> Any:
    from prefect import get_client

    async with get_client() as client:
        return await client.read_flow_run(uuid.UUID(flow_run_id))


def _wait_final(flow_run_id: str, workers: list[Any], timeout: float = RUN_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        run = asyncio.run(_read_run(flow_run_id))
        if run.state and run.state.is_final():
            return run
        for w in workers:
            assert w.poll() is None, f"a worker exited ({w.returncode}) while {run.name} ran"
        assert time.monotonic() < deadline, f"{run.name} still {run.state_name}"
        time.sleep(1)


def _chunk_runs(server: TeamServer, parent_run_id: str) -> list[dict[str, Any]]:
    """The parent's chunk runs as PostgreSQL holds them, with the worker that ran each
    (workers label the runs they submit: ``prefect.worker.name``)."""
    return server.query(
        "SELECT name, state_type::text AS state, labels->>'prefect.worker.name' AS worker "
        "FROM flow_run WHERE name LIKE $1 ORDER BY name",
        f"{parent_run_id}-chunk-%",
    )


@pytest.fixture
def batch_emulator(emulator_factory: Any) -> Iterator[EmulatorHandle]:
    """Google's stand-in for the whole team, at time scale 0 (no latency, no rate window) and
    with no concurrency cap: this test is about exactly-once, not about quota."""
    server = emulator_factory(time_scale=0.0, profiles={"aistudio": CHEAP_UNCAPPED})
    handle = EmulatorHandle.of(server)
    yield handle
    handle.control.close()


def test_two_workers_share_a_200_job_batch_and_render_each_job_once(
    on_postgres_api: TeamServer, batch_emulator: Any, gcs_bucket: Any, tmp_path: Path
) -> None:
    """Two workers run ``generate-batch`` as 4 chunk runs of ``generate-chunk``. ``--limit 3``
    each: the parent takes one slot of its worker, so neither worker can take all four chunks
    and both must render (each takes what it can at its first poll after the chunks exist)."""
    server = on_postgres_api
    server.deploy("generate-batch", "generate-chunk")
    prefix = f"team-{uuid.uuid4().hex[:8]}"
    # Task runs of 25 jobs each, not one per step: what is tested here is how the chunks share
    # two machines; 600 per-step task runs only load the server (the flow tests cover them).
    env = _worker_env(batch_emulator, gcs_bucket, prefix, BANANAFLOW_GENERATE__TASK_RUNS="grouped")
    workers = [
        server.start_worker(name, tmp_path / name, limit=3, **env) for name in ("team-a", "team-b")
    ]
    prompts = [f"{prefix} product shot {i:03d}" for i in range(BATCH_JOBS)]
    try:
        parent_id = asyncio.run(
            _start_run(
                "generate-batch/generate-batch",
                {"batch": {"config": "dev", "prompts": prompts}, "chunk_size": CHUNK_SIZE},
            )
        )
        parent = _wait_final(parent_id, workers)
    finally:
        server.stop_workers()
    logs = {w: (tmp_path / w / "worker.log").read_text(errors="replace")[-2000:]
            for w in ("team-a", "team-b")}  # fmt: skip
    assert parent.state.is_completed(), (parent.state.message, logs)

    # Every job rendered exactly once, counted where Google would bill it.
    control = batch_emulator.control
    assert control.stats()["generation_requests"] == {"aistudio": BATCH_JOBS, "vertex": 0}
    rendered = collections.Counter(
        r["prompt"]
        for r in control.requests()
        if r["operation"] == "generateContent" and r["status"] == 200
    )
    assert rendered == collections.Counter(prompts)

    # The parent's manifest (in the shared bucket) lists every job once, uploaded.
    url, options = gcs_bucket
    store = Store(f"{url}/{prefix}", options)
    parent_run = _our_run(store, parent_id)
    rows = read_manifest(store, parent_run)
    assert len(rows) == BATCH_JOBS and len({r.job_id for r in rows}) == BATCH_JOBS
    assert sorted(r.prompt for r in rows) == sorted(prompts)
    assert {r.status for r in rows} == {"uploaded"}
    assert all(r.uri.startswith(f"{url}/{prefix}/") for r in rows)

    # The chunks ran on both machines, each chunk once; PostgreSQL has the record.
    chunks = _chunk_runs(server, parent_run)
    assert len(chunks) == BATCH_JOBS // CHUNK_SIZE
    assert {c["state"] for c in chunks} == {"COMPLETED"}
    assert {c["worker"] for c in chunks} == {"team-a", "team-b"}, chunks
    by_chunk = collections.Counter(r.lineage["chunk_flow_run"] for r in rows)
    assert by_chunk == {c["name"]: CHUNK_SIZE for c in chunks}


# ------------------------------------------------------------------ one quota, two workers

RPM, CONCURRENCY = 60, 2


def test_global_limits_hold_across_two_workers(
    on_postgres_api: TeamServer, emulator_factory: Any, tmp_path: Path
) -> None:
    """Two runs on two workers share one quota: no 429, ≤ RPM a minute, ≤ CONCURRENCY at once.

    AI Studio is rate-bound (RPM 60, tiny latency): the rate limit is what keeps it at 1 request
    a second. Vertex is concurrency-bound (high RPM, ~1 s latency, each run would start all its
    jobs at once): the concurrency limit is what keeps it at 2 in flight. Without the global
    limits the emulator, which enforces the same quota, answers 429 (six in flight), and the
    AI Studio requests run ahead of the rate limit's envelope (ten in a few seconds).

    On PostgreSQL, as the README advises for several workers: on SQLite the workers' slot
    polling meets "database is locked" (503) and Prefect's client backs off for up to a minute.
    """
    from fixtures.postgres import BIN, write_emulator_config

    server = on_postgres_api
    emulator = emulator_factory(
        time_scale=1.0,
        profiles={
            "aistudio": {
                "requests_per_minute": RPM,
                "concurrency": CONCURRENCY,
                "latency_s": {"1K": (0.05, 0.1)},
            },
            "vertex": {
                "requests_per_minute": 600,
                "concurrency": CONCURRENCY,
                "latency_s": {"1K": (0.8, 1.2)},
            },
        },
    )
    emu = EmulatorHandle.of(emulator)
    control = emu.control
    out = f"file://{tmp_path}/out"
    config = Path(write_emulator_config(emu, tmp_path, out))
    cfg = yaml.safe_load(config.read_text())
    cfg["backends"]["aistudio"].update(requests_per_minute=RPM, concurrency=CONCURRENCY)
    cfg["backends"]["vertex"].update(requests_per_minute=600, concurrency=CONCURRENCY)
    cfg["limits"] = {"mode": "global", "name_prefix": f"q{uuid.uuid4().hex[:8]}"}
    # Three jobs in flight per run (six in all): enough to overrun the quota without the
    # limits, few enough that waiters polling a limit don't slow each other down.
    cfg["generate"]["concurrency"] = 3
    config.write_text(yaml.safe_dump(cfg))

    tag = uuid.uuid4().hex[:6]
    pool = f"limits-pool-{tag}"
    server.deploy_as("generate-dev", f"limits-{tag}", pool)  # no schedule, no trigger
    setup = server.run(BIN / "bananaflow", "setup", "--config", config, "--pool", pool)
    assert setup.returncode == 0 and "created" in setup.stdout, setup.stderr
    batches = []
    for name in ("a", "b"):
        specs: list[dict[str, str]] = []
        for i in range(5):  # interleaved, so both backends are busy from the start
            specs.append({"text": f"quota {name} studio {i}"})
            if i < 4:
                specs.append({"text": f"quota {name} vertex {i}", "backend": "vertex"})
        path = tmp_path / f"batch-{name}.yaml"
        path.write_text(yaml.safe_dump(specs))
        batches.append(str(path))
    workers = [
        server.start_worker(f"limits-{w}-{tag}", tmp_path / w, pool=pool) for w in ("a", "b")
    ]
    params = [{"config": str(config), "batch_file": b} for b in batches]
    try:
        ids = [asyncio.run(_start_run(f"generate-images/limits-{tag}", p)) for p in params]
        runs = [_wait_final(i, workers) for i in ids]
    finally:
        server.stop_workers()
    assert all(r.state.is_completed() for r in runs), [r.state.message for r in runs]

    stats = control.stats()
    assert stats["generation_requests"] == {"aistudio": 10, "vertex": 8}
    outcomes = {route: set(counts) for route, counts in stats["by_route"].items()}
    assert not any("429" in seen for seen in outcomes.values()), stats["by_route"]
    assert stats["peak_in_flight"]["aistudio"] <= CONCURRENCY
    assert stats["peak_in_flight"]["vertex"] <= CONCURRENCY

    times = sorted(
        r["t"]
        for r in control.requests()
        if r["backend"] == "aistudio" and r["operation"] == "generateContent"
    )
    assert len(times) == 10
    for i, start in enumerate(times):  # Google's count: any 60-second window
        assert sum(1 for t in times[i:] if t < start + 60) <= RPM
    # Sharper over a short run: never ahead of the rate limit's own envelope (its burst, then
    # its decay), give or take one request for timestamp jitter between Prefect's clock and
    # the emulator's. Without the rate limit the ten requests (in a few seconds) break this.
    rate = limit_specs(load_settings(str(config)))[0]
    slack = 1
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            allowed = rate.limit + rate.slot_decay_per_second * (times[j] - times[i]) + slack
            assert j - i + 1 <= allowed, (i, j, times[j] - times[i])
    store = Store(out)
    rows = [row for r in runs for row in read_manifest(store, _our_run(store, str(r.id)))]
    assert len(rows) == 18 and {r.status for r in rows} == {"uploaded"}
    control.close()


# ------------------------------------------------------------------ a worker dies mid-batch

KILL_JOBS, KILL_CHUNK = 40, 10


@pytest.mark.skipif(
    not os.environ.get("TEAM_DEAD_WORKER"),
    reason="minutes: a dead worker's chunk is noticed only after 90 s without its heartbeat "
    "(Prefect's heartbeats are at least 30 s apart); set TEAM_DEAD_WORKER=1 to run it",
)
@pytest.mark.timeout(900)
def test_a_worker_killed_mid_batch_and_the_other_finishes_it(
    on_postgres_api: TeamServer, emulator_factory: Any, gcs_bucket: Any, tmp_path: Path
) -> None:
    """Worker A (``--limit 3``: the parent plus two chunks) starts alone and takes the parent;
    worker B starts once the 4 chunk runs exist and takes what A cannot. B and every process it
    started are SIGKILLed (a machine lost) while a chunk of B's is half rendered.

    The batch finishes on A by itself: B's chunk runs stop sending heartbeats, the automation of
    ``bananaflow setup`` marks them Crashed after 90 s, and the parent starts those chunks again
    (``-restart-1``), which A runs. The parent's manifest lists every job once, uploaded; the
    emulator rendered every job, and a second time only jobs that were in flight on B at the kill
    (one per chunk run B had running: ``generate.concurrency`` is 1) -- the job ledger re-uses
    everything already paid for.
    """
    from fixtures.postgres import BIN, kill_tree, process_tree

    server = on_postgres_api
    setup = server.run(BIN / "bananaflow", "setup", "--config", "dev")
    assert setup.returncode == 0, setup.stderr[-2000:]
    assert "crash-dead-chunks" in setup.stdout
    server.deploy("generate-batch", "generate-chunk")
    emu = emulator_factory(  # ~0.6 s per image, one at a time per chunk: ~6 s per chunk
        time_scale=1.0,
        profiles={"aistudio": {**CHEAP_UNCAPPED, "latency_s": {"1K": (0.5, 0.7)}}},
    )
    control = EmulatorControl(emu.url)
    prefix = f"kill-{uuid.uuid4().hex[:8]}"
    env = _worker_env(emu, gcs_bucket, prefix, BANANAFLOW_GENERATE__CONCURRENCY="1")
    prompts = [f"{prefix} mug {i:02d}" for i in range(KILL_JOBS)]
    chunk_of = {p: i // KILL_CHUNK for i, p in enumerate(prompts)}  # consecutive slices
    params = {"batch": {"config": "dev", "prompts": prompts}, "chunk_size": KILL_CHUNK}
    a = server.start_worker("kill-a", tmp_path / "kill-a", limit=3, **env)
    try:
        first = asyncio.run(_start_run("generate-batch/generate-batch", params))
        parent_run = _wait_for_chunks(server, first, KILL_JOBS // KILL_CHUNK, [a])
        b = server.start_worker("kill-b", tmp_path / "kill-b", **env)
        on_b = _wait_until_rendering_on(server, parent_run, "kill-b", control, chunk_of, [a, b])

        kill_tree(process_tree(b.pid))  # its flow runs (sessions of their own) and their children
        os.killpg(b.pid, signal.SIGKILL)
        b.wait(10)
        at_kill = collections.Counter(chunk_of[p] for p in _rendered(control))
        assert any(at_kill[i] < KILL_CHUNK for i in on_b), "the kill came after B's chunks ended"

        parent = _wait_final(first, [a])
        assert parent.state.is_completed(), parent.state.message
    finally:
        server.stop_workers()
        renders = collections.Counter(_rendered(control))
        control.close()

    url, options = gcs_bucket
    store = Store(f"{url}/{prefix}", options)
    rows = read_manifest(store, _our_run(store, str(parent.id)))
    assert sorted(r.prompt for r in rows) == sorted(prompts)
    assert {r.status for r in rows} == {"uploaded"}
    assert set(renders) == set(prompts)  # every job rendered ...
    twice = [p for p, n in renders.items() if n > 1]  # ... and again only if in flight on B
    assert all(renders[p] == 2 and chunk_of[p] in on_b for p in twice), renders
    assert len(twice) <= len(on_b), twice
    # B's chunks: the lost runs Crashed by the automation, each finished by a restart on A.
    chunks = {c["name"]: c for c in _chunk_runs(server, parent_run)}
    for i in on_b:
        lost, again = (
            chunks[f"{parent_run}-chunk-{i:03d}"],
            chunks.get(f"{parent_run}-chunk-{i:03d}-restart-1"),
        )
        assert lost["state"] == "CRASHED" and lost["worker"] == "kill-b", lost
        assert again and again["state"] == "COMPLETED" and again["worker"] == "kill-a", again
    assert {r.lineage["chunk_flow_run"] for r in rows if chunk_of[r.prompt] in on_b} == {
        f"{parent_run}-chunk-{i:03d}-restart-1" for i in on_b
    }


def _rendered(control: Any) -> list[str]:
    return [r["prompt"] for r in control.requests() if r["operation"] == "generateContent"]


def _wait_for_chunks(server: TeamServer, parent_id: str, n: int, workers: list[Any]) -> str:
    """Our run id of the parent, once it has created its ``n`` chunk runs."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        rows = server.query(
            "SELECT name FROM flow_run WHERE parent_task_run_id IN "
            "(SELECT id FROM task_run WHERE flow_run_id = $1::uuid)",
            parent_id,
        )
        if len(rows) >= n:
            return rows[0]["name"].rsplit("-chunk-", 1)[0]
        for w in workers:
            assert w.poll() is None, "a worker exited before the chunks were created"
        assert time.monotonic() < deadline, "the parent created no chunk runs"
        time.sleep(0.5)


def _wait_until_rendering_on(
    server: TeamServer,
    parent_run: str,
    worker: str,
    control: Any,
    chunk_of: dict[str, int],
    workers: list[Any],
) -> list[int]:
    """The chunks ``worker`` has RUNNING, once the emulator has seen a request from one."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        chunks = _chunk_runs(server, parent_run)
        running = [
            int(c["name"].rsplit("-", 1)[1])
            for c in chunks
            if c["worker"] == worker and c["state"] == "RUNNING"
        ]
        if running and any(chunk_of.get(p) in running for p in _rendered(control)):
            return running
        for w in workers:
            assert w.poll() is None, "a worker exited before the kill"
        assert time.monotonic() < deadline, f"{worker} never rendered: {chunks}"
        time.sleep(0.2)
