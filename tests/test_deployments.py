"""The deployment path, end to end, as an operator runs it.

A real ``prefect server`` of this module's own (tests/fixtures/prefect.py), ``bananaflow setup``,
``prefect deploy`` of ``deployments/prefect.yaml``, runs started the way the UI starts them (a
deployment run with parameters), and real process workers executing them against the emulator
over loopback.

- a UI-style run picked up by ``prefect worker start --run-once`` lands images, and its
  completion fires the promote trigger;
- the scale-out parent splits a batch into chunk runs and rolls their manifests up, each job
  exactly once, and a re-run pays for nothing.

The workers inherit this process's environment (they reach the emulator on loopback); the flow
runs they start find the code through the deployments' pull step (the repo root).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.prefect import artifacts, pointed_at, stop
from fixtures.prefect import server as prefect_server

from bananaflow.config import load_settings
from bananaflow.deployments.setup import DEFAULT_POOL
from bananaflow.emulator.control import EmulatorControl
from bananaflow.emulator.credentials import write_service_account_file
from bananaflow.manifest import read_manifest
from bananaflow.preflight import plan_jobs
from bananaflow.storage import Store

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
RUN_TIMEOUT_S = 240  # a hang guard, not a timing assertion

# What every prefect/bananaflow subprocess gets on top of this process's environment.
QUIET = {
    "PWD": str(REPO),  # `{{ $PWD }}` in the pull step: deploy "from the repo root"
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_WORKER_QUERY_SECONDS": "1",
    "COLUMNS": "200",
}


def spec() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_FILE.read_text())


def deployment_spec(name: str) -> dict[str, Any]:
    return next(d for d in spec()["deployments"] if d["name"] == name)


# ------------------------------------------------------------------ the file itself (no server)


def test_every_deployment_loads_its_flow_and_its_parameters_validate() -> None:
    from prefect.flows import load_flow_from_entrypoint

    doc = spec()
    assert doc["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PWD }}"}}
    ]
    names = [d["name"] for d in doc["deployments"]]
    assert names == [
        "generate-dev",
        "generate-prod",
        "generate-batch",
        "generate-chunk",
        "promote",
        "compare",
        "collect-batches",
    ]
    for d in doc["deployments"]:
        assert d["work_pool"]["name"] == DEFAULT_POOL, d["name"]
        assert d["enforce_parameter_schema"] is True, d["name"]
        # The installed package, not files of a checkout: deploys from any project folder.
        assert d["entrypoint"].startswith("bananaflow.flows."), d["entrypoint"]
        flow = load_flow_from_entrypoint(d["entrypoint"])
        (param,) = flow.parameters.properties  # one pydantic model: one form in the UI
        assert param == "params"
        model = _pydantic_model(flow, "params")
        if "parameters" in d:
            model.model_validate(d["parameters"]["params"])
        for trigger in d.get("triggers", []):
            model.model_validate(trigger["parameters"]["params"])


def _pydantic_model(flow: Any, name: str) -> Any:
    import typing

    from pydantic import BaseModel

    hint = typing.get_type_hints(flow.fn)[name]
    for arg in (*typing.get_args(hint), hint):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    raise AssertionError(f"{flow.name}.{name} is not a pydantic model")


def test_nightly_dev_deployment_is_scheduled_and_its_batch_plans() -> None:
    dev = deployment_spec("generate-dev")
    assert dev["tags"] == ["dev"]
    (schedule,) = dev["schedules"]
    assert schedule == {"cron": "0 3 * * *", "timezone": "UTC", "active": True}
    params = dev["parameters"]["params"]
    assert params["config"] == "dev"
    jobs, decisions = plan_jobs(load_settings("dev"), [], str(REPO / params["batch_file"]))
    assert len(jobs) == 4 and {d.primary for d in decisions} == {"aistudio"}
    prod = deployment_spec("generate-prod")
    assert prod["parameters"]["params"]["config"] == "prod" and "schedules" not in prod


def test_promote_trigger_fires_on_completed_generate_dev_runs() -> None:
    (trigger,) = deployment_spec("promote")["triggers"]
    assert trigger["expect"] == ["prefect.flow-run.Completed"]
    assert trigger["match"] == {"prefect.resource.id": "prefect.flow-run.*"}
    assert trigger["match_related"] == {
        "prefect.resource.role": "deployment",
        "prefect.resource.name": "generate-dev",
    }
    params = trigger["parameters"]["params"]
    assert params["source_run"] == "{{ event.resource.id }}"
    assert params["approve"] == "ask"  # a person approves in the UI before prod is paid for


# ------------------------------------------------------------------ scale-out parts (no server)


def _planned(n: int, **overrides: Any) -> tuple[Any, list[Any], list[Any]]:
    settings = load_settings("local", overrides)
    jobs, decisions = plan_jobs(settings, [f"a chunked fig {i}" for i in range(n)], None)
    return settings, jobs, decisions


def test_split_never_hands_chunks_more_than_the_budget() -> None:
    from bananaflow.chunking import split

    _, jobs, decisions = _planned(7)
    unlimited = split(jobs, decisions, 3, load_settings("local"))
    assert [len(c.jobs) for c in unlimited] == [3, 3, 1]
    assert [c.max_usd for c in unlimited] == [None, None, None]
    assert [j.job_id for c in unlimited for j in c.jobs] == [j.job_id for j in jobs]

    fits = split(jobs, decisions, 3, load_settings("local", {"budget.max_usd": 5.0}))
    assert [c.max_usd for c in fits] == [pytest.approx(0.402), pytest.approx(0.402), 0.134]

    tight = split(jobs, decisions, 3, load_settings("local", {"budget.max_usd": 0.5}))
    shares = [round(c.max_usd * 1_000_000) for c in tight]
    assert sum(shares) <= 500_000 and shares[0] == shares[1] > shares[2] > 0


def test_roll_up_lists_every_job_once_and_says_which_chunk_never_ran(tmp_path: Path) -> None:
    from bananaflow.chain import base_row, open_context
    from bananaflow.chunking import ChunkRun, roll_up, split

    settings, jobs, decisions = _planned(5, **{"storage.url": f"file://{tmp_path}/out"})
    chunks = split(jobs, decisions, 3, settings)
    done_run = "20261124T030000Z-a1b2c3d4"
    child = open_context(settings, done_run, set())
    for job, decision in zip(chunks[0].jobs, chunks[0].decisions, strict=True):
        row = base_row(child, job, decision, "2026-11-24T03:00:00Z")
        child.manifest.append(row.model_copy(update={"status": "uploaded"}))
    runs = [
        ChunkRun(index=0, flow_run_id="a1b2c3d4-0000-4000-8000-000000000000",
                 flow_run_name="p-chunk-000", state="COMPLETED"),
        ChunkRun(index=1, flow_run_id="e5f6a7b8-0000-4000-8000-000000000000",
                 flow_run_name="p-chunk-001", state="CRASHED", message="worker lost"),
    ]  # fmt: skip
    parent = open_context(settings, "20261124T030500Z-0f0f0f0f", set())
    rows = roll_up(parent, chunks, runs)

    assert [r.job_id for r in rows] == [j.job_id for j in jobs]  # each once, in batch order
    assert all(r.run_id == parent.run_id for r in rows)
    assert [r.status for r in rows] == ["uploaded"] * 3 + ["failed"] * 2
    assert {r.lineage["chunk_run_id"] for r in rows[:3]} == {done_run}
    assert all("p-chunk-001 ended CRASHED: worker lost" in (r.error or "") for r in rows[3:])
    written = read_manifest(parent.store, parent.run_id)
    assert [r.job_id for r in written] == [r.job_id for r in rows]
    asyncio.run(child.aclose())
    asyncio.run(parent.aclose())


# ------------------------------------------------------------------ a real server


@dataclass
class Server:
    api_url: str
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own: its workers, scale-out and batch runs would otherwise
    load the server every in-process flow test of the run talks to."""
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as (url, _):
        env = {**os.environ, **QUIET, "PREFECT_API_URL": url}
        srv = Server(url, env)
        try:
            with pointed_at(url):
                yield srv
        finally:
            for proc in srv.procs:  # workers: what they ran is over; no grace to wait out
                stop(proc, grace_s=5)


@pytest.fixture(scope="module")
def deployed(server: Server) -> Server:
    """``bananaflow setup`` then ``prefect deploy`` of every deployment, as the README says."""
    setup = server.run(BIN / "bananaflow", "setup", "--config", "dev")
    assert setup.returncode == 0, setup.stderr
    assert setup.stdout.startswith(f"work pool {DEFAULT_POOL}: ")
    proc = server.run(
        BIN / "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", PREFECT_FILE
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return server


async def _read_deployment(name: str) -> Any:
    from prefect import get_client

    async with get_client() as client:
        return await client.read_deployment_by_name(name)


async def _automations(prefix: str) -> list[Any]:
    from prefect import get_client

    async with get_client() as client:
        return [a for a in await client.read_automations() if a.name.startswith(prefix)]


def test_deploy_creates_forms_schedule_pool_and_promote_automation(deployed: Server) -> None:
    models = {
        "generate-images/generate-dev": "GenerateParameters",
        "generate-images/generate-prod": "GenerateParameters",
        "generate-batch/generate-batch": "ScaleParameters",
        "generate-images/generate-chunk": "GenerateParameters",
        "promote/promote": "PromoteParameters",
        "compare/compare": "CompareParameters",
    }
    for name, model in models.items():
        dep = asyncio.run(_read_deployment(name))
        assert dep.work_pool_name == DEFAULT_POOL, name
        assert dep.enforce_parameter_schema, name
        assert model in dep.parameter_openapi_schema["definitions"], name
        assert dep.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
        ], name
    dev = asyncio.run(_read_deployment("generate-images/generate-dev"))
    assert dev.tags == ["dev"]
    assert dev.parameters == {"params": {"config": "dev", "batch_file": "prompts/nightly.yaml"}}
    (schedule,) = dev.schedules
    assert schedule.schedule.cron == "0 3 * * *" and schedule.active
    nightly = asyncio.run(_scheduled_runs("generate-dev"))  # the scheduler really books them
    assert (nightly.hour, nightly.minute, nightly.utcoffset().total_seconds()) == (3, 0, 0)
    (automation,) = asyncio.run(_automations("promote__automation"))
    assert automation.enabled
    assert automation.trigger.expect == {"prefect.flow-run.Completed"}
    action = automation.actions[0]
    promote = asyncio.run(_read_deployment("promote/promote"))
    assert action.deployment_id == promote.id
    assert action.parameters["params"]["source_run"] == "{{ event.resource.id }}"


async def _scheduled_runs(deployment: str) -> Any:
    """When the next auto-scheduled run of a deployment starts (the scheduler runs in a loop)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    deadline = time.monotonic() + 90
    async with get_client() as client:
        while True:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                    )
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=1,
            )
            if runs:
                return runs[0].expected_start_time
            assert time.monotonic() < deadline, f"the scheduler booked no run of {deployment}"
            await asyncio.sleep(1)


def test_the_server_rejects_bad_parameters_before_any_worker_runs(deployed: Server) -> None:
    proc = deployed.run(
        BIN / "prefect",
        "deployment",
        "run",
        "generate-images/generate-dev",
        "-p",
        'params={"prompts": ["x"], "image_size": "8K"}',
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "8K" in out and "image_size" in out


# ------------------------------------------------------------------ running deployments


def _emulator_config(
    tmp_path: Path, url: str, project: str, key: str, **over: Any
) -> tuple[str, str]:
    """A config file pointing both backends at an emulator: what a user edits to use Google."""
    out = f"file://{tmp_path}/out"
    sa = write_service_account_file(tmp_path / "sa.json", url + "/token", project)
    cfg: dict[str, Any] = {
        "stage": "dev",
        "backends": {
            "aistudio": {"base_url": url, "api_key": key},
            "vertex": {"base_url": url, "project": project, "credentials_file": str(sa)},
        },
        "generate": {
            "retry": {"initial_delay_s": 0.2, "max_delay_s": 1, "max_attempts": 3},
            "timeouts": {"read_s": {"1K": 20, "2K": 20, "4K": 20}},
        },
        "compress": {"format": "jpeg", "quality": 80, "thumbnails": []},
        "storage": {"url": out},
    }
    for k, v in over.items():
        cfg[k] = _merge(cfg.get(k, {}), v) if isinstance(v, dict) else v
    path = tmp_path / f"cfg-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path), out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


async def _wait_final(flow_run_ids: list[str]) -> list[Any]:
    from prefect import get_client

    deadline = time.monotonic() + RUN_TIMEOUT_S
    async with get_client() as client:
        while True:
            runs = [await client.read_flow_run(uuid.UUID(i)) for i in flow_run_ids]
            if all(r.state and r.state.is_final() for r in runs):
                return runs
            assert time.monotonic() < deadline, [(r.name, r.state_name) for r in runs]
            await asyncio.sleep(1)


async def _start(deployment: str, params: dict[str, Any]) -> str:
    """What the UI's "Run" button does: a flow run of the deployment with these parameters."""
    from prefect.deployments.flow_runs import arun_deployment

    flow_run = await arun_deployment(deployment, parameters={"params": params}, timeout=0)
    return str(flow_run.id)


def _our_run(store: Store, flow_run_id: str) -> str:
    """Our run id of a flow run: ``<stamp>-<first 8 of the flow-run id>`` (flows.generate)."""
    runs = {p.split("/")[1] for p in store.list("runs") if p.count("/") >= 2}
    (run_id,) = [r for r in runs if r.endswith("-" + flow_run_id[:8])]
    return run_id


def test_ui_started_run_is_executed_by_a_worker_and_triggers_promote(
    deployed: Server, emu, api_key: str, tmp_path: Path
) -> None:
    config, out = _emulator_config(tmp_path, emu.url, emu.settings.project, api_key)
    prompts = ["a deployed pear", "a deployed plum"]
    started = deployed.run(
        BIN / "prefect",
        "deployment",
        "run",
        "generate-images/generate-dev",
        "-p",
        "params=" + json.dumps({"config": config, "prompts": prompts}),
    )
    assert started.returncode == 0, started.stderr
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout)[1]

    worker = deployed.run(
        BIN / "prefect", "worker", "start", "--pool", DEFAULT_POOL, "--run-once",
        timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr[-3000:]

    (run,) = asyncio.run(_wait_final([flow_run_id]))
    assert run.state.is_completed(), run.state.message
    store = Store(out)
    rows = read_manifest(store, _our_run(store, flow_run_id))
    assert sorted(r.prompt for r in rows) == sorted(prompts)
    for row in rows:
        assert row.status == "uploaded" and row.backend == "aistudio"
        assert Path(row.uri.removeprefix("file://")).read_bytes()[:3] == b"\xff\xd8\xff"
    assert emu.control.stats()["generation_requests"]["aistudio"] == 2

    promote = asyncio.run(_promote_run_for(flow_run_id))
    assert promote.parameters["params"]["source_run"] == f"prefect.flow-run.{flow_run_id}"
    assert promote.parameters["params"]["source_config"] == config  # where the dev run wrote
    assert promote.parameters["params"]["approve"] == "ask"
    asyncio.run(_delete_flow_run(promote.id))  # nobody is here to approve it


async def _promote_run_for(dev_flow_run_id: str) -> Any:
    """The flow run the promote automation created for a finished dev run (events take secs)."""
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    wanted = f"prefect.flow-run.{dev_flow_run_id}"
    deadline = time.monotonic() + 90
    async with get_client() as client:
        while True:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["promote"])),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=50,
            )
            for run in runs:
                if run.parameters.get("params", {}).get("source_run") == wanted:
                    return run
            assert time.monotonic() < deadline, "the promote trigger did not fire"
            await asyncio.sleep(1)


async def _delete_flow_run(flow_run_id: uuid.UUID) -> None:
    from prefect import get_client

    async with get_client() as client:
        await client.delete_flow_run(flow_run_id)


@pytest.fixture(scope="module")
def two_workers(deployed: Server, tmp_path_factory: pytest.TempPathFactory) -> Server:
    """Two long-running process workers on the pool (stopped when the module ends).

    The promote automation is paused first: the runs below complete generate-dev runs, and
    nobody is here to approve the promotions they would start.
    """
    for automation in asyncio.run(_automations("promote__automation")):
        asyncio.run(_pause_automation(automation.id))
    logs = tmp_path_factory.mktemp("workers")
    for name in ("worker-a", "worker-b"):
        deployed.procs.append(
            subprocess.Popen(
                [BIN / "prefect", "worker", "start", "--pool", DEFAULT_POOL, "--name", name],
                cwd=REPO,
                env=deployed.env,
                stdout=(logs / f"{name}.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: SIGTERM reaches it and its runs
            )
        )
    return deployed


async def _pause_automation(automation_id: uuid.UUID) -> None:
    from prefect import get_client

    async with get_client() as client:
        await client.pause_automation(automation_id)


def test_scale_out_lands_every_job_exactly_once(
    two_workers: Server, emu, api_key: str, tmp_path: Path
) -> None:
    # One job in flight per chunk: the chunk runs stay under the emulator's concurrency.
    config, out = _emulator_config(
        tmp_path, emu.url, emu.settings.project, api_key, generate={"concurrency": 1}
    )
    prompts = [f"a scaled-out shell {i}" for i in range(5)]
    params = {"batch": {"config": config, "prompts": prompts}, "chunk_size": 3}

    first = _run_parent(params)
    store = Store(out)
    parent_rows = read_manifest(store, _our_run(store, str(first.id)))
    assert len(parent_rows) == 5
    assert sorted(r.prompt for r in parent_rows) == sorted(prompts)
    assert len({r.job_id for r in parent_rows}) == 5
    assert {r.status for r in parent_rows} == {"uploaded"}
    chunks = {r.lineage["chunk_run_id"] for r in parent_rows}
    assert len(chunks) == 2  # 5 jobs in chunks of 3
    for chunk in chunks:  # each chunk run wrote its own manifest: the rows came from there
        chunk_rows = read_manifest(store, chunk)
        assert {r.job_id for r in chunk_rows} == {
            r.job_id for r in parent_rows if r.lineage["chunk_run_id"] == chunk
        }
    assert emu.control.stats()["generation_requests"] == {"aistudio": 5, "vertex": 0}
    table = _artifact_of(str(first.id), "bananaflow-chunks")
    assert sorted(r["run_id"] for r in table) == sorted(chunks)
    assert {r["state"] for r in table} == {"COMPLETED"}

    again = _run_parent(params)
    rerun_rows = read_manifest(store, _our_run(store, str(again.id)))
    assert {r.job_id for r in rerun_rows} == {r.job_id for r in parent_rows}
    assert all(r.status == "uploaded" and r.reused_from_run for r in rerun_rows)
    assert emu.control.stats()["generation_requests"] == {"aistudio": 5, "vertex": 0}


def _artifact_of(flow_run_id: str, key: str) -> Any:
    """An artifact of one flow run, over the REST API (what the UI's Artifacts tab reads)."""
    body = {
        "artifacts": {"key": {"any_": [key]}, "flow_run_id": {"any_": [flow_run_id]}},
        "sort": "UPDATED_DESC",
        "limit": 1,
        "offset": 0,
    }
    found = artifacts(body)
    assert found, f"no artifact {key} on flow run {flow_run_id}"
    data = found[0]["data"]
    return json.loads(data) if isinstance(data, str) else data


def _run_parent(params: dict[str, Any]) -> Any:
    async def go() -> Any:
        (run,) = await _wait_final([await _start("generate-batch/generate-batch", params)])
        return run

    run = asyncio.run(go())
    assert run.state.is_completed(), run.state.message
    return run


def test_a_ui_started_batch_run_ends_and_collect_batches_finishes_it(
    two_workers: Server, emulator_factory, tmp_path: Path
) -> None:
    """``delivery: batch`` from the UI form: a worker runs the generate deployment, which submits
    one provider batch, records it and ends while the batch is still pending (no worker waits
    for it); a run of collect-batches, as its schedule would start one, then finishes every job
    into the submitting run's manifest. The batch clock stands still (pending 1e9 s) until the
    generate run has ended, so "ended before the batch" is a fact, not a race."""
    server = emulator_factory(batch={"pending_s": 1e9, "running_s": 0.0})
    control = EmulatorControl(server.url)
    config, out = _emulator_config(
        tmp_path, server.url, server.settings.project, server.settings.api_keys[0]
    )
    prompts = ["a batched quince", "a batched medlar"]

    async def submit() -> Any:
        params = {"config": config, "prompts": prompts, "delivery": "batch"}
        (run,) = await _wait_final([await _start("generate-images/generate-dev", params)])
        return run

    generate = asyncio.run(submit())
    assert generate.state.is_completed(), generate.state.message
    (batch,) = server.state.asyncs.batches.values()
    assert not batch.terminal  # the run ended; the batch still waits at "Google"
    store = Store(out)
    run_id = _our_run(store, str(generate.id))
    assert {r.status for r in read_manifest(store, run_id)} == {"pending_batch"}
    (pending,) = _artifact_of(str(generate.id), "pending-batches")  # what the UI shows
    assert pending["jobs"] == 2 and pending["run"] == run_id and pending["expected_usd"] > 0

    server.settings.batch.pending_s = 0.0  # the provider batch ends

    async def collect() -> Any:
        (run,) = await _wait_final(
            [await _start("collect-batches/collect-batches", {"config": config})]
        )
        return run

    collected = asyncio.run(collect())
    assert collected.state.is_completed(), collected.state.message
    rows = read_manifest(store, run_id)
    assert sorted(r.prompt for r in rows) == sorted(prompts)
    assert {(r.status, r.delivery) for r in rows} == {("uploaded", "batch")}
    stats = control.stats()
    assert stats["batches_created"] == 1
    assert stats["generation_requests"] == {"aistudio": 0, "vertex": 0}
    control.close()
