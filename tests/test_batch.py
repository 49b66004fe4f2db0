"""Batch delivery on AI Studio against the in-process emulator (Files API + Gemini Batch API).

Core level: the real client over ``httpx.ASGITransport`` to the emulator app, a real
``file://`` store and ledger, and the chain's real steps (compress, upload, manifest). The
emulator's batch clock runs at ``time_scale`` near 0; waiting is on conditions (the batch's
state), never on sleeps. Creations are counted at the emulator.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from fixtures.emulator import emulator_test_settings
from fixtures.inprocess import KEY, STEPS, URL, Bar, opened

from bananaflow.batch.book import BatchBook
from bananaflow.batch.deliver import deliver, finish
from bananaflow.batch.lines import match, read_answer, to_jsonl
from bananaflow.batch.states import normalize
from bananaflow.config import Settings
from bananaflow.emulator.app import create_app
from bananaflow.emulator.catalog import output_pixels
from bananaflow.emulator.faults import ForcedFault
from bananaflow.emulator.imagegen import ImageSpec, render
from bananaflow.expand import ImageJob, PromptSpec, expand
from bananaflow.manifest import read_manifest
from bananaflow.records import ManifestRow
from bananaflow.routing import RouteDecision, route
from bananaflow.storage import Store


def settings_for(**batch: Any) -> Settings:
    return Settings.model_validate(
        {
            "backends": {"aistudio": {"base_url": URL, "api_key": KEY}},
            "batch": {"poll_s": 0.001, "max_poll_s": 0.01, **batch},
            "generate": {"delivery": "batch"},
        }
    )


def jobs_for(settings: Settings, *texts: str) -> tuple[list[ImageJob], list[RouteDecision]]:
    jobs = expand([PromptSpec(text=t) for t in texts], settings.expand, settings.generate)
    return jobs, [route(j, "dev", settings.route) for j in jobs]


def app_with(**batch: Any) -> Any:
    """In-process emulator; the batch clock nearly stopped."""
    settings = emulator_test_settings(time_scale=0.0001, batch=batch)
    return create_app(settings)


def stats(app: Any) -> dict[str, Any]:
    return app.state.emulator.stats()


def run(
    app: Any, tmp: Path, run_id: str, settings: Settings, jobs: Any, decisions: Any, *, wait: bool
) -> list[ManifestRow]:
    async def go() -> list[ManifestRow]:
        async with opened(app, tmp, run_id, settings) as (ctx, api):
            return await deliver(
                ctx, jobs, decisions, STEPS, Bar(), wait=wait, providers=lambda _b: api
            )

    return asyncio.run(go())


# ---------------------------------------------------------------------------- tests


def test_states_both_vocabularies_and_unknown_is_not_terminal() -> None:
    assert normalize("BATCH_STATE_SUCCEEDED") == normalize("JOB_STATE_SUCCEEDED") == "succeeded"
    assert normalize("JOB_STATE_PARTIALLY_SUCCEEDED") == "partial"
    assert normalize("BATCH_STATE_EXPIRED") == "expired"
    assert normalize("JOB_STATE_SOMETHING_NEW") == "running"


@pytest.mark.parametrize("inline_max_jobs", [0, 10], ids=["file", "inline"])
def test_batch_uploads_every_job_without_generate_calls(
    tmp_path: Path, inline_max_jobs: int
) -> None:
    app = app_with(shuffle_output=True)
    settings = settings_for(inline_max_jobs=inline_max_jobs)
    jobs, decisions = jobs_for(settings, "red mug", "blue mug", "green mug", "gold mug")
    rows = run(app, tmp_path, "r1", settings, jobs, decisions, wait=True)
    assert [r.status for r in rows] == ["uploaded"] * 4
    s = stats(app)
    assert s["batches_created"] == 1
    assert s["generation_requests"]["aistudio"] == 0  # not one online generateContent call
    # Matched by key although the output lines were shuffled: each row holds its own prompt's image.
    by_job = {r.job_id: r for r in rows}
    log = [e for e in app.state.emulator.requests() if e["operation"] == "batchLine"]
    assert sorted(e["prompt"] for e in log) == sorted(j.prompt for j in jobs)
    for job in jobs:
        row = by_job[job.job_id]
        assert row.batch and row.routes[0].reason.startswith("delivery batch")
        assert row.estimated_usd == pytest.approx(0.067)  # Pro 1K: half of 0.134
    upload_route = "aistudio:files.upload"
    assert (upload_route in s["by_route"]) is (inline_max_jobs == 0)


def test_shuffled_answers_are_matched_by_key_not_order(tmp_path: Path) -> None:
    """Each job's master is the image the emulator renders for that job's own prompt."""
    app = app_with(shuffle_output=True)
    settings = settings_for()
    jobs, decisions = jobs_for(settings, "alpha", "bravo", "charlie", "delta", "echo")
    rows = {r.job_id: r for r in run(app, tmp_path, "r1", settings, jobs, decisions, wait=True)}
    batch = next(iter(app.state.emulator.asyncs.batches.values()))
    output = app.state.emulator.asyncs.files[batch.output_file].data.decode().splitlines()
    answered = [json.loads(line)["key"] for line in output]
    assert answered != [j.job_id for j in jobs]  # the emulator did shuffle
    store = Store(f"file://{tmp_path}")
    profile = app.state.emulator.settings.profiles["aistudio"]
    for job in jobs:
        w, h = output_pixels("gemini-3-pro-image", job.aspect_ratio, job.image_size)
        expected = render(
            ImageSpec(
                prompt=job.prompt,
                width=w,
                height=h,
                fmt=profile.image_format,
                quality=profile.jpeg_quality,
                detail=profile.detail,
                label="aistudio gemini-3-pro-image",
                seed=job.seed,
            )
        )
        assert store.get(rows[job.job_id].master_path) == expected, job.prompt


def test_match_reports_missing_duplicate_and_unknown_keys(tmp_path: Path) -> None:
    rows = [{"key": "b", "n": 1}, {"key": "a"}, {"key": "b", "n": 2}, {"key": "zz"}]
    answers = tmp_path / "answers.jsonl"
    answers.write_bytes(to_jsonl(rows[:2]) + b"not json\n\n" + to_jsonl(rows[2:]))
    matched = match([answers], ["a", "b", "c"])
    assert read_answer(matched.answers["b"])["n"] == 1
    assert read_answer(matched.answers["a"]) == {"key": "a"}
    assert (matched.missing, matched.duplicates, matched.unknown) == (["c"], ["b"], ["zz"])


def test_failed_and_missing_lines_end_with_a_reason_and_the_rest_upload(tmp_path: Path) -> None:
    app = app_with(shuffle_output=False)
    state = app.state.emulator
    state.faults.add(ForcedFault("batch_line_error", 1, params={"lines": 1}))
    state.faults.add(ForcedFault("batch_line_missing", 1, params={"lines": 1}))
    state.faults.add(ForcedFault("image_safety", 1, operation="batchGenerateContent"))
    settings = settings_for()
    jobs, decisions = jobs_for(settings, "one", "two", "three", "four", "five")
    rows = {r.job_id: r for r in run(app, tmp_path, "r1", settings, jobs, decisions, wait=True)}
    first, last = rows[jobs[0].job_id], rows[jobs[-1].job_id]
    assert first.status == "failed" and "batch line failed" in (first.error or "")
    assert last.status == "failed" and last.error_kind == "BatchLineMissing"
    statuses = sorted(r.status for r in rows.values())
    assert statuses == ["failed", "failed", "refused", "uploaded", "uploaded"]
    assert stats(app)["generation_requests"]["aistudio"] == 0


def test_expired_batch_goes_online_when_configured(tmp_path: Path) -> None:
    app = app_with()
    app.state.emulator.faults.add(ForcedFault("batch_expired", 1))
    settings = settings_for(fallback="online")
    jobs, decisions = jobs_for(settings, "late one", "late two")
    rows = run(app, tmp_path, "r1", settings, jobs, decisions, wait=True)
    assert [r.status for r in rows] == ["uploaded", "uploaded"]
    assert all(r.routes[0].outcome == "expired" for r in rows)
    assert stats(app)["generation_requests"]["aistudio"] == 2  # bought online instead


def test_expired_batch_without_fallback_ends_each_job_with_the_reason(tmp_path: Path) -> None:
    app = app_with()
    app.state.emulator.faults.add(ForcedFault("batch_expired", 1))
    settings = settings_for()
    jobs, decisions = jobs_for(settings, "late one")
    (row,) = run(app, tmp_path, "r1", settings, jobs, decisions, wait=True)
    assert row.status == "failed" and "ended expired" in (row.error or "")
    assert row.error_kind == "BatchExpired"


def test_crash_after_create_resumes_the_same_batch_and_never_submits_twice(tmp_path: Path) -> None:
    """Run 1 submits and stops (its process 'dies' with the batch pending); a re-run of the
    same jobs finds the batch through the ledger and collects it: one creation in all."""
    app = app_with(pending_s=1e9)  # never runs until the test lets it
    settings = settings_for()
    jobs, decisions = jobs_for(settings, "patient one", "patient two")
    rows = run(app, tmp_path, "r1", settings, jobs, decisions, wait=False)
    assert [r.status for r in rows] == ["pending_batch"] * 2
    assert rows[0].estimated_usd == pytest.approx(0.067)
    again = run(app, tmp_path, "r2", settings, jobs, decisions, wait=False)
    assert [r.status for r in again] == ["pending_batch"] * 2  # joined, not resubmitted
    assert stats(app)["batches_created"] == 1
    app.state.emulator.settings.batch.pending_s = 0.0  # the provider gets to it
    final = run(app, tmp_path, "r3", settings, jobs, decisions, wait=True)
    assert [r.status for r in final] == ["uploaded"] * 2
    assert stats(app)["batches_created"] == 1
    assert stats(app)["generation_requests"]["aistudio"] == 0
    # Nothing is paid twice: a fourth run reuses the published images.
    reused = run(app, tmp_path, "r4", settings, jobs, decisions, wait=True)
    assert all(r.reused_from_run for r in reused)
    assert stats(app)["batches_created"] == 1


def test_collector_finishes_a_pending_run_in_its_own_manifest(tmp_path: Path) -> None:
    app = app_with(pending_s=1e9)
    settings = settings_for()
    jobs, decisions = jobs_for(settings, "later one", "later two")
    run(app, tmp_path, "r1", settings, jobs, decisions, wait=False)
    store = Store(f"file://{tmp_path}")
    (record,) = BatchBook(store).pending()
    assert record.run_id == "r1" and len(record.jobs) == 2

    async def collect_once() -> list[ManifestRow] | None:
        async with opened(app, tmp_path, record.run_id, settings) as (ctx, api):
            return await finish(ctx, api, record, STEPS, Bar())

    assert asyncio.run(collect_once()) is None  # still pending: nothing done, nothing held
    app.state.emulator.settings.batch.pending_s = 0.0
    rows = asyncio.run(collect_once())
    assert rows is not None and [r.status for r in rows] == ["uploaded"] * 2
    assert [r.status for r in read_manifest(store, "r1")] == ["uploaded"] * 2
    assert BatchBook(store).pending() == []


def test_cancelled_batch_ends_jobs_with_a_reason(tmp_path: Path) -> None:
    app = app_with(pending_s=1e9)
    settings = settings_for()
    jobs, decisions = jobs_for(settings, "never mind")
    run(app, tmp_path, "r1", settings, jobs, decisions, wait=False)
    (record,) = BatchBook(Store(f"file://{tmp_path}")).pending()

    async def cancel_then_collect() -> list[ManifestRow] | None:
        async with opened(app, tmp_path, "r1", settings) as (ctx, api):
            await api.cancel(record.name)
            return await finish(ctx, api, record, STEPS, Bar())

    (row,) = asyncio.run(cancel_then_collect()) or []
    assert row.status == "failed" and row.error_kind == "BatchCancelled"


def test_google_genai_sdk_works_unmodified_against_the_emulator(tmp_path: Path) -> None:
    from google import genai
    from google.genai import types

    from bananaflow.emulator.server import EmulatorServer

    quiet = emulator_test_settings(time_scale=0.0001)
    with EmulatorServer(quiet) as srv:
        client = genai.Client(
            api_key=KEY, http_options=types.HttpOptions(base_url=srv.url, api_version="v1beta")
        )
        path = tmp_path / "in.jsonl"
        body = {"contents": [{"parts": [{"text": "sdk mug"}]}]}
        path.write_text(json.dumps({"key": "k1", "request": body}) + "\n")
        uploaded = client.files.upload(
            file=str(path), config=types.UploadFileConfig(mime_type="application/jsonl")
        )
        assert (
            uploaded.name and client.files.get(name=uploaded.name).size_bytes == path.stat().st_size
        )
        job = client.batches.create(model="gemini-3-pro-image", src=uploaded.name)
        assert job.state is not None and job.state.name == "JOB_STATE_PENDING"
        while (job := client.batches.get(name=job.name)).state.name != "JOB_STATE_SUCCEEDED":
            assert job.state.name in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING")
        assert job.dest is not None and job.dest.file_name
        (line,) = client.files.download(file=job.dest.file_name).decode().splitlines()
        answer = json.loads(line)
        assert answer["key"] == "k1" and answer["response"]["candidates"]
        assert job.name in [b.name for b in client.batches.list()]
        srv.settings.batch.pending_s = 1e9  # the next batch waits until cancelled
        other = client.batches.create(model="gemini-3-pro-image", src=[body])
        client.batches.cancel(name=other.name)
        assert client.batches.get(name=other.name).state.name == "JOB_STATE_CANCELLED"


@pytest.mark.usefixtures("prefect_api")
def test_prefect_generate_submits_and_ends_then_the_collector_finishes(emu, make_config) -> None:
    """A generate run with delivery batch (not waiting) ends with its jobs pending_batch; the
    collect-batches flow later finishes them into the same run's manifest."""
    from bananaflow.flows.collect import CollectParameters, collect_batches
    from bananaflow.flows.generate import generate_images
    from bananaflow.parameters import GenerateParameters

    config, out = make_config(generate={"delivery": "batch"}, batch={"wait": False})
    batch_clock = emu.server.settings.batch
    before = batch_clock.pending_s, batch_clock.running_s
    # The provider does not get to it until the test says so; then it ends at once (a running
    # phase would let a fast machine collect before it ends: a race, not a test).
    batch_clock.pending_s, batch_clock.running_s = 1e9, 0.0
    try:
        params = GenerateParameters(config=config, prompts=["a kite", "a boat"])
        submitted = asyncio.run(generate_images(params))
        assert submitted.counts == {"pending_batch": 2}
        assert submitted.estimated_usd == pytest.approx(2 * 0.067)
        nothing = asyncio.run(collect_batches(CollectParameters(config=config)))
        assert nothing == []  # still pending: a status read, nothing else
        batch_clock.pending_s = 0.0
        (collected,) = asyncio.run(collect_batches(CollectParameters(config=config)))
    finally:
        batch_clock.pending_s, batch_clock.running_s = before
    assert collected.run_id == submitted.run_id and collected.counts == {"uploaded": 2}
    rows = read_manifest(Store(out), submitted.run_id)
    assert [r.status for r in rows] == ["uploaded", "uploaded"]
    stats = emu.control.stats()
    assert stats["batches_created"] == 1 and stats["generation_requests"]["aistudio"] == 0


def test_vertex_batch_through_the_gcs_emulator(
    tmp_path: Path, emulator_factory: Any, gcs_server: str, gcs_bucket: tuple[str, dict[str, Any]]
) -> None:
    """JSONL to gs://, batchPredictionJobs, predictions read back from gs:// and matched by the
    job key riding in the request's labels; a failed line ends PARTIALLY_SUCCEEDED."""
    from bananaflow.chain import open_context
    from bananaflow.emulator.control import EmulatorControl
    from bananaflow.emulator.credentials import write_service_account_file

    bucket, options = gcs_bucket
    server = emulator_factory(time_scale=0.0001, batch={"gcs_endpoint": gcs_server})
    sa = write_service_account_file(
        tmp_path / "sa.json", server.url + "/token", server.settings.project
    )
    settings = Settings.model_validate(
        {
            "stage": "prod",
            "backends": {
                "vertex": {
                    "base_url": server.url,
                    "project": server.settings.project,
                    "credentials_file": str(sa),
                }
            },
            "storage": {"url": f"{bucket}/out", "options": options},
            "batch": {"poll_s": 0.001, "max_poll_s": 0.01, "vertex_staging": f"{bucket}/staging"},
            "generate": {"delivery": "batch"},
        }
    )
    with EmulatorControl(server.url) as control:
        control.force(
            "batch_line_error", backend="vertex", operation="batchPredictionJobs", lines=1
        )
        jobs = expand(
            [PromptSpec(text=t) for t in ("v one", "v two", "v three")],
            settings.expand,
            settings.generate,
        )
        decisions = [route(j, "prod", settings.route) for j in jobs]

        async def go() -> list[ManifestRow]:
            ctx = open_context(settings, "rv", {"vertex"})
            try:
                return await deliver(ctx, jobs, decisions, STEPS, Bar(), wait=True)
            finally:
                await ctx.aclose()

        rows = {r.job_id: r for r in asyncio.run(go())}
        stats = control.stats()
    assert stats["batches_created"] == 1 and stats["generation_requests"]["vertex"] == 0
    assert rows[jobs[0].job_id].status == "failed"
    assert "Bad Request" in (rows[jobs[0].job_id].error or "")
    assert [rows[j.job_id].status for j in jobs[1:]] == ["uploaded", "uploaded"]
    assert all(rows[j.job_id].backend == "vertex" for j in jobs[1:])
    staging = Store(f"{bucket}/staging", options)
    outputs = [p for p in staging.list("") if p.endswith("predictions.jsonl")]
    assert len(outputs) == 1 and "/prediction-model-" in outputs[0]


def test_a_restarted_emulator_keeps_its_batches_so_a_killed_cli_resumes(tmp_path: Path) -> None:
    """The embedded emulator dies with the CLI; with ``state_dir`` its batches outlive it, and
    the re-run collects the batch the first run submitted (one creation in all)."""
    keep = str(tmp_path / "emulator-state")
    first = app_with(pending_s=1e9, state_dir=keep)
    settings = settings_for()
    jobs, decisions = jobs_for(settings, "survivor one", "survivor two")
    rows = run(first, tmp_path / "out", "r1", settings, jobs, decisions, wait=False)
    assert [r.status for r in rows] == ["pending_batch"] * 2
    second = app_with(pending_s=0.0, state_dir=keep)  # a new process: only the files remain
    final = run(second, tmp_path / "out", "r2", settings, jobs, decisions, wait=True)
    assert [r.status for r in final] == ["uploaded"] * 2
    assert stats(second)["batches_created"] == 1
    assert stats(second)["generation_requests"]["aistudio"] == 0


def test_a_batch_the_provider_forgot_ends_its_jobs_with_a_reason(tmp_path: Path) -> None:
    settings = settings_for()
    jobs, decisions = jobs_for(settings, "forgotten")
    run(app_with(pending_s=1e9), tmp_path, "r1", settings, jobs, decisions, wait=False)
    (row,) = run(app_with(), tmp_path, "r2", settings, jobs, decisions, wait=True)
    assert row.status == "failed" and "no longer knows" in (row.error or "")


def test_a_batch_past_max_wait_is_cancelled_and_its_jobs_end(tmp_path: Path) -> None:
    app = app_with(pending_s=1e9)
    settings = settings_for(max_wait_s=0.001)
    jobs, decisions = jobs_for(settings, "too slow")
    (row,) = run(app, tmp_path, "r1", settings, jobs, decisions, wait=True)
    assert row.status == "failed" and row.error_kind == "BatchCancelled"
