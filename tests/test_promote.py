"""Promotion dev → prod: the core rules, then the flow under a real Prefect against the emulator.

A dev run (stage dev → AI Studio) is rendered with the real generate flow, then promoted with
the real promote flow; the emulator's request counters say what was paid for on which platform.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fixtures.prefect import latest_artifact

from bananaflow import promotion
from bananaflow.errors import InputError
from bananaflow.expand import compute_job_id
from bananaflow.flows.generate import generate_images
from bananaflow.flows.promote import PromoteParameters, promote
from bananaflow.manifest import ManifestWriter, read_manifest
from bananaflow.parameters import GenerateParameters
from bananaflow.records import ManifestRow, RunSummary
from bananaflow.storage import Store

# --------------------------------------------------------------------------- core rules


def _row(job_id: str, status: str = "uploaded", **kw: Any) -> ManifestRow:
    return ManifestRow(
        run_id=kw.pop("run_id", "20260101T000000Z-abcdef12"),
        job_id=job_id,
        output_key="k" + job_id,
        status=status,  # type: ignore[arg-type]
        stage="dev",
        prompt=kw.pop("prompt", f"prompt of {job_id}"),
        uri=f"file:///dev/images/{job_id}.webp" if status == "uploaded" else "",
        **kw,
    )


def test_source_run_forms_are_recognised():
    fr = uuid.uuid4()
    assert promotion.parse_source_run("20260101T000000Z-abcdef12").run_id == (
        "20260101T000000Z-abcdef12"
    )
    ref = promotion.parse_source_run(
        "gs://bucket/dev/runs/20260101T000000Z-abcdef12/manifest.jsonl"
    )
    assert (ref.kind, ref.store_url, ref.run_id) == (
        "manifest",
        "gs://bucket/dev",
        "20260101T000000Z-abcdef12",
    )
    assert promotion.parse_source_run(f"prefect.flow-run.{fr}").flow_run_id == fr
    assert promotion.parse_source_run(str(fr)).flow_run_id == fr
    for bad in ("", "prefect.flow-run.nope", "a/b", "file:///x/manifest.jsonl", ".."):
        with pytest.raises(InputError, match="source_run"):
            promotion.parse_source_run(bad)


def test_flow_run_id_resolves_to_the_latest_run_with_its_suffix(tmp_path: Path):
    store = Store(f"file://{tmp_path}")
    fr = uuid.UUID("abcdef12-0000-4000-8000-000000000000")
    for run in ("20260101T000000Z-abcdef12", "20260102T000000Z-abcdef12", "20260103T0Z-99999999"):
        ManifestWriter(store, run).append(_row("j1", run_id=run))
    assert promotion.find_run_for_flow_run(store, fr) == "20260102T000000Z-abcdef12"
    with pytest.raises(InputError, match="no run of flow run"):
        promotion.find_run_for_flow_run(store, uuid.uuid4())


def test_selection_rules():
    rows = [_row("aaaaaaaa11"), _row("aaaaaaaa22"), _row("bbbbbbbb33", "refused")]
    assert [r.job_id for r in promotion.select(rows, "all-uploaded", []) or []] == [
        "aaaaaaaa11",
        "aaaaaaaa22",
    ]
    assert promotion.select(rows, "ask", []) is None
    assert [r.job_id for r in promotion.select(rows, "list", ["aaaaaaaa22"]) or []] == [
        "aaaaaaaa22"
    ]
    with pytest.raises(InputError, match="nope1, nope2 are not a job"):
        promotion.select(rows, "list", ["aaaaaaaa11", "nope1", "nope2"])
    with pytest.raises(InputError, match=r"bbbbbbbb33 \(refused\)"):
        promotion.select(rows, "list", ["bbbbbbbb33"])
    with pytest.raises(InputError, match="matches 2 jobs"):
        promotion.select(rows, "list", ["aaaaaa"])
    with pytest.raises(InputError, match="only used with approve: list"):
        promotion.select(rows, "all-uploaded", ["aaaaaaaa11"])
    with pytest.raises(InputError, match="no job ids"):
        promotion.select(rows, "list", [])


def test_prod_job_id_is_recomputed_and_stable():
    dev = _row("devjob", prompt="a kite, studio light", aspect_ratio="4:3", variant=1)
    job = promotion.prod_job(dev, "2K")
    assert job.job_id == compute_job_id(
        prompt="a kite, studio light",
        aspect_ratio="4:3",
        image_size="2K",
        variant=1,
        backend=None,
        model=None,
    )
    assert (job.image_size, job.aspect_ratio, job.variant, job.backend) == ("2K", "4:3", 1, None)
    # a 1K and a 2K dev render of one prompt are one prod image, linked from both dev rows
    twin = _row("devjob2", prompt="a kite, studio light", aspect_ratio="4:3", variant=1)
    plan = promotion.plan([dev, twin], "2K")
    assert [j.job_id for j in plan.jobs] == [job.job_id]
    assert [r.job_id for r in plan.sources[job.job_id]] == ["devjob", "devjob2"]
    assert plan.prod_lineage()[job.job_id]["dev_job"] == "devjob"


def test_approval_form_names_prompts_and_links_images():
    rows = [_row("j1", prompt="a red | kite", thumbnail_uris=["gs://b/thumbs/j1.webp"])]
    form = promotion.approval_form(rows, "run-1", "2K")
    field = form.fields[0]
    assert field.name == "approve_j1" and "a red | kite" in field.description
    assert "https://storage.cloud.google.com/b/thumbs/j1.webp" in field.description
    assert "file:///dev/images/j1.webp" in field.description
    assert "run-1" in form.description and "2K" in form.description
    assert form.approved({"approve_j1": True, "approve_other": True}) == ["j1"]
    assert form.approved({"approve_j1": False}) == []


# --------------------------------------------------------------------------- flows


@dataclass
class Stages:
    dev_config: str
    prod_config: str
    dev_out: str
    prod_out: str


@pytest.fixture
def stages(tmp_path: Path, emu, service_account_file: Path, api_key: str) -> Stages:
    """A dev and a prod config pointing at the emulator, each with its own storage."""
    backends = {
        "aistudio": {"base_url": emu.url, "api_key": api_key},
        "vertex": {
            "base_url": emu.url,
            "project": emu.settings.project,
            "credentials_file": str(service_account_file),
        },
    }
    common = {
        "backends": backends,
        "generate": {
            "image_size": "1K",
            "concurrency": 1,
            "retry": {"initial_delay_s": 0.01, "max_delay_s": 0.05, "max_attempts": 3},
            "timeouts": {"read_s": {"1K": 10, "2K": 10, "4K": 20}},
        },
        "compress": {"format": "jpeg", "quality": 80, "thumbnails": [128]},
    }
    dev_out, prod_out = f"file://{tmp_path}/dev", f"file://{tmp_path}/prod"
    dev = {**common, "stage": "dev", "storage": {"url": dev_out}}
    prod = {
        **common,
        "stage": "prod",
        "generate": {**common["generate"], "image_size": "2K"},
        "storage": {"url": prod_out},
    }
    (tmp_path / "dev.yaml").write_text(yaml.safe_dump(dev))
    (tmp_path / "prod.yaml").write_text(yaml.safe_dump(prod))
    return Stages(str(tmp_path / "dev.yaml"), str(tmp_path / "prod.yaml"), dev_out, prod_out)


def dev_run(stages: Stages, prompts: list[str], **kw: Any) -> tuple[RunSummary, uuid.UUID]:
    params = GenerateParameters(config=stages.dev_config, prompts=prompts, **kw)
    state = asyncio.run(generate_images(params, return_state=True))
    return state.result(), state.state_details.flow_run_id


def run_promote(stages: Stages, **kw: Any) -> promotion.PromotionSummary:
    kw = {"source_config": stages.dev_config, "config": stages.prod_config, **kw}
    return asyncio.run(promote(PromoteParameters(**kw)))


def requests(emu) -> dict[str, int]:
    return emu.control.stats()["generation_requests"]


pytestmark_flows = pytest.mark.usefixtures("prefect_api")


@pytestmark_flows
def test_promote_a_subset_by_list_then_again_renders_nothing(emu, stages: Stages):
    dev, _ = dev_run(stages, ["a red kite", "a green kite", "a blue kite"])
    assert dev.counts == {"uploaded": 3} and requests(emu) == {"aistudio": 3, "vertex": 0}
    by_prompt = {r.prompt: r for r in dev.rows}
    chosen = [by_prompt["a red kite"], by_prompt["a blue kite"]]

    first = run_promote(
        stages, source_run=dev.run_id, approve="list", job_ids=[r.job_id for r in chosen]
    )

    assert requests(emu) == {"aistudio": 3, "vertex": 2}
    assert first.rendered == 2 and first.reused == 0 and first.counts == {"uploaded": 2}
    prod_rows = read_manifest(Store(stages.prod_out), first.prod_run or "")
    assert len(prod_rows) == 2
    for dev_row, prod_row in zip(chosen, sorted(prod_rows, key=_by_prompt(chosen)), strict=True):
        assert (prod_row.backend, prod_row.stage, prod_row.image_size) == ("vertex", "prod", "2K")
        assert (prod_row.width, prod_row.height) == (2048, 2048)
        assert prod_row.uri.startswith(stages.prod_out)
        assert prod_row.lineage == {
            "dev_run": dev.run_id,
            "dev_job": dev_row.job_id,
            "dev_uri": dev_row.uri,
            "dev_sha256": dev_row.sha256,
        }
    dev_rows = {r.job_id: r for r in read_manifest(Store(stages.dev_out), dev.run_id)}
    assert len(dev_rows) == 3  # re-appended rows replace, never duplicate
    prod_by_dev = {p.lineage["dev_job"]: p for p in prod_rows}
    for dev_row in chosen:
        prod_row = prod_by_dev[dev_row.job_id]
        assert dev_rows[dev_row.job_id].lineage == {
            "prod_run": first.prod_run,
            "prod_job": prod_row.job_id,
            "prod_uri": prod_row.uri,
        }
        assert dev_rows[dev_row.job_id].status == "uploaded"
    assert dev_rows[by_prompt["a green kite"].job_id].lineage == {}
    dev_manifest = Path(first.dev_manifest_uri.removeprefix("file://"))
    assert len(dev_manifest.read_text().splitlines()) == 3

    again = run_promote(
        stages, source_run=dev.run_id, approve="list", job_ids=[r.job_id for r in chosen]
    )

    assert requests(emu) == {"aistudio": 3, "vertex": 2}  # nothing rendered twice
    assert again.rendered == 0 and again.reused == 2 and again.estimated_usd == 0
    assert again.dev_rows_updated == 0
    assert {i.prod_uri for i in again.images} == {p.uri for p in prod_rows}


def _by_prompt(rows: list[ManifestRow]):
    order = [r.prompt for r in rows]
    return lambda r: order.index(r.prompt)


@pytestmark_flows
def test_all_uploaded_skips_failed_and_refused_rows_from_any_source_form(emu, stages: Stages):
    emu.control.force("quota_daily", count=1, backend="aistudio")
    dev, flow_run_id = dev_run(
        stages,
        ["first job hits a daily quota", "a forbidden scene", "a fine pear"],
        image_size="1K",
    )
    statuses = {r.prompt: r.status for r in dev.rows}
    assert sorted(statuses.values()) == ["failed", "refused", "uploaded"]
    fine = next(r for r in dev.rows if r.status == "uploaded")

    by_flow_run = run_promote(
        stages,
        source_run=f"prefect.flow-run.{flow_run_id}",
        approve="all-uploaded",
        image_size="1K",
    )
    assert by_flow_run.dev_run == dev.run_id
    assert by_flow_run.approved == [fine.job_id] and by_flow_run.candidates == 1
    assert requests(emu)["vertex"] == 1

    manifest_uri = f"{stages.dev_out}/runs/{dev.run_id}/manifest.jsonl"
    by_uri = run_promote(
        stages,
        source_run=manifest_uri,
        source_config="local",
        approve="all-uploaded",
        image_size="1K",
    )
    by_bare_id = run_promote(
        stages, source_run=str(flow_run_id), approve="all-uploaded", image_size="1K"
    )
    for summary in (by_uri, by_bare_id):
        assert summary.dev_run == dev.run_id and summary.approved == [fine.job_id]
        assert summary.reused == 1 and summary.rendered == 0
    assert requests(emu)["vertex"] == 1


@pytestmark_flows
def test_unknown_job_id_fails_before_any_request(emu, stages: Stages, tmp_path: Path):
    dev, _ = dev_run(stages, ["a lone plum"])
    with pytest.raises(InputError, match="deadbeefdeadbeef is not a job of run"):
        run_promote(
            stages,
            source_run=dev.run_id,
            approve="list",
            job_ids=[dev.rows[0].job_id, "deadbeefdeadbeef"],
        )
    assert requests(emu)["vertex"] == 0
    assert not (tmp_path / "prod").exists()


@pytestmark_flows
def test_ask_pauses_for_a_form_and_promotes_exactly_the_ticked_job(emu, stages: Stages):
    from prefect.flow_runs import resume_flow_run

    dev, _ = dev_run(stages, ["an orange boat", "a purple boat"])
    wanted, unwanted = dev.rows
    params = PromoteParameters(
        source_run=dev.run_id,
        source_config=stages.dev_config,
        config=stages.prod_config,
        approve="ask",
        image_size="1K",
        approval_poll_s=0.2,
        approval_timeout_s=60,
    )
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(lambda: asyncio.run(promote(params)))
        flow_run_id, form = _wait_until_paused(dev.run_id, running)
        schema = form["schema"]["properties"]
        field = promotion.field_name(wanted.job_id)
        assert set(schema) == {field, promotion.field_name(unwanted.job_id)}
        assert wanted.prompt in schema[field]["description"]
        assert wanted.uri in schema[field]["description"]
        assert dev.run_id in form["description"]
        assert requests(emu)["vertex"] == 0  # nothing rendered while waiting
        sheet = latest_artifact(promotion.APPROVAL_SHEET_KEY)
        assert str(sheet["data"]).startswith("data:image/jpeg;base64,")
        assert str(sheet["flow_run_id"]) == str(flow_run_id)

        resume_flow_run(flow_run_id, run_input={field: True})
        summary = running.result(timeout=120)

    assert summary.approved == [wanted.job_id] and summary.rendered == 1
    assert requests(emu)["vertex"] == 1
    prod = read_manifest(Store(stages.prod_out), summary.prod_run or "")
    assert [r.lineage["dev_job"] for r in prod] == [wanted.job_id]


def _wait_until_paused(dev_run_id: str, running) -> tuple[uuid.UUID, dict[str, Any]]:
    """The paused promote run of this dev run, and the form it saved (schema + description)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.input.run_input import keyset_from_paused_state

    deadline = time.monotonic() + 90
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            if running.done():
                running.result()  # surfaces the flow's exception
                pytest.fail("promote finished without pausing")
            found = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["promote"])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,  # 3.8.8's client sends null otherwise
                limit=20,
            )
            mine = [r for r in found if r.parameters["params"]["source_run"] == dev_run_id]
            if mine and mine[0].state is not None:
                keys = keyset_from_paused_state(mine[0].state)
                try:  # the form is saved just after the run turns Paused
                    schema = client.read_flow_run_input(mine[0].id, keys["schema"])
                    description = client.read_flow_run_input(mine[0].id, keys["description"])
                except httpx.HTTPStatusError:
                    pass
                else:
                    form = {"schema": json.loads(schema), "description": json.loads(description)}
                    return mine[0].id, form
            time.sleep(0.2)
    pytest.fail("promote never paused")


@pytestmark_flows
def test_promote_from_a_gcs_dev_run_by_manifest_uri(emu, stages: Stages, gcs_bucket, tmp_path):
    """Object stores cannot append: the dev row is re-written as its own object under rows/."""
    url, options = gcs_bucket
    cfg = yaml.safe_load(Path(stages.dev_config).read_text())
    cfg["storage"] = {"url": url, "options": options}
    gcs_dev = tmp_path / "dev-gcs.yaml"
    gcs_dev.write_text(yaml.safe_dump(cfg))
    dev, _ = dev_run(Stages(str(gcs_dev), stages.prod_config, url, stages.prod_out), ["a gcs owl"])

    summary = run_promote(
        stages,
        source_run=f"{url}/runs/{dev.run_id}/manifest.jsonl",
        source_config=str(gcs_dev),  # same scheme: its storage.options reach the bucket
        approve="all-uploaded",
        image_size="1K",
    )

    assert summary.rendered == 1 and requests(emu)["vertex"] == 1
    (dev_row,) = read_manifest(Store(url, options), dev.run_id)
    assert dev_row.lineage["prod_run"] == summary.prod_run
    assert dev_row.lineage["prod_uri"].startswith(stages.prod_out)
